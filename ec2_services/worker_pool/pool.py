"""The pool: ``KIRO_POOL_SIZE`` workers, the FIFO queue in front of them and the registry of tasks by ``task_id``.

Owns each worker's life (start, respawn after a timeout, an exit or a death while idle — counted in ``restarts``),
the order in which waiting tasks get a worker, the queue limit, cancellation, and the results kept for replays
(``KIRO_RESULT_TTL``, 600 s): a ``task_id`` runs at most once. It talks to agents only through the
``AgentDriver`` interface (``drivers/base.py``), so another driver plugs in via ``drivers.make_driver`` alone.

How ``cwd`` is honoured: under the PTY driver sessions are persistent and start in ``KIRO_WORKSPACE_ROOT``; a task
with a ``cwd`` gets one line in front of its prompt naming that absolute directory and telling the agent to work
only there. Restarting the agent per workspace would cost its start-up (seconds, MCP servers) on every task and
lose nothing the ``/clear`` between tasks does not already reset; the PR processor's own prompt names absolute
paths as well. A driver that ``honours_cwd`` (ACP: ``session/new`` takes a cwd) gets the directory and the bare prompt.

Everything runs on one event loop; nothing here blocks it. It must not know HTTP (that is ``app.py``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from aipm_common.logging import log_context
from ec2_services.worker_pool import metrics
from ec2_services.worker_pool.drivers import DriverFactory
from ec2_services.worker_pool.drivers.base import (
    AgentDriver,
    DriverState,
    StartError,
    TurnError,
    TurnResult,
    TurnTimeout,
    UnsupportedAgent,
)
from ec2_services.worker_pool.settings import WorkerPoolSettings

log = logging.getLogger(__name__)

HTTP_STATUS = {"completed": 200, "timeout": 504, "agent_exited": 502, "agent_error": 503, "cancelled": 499}


class TaskState(enum.StrEnum):
    """A task's life in the pool: queued → running → ended (a queued task may also end at once: cancelled)."""

    QUEUED = "queued"
    RUNNING = "running"
    ENDED = "ended"


