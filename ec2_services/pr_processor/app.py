"""The PR processor's app: ``create_app`` builds its state (``routes.ProcessorState``), includes the routers
(``ec2_services.pr_processor.routes``) and maps a locked job database to 503; the service, and with
``AIPM_DISPATCH=sqs`` the job queue's intake (``sqs_intake``), start with the app's lifespan and stop with it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from aipm_common.http import install_edge
from aipm_common.signing import PR_PROCESSOR, SignatureVerifier
from ec2_services.pr_processor.routes import ProcessorState, health_router, router
from ec2_services.pr_processor.service import ProcessorService
from ec2_services.pr_processor.settings import PrProcessorSettings

log = logging.getLogger("ec2_services.pr_processor")


def create_app(settings: PrProcessorSettings, secret: str | None) -> FastAPI:
    state = ProcessorState(settings=settings, verifier=SignatureVerifier(secret, PR_PROCESSOR))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with _running(state, secret):
            yield

    # Signed JSON from our own parts: a body without a Content-Type is read as JSON (no browser can send a signed one).
    app = FastAPI(title="AIPM PR processor", lifespan=lifespan, strict_content_type=False)
    app.state.processor = state
    install_edge(app)
    app.add_exception_handler(sqlite3.OperationalError, _job_store_unavailable)
    app.include_router(health_router)
    app.include_router(router)
    return app


async def _job_store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # The write was rolled back: nothing was accepted, and the caller may simply send it again.
    log.error("job database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": f"job database unavailable ({exc}): nothing was recorded; send the request again later"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


@asynccontextmanager
async def _running(state: ProcessorState, secret: str | None) -> AsyncIterator[None]:
    """The service, and in sqs mode the queue's intake, from the lifespan's start to its end."""
    settings = state.settings
    service = state.service = ProcessorService(settings, secret)
    state.intake = None
    await service.start()
    try:
        if settings.aipm_dispatch == "sqs":
            from ec2_services.pr_processor.scale_in import ScaleInProtection
            from ec2_services.pr_processor.sqs_intake import SqsIntake

            assert settings.aipm_job_queue_url is not None  # the settings refuse sqs mode without it
            protection = ScaleInProtection(settings.aipm_asg_name) if settings.aipm_asg_name else None
            state.intake = SqsIntake(service, queue_url=settings.aipm_job_queue_url,
                                     wait_s=settings.pr_sqs_wait_s, visibility_s=settings.pr_sqs_visibility_s,
                                     protection=protection)
            await state.intake.start()
        elif settings.aipm_asg_name:
            log.warning("AIPM_ASG_NAME is ignored with AIPM_DISPATCH=http: only sqs mode runs in a group")
        yield
    finally:
        if state.intake is not None:
            await state.intake.stop()
        await service.stop()
