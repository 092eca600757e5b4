"""A small worker pool for the PR processor's tests: the endpoints of docs/contracts.md, signed, with behaviour each test scripts.

It is a real FastAPI app on loopback. Each job's attempts follow a list of ``Plan``s (the last one repeats): write files
into the task's cwd, commit there as the agent would, run a callable, sleep, hang until cancelled, answer an error code.
Tasks keep running when the caller goes away (like the real pool), and a replayed task_id waits for the same task.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from aipm_common.http import install_edge
from aipm_common.signing import WORKER_POOL, SignatureVerifier
from tests.support.servers import serve_in_thread

ERROR_STATUS = {502: "agent_exited", 503: "agent_error", 504: "timeout"}


@dataclass
class Plan:
    files: dict[str, str] = field(default_factory=dict)
    commit_message: str | None = None  # the agent commits by itself
    action: Callable[[Path], None] | None = None
    sleep: float = 0.0
    hang: bool = False
    status: int = 200
    output: str = "> I made the change.\nAll tests pass."
    credits: float | None = 1.25
    tokens: dict | None = None  # the agent's model tokens, as the pool reports Gemini CLI's
    detail: str | None = None  # an error answer's detail (the real pool's carries the agent's own words)


@dataclass
class _Task:
    task_id: str
    body: dict[str, Any]
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    status_code: int = 0
    result: dict[str, Any] = field(default_factory=dict)


class FakePool:
    def __init__(self, secret: str, pool_size: int = 2):
        self.secret = secret
        self.pool_size = pool_size
        self.plans: dict[str, list[Plan]] = {}
        self.busy_answers: dict[str, int] = {}
        self.replay_refusals: dict[str, str] = {}  # task id → the signature the pool says it took before a restart
        self.default = Plan()
        self.tasks: dict[str, _Task] = {}
        self.executes: list[dict[str, Any]] = []  # every /execute body received, replays included
        self.cancels: list[str] = []
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()

    def plan(self, job_id: str, *plans: Plan) -> None:
        self.plans[job_id] = list(plans)

    def busy(self, task_id: str, times: int) -> None:
        """The next ``times`` sends of ``task_id`` answer 429 (queue full), as the real pool does: not registered."""
        self.busy_answers[task_id] = times

    def refuse_replay(self, task_id: str) -> None:
        """The next send of ``task_id`` is refused 409 as an exact replay, and so is any later send carrying the very
        same signature: what the real pool answers to a request it took before a restart (its ledger)."""
        self.replay_refusals[task_id] = ""

    def started_tasks(self, job_id: str) -> list[str]:
        return [t for t in self.tasks if t.rsplit(".", 1)[0] == job_id]

    def _plan_for(self, task_id: str) -> Plan:
        job_id, _, attempt = task_id.rpartition(".")
        plans = self.plans.get(job_id) or [self.default]
        return plans[min(int(attempt) - 1, len(plans) - 1)]

    async def _run(self, task: _Task) -> None:
        plan = self._plan_for(task.task_id)
        cwd = Path(task.body["cwd"])
        started = time.monotonic()
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            for name, content in plan.files.items():
                path = cwd / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
            if plan.commit_message:
                await asyncio.to_thread(_agent_commit, cwd, plan.commit_message)
            if plan.action:
                await asyncio.to_thread(plan.action, cwd)
            if plan.hang:
                await task.cancelled.wait()
            elif plan.sleep:
                try:
                    await asyncio.wait_for(task.cancelled.wait(), plan.sleep)
                except TimeoutError:
                    pass
        finally:
            with self._lock:
                self.running -= 1
        duration = round(time.monotonic() - started, 3)
        if task.cancelled.is_set():
            task.status_code, task.result = 499, {"status": "cancelled", "worker_id": 1, "duration_s": duration,
                                                  "output": ""}
        elif plan.status == 200:
            task.status_code, task.result = 200, {"status": "completed", "worker_id": 1, "output": plan.output,
                                                  "approvals": 1, "denials": 0, "duration_s": duration,
                                                  "credits": plan.credits, "tokens": plan.tokens}
        else:
            task.status_code, task.result = plan.status, {"status": ERROR_STATUS.get(plan.status, "error"),
                                                          "worker_id": 1, "duration_s": duration,
                                                          "output": plan.output}
            if plan.detail:
                task.result["detail"] = plan.detail
        task.done.set()

    def app(self) -> FastAPI:
        app = FastAPI()
        install_edge(app)
        verify = SignatureVerifier(self.secret, WORKER_POOL)
        background: set[asyncio.Task[None]] = set()

        @app.get("/health")
        async def health():
            return {"status": "ok", "pool_size": self.pool_size, "queue_depth": 0, "workers": []}

        @app.post("/execute", dependencies=[Depends(verify)])
        async def execute(request: Request):
            body = await request.json()
            self.executes.append(body)
            refused = self.replay_refusals.get(body["task_id"])
            signature = request.headers.get("X-AIPM-Signature", "")
            if refused is not None and refused in ("", signature):
                self.replay_refusals[body["task_id"]] = signature
                return JSONResponse({"detail": f"task {body['task_id']!r}: this exact signed request was taken before "
                                               "the worker pool restarted; it is not run again"}, status_code=409)
            if self.busy_answers.get(body["task_id"], 0) > 0:
                self.busy_answers[body["task_id"]] -= 1
                return JSONResponse({"detail": "0 requests are already waiting for a worker", "worker_id": None,
                                     "duration_s": 0, "output": ""}, status_code=429, headers={"Retry-After": "1"})
            task = self.tasks.get(body["task_id"])
            if task is None:
                task = self.tasks[body["task_id"]] = _Task(body["task_id"], body)
                runner = asyncio.create_task(self._run(task))  # lives on if the caller goes away
                background.add(runner)
                runner.add_done_callback(background.discard)
            await task.done.wait()
            return JSONResponse(task.result, status_code=task.status_code)

        @app.get("/tasks/{task_id}", dependencies=[Depends(verify)])
        async def get_task(task_id: str):
            task = self.tasks.get(task_id)
            if task is None:
                return JSONResponse({"detail": f"no task {task_id}"}, status_code=404)
            state = "running" if not task.done.is_set() else task.result.get("status")
            return {"task_id": task_id, "state": state, **task.result}

        @app.post("/tasks/{task_id}/cancel", dependencies=[Depends(verify)])
        async def cancel(task_id: str):
            task = self.tasks.get(task_id)
            if task is None:
                return JSONResponse({"detail": f"no task {task_id}"}, status_code=404)
            if task.done.is_set():
                return JSONResponse({"detail": "task has ended"}, status_code=409)
            self.cancels.append(task_id)
            task.cancelled.set()
            return {"task_id": task_id, "status": "cancelling"}

        return app


def _agent_commit(cwd: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=cwd, check=True, capture_output=True)
    subprocess.run(
        ["git", "-c", "user.name=Agent", "-c", "user.email=agent@example.com", "commit", "-q", "-m", message],
        cwd=cwd, check=True, capture_output=True,
    )


@contextlib.contextmanager
def running_fake_pool(secret: str) -> Iterator[FakePool]:
    """A FakePool served on loopback (its base URL in ``pool.url``) until the block ends."""
    pool = FakePool(secret)
    with serve_in_thread(pool.app()) as url:
        pool.url = url  # type: ignore[attr-defined]
        yield pool
