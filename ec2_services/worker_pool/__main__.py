"""``python -m ec2_services.worker_pool``: read the settings, refuse to start without a secret, serve on 8081."""

from __future__ import annotations

import logging

from aipm_common.http import serve
from aipm_common.logging import setup_logging
from aipm_common.settings import SettingsError, load_settings, require_secret
from ec2_services.worker_pool.app import create_app
from ec2_services.worker_pool.settings import WorkerPoolSettings

log = logging.getLogger("ec2_services.worker_pool")


def main() -> None:
    settings = load_settings(WorkerPoolSettings)
    setup_logging("worker-pool", level=settings.aipm_log_level, secrets=[settings.shared_secret])
    secret = require_secret(settings, "worker-pool", log)
    try:
        app = create_app(settings, secret=secret)
    except ValueError as exc:
        raise SettingsError(f"worker-pool: {exc}") from None
    serve(app, settings.worker_pool_host, settings.worker_pool_port,
          header_timeout=settings.aipm_header_timeout, max_connections=settings.aipm_max_connections)


if __name__ == "__main__":
    main()
