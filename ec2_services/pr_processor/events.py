"""A job's lines: its own events and the agent's output, kept in the store (its last lines for ``log_tail``, all of
them in its transcript file) and fanned out live to Server-Sent Events subscribers. Every line is redacted by the store
before anyone sees it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from ec2_services.pr_processor.store.job_log import JobLog
from ec2_services.pr_processor.store.jobs import Jobs

log = logging.getLogger(__name__)

_END = (-1, "")
HEARTBEAT_S = 15.0


class JobEvents:
    def __init__(self, job_log: JobLog, jobs: Jobs):
        self._log = job_log
        self._jobs = jobs
        self._subscribers: dict[str, set[asyncio.Queue[tuple[int, str]]]] = {}
        self._end_listeners: list[Callable[[str], None]] = []

    def on_end(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(job_id)`` (on the event loop) whenever a job reaches a final state."""
        self._end_listeners.append(listener)

    def event(self, job_id: str, message: str, *, level: int = logging.INFO) -> None:
        """A job event: logged with the job id, stored, streamed."""
        log.log(level, "%s", message, extra={"job_id": job_id})
        self._publish(job_id, [f"[aipm] {part}" for part in message.splitlines() if part.strip()] or ["[aipm]"])

    def agent_output(self, job_id: str, text: str) -> None:
        lines = [f"[agent] {line}" for line in text.splitlines() if line.strip()]
        if lines:
            self._publish(job_id, lines)

    def _publish(self, job_id: str, lines: list[str]) -> None:
        stored = self._log.append(job_id, lines)
        subscribers = self._subscribers.get(job_id)
        if subscribers:
            for item in stored:
                for queue in subscribers:
                    queue.put_nowait(item)

    def ended(self, job_id: str) -> None:
        for queue in self._subscribers.get(job_id, ()):
            queue.put_nowait(_END)
        for listener in self._end_listeners:
            try:
                listener(job_id)
            except Exception:  # a listener's bug must not stop the job's end from being recorded
                log.exception("job-end listener failed", extra={"job_id": job_id})

    async def stream(self, job_id: str) -> AsyncIterator[tuple[int, str] | None]:
        """Every stored line of the job, then new ones as they come, until the job ends; None = still alive."""
        queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        self._subscribers.setdefault(job_id, set()).add(queue)
        try:
            last = 0
            # The whole transcript (a file read) off the event loop.
            for item in await asyncio.to_thread(self._log.lines, job_id, last=None):
                last = item[0]
                yield item
            job = self._jobs.get(job_id)
            if job is None or job.status.final:
                return
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield None
                    continue
                if item == _END:
                    return
                if item[0] > last:
                    last = item[0]
                    yield item
        finally:
            subscribers = self._subscribers.get(job_id)
            if subscribers is not None:
                subscribers.discard(queue)
                if not subscribers:
                    self._subscribers.pop(job_id, None)
