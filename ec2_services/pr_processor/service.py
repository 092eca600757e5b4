"""The PR processor as the routes see it: submit, read, list, cancel, stream; and the parts it is built from.

Owns wiring (store, git, pool client, runner, scheduler, callback outbox) and the job's JSON shape (docs/contracts.md).
Routes call only this; it holds no HTTP detail beyond the errors it raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from ec2_services.pr_processor.backup import Backups, backups_dir
from ec2_services.pr_processor.callbacks import CallbackSender
from ec2_services.pr_processor.events import JobEvents
from ec2_services.pr_processor.git_ops import GitOps
from ec2_services.pr_processor.models import JOB_ID_RE, ProcessPrRequest, parse_requested_by
from ec2_services.pr_processor.pool_client import PoolClient
from ec2_services.pr_processor.retention import Retention
from ec2_services.pr_processor.runner import JobRunner
from ec2_services.pr_processor.scheduler import CancelRefused, Scheduler
from ec2_services.pr_processor.settings import PrProcessorSettings
from ec2_services.pr_processor.state_machine import JobState
from ec2_services.pr_processor.store import JobStore
from ec2_services.pr_processor.store.job_log import LOG_TAIL_LINES
from ec2_services.pr_processor.store.jobs import BranchBusy, Job, rfc3339


def rerun_root(job_id: str) -> str:
    """The id of a branch's first job, from the id of any of its runs (``j-abc-r3`` → ``j-abc``)."""
    return re.sub(r"-r\d+$", "", job_id)


class JobConflict(Exception):
    """409: a live job on the branch, or a cancel of what cannot be cancelled."""


