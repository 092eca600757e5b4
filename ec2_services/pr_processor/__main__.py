"""``python -m ec2_services.pr_processor``: settings, logging, the secret check, then the API under uvicorn."""

from __future__ import annotations

import logging
import sys

from aipm_common.http import serve
from aipm_common.logging import setup_logging
from aipm_common.settings import load_settings, require_secret
from ec2_services.pr_processor.settings import PrProcessorSettings

log = logging.getLogger("ec2_services.pr_processor")


def main() -> None:
    settings = load_settings(PrProcessorSettings)
    setup_logging("pr-processor", level=settings.aipm_log_level, secrets=[settings.shared_secret, settings.token])
    secret = require_secret(settings, "pr-processor", log)
    from ec2_services.pr_processor.db_check import job_db_problem

    problem = job_db_problem(settings.pr_processor_db, settings.aipm_state_dir)
    if problem:
        log.error("not starting: %s", problem)
        print(f"pr-processor: {problem}", file=sys.stderr)
        raise SystemExit(2)
    from ec2_services.pr_processor.app import create_app

    log.info(
        "PR processor on %s:%d, worker pool %s, git %s, state %s",
        settings.pr_processor_host, settings.pr_processor_port, settings.worker_pool_url, settings.git_base_url,
        settings.aipm_state_dir,
    )
    serve(create_app(settings, secret), settings.pr_processor_host, settings.pr_processor_port,
          header_timeout=settings.aipm_header_timeout, max_connections=settings.aipm_max_connections)


if __name__ == "__main__":
    main()