class WorkerState(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    RESTARTING = "restarting"


class QueueFull(Exception):
    def __init__(self, limit: int, retry_after: int):
        super().__init__(f"{limit} requests are already waiting for a worker (KIRO_QUEUE_LIMIT); try again later")
        self.retry_after = retry_after


class PoolUnavailable(Exception):
    """No worker can take a task: every agent session failed to start."""


class TaskEnded(Exception):
    """Cancelling what has already ended."""


def cwd_instruction(cwd: Path) -> str:
    """The line put in front of a task's prompt when it names a working directory."""
    return (
        f"Your working directory for this task is {json.dumps(str(cwd))}. Work only inside it: change to it before "
        "running commands and create or edit files only under it.\n\n"
    )


@dataclass
class Task:
    task_id: str
    text: str  # what is typed: never logged, never shown by /health
    timeout_s: float
    cwd: Path | None = None
    accepted_at: float = field(default_factory=time.monotonic)
    state: TaskState = TaskState.QUEUED
    worker_id: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    body: dict | None = None
    recorded: bool = False  # its end logged and counted (once, however many times it is finished)
    driver: AgentDriver | None = None
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def http_status(self) -> int | None:
        return HTTP_STATUS[self.body["status"]] if self.body else None

    def elapsed(self) -> float:
        start = self.started_at if self.started_at is not None else self.accepted_at
        return round((self.ended_at or time.monotonic()) - start, 3)

    def finish(self, status: str, result: TurnResult, *, detail: str | None = None, **extra: object) -> None:
        if self.body is not None:
            return  # answered already (the pool stopping): the driver's own end changes nothing
        self.ended_at = time.monotonic()
        self.state = TaskState.ENDED
        body: dict[str, object] = {"status": status, "task_id": self.task_id}
        if detail:
            body["detail"] = detail
        body.update(
            worker_id=self.worker_id,
            output=result.output,
            approvals=result.approvals,
            denials=result.denials,
            duration_s=self.elapsed(),
            credits=result.credits,
            tokens=result.tokens,
            trouble_retries=result.trouble_retries,
            **extra,
        )
        self.body = body
        self.driver = None
        if not self.done.done():
            self.done.set_result(body)

    def view(self, position: int | None = None) -> dict:
        """``GET /tasks/{task_id}``: the state, and once ended the body ``/execute`` answered."""
        if self.body is not None:
            return {"task_id": self.task_id, "state": TaskState.ENDED.value, "http_status": self.http_status, **self.body}
        return {
            "task_id": self.task_id,
            "state": self.state.value,
            "status": self.state.value,
            "worker_id": self.worker_id,
            "queue_position": position,
            "duration_s": self.elapsed(),
            # For progress: the agent's latest answer lines while it works.
            "output_tail": "\n".join(self.driver.output_tail(PROGRESS_LINES)) if self.driver else "",
        }


PROGRESS_LINES = 20


@dataclass
class Worker:
    id: int
    driver: AgentDriver
    state: WorkerState = WorkerState.STARTING
    tasks_completed: int = 0
    restarts: int = 0
    current_task: str | None = None
    # Why the last start failed, while it keeps failing (None once the agent reached its prompt).
    start_error: str | None = None

    def health(self) -> dict:
        return {
            "id": self.id,
            "state": self.state.value,
            "pid": self.driver.pid,
            "tasks_completed": self.tasks_completed,
            "restarts": self.restarts,
            "current_task": self.current_task,
            "agent_version": self.driver.agent_version,
            "agent_engine": self.driver.agent_engine,
        }


class WorkerPool:
    def __init__(self, settings: WorkerPoolSettings, driver_factory: DriverFactory, *, cancel_wait: float = 15.0):
        self.settings = settings
        self.workers = [Worker(i, driver_factory(i)) for i in range(1, settings.kiro_pool_size + 1)]
        self._tasks: dict[str, Task] = {}
        self._waiting: collections.deque[Task] = collections.deque()
        self._idle: collections.deque[asyncio.Future] = collections.deque()
        self._runners: list[asyncio.Task] = []
        self._closing = False
        self._cancel_wait = cancel_wait
        self._durations: collections.deque[float] = collections.deque(maxlen=50)
        self._closed = asyncio.Event()

    # ---- life --------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.settings.kiro_workspace_root.mkdir(parents=True, exist_ok=True)
        self._runners = [asyncio.create_task(self._worker_loop(w), name=f"worker-{w.id}") for w in self.workers]

    def begin_stop(self) -> None:
        """The service is stopping (a signal): take no more tasks and answer every task not ended now, 503
        ``agent_error`` — a caller retries that; a cancel (499) would end its job. Agents are stopped by ``close``."""
        if self._closing:
            return
        self._closing = True
        self._closed.set()
        for fut in self._idle:
            fut.cancel()
        stopping = "the worker pool is stopping (a restart or a deploy); send the task again"
        for task in self._tasks.values():
            if task.state is not TaskState.ENDED:
                task.finish("agent_error", TurnResult(""), detail=stopping)
                self._record_end(task)
        self._waiting.clear()
        log.info("stopping: no more tasks taken, every open task answered")

    async def close(self) -> None:
        self.begin_stop()
        for runner in self._runners:
            runner.cancel()
        await asyncio.gather(*self._runners, return_exceptions=True)
        await asyncio.gather(*(w.driver.stop() for w in self.workers), return_exceptions=True)

    async def _worker_loop(self, worker: Worker) -> None:
        backoff = 1.0
        while not self._closing:
            try:
                await worker.driver.start()
            except UnsupportedAgent as exc:
                # Starting it again would fail the same way: say why once, and leave the worker down.
                worker.start_error = str(exc)
                worker.state = WorkerState.RESTARTING
                with log_context(worker=worker.id):
                    log.error("worker %d: cannot drive this agent: %s", worker.id, exc,
                              extra={"fields": {"event": "agent_unsupported", "start_error": str(exc)}})
                self._fail_waiting_if_unavailable()
                await self._closed.wait()
                return
            except StartError as exc:
                worker.start_error = str(exc)
                self._restarted(worker, f"could not start the agent: {exc}", start_error=str(exc))
                self._fail_waiting_if_unavailable()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 1.0
            worker.start_error = None
            while worker.driver.state is not DriverState.EXITED and not self._closing:
                worker.state = WorkerState.IDLE
                task = await self._take(worker)
                if task is None:
                    break
                await self._execute(worker, task)
                if worker.driver.state is DriverState.IDLE:
                    await worker.driver.reset()
            if not self._closing:
                self._restarted(worker, "the agent exited; starting a new session")

    def _restarted(self, worker: Worker, why: str, *, start_error: str | None = None) -> None:
        worker.state = WorkerState.RESTARTING
        worker.restarts += 1
        # `start_error`: the agent's start failure on its own, for a reader of the log (`make run` says it).
        fields = {"event": "worker_restart", **({"start_error": start_error} if start_error else {})}
        with log_context(worker=worker.id):
            log.warning("worker %d: %s (restart %d)", worker.id, why, worker.restarts, extra={"fields": fields})
        metrics.emit("worker restart", {"WorkerRestarts": (1, "Count")}, worker=worker.id)

    # ---- queue -------------------------------------------------------------------------------------------

    async def _take(self, worker: Worker) -> Task | None:
        """The oldest waiting task, once there is one; ``None`` if the agent exits (or the pool closes) first."""
        if self._waiting:
            return self._waiting.popleft()
        offer = asyncio.get_running_loop().create_future()
        self._idle.append(offer)
        exited = asyncio.ensure_future(worker.driver.wait_exited())
        try:
            await asyncio.wait({offer, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        if offer.done() and not offer.cancelled():
            task = offer.result()
            if worker.driver.state is DriverState.EXITED:  # died at the very moment it was offered a task
                self._waiting.appendleft(task)
                self._dispatch()
                return None
            return task
        offer.cancel()
        with_offer = [f for f in self._idle if f is not offer]
        self._idle = collections.deque(with_offer)
        return None

    def _dispatch(self) -> None:
        while self._waiting and self._idle:
            offer = self._idle.popleft()
            if not offer.done():
                offer.set_result(self._waiting.popleft())

    def _idle_offers(self) -> int:
        return sum(1 for fut in self._idle if not fut.done())

    def submit(self, task_id: str, prompt: str, *, cwd: Path | None, timeout_s: float | None) -> Task:
        """The task with this id: the one already known (queued, running, or ended within the TTL), or a new one."""
        self._forget_expired()
        known = self._tasks.get(task_id)
        if known is not None:
            log.info("task %s replayed (%s): answering its result, not running it again", task_id, known.state.value)
            return known
        if self._closing:
            raise QueueFull(0, 5)
        if self._unavailable():
            raise PoolUnavailable(self._unavailable())
        if not self._idle_offers() and len(self._waiting) >= self.settings.kiro_queue_limit:
            raise QueueFull(self.settings.kiro_queue_limit, self._retry_after())
        limit = self.settings.kiro_task_timeout
        native_cwd = self.workers[0].driver.honours_cwd  # one factory made them all: one kind of driver
        task = Task(
            task_id=task_id,
            text=(cwd_instruction(cwd) if cwd and not native_cwd else "") + prompt,
            timeout_s=min(timeout_s, limit) if timeout_s else limit,
            cwd=cwd,
        )
        self._tasks[task_id] = task
        self._waiting.append(task)
        with log_context(task_id=task_id):
            log.info("task accepted (%d waiting)", len(self._waiting), extra={"fields": {"event": "task_accepted"}})
        self._dispatch()
        metrics.queue_depth(len(self._waiting))
        return task

    def _unavailable(self) -> str | None:
        """Why no task can run now (every worker's last start failed), or None."""
        if all(w.start_error for w in self.workers):
            return f"no agent session could be started ({self.workers[0].start_error}); see the service log"
        return None

    def _fail_waiting_if_unavailable(self) -> None:
        why = self._unavailable()
        if why:
            for task in list(self._waiting):
                task.finish("agent_error", TurnResult(""), detail=why)
                self._record_end(task)
            self._waiting.clear()

    def _retry_after(self) -> int:
        # About one task's time per free slot ahead: the mean of recent durations, within sane bounds.
        mean = sum(self._durations) / len(self._durations) if self._durations else 30.0
        return int(min(max(mean, 1.0), 300.0))

    def _forget_expired(self) -> None:
        cutoff = time.monotonic() - self.settings.kiro_result_ttl
        for task_id in [t.task_id for t in self._tasks.values() if t.ended_at is not None and t.ended_at < cutoff]:
            del self._tasks[task_id]

    def get(self, task_id: str) -> Task | None:
        self._forget_expired()
        return self._tasks.get(task_id)

    def position(self, task: Task) -> int | None:
        for index, waiting in enumerate(self._waiting, start=1):
            if waiting is task:
                return index
        return None

    async def cancel(self, task_id: str) -> Task:
        task = self.get(task_id)
        if task is None:
            raise KeyError(task_id)
        if task.state is TaskState.ENDED:
            raise TaskEnded(f"task {task_id} has already ended ({task.body['status'] if task.body else 'ended'})")
        with log_context(task_id=task_id, worker=task.worker_id):
            log.info("cancel requested while %s", task.state.value, extra={"fields": {"event": "task_cancel"}})
            if task.state is TaskState.QUEUED:
                self._waiting.remove(task)
                task.finish("cancelled", TurnResult(""), detail="cancelled while waiting for a worker")
                self._record_end(task)
            elif task.driver is not None:
                task.driver.cancel()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task.done), self._cancel_wait)
        return task

    # ---- running -----------------------------------------------------------------------------------------

    async def _execute(self, worker: Worker, task: Task) -> None:
        task.state = TaskState.RUNNING
        task.worker_id = worker.id
        task.started_at = time.monotonic()
        task.driver = worker.driver
        worker.state = WorkerState.BUSY
        worker.current_task = task.task_id
        with log_context(task_id=task.task_id, worker=worker.id):
            log.info("task started on worker %d (timeout %g s)", worker.id, task.timeout_s,
                     extra={"fields": {"event": "task_started"}})
            try:
                result = await worker.driver.run(task.text, timeout_s=task.timeout_s, cwd=task.cwd)
            except TurnTimeout as exc:
                task.finish(exc.status, exc.partial, detail=exc.detail, stalled=exc.stalled)
            except TurnError as exc:
                task.finish(exc.status, exc.partial, detail=exc.detail)
            except Exception as exc:  # a driver bug must not take the worker down with it
                log.exception("worker %d: driver failed", worker.id)
                await worker.driver.stop()
                task.finish("agent_error", TurnResult(""), detail=f"internal error in the agent driver: {exc}")
            else:
                task.finish("completed", result)
                worker.tasks_completed += 1
            finally:
                worker.current_task = None
            self._record_end(task)

    def _record_end(self, task: Task) -> None:
        assert task.body is not None
        if task.recorded:
            return
        task.recorded = True
        status = task.body["status"]
        duration = float(task.body["duration_s"])
        if status == "completed":
            self._durations.append(duration)
        log.info(
            "task %s: %s in %.2f s (%d approvals, %d denials)",
            task.task_id,
            status,
            duration,
            task.body["approvals"],
            task.body["denials"],
            extra={"fields": {"event": "task_ended", "status": status, "duration_s": duration}},
        )
        name = "TasksCompleted" if status == "completed" else "TasksFailed"
        metrics.emit(
            f"task {status}", {name: (1, "Count"), "TaskDuration": (duration, "Seconds")}, status=status
        )

    # ---- reading -----------------------------------------------------------------------------------------

    def health(self) -> dict:
        workers = [w.health() for w in self.workers]
        healthy = all(w["state"] in ("idle", "busy") for w in workers)
        return {
            "status": "ok" if healthy else "degraded",
            "pool_size": len(self.workers),
            "queue_depth": len(self._waiting),
            "workers": workers,
        }