class ProcessorService:
    def __init__(self, settings: PrProcessorSettings, secret: str | None):
        assert settings.pr_processor_db is not None and settings.kiro_workspace_root is not None
        self.settings = settings
        self.store = JobStore(settings.pr_processor_db, transcripts=settings.aipm_state_dir / "transcripts")
        self.events = JobEvents(self.store.log, self.store.jobs)
        self.git = GitOps(
            base_url=settings.git_base_url, token=settings.token, state_dir=settings.aipm_state_dir,
            workspace_root=settings.kiro_workspace_root, author_name=settings.git_author_name,
            author_email=settings.git_author_email,
        )
        self.pool = PoolClient(settings.worker_pool_url, secret)
        self.runner = JobRunner(self.store.jobs, self.events, self.git, self.pool, max_attempts=settings.pr_max_attempts,
                                retry_base_delay=settings.pr_retry_base_delay,
                                pool_busy_wait=settings.pr_pool_busy_wait, pool_down_wait=settings.pr_pool_down_wait,
                                test_command=settings.aipm_test_command, test_timeout=settings.aipm_test_timeout)
        self.scheduler = Scheduler(self.store.jobs, self.runner, self.pool, self.events)
        self.callbacks = CallbackSender(self.store.outbox, secret, base_delay=settings.pr_retry_base_delay,
                                        max_age=settings.pr_callback_max_age)
        self._outbox_task: asyncio.Task[None] | None = None
        self.retention = Retention(self.store, days=settings.pr_job_retention_days)
        self._retention_task: asyncio.Task[None] | None = None
        self.backups = Backups(settings.pr_processor_db, backups_dir(settings.aipm_state_dir))
        self._backup_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.scheduler.start()
        self._outbox_task = asyncio.create_task(self.callbacks.run_forever(), name="pr-callbacks")
        self._retention_task = asyncio.create_task(self.retention.run_forever(), name="pr-retention")
        self._backup_task = asyncio.create_task(self.backups.run_forever(), name="pr-backup")

    async def stop(self) -> None:
        await self.scheduler.stop()
        for task in (self._outbox_task, self._retention_task, self._backup_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.callbacks.aclose()
        await self.pool.aclose()
        self.store.close()

    # --- what the routes call ---------------------------------------------------------------------------------

    def submit(self, request: ProcessPrRequest, *, message: tuple[str, str] | None = None) -> tuple[Job, bool]:
        """Validate (raises InvalidInput) and store the job; ``(job, created)``. Raises JobConflict on a busy branch.

        ``message``: the job queue message's ``(id, receipt handle)``, stored with a new job (AIPM_DISPATCH=sqs)."""
        request.validate_rules(self.settings.callback_origins)
        try:
            job, created = self.store.jobs.create(
                job_id=request.job_id, repo=request.repo, branch=request.branch, base_branch=request.base_branch,
                pr_number=request.pr_number, task_file=request.task_file, callback_url=request.callback_url,
                requested_by=request.requested_by, message=message, title=request.title,
            )
        except BranchBusy as exc:
            raise JobConflict(
                f"branch {request.branch} of {request.repo} already has a live job ({exc.job_id}); "
                "wait for it to end or cancel it"
            ) from exc
        if created:
            self.events.event(job.job_id, f"accepted: {job.repo} {job.branch} (task {job.task_file})")
            self.scheduler.wake()
        return job, created

    def rerun(self, job_id: str, *, requested_by: str | None = None) -> Job:
        """A new job on the ended job's branch and pull request (``<first job id>-r<n>``, n counting every run of the
        branch); the earlier runs stay as they are. KeyError: no such job; JobConflict: it is still live, or another
        job is live on its branch."""
        job = self.store.jobs.get(job_id)
        if job is None:
            raise KeyError(job_id)
        if job.status.live:
            raise JobConflict(f"job {job_id} is still {job.status.value}: a job is re-run once it has ended "
                              "(cancel it first to start again now)")
        runs = self.store.jobs.branch_jobs(job.repo, job.branch)
        new_id = f"{rerun_root(runs[0].job_id if runs else job_id)}-r{len(runs) + 1}"
        if not JOB_ID_RE.fullmatch(new_id):
            raise JobConflict(f"job {job_id} cannot be re-run: the new job id {new_id!r} would be too long")
        if requested_by is not None:
            parse_requested_by(requested_by)  # InvalidInput (400) for anything that could break a trailer
        try:
            new, _ = self.store.jobs.create(
                job_id=new_id, repo=job.repo, branch=job.branch, base_branch=job.base_branch,
                pr_number=job.pr_number, task_file=job.task_file, callback_url=job.callback_url,
                requested_by=requested_by or job.requested_by, title=job.title, rerun_of=job.job_id)
        except BranchBusy as exc:
            raise JobConflict(f"branch {job.branch} of {job.repo} already has a live job ({exc.job_id}); "
                              "wait for it to end or cancel it") from exc
        self.events.event(new.job_id, f"accepted: re-run of {job.job_id} ({job.status.value}) on {job.repo} "
                                      f"{job.branch} (run {len(runs) + 1})")
        self.scheduler.wake()
        return new

    def get(self, job_id: str) -> Job | None:
        return self.store.jobs.get(job_id)

    def list(self, *, limit: int, status: JobState | None, repo: str | None = None,
             before: int | None = None) -> list[Job]:
        return self.store.jobs.list(limit=limit, status=status, repo=repo, before=before)

    async def cancel(self, job_id: str) -> Job:
        try:
            return await self.scheduler.cancel(job_id)
        except CancelRefused as exc:
            raise JobConflict(str(exc)) from exc

    def health(self) -> dict[str, Any]:
        counts = self.store.jobs.counts()
        store_error = self.store.write_error
        return {
            # "degraded" while the job database refuses writes (jobs cannot be accepted).
            "status": "degraded" if store_error else "ok",
            "jobs": {"queued": counts.get("queued", 0), "running": counts.get("running", 0) + counts.get("pushing", 0)},
            "worker_pool": "ok" if self.scheduler.pool_reachable else "unreachable",
            "job_store": f"unwritable: {store_error}" if store_error else "ok",
        }

    async def refresh_pool(self) -> None:
        await self.scheduler.refresh_capacity()

    def to_json(self, job: Job) -> dict[str, Any]:
        return {
            "job_id": job.job_id,
            "seq": job.seq,
            "title": job.title,
            "repo": job.repo,
            "branch": job.branch,
            "status": job.status.value,
            "attempts": job.attempts,
            "commit": job.commit_sha,
            "error": job.error,
            "created_at": rfc3339(job.created_at),
            "updated_at": rfc3339(job.updated_at),
            "started_at": rfc3339(job.started_at),
            "ended_at": rfc3339(job.ended_at),
            "pr_number": job.pr_number,
            "rerun_of": job.rerun_of,
            "runs": self._runs(job),
            "timeline": self._timeline(job),
            "log_tail": self._log_tail(job),
            "queue_position": self.store.jobs.queue_position(job),
            "credits": job.credits,
            "tokens": job.tokens_used,
            "duration_s": job.duration_s,
            "tests": job.tests_result,
            "callback": self.store.outbox.status(job.job_id),
        }

    def _log_tail(self, job: Job) -> str:
        """The job's last lines: its stored events and answers, then (while the agent works) its latest lines."""
        lines = [line for _, line in self.store.log.lines(job.job_id)]
        live = self.runner.live_output.get(job.job_id)
        if live:
            lines += [f"[agent] {line}" for line in live.splitlines()]
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def _runs(self, job: Job) -> list[dict[str, Any]]:
        """Every run of the job's branch, oldest first (the attempt history a re-run keeps); the last is the newest."""
        return [{"job_id": run.job_id, "status": run.status.value, "created_at": rfc3339(run.created_at),
                 "commit": run.commit_sha} for run in self.store.jobs.branch_jobs(job.repo, job.branch)]

    def _timeline(self, job: Job) -> list[dict[str, Any]]:
        """queued → running → pushing → final, each with the time the job entered it (a job stored before states
        were recorded shows what its own times tell)."""
        states = self.store.timeline.states(job.job_id)
        if not states:
            states = [("queued", job.created_at)]
            if job.started_at is not None:
                states.append(("running", job.started_at))
            if job.status.final and job.ended_at is not None:
                states.append((job.status.value, job.ended_at))
        return [{"status": status, "at": rfc3339(ts)} for status, ts in states]

    def transcript(self, job: Job, *, after: int, limit: int) -> dict[str, Any]:
        """The job's stored lines after line ``after`` (a page of ``limit``), and while the agent works its latest
        lines, not stored yet (``live``). ``next`` is the id to ask after; ``complete`` once the job has ended and
        every stored line was given."""
        page = self.store.log.page(job.job_id, after_id=after, limit=limit)
        last = page[-1][0] if page else after
        more = len(page) == limit
        live = None if more else self.runner.live_output.get(job.job_id)
        return {
            "job_id": job.job_id,
            "status": job.status.value,
            "lines": [{"id": line_id, "at": rfc3339(ts), "text": text} for line_id, ts, text in page],
            "live": live or None,
            "next": last,
            "complete": job.status.final and not more,
        }

    def stream(self, job_id: str) -> AsyncIterator[tuple[int, str] | None]:
        return self.events.stream(job_id)
