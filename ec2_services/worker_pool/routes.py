"""The Worker Pool's routes (docs/contracts.md, "Worker Pool API"): request and response models, validation, and the
app's state (``PoolState``, at ``app.state.pool``) that every route reads through ``pool_state``.

Owns what a caller may send (and the 400s for what docs/contracts.md forbids: control characters, any line that is a CLI
command, a ``cwd`` outside ``KIRO_WORKSPACE_ROOT``) and the status code of each outcome. Routes only validate and
call the pool; ``/health`` is the one unsigned route and shows no prompt, output or secret. ``app.create_app`` builds
the state and includes ``health_router`` and ``router`` (signed for ``worker-pool``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from aipm_common.contracts import TASK_ID_PATTERN, ExecuteRequest, TaskResult
from aipm_common.http import AppVerifier, started
from aipm_common.signing import SIGNATURE_HEADER, SignatureVerifier
from ec2_services.worker_pool.commands import CommandResult, CommandRunner
from ec2_services.worker_pool.ledger import Replayed, TaskLedger
from ec2_services.worker_pool.pool import PoolUnavailable, QueueFull, TaskEnded, WorkerPool
from ec2_services.worker_pool.settings import WorkerPoolSettings

log = logging.getLogger("ec2_services.worker_pool.app")  # one logger for the app and its routes

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


@dataclass
class PoolState:
    """What the routes read, in one place (``app.state.pool``): built by ``create_app``; the pool and the task ledger
    are made and closed by the app's lifespan (on the server's loop)."""

    settings: WorkerPoolSettings
    verifier: SignatureVerifier  # for receiver worker-pool
    runner: CommandRunner
    pool: WorkerPool | None = None
    ledger: TaskLedger | None = None


def pool_state(request: Request) -> PoolState:
    return request.app.state.pool


def running_pool(request: Request) -> WorkerPool:
    return started(pool_state(request).pool, "the worker pool")


def task_ledger(request: Request) -> TaskLedger:
    return started(pool_state(request).ledger, "the worker pool")


health_router = APIRouter(tags=["health"])
router = APIRouter(tags=["tasks"], dependencies=[Depends(AppVerifier(lambda request: pool_state(request).verifier))])
_RESPONSES = {code: {"model": TaskResult} for code in (200, 499, 502, 503, 504)}


@health_router.get("/health", response_model=Health)
async def health(pool: WorkerPool = Depends(running_pool)) -> dict:
    return pool.health()


@router.post("/execute", responses=_RESPONSES)
async def execute(body: ExecuteRequest, request: Request, pool: WorkerPool = Depends(running_pool),
                  ledger: TaskLedger = Depends(task_ledger), state: PoolState = Depends(pool_state)) -> JSONResponse:
    check_prompt(body.prompt)
    cwd = check_cwd(body.cwd, state.settings.kiro_workspace_root) if body.cwd is not None else None
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


@router.get("/tasks/{task_id}")
async def get_task(task_id: str, pool: WorkerPool = Depends(running_pool), ledger: TaskLedger = Depends(task_ledger),
                   state: PoolState = Depends(pool_state)) -> dict:
    task = pool.get(task_id)
    if task is None and (ended := ledger.stored(task_id)) is not None:
        return {"task_id": task_id, "state": "ended", "http_status": ended.http_status, **ended.body}
    if task is None:
        raise HTTPException(404, detail=f"no task {task_id!r} (unknown, or ended more than "
                                        f"{state.settings.kiro_result_ttl:g} s ago)")
    return task.view(pool.position(task))


@router.post("/tasks/{task_id}/cancel")
async def cancel_task(task_id: str, pool: WorkerPool = Depends(running_pool)) -> dict:
    try:
        task = await pool.cancel(task_id)
    except KeyError:
        raise HTTPException(404, detail=f"no task {task_id!r}") from None
    except TaskEnded as exc:
        raise HTTPException(409, detail=str(exc)) from None
    return task.view(pool.position(task))


@router.post("/run", response_model=RunResult)
async def run(body: RunRequest, state: PoolState = Depends(pool_state)) -> dict:
    """Run the repository's test command in the job's worktree, as the agent (ec2_services.worker_pool.commands)."""
    if _FORBIDDEN_CONTROLS.search(body.command):
        raise _bad_request("command holds a control character")
    cwd = check_cwd(body.cwd, state.settings.kiro_workspace_root)
    try:
        result = await state.runner.run(body.task_id, body.command, cwd=cwd, timeout_s=body.timeout_s)
    except ValueError as exc:
        raise _bad_request(str(exc)) from None
    return {"task_id": body.task_id, **result.model_dump()}
