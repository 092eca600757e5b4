"""``python -m lambda_fn``: the same app under uvicorn on ``AIPM_API_HOST``:``AIPM_API_PORT`` (127.0.0.1:8000).

With ``AIPM_FORGE=local`` the example repository ``local/example`` is created first when missing. Set
``PUBLIC_API_URL`` (e.g. ``http://127.0.0.1:8000``) or jobs get no callback: there is no Lambda event to read it from.
"""

from __future__ import annotations

import logging
import sys

from aipm_common.http import serve
from aipm_common.logging import setup_logging
from aipm_common.settings import SettingsError, load_settings
from lambda_fn.settings import LambdaSettings


def main() -> int:
    try:
        settings = load_settings(LambdaSettings)
        setup_logging("lambda-api", level=settings.aipm_log_level)
        from lambda_fn.app import create_app
        from lambda_fn.runtime import build_runtime

        if settings.aipm_forge == "local":
            from lambda_fn.forge.local import ensure_example_repo

            ensure_example_repo(settings.aipm_local_forge_dir)
        runtime = build_runtime(settings)
    except SettingsError as exc:
        print(f"lambda-api: {exc.message}", file=sys.stderr)
        return 2
    log = logging.getLogger("lambda_fn")
    if not settings.public_api_url:
        log.warning("PUBLIC_API_URL is not set: jobs started from this API get no callback (no result comment)")
    log.info("lambda-api on http://%s:%s (forge %s, auth %s)", settings.aipm_api_host, settings.aipm_api_port,
             runtime.forge.kind, runtime.authenticator.mode)
    serve(create_app(runtime), settings.aipm_api_host, settings.aipm_api_port,
          header_timeout=settings.aipm_header_timeout, max_connections=settings.aipm_max_connections)
    return 0


if __name__ == "__main__":
    sys.exit(main())
