"""``python -m aipm_local.api``: the API of ``make run`` and the tests — the Lambda's app (``lambda_fn.app``) on the
local forge (``aipm_local.forge.local``: bare repositories and SQLite pull requests under ``AIPM_LOCAL_FORGE_DIR``) with
the local forge's routes (``aipm_local.forge.pages``), under uvicorn on ``AIPM_API_HOST``:``AIPM_API_PORT``.

It always serves the local forge, whatever ``AIPM_FORGE`` says. The Lambda never imports this module: the local stack
hands the forge and its routes to the app factory. The example repository ``local/example`` is created first when
missing.
"""

from __future__ import annotations

import sys

from fastapi import FastAPI

from lambda_fn.settings import LambdaSettings


def create_local_app(settings: LambdaSettings) -> FastAPI:
    """The API on the local forge in ``settings.aipm_local_forge_dir``, with the forge's pages and JSON."""
    from aipm_local.forge.local import LocalForge
    from aipm_local.forge.pages import router as pages_router
    from lambda_fn.app import create_app
    from lambda_fn.runtime import build_runtime

    forge = LocalForge(settings.aipm_local_forge_dir, public_url=settings.public_api_url)
    return create_app(build_runtime(settings, forge=forge), routers=[pages_router])


def _app_with_example(settings: LambdaSettings) -> FastAPI:
    from aipm_local.forge.local import ensure_example_repo

    ensure_example_repo(settings.aipm_local_forge_dir)
    return create_local_app(settings)


def main() -> int:
    from lambda_fn.__main__ import run

    return run(_app_with_example)


if __name__ == "__main__":
    sys.exit(main())
