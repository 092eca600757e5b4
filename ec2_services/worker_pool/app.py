"""The Worker Pool's HTTP edge (docs/contracts.md, "Worker Pool API"): request and response models, validation, routes.

Owns what a caller may send (and the 400s for what docs/contracts.md forbids: control characters, any line that is a CLI
command, a ``cwd`` outside ``KIRO_WORKSPACE_ROOT``) and the status code of each outcome. Routes only validate and
call the pool; ``/health`` is the one unsigned route and shows no prompt, output or secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shlex
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from aipm_common.contracts import TASK_ID_PATTERN, ExecuteRequest, TaskResult
from aipm_common.http import install_edge
from aipm_common.signing import SIGNATURE_HEADER, WORKER_POOL, SignatureVerifier
from ec2_services.worker_pool.commands import CommandResult, CommandRunner
from ec2_services.worker_pool.ledger import Replayed, TaskLedger
from ec2_services.worker_pool.pool import (
    DriverFactory,
    PoolUnavailable,
    QueueFull,
    TaskEnded,
    WorkerPool,
    make_driver,
)
from ec2_services.worker_pool.profiles import acp_command, resolve_profile
from ec2_services.worker_pool.settings import WorkerPoolSettings

log = logging.getLogger(__name__)

_FORBIDDEN_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class RunRequest(BaseModel):
    task_id: str = Field(pattern=TASK_ID_PATTERN, description="Made by the caller; a replay answers the same run.")
    cwd: str = Field(description="The job's worktree: an existing absolute directory inside KIRO_WORKSPACE_ROOT.")
    command: str = Field(min_length=1, max_length=2000, description="Split as a shell splits words; no shell.")
    timeout_s: float = Field(600, gt=0, le=3600, allow_inf_nan=False, description="The process group is killed past it.")


class RunResult(CommandResult):
    task_id: str


class WorkerHealth(BaseModel):
    id: int
    state: str
    pid: int | None
    tasks_completed: int
    restarts: int
    current_task: str | None
    agent_version: str | None = Field(None, description="The agent's version: its ACP initialize answer, else "
                                      "`kiro-cli --version` (pty, headless); null when unknown.")
    agent_engine: str | None = Field(None, description="kiro-cli's agent engine (`v2`/`v3`): what the agent shows "
                                     "over ACP, else the command's `--agent-engine`; null when unknown.")


class Health(BaseModel):
    status: str
    pool_size: int
    queue_depth: int
    workers: list[WorkerHealth]


def _bad_request(detail: str) -> HTTPException:
    return HTTPException(status_code=400, detail=detail)


def check_prompt(prompt: str) -> None:
    """400 unless every line is text for the agent. A '/' or '!' line after the first was shown to reach the CLI as its
    own command ("\\n/quit"), so every line is checked, not only the first."""
    bad = _FORBIDDEN_CONTROLS.search(prompt)
    if bad:
        raise _bad_request(
            f"prompt holds the control character {bad.group()!r} at offset {bad.start()}; only \\n and \\t are allowed"
        )
    for number, line in enumerate(prompt.split("\n"), start=1):
        if line.strip().startswith(("/", "!")):
            raise _bad_request(
                f"line {number} of the prompt starts with {line.strip()[0]!r}, which the agent CLI runs as its own "
                "command; rephrase it (e.g. put a word in front)"
            )


def check_cwd(cwd: str, root: Path) -> Path:
    """``cwd`` as an existing directory inside the workspace root, symlinks resolved; 400 otherwise."""
    if _FORBIDDEN_CONTROLS.search(cwd) or not cwd.startswith("/"):
        raise _bad_request("cwd must be an absolute path without control characters")
    try:
        resolved = Path(cwd).resolve(strict=True)
    except (OSError, RuntimeError):
        raise _bad_request(f"cwd {cwd!r} does not exist") from None
    if not resolved.is_dir():
        raise _bad_request(f"cwd {cwd!r} is not a directory")
    real_root = root.resolve()
    if resolved != real_root and not resolved.is_relative_to(real_root):
        raise _bad_request(f"cwd {cwd!r} is outside KIRO_WORKSPACE_ROOT ({real_root}) once symlinks are resolved")
    return resolved


def _not_taken(code: int, status: str | None, detail: str, task_id: str, retry_after: int) -> JSONResponse:
    """A task no worker took: the error body still has worker_id, duration_s and output (docs/contracts.md)."""
    body = {"detail": detail, "task_id": task_id, "worker_id": None, "duration_s": 0.0, "output": ""}
    if status:
        body["status"] = status
    return JSONResponse(body, status_code=code, headers={"Retry-After": str(retry_after)})


def _record_end(ledger: TaskLedger, task, done: asyncio.Future) -> None:
    if done.cancelled() or done.exception() is not None:
        return
    try:
        ledger.ended(task.task_id, task.http_status or 200, done.result())
    except Exception:  # the answer still goes out; only a replay after a restart could not be answered from disk
        log.exception("task %s: its result could not be written to the task ledger", task.task_id)


def create_app(  # noqa: C901 - the route closures count into the factory; module routers (issue 19) will remove it
    settings: WorkerPoolSettings, *, secret: str | None, driver_factory: DriverFactory | None = None
) -> FastAPI:
    """The app; the pool starts with the app's lifespan (on the server's loop) and stops with it."""
    factory = driver_factory or make_driver(settings, resolve_profile(settings))
    holder: dict[str, WorkerPool] = {}
    runner = CommandRunner(shlex.split(settings.kiro_run_as), limit=settings.kiro_pool_size,
                           ttl_s=settings.kiro_result_ttl)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = WorkerPool(settings, factory)
        holder["pool"] = pool
        holder["ledger"] = TaskLedger(settings.kiro_task_db, result_ttl=settings.kiro_result_ttl)
        await pool.start()
        log.info(
            "worker pool: %d workers running %r (KIRO_DRIVER=%s) in %s", settings.kiro_pool_size,
            acp_command(settings) if settings.kiro_driver == "acp" else resolve_profile(settings).command,
            settings.kiro_driver, settings.kiro_workspace_root,
        )
        try:
            yield
        finally:
            await runner.close()
            await pool.close()
            holder["ledger"].close()

    def get_pool() -> WorkerPool:
        return holder["pool"]

    app = FastAPI(
        title="AIPM Worker Pool",
        description="Persistent agent CLI sessions in pseudo-terminals; one prompt at a time per session.",
        lifespan=lifespan,
        # Signed JSON from our own parts: a body without a Content-Type is read as JSON (no browser can reach a
        # signed route, so there is no cross-site form to guard against).
        strict_content_type=False,
    )
    install_edge(app)
    # SIGTERM: open /execute requests are answered (503, JSON) at once, not dropped after uvicorn's grace period.
    app.state.on_stopping = lambda: holder["pool"].begin_stop() if "pool" in holder else None
    signed = APIRouter(dependencies=[Depends(SignatureVerifier(secret, WORKER_POOL))])
    responses = {code: {"model": TaskResult} for code in (200, 499, 502, 503, 504)}

    @app.get("/health", response_model=Health, tags=["health"])
    async def health(pool: WorkerPool = Depends(get_pool)) -> dict:
        return pool.health()

    @signed.post("/execute", responses=responses, tags=["tasks"])
    async def execute(body: ExecuteRequest, request: Request, pool: WorkerPool = Depends(get_pool)) -> JSONResponse:
        check_prompt(body.prompt)
        cwd = check_cwd(body.cwd, settings.kiro_workspace_root) if body.cwd is not None else None
        ledger: TaskLedger = holder["ledger"]
        signature = request.headers.get(SIGNATURE_HEADER)
        new = pool.get(body.task_id) is None
        if new:  # not in memory: the ledger knows whether it ran before a restart
            try:
                ended = ledger.before_run(body.task_id, signature)
            except Replayed as exc:
                raise HTTPException(409, detail=str(exc)) from None
            if ended is not None:
                log.info("task %s replayed after a restart: answering its stored result", body.task_id)
                return JSONResponse(ended.body, status_code=ended.http_status)
        try:
            task = pool.submit(body.task_id, body.prompt, cwd=cwd, timeout_s=body.timeout_s)
        except QueueFull as exc:
            return _not_taken(429, None, str(exc), body.task_id, exc.retry_after)
        except PoolUnavailable as exc:
            return _not_taken(503, "agent_error", str(exc), body.task_id, 30)
        if new:
            ledger.taken(task.task_id, signature)
            task.done.add_done_callback(lambda done: _record_end(ledger, task, done))
        result = await asyncio.shield(task.done)
        return JSONResponse(result, status_code=task.http_status or 200)

    @signed.get("/tasks/{task_id}", tags=["tasks"])
    async def get_task(task_id: str, pool: WorkerPool = Depends(get_pool)) -> dict:
        task = pool.get(task_id)
        if task is None and (ended := holder["ledger"].stored(task_id)) is not None:
            return {"task_id": task_id, "state": "ended", "http_status": ended.http_status, **ended.body}
        if task is None:
            raise HTTPException(404, detail=f"no task {task_id!r} (unknown, or ended more than {settings.kiro_result_ttl:g} s ago)")
        return task.view(pool.position(task))

    @signed.post("/tasks/{task_id}/cancel", tags=["tasks"])
    async def cancel_task(task_id: str, pool: WorkerPool = Depends(get_pool)) -> dict:
        try:
            task = await pool.cancel(task_id)
        except KeyError:
            raise HTTPException(404, detail=f"no task {task_id!r}") from None
        except TaskEnded as exc:
            raise HTTPException(409, detail=str(exc)) from None
        return task.view(pool.position(task))

    @signed.post("/run", response_model=RunResult, tags=["tasks"])
    async def run(body: RunRequest) -> dict:
        """Run the repository's test command in the job's worktree, as the agent (ec2_services.worker_pool.commands)."""
        if _FORBIDDEN_CONTROLS.search(body.command):
            raise _bad_request("command holds a control character")
        cwd = check_cwd(body.cwd, settings.kiro_workspace_root)
        try:
            result = await runner.run(body.task_id, body.command, cwd=cwd, timeout_s=body.timeout_s)
        except ValueError as exc:
            raise _bad_request(str(exc)) from None
        return {"task_id": body.task_id, **result.model_dump()}

    app.include_router(signed)
    return app
