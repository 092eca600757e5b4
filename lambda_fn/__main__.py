"""``python -m lambda_fn``: the same app under uvicorn on ``AIPM_API_HOST``:``AIPM_API_PORT`` (127.0.0.1:8000), on GitHub.

``run`` is the entry's body, shared with ``python -m aipm_local.api`` (the same app on the local forge, what
``make run`` starts). Set ``PUBLIC_API_URL`` (e.g. ``http://127.0.0.1:8000``) or jobs get no callback: there is no
Lambda event to read it from.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from fastapi import FastAPI

from aipm_common.http import serve
from aipm_common.logging import setup_logging
from aipm_common.settings import SettingsError, load_settings
from lambda_fn.settings import LambdaSettings


def run(make_app: Callable[[LambdaSettings], FastAPI]) -> int:
    """Read the settings, build the app with ``make_app`` and serve it; 2 for a bad setting or a missing secret."""
    try:
        settings = load_settings(LambdaSettings)
        setup_logging("lambda-api", level=settings.aipm_log_level)
        app = make_app(settings)
    except SettingsError as exc:
        print(f"lambda-api: {exc.message}", file=sys.stderr)
        return 2
    runtime = app.state.runtime
    log = logging.getLogger("lambda_fn")
    if not settings.public_api_url:
        log.warning("PUBLIC_API_URL is not set: jobs started from this API get no callback (no result comment)")
    log.info("lambda-api on http://%s:%s (forge %s, auth %s)", settings.aipm_api_host, settings.aipm_api_port,
             runtime.forge.kind, runtime.authenticator.mode)
    serve(app, settings.aipm_api_host, settings.aipm_api_port,
          header_timeout=settings.aipm_header_timeout, max_connections=settings.aipm_max_connections)
    return 0


def _github_app(settings: LambdaSettings) -> FastAPI:
    from lambda_fn.app import create_app
    from lambda_fn.runtime import build_runtime

    return create_app(build_runtime(settings))


def main() -> int:
    return run(_github_app)


if __name__ == "__main__":
    sys.exit(main())
