"""The FastAPI app: routers, the HTTP edge (body limit, JSON errors), CORS and the same-origin guard in this one place, and the static UI.

Built from a ``Runtime`` (``lambda_fn.runtime``) so tests and both entry points (Mangum, uvicorn) build the same
app. Maps the forge's and the PR processor's errors to JSON ``{"detail": ...}`` answers.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from aipm_common.http import install_edge
from aipm_common.logging import redact
from lambda_fn.deadline import DeadlineMiddleware
from lambda_fn.forge.base import ForgeError
from lambda_fn.generate import StepFailed
from lambda_fn.processor import ProcessorError
from lambda_fn.routes.api import router as api_router
from lambda_fn.routes.callbacks import router as callbacks_router
from lambda_fn.routes.events import router as events_router
from lambda_fn.routes.health import router as health_router
from lambda_fn.routes.webhook import router as webhook_router
from lambda_fn.runtime import Runtime, build_runtime
from lambda_fn.same_origin import SameOriginMiddleware
from lambda_fn.settings import LambdaSettings


def create_app(runtime: Runtime, *, routers: Sequence[APIRouter] = ()) -> FastAPI:
    """The API on ``runtime``; ``routers`` are included after its own and before the UI (the Lambda passes none)."""
    settings = runtime.settings
    app = FastAPI(title="AIPM API", version="1", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.runtime = runtime
    install_edge(app)
    app.add_middleware(DeadlineMiddleware)
    app.add_middleware(SameOriginMiddleware, allowed_origins=settings.allowed_origin_list)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.allowed_origin_list,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        max_age=600,
    )

    app.add_exception_handler(ForgeError, _error_answer)
    app.add_exception_handler(ProcessorError, _error_answer)
    app.add_exception_handler(StepFailed, _error_answer)
    app.include_router(health_router)
    app.include_router(api_router)
    app.include_router(events_router)
    app.include_router(callbacks_router)
    app.include_router(webhook_router)
    for router in routers:  # what the caller adds: the local stack's forge pages (aipm_local.api)
        app.include_router(router)
    if settings.aipm_ui_dir:
        _mount_ui(app, settings.aipm_ui_dir, ui_config(runtime))
    return app


async def _error_answer(request: Request, exc: Exception) -> JSONResponse:
    """The forge's, the PR processor's and a failed step's errors as JSON ``{"detail": ...}`` (a failed step adds its
    ``extra`` fields), with their status and headers."""
    assert isinstance(exc, ForgeError | ProcessorError | StepFailed)
    extra = exc.extra if isinstance(exc, StepFailed) else {}
    return JSONResponse({"detail": redact(exc.detail), **extra}, status_code=exc.status, headers=exc.headers)


def ui_config(runtime: Runtime) -> dict:
    """What the UI's ``config.json`` says when the API serves the UI itself: same origin, and how to sign in."""
    settings = runtime.settings
    config: dict = {"apiUrl": ""}
    if runtime.authenticator.mode == "cognito" and settings.cognito_domain and settings.cognito_client_id:
        domain = settings.cognito_domain.rstrip("/")
        config |= {"authMode": "cognito", "cognito": {
            "domain": domain if domain.startswith(("https://", "http://")) else f"https://{domain}",
            "clientId": settings.cognito_client_id, "userPoolId": settings.cognito_user_pool_id,
            "region": settings.cognito_region, "scopes": ["openid", "email", "profile"]}}
    return config


def _mount_ui(app: FastAPI, ui_dir, config: dict) -> None:
    """The static UI at ``/`` after every API route; ``/config.json`` is served from settings when the UI has none.

    The UI is native ES modules (``js/*.js``): a browser runs a module only when it comes with a JavaScript type, so
    ``.js`` is named here rather than left to the host's ``/etc/mime.types`` (or a Windows registry's text/plain)."""
    import mimetypes

    from fastapi.staticfiles import StaticFiles

    mimetypes.add_type("text/javascript", ".js")

    if not (ui_dir / "config.json").is_file():
        @app.get("/config.json", include_in_schema=False)
        def config_json():
            return config

    app.mount("/", StaticFiles(directory=ui_dir, html=True, check_dir=True), name="ui")


def build_handler(settings: LambdaSettings):
    """Mangum around the app, lifespan off (nothing to start per event): what ``lambda_fn.handler`` exposes."""
    from mangum import Mangum

    return Mangum(create_app(build_runtime(settings)), lifespan="off")
