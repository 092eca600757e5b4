"""How many jobs run at once, which runs next, cancel, and taking jobs up again after a restart.

Owns the running job tasks. Capacity is the worker pool's ``pool_size`` (re-read from its /health now and then;
``FALLBACK_CAPACITY`` while it does not answer). Queued jobs start oldest first. It must not run git or the agent
itself: that is the runner's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ec2_services.pr_processor import metrics
from ec2_services.pr_processor.events import JobEvents
from ec2_services.pr_processor.pool_client import PoolClient, PoolUnreachable
from ec2_services.pr_processor.runner import JobRunner
from ec2_services.pr_processor.state_machine import JobState
from ec2_services.pr_processor.store.jobs import Job, Jobs

log = logging.getLogger(__name__)

FALLBACK_CAPACITY = 2  # the default KIRO_POOL_SIZE (docs/contracts.md)
CAPACITY_REFRESH_S = 30.0
CANCEL_WAIT_S = 10.0


class CancelRefused(Exception):
    """The job cannot be cancelled (it has ended, or its commit is already being pushed)."""


class Scheduler:
    def __init__(self, store: Jobs, runner: JobRunner, pool: PoolClient, events: JobEvents):
        self.store = store
        self.runner = runner
        self.pool = pool
        self.events = events
        self.capacity = FALLBACK_CAPACITY
        self.pool_reachable = False
        self._capacity_at = 0.0
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._last_depth: int | None = None

    async def start(self) -> None:
        await self.refresh_capacity()
        for job in self.store.in_states(JobState.RUNNING, JobState.PUSHING):
            log.info("recovering job %s left %s", job.job_id, job.status.value, extra={"job_id": job.job_id})
            self._spawn(job.job_id, recovering=True)
        self._loop_task = asyncio.create_task(self._loop(), name="pr-scheduler")

    async def stop(self) -> None:
        tasks = [t for t in (self._loop_task, *self._tasks.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def wake(self) -> None:
        self._wake.set()

    async def refresh_capacity(self) -> None:
        size = await self.pool.pool_size()
        self.pool_reachable = size is not None
        if size is not None and size != self.capacity:
            log.info("worker pool capacity: %d", size)
            self.capacity = size
        self._capacity_at = time.monotonic()

    async def _loop(self) -> None:
        while True:
            try:
                if time.monotonic() - self._capacity_at > CAPACITY_REFRESH_S:
                    await self.refresh_capacity()
                self._dispatch()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=5)
            self._wake.clear()

    def _dispatch(self) -> None:
        queued = self.store.in_states(JobState.QUEUED)
        for job in queued:
            if len(self._tasks) >= self.capacity:
                break
            if job.job_id in self._tasks:
                continue
            self.store.transition(job.job_id, JobState.RUNNING)
            self._spawn(job.job_id, recovering=False)
        depth = len(self.store.in_states(JobState.QUEUED))
        if depth != self._last_depth:
            self._last_depth = depth
            metrics.queue_depth(depth)

    def _spawn(self, job_id: str, *, recovering: bool) -> None:
        task = asyncio.create_task(self.runner.run(job_id, recovering=recovering), name=f"job-{job_id}")
        self._tasks[job_id] = task

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.pop(job_id, None)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("job task %s crashed", job_id, exc_info=finished.exception(), extra={"job_id": job_id})
            self.wake()

        task.add_done_callback(done)

    async def cancel(self, job_id: str) -> Job:
        """Stop a job: a queued one at once, a running one by cancelling its agent task. KeyError when unknown."""
        job = self.store.get(job_id)
        if job is None:
            raise KeyError(job_id)
        if job.status.final:
            raise CancelRefused(f"job {job_id} has already ended ({job.status.value})")
        if job.status is JobState.PUSHING:
            raise CancelRefused(f"job {job_id} is pushing its commit to {job.branch}; it can no longer be cancelled")
        if job.status is JobState.QUEUED:
            job = self.store.transition(job_id, JobState.CANCELLED, error="cancelled on request before it started")
            self.events.event(job_id, "cancelled while queued")
            self.events.ended(job_id)
            metrics.job_ended(job.status.value, None)
            self.wake()
            return job
        self.store.update(job_id, cancel_requested=1)
        self.events.event(job_id, "cancel requested")
        await self._cancel_pool_task(job_id)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while time.monotonic() < deadline:
            job = self.store.get(job_id)
            assert job is not None
            if job.status.final:
                break
            await asyncio.sleep(0.05)
        return job

    async def _cancel_pool_task(self, job_id: str) -> None:
        # The runner names the task just before its /execute reaches the pool: a 404 right then means "not yet".
        for _ in range(40):
            task_id = self.runner.executing.get(job_id)
            if task_id is None:
                return  # between steps: the runner sees cancel_requested at its next check
            try:
                code = await self.pool.cancel(task_id)
            except PoolUnreachable:
                log.warning("could not reach the worker pool to cancel %s", task_id, extra={"job_id": job_id})
                return
            if code != 404:
                return
            await asyncio.sleep(0.05)
