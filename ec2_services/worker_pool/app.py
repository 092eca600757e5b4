"""The Worker Pool's app: ``create_app`` builds its state (``routes.PoolState``) and includes the routers
(``ec2_services.worker_pool.routes``); the pool and the task ledger start with the app's lifespan and stop with it."""

from __future__ import annotations

import contextlib
import logging
import shlex
from collections.abc import AsyncIterator

from fastapi import FastAPI

from aipm_common.http import install_edge
from aipm_common.signing import WORKER_POOL, SignatureVerifier
from ec2_services.worker_pool.commands import CommandRunner
from ec2_services.worker_pool.drivers import DriverFactory, make_driver
from ec2_services.worker_pool.ledger import TaskLedger
from ec2_services.worker_pool.pool import WorkerPool
from ec2_services.worker_pool.profiles import acp_command, resolve_profile
from ec2_services.worker_pool.routes import PoolState, health_router, router
from ec2_services.worker_pool.settings import WorkerPoolSettings

log = logging.getLogger("ec2_services.worker_pool.app")


def create_app(
    settings: WorkerPoolSettings, *, secret: str | None, driver_factory: DriverFactory | None = None
) -> FastAPI:
    """The app; the pool starts with the app's lifespan (on the server's loop) and stops with it."""
    factory = driver_factory or make_driver(settings, resolve_profile(settings))
    state = PoolState(settings=settings, verifier=SignatureVerifier(secret, WORKER_POOL),
                      runner=CommandRunner(shlex.split(settings.kiro_run_as), limit=settings.kiro_pool_size,
                                           ttl_s=settings.kiro_result_ttl))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with _running(state, factory):
            yield

    app = FastAPI(
        title="AIPM Worker Pool",
        description="Persistent agent CLI sessions in pseudo-terminals; one prompt at a time per session.",
        lifespan=lifespan,
        # Signed JSON from our own parts: a body without a Content-Type is read as JSON (no browser can reach a
        # signed route, so there is no cross-site form to guard against).
        strict_content_type=False,
    )
    app.state.pool = state
    install_edge(app)
    # SIGTERM: open /execute requests are answered (503, JSON) at once, not dropped after uvicorn's grace period.
    app.state.on_stopping = lambda: state.pool.begin_stop() if state.pool is not None else None
    app.include_router(health_router)
    app.include_router(router)
    return app


@contextlib.asynccontextmanager
async def _running(state: PoolState, factory: DriverFactory) -> AsyncIterator[None]:
    """The pool and the task ledger, from the lifespan's start to its end; the command runner closes with them."""
    settings = state.settings
    state.pool = WorkerPool(settings, factory)
    state.ledger = TaskLedger(settings.kiro_task_db, result_ttl=settings.kiro_result_ttl)
    await state.pool.start()
    log.info(
        "worker pool: %d workers running %r (KIRO_DRIVER=%s) in %s", settings.kiro_pool_size,
        acp_command(settings) if settings.kiro_driver == "acp" else resolve_profile(settings).command,
        settings.kiro_driver, settings.kiro_workspace_root,
    )
    try:
        yield
    finally:
        await state.runner.close()
        await state.pool.close()
        state.ledger.close()
