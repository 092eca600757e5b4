"""One job from start to end: its attempts (retried with tenacity), the agent run, commit, push, salvage.

Owns the order of a job's steps and what each failure means (permanent → failed at once; transient → another attempt
after a backoff; cancelled → cancelled). Git goes through ``git_ops``, the agent through ``pool_client``, every status
change through ``Jobs.transition`` (the table is ``state_machine``'s). How many jobs run at once is the scheduler's business, not this module's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from aipm_common.logging import log_context, redact
from ec2_services.pr_processor import metrics, repo_tests
from ec2_services.pr_processor.events import JobEvents
from ec2_services.pr_processor.git_ops import GitError, GitOps, PushRefused, PushRejected, TaskFileRefused, Worktree
from ec2_services.pr_processor.models import InvalidInput, parse_requested_by
from ec2_services.pr_processor.pool_client import PoolAnswer, PoolClient, PoolUnreachable
from ec2_services.pr_processor.state_machine import InvalidTransition, JobState
from ec2_services.pr_processor.store.jobs import Job, Jobs
from ec2_services.pr_processor.store.outbox import OUTPUT_TAIL_CHARS

log = logging.getLogger(__name__)

_RETRYABLE_POOL_CODES = {429, 500, 502, 503, 504}
_CANCELLED_CODE = 499
WATCH_S = 1.0  # how often a running task's state is read from the pool for the job's event stream


class PermanentError(Exception):
    """Trying again cannot help (missing branch or task file, a conflict, a refused request)."""


class RetryableError(Exception):
    """This attempt failed; another one may succeed (agent timeout or exit, pool unreachable, push failure)."""


class JobCancelled(Exception):
    pass


@dataclass
class _Run:
    """What one job's run carries from attempt to attempt."""

    job_id: str
    reattach: bool
    first: bool = True
    wip_notes: list[str] = field(default_factory=list)


def _title(task_path: Path) -> str:
    try:
        with task_path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                text = re.sub(r"[^\w .,:;()'/+-]", "", line.strip().lstrip("#").strip())
                if text:
                    return text[:72]
    except OSError:
        pass
    return ""


def co_author(requested_by: str | None) -> str | None:
    """``Name <email>`` for a Co-authored-by trailer when the requester has an e-mail; None otherwise or if unsafe."""
    if not requested_by:
        return None
    try:
        name, email = parse_requested_by(requested_by)
    except InvalidInput:
        return None  # checked at the edge already; a record from before that check gets no trailer
    return f"{name} <{email}>" if email else None


def commit_message(job: Job, task_path: Path) -> str:
    title = _title(task_path) or f"implement {job.task_file}"
    pr = f" of PR #{job.pr_number}" if job.pr_number else ""
    author = co_author(job.requested_by)
    return (
        f"aipm: {title}\n\n"
        f"Changes made by the coding agent for the task in {job.task_file}{pr} (AIPM job {job.job_id}).\n\n"
        f"AIPM-Job: {job.job_id}\n"
        + (f"Co-authored-by: {author}\n" if author else "")
    )


def wip_message(job: Job, reason: str) -> str:
    return (
        f"wip: {job.task_file} (AIPM job {job.job_id}, attempt {job.attempts})\n\n"
        f"Work in progress saved after the attempt failed: {reason}.\n\n"
        f"AIPM-Job: {job.job_id}\n"
    )


def build_prompt(workspace: Path, task_path: Path, job: Job) -> str:
    return (
        f"Implement the task described in the file {task_path} .\n"
        f"The git work tree for this job is {workspace} (branch {job.branch}); it is your current directory, "
        f"and every change must be made inside it.\n"
        f"Read {task_path} first, then change the code, add or update tests, and run them if you can.\n"
        "Do not push, do not switch branches and do not edit git configuration: the AIPM service commits and "
        "pushes your changes when you finish."
    )


def _tools_refused(body: dict) -> str | None:
    """Why a turn that changed nothing did so, when the deny-list refused every tool the agent asked for."""
    denials, approvals = body.get("denials") or 0, body.get("approvals") or 0
    if denials and not approvals:
        return (f"the agent's tools were refused ({denials} refused by KIRO_DENY_TOOLS, none allowed), "
                "so it changed nothing")
    return None


class JobRunner:
    def __init__(self, store: Jobs, events: JobEvents, git: GitOps, pool: PoolClient, *,
                 max_attempts: int, retry_base_delay: float, pool_busy_wait: float = 3600,
                 pool_down_wait: float = 120, test_command: str = "", test_timeout: float = 600):
        self.store = store
        self.events = events
        self.git = git
        self.pool = pool
        self.max_attempts = max_attempts
        self.retry_base_delay = retry_base_delay
        self.pool_busy_wait = pool_busy_wait
        self.pool_down_wait = pool_down_wait
        self.test_command = test_command
        self.test_timeout = test_timeout
        # job_id → pool task id while the agent works on it (what cancel must stop).
        self.executing: dict[str, str] = {}
        # job_id → the agent's latest answer lines while it works (read from the pool; shown in log_tail, not stored:
        # the whole answer is stored once the task ends).
        self.live_output: dict[str, str] = {}

    # --- the whole job ----------------------------------------------------------------------------------------

    async def run(self, job_id: str, *, recovering: bool = False) -> None:
        """Drive the job to a final state. A CancelledError (service shutdown) leaves it for recovery."""
        with log_context(job_id=job_id):
            job = self.store.get(job_id)
            if job is None or job.status.final:
                return
            run = _Run(job_id=job_id, reattach=recovering and job.status is JobState.RUNNING)
            if recovering:
                self.events.event(job_id, f"service restarted: taking the job up again in state {job.status.value}")
            else:
                metrics.job_started()
            try:
                status, error = await self._with_retries(run)
            except asyncio.CancelledError:
                raise
            except JobCancelled:
                status, error = JobState.CANCELLED, "cancelled on request"
                await self._drop_attempt(job_id)
            except PermanentError as exc:
                status, error = JobState.FAILED, str(exc)
            except RetryableError as exc:
                attempts = self.store.get(job_id).attempts  # type: ignore[union-attr]
                status, error = JobState.FAILED, f"{exc} (gave up after {attempts} attempts)"
            except Exception as exc:  # a bug must still end the job, loudly
                log.exception("job %s: unexpected error", job_id)
                status, error = JobState.FAILED, f"internal error in the PR processor: {type(exc).__name__}: {exc}"
            if error and run.wip_notes and status is JobState.FAILED:
                error = f"{error}; {'; '.join(run.wip_notes)}"
            await self._finish(job_id, status, error)

    async def _with_retries(self, run: _Run) -> tuple[JobState, str | None]:
        def out_of_attempts(state: RetryCallState) -> bool:
            job = self.store.get(run.job_id)
            return job is None or job.attempts >= self.max_attempts

        def announce(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0
            self.events.event(run.job_id, f"attempt failed: {exc}; trying again in {wait:.1f} s", level=logging.WARNING)

        retrying = AsyncRetrying(
            stop=out_of_attempts,
            wait=wait_exponential_jitter(
                initial=self.retry_base_delay, exp_base=2, max=max(self.retry_base_delay * 64, 1), jitter=self.retry_base_delay
            ),
            retry=retry_if_exception_type(RetryableError),
            before_sleep=announce,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._attempt(run)
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    async def _finish(self, job_id: str, status: JobState, error: str | None) -> None:
        try:
            job = self.store.transition(job_id, status, error=error)
        except InvalidTransition:
            # Only a bug gets here; ending the job matters more than the state it should have had.
            log.exception("job %s cannot go to %s; failing it", job_id, status.value)
            job = self.store.transition(job_id, JobState.FAILED, error=f"internal error ({status.value}): {error}")
        self.events.event(job_id, f"job ended: {job.status.value}" + (f" — {job.error}" if job.error else ""),
                          level=logging.INFO if job.status is not JobState.FAILED else logging.WARNING)
        metrics.job_ended(job.status.value, job.duration_s)
        self.events.ended(job_id)
        await self.git.keep(job.repo, job_id, None)
        await self.git.maintain(job.repo)

    async def _drop_attempt(self, job_id: str) -> None:
        """After a cancel: the pool task and worktree of the last attempt must not outlive the job (restart case)."""
        job = self.store.get(job_id)
        if job is None or job.attempts == 0:
            return
        try:
            await self.pool.cancel(job.task_id)
        except PoolUnreachable:
            pass
        await self.git.remove_worktree_named(job.repo, job.task_id)

    # --- one attempt ------------------------------------------------------------------------------------------

    def _check_cancel(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        assert job is not None
        if job.cancel_requested:
            raise JobCancelled()
        return job

    async def _attempt(self, run: _Run) -> tuple[JobState, str | None]:
        job = self.store.get(run.job_id)
        assert job is not None
        if job.status is JobState.RUNNING:
            job = self._check_cancel(run.job_id)
        first, run.first = run.first, False
        if job.status is JobState.PUSHING:
            if not first:
                job = self.store.update(job.job_id, attempts=job.attempts + 1)
            self.events.event(job.job_id, f"pushing the recorded commit {job.commit_sha and job.commit_sha[:12]} again")
            return await self._push(job, None)
        wt = None
        if run.reattach:
            run.reattach = False
            wt = await self._reattach(job)
        if wt is None:
            job, tip = await self._next_attempt(job)
            finished = await self.git.job_commit(job.repo, tip, job.job_id)
            if finished:
                return self._found_on_branch(job, finished)
            job, wt = await self._new_workspace(job, tip)
        keep_worktree = False
        try:
            return await self._agent_and_commit(job, wt, run)
        except asyncio.CancelledError:
            keep_worktree = True  # service stopping: the next start re-attaches to this worktree
            raise
        finally:
            if not keep_worktree:
                await self.git.remove_worktree(wt)

    async def _next_attempt(self, job: Job) -> tuple[Job, str]:
        """Count the attempt and fetch the branch; the job and the branch's tip."""
        if job.attempts >= self.max_attempts:
            raise PermanentError(f"the service restarted during attempt {job.attempts} and no attempts are left")
        job = self.store.update(job.job_id, attempts=job.attempts + 1, tests=None)
        self.events.event(job.job_id, f"attempt {job.attempts}/{self.max_attempts}: fetching {job.repo} {job.branch}")
        return job, await self._git_step(self.git.fetch_branch(job.repo, job.branch))

    def _found_on_branch(self, job: Job, sha: str) -> tuple[JobState, str | None]:
        """The branch already holds this job's commit: another processor ran the job (with AIPM_DISPATCH=sqs, a
        host that died after pushing, before its queue message was deleted). The job is done; nothing runs again."""
        self.store.transition(job.job_id, JobState.PUSHING, commit_sha=sha)
        self.events.event(job.job_id, f"{job.branch} already has this job's commit {sha[:12]} (AIPM-Job trailer): "
                                      "another processor ran it; not running the agent again")
        return JobState.SUCCEEDED, None

    async def _new_workspace(self, job: Job, tip: str) -> tuple[Job, Worktree]:
        wt = await self._git_step(self.git.add_worktree(job.repo, job.task_id, tip))
        job = self.store.update(job.job_id, base_commit=tip)
        self.events.event(job.job_id, f"workspace {wt.path} at {tip[:12]}")
        return job, wt

    async def _reattach(self, job: Job) -> Worktree | None:
        """The interrupted attempt's worktree when the pool still knows its task (it answers a replayed task_id)."""
        if job.attempts == 0:
            return None
        wt = self.git.existing_worktree(job.repo, job.task_id)
        try:
            known = await self.pool.task_status(job.task_id) == 200
        except PoolUnreachable:
            known = False
        if wt is not None and known and job.base_commit:
            self.events.event(job.job_id, f"re-attaching to worker-pool task {job.task_id}")
            return wt
        if known:
            try:
                await self.pool.cancel(job.task_id)
            except PoolUnreachable:
                pass
        self.events.event(job.job_id, f"task {job.task_id} cannot be re-attached; starting a new attempt on a clean worktree")
        await self.git.remove_worktree_named(job.repo, job.task_id)
        return None

    async def _git_step(self, step):
        try:
            return await step
        except GitError as exc:
            if exc.permanent:
                raise PermanentError(exc.message) from exc
            raise RetryableError(exc.message) from exc

    async def _agent_and_commit(self, job: Job, wt: Worktree, run: _Run) -> tuple[JobState, str | None]:
        try:
            task_path = self.git.task_path(wt, job.task_file)
        except TaskFileRefused as exc:
            raise PermanentError(f"{exc.message} ({job.branch} of {job.repo})") from exc
        job = self._check_cancel(job.job_id)
        answer = await self._execute(job, wt, task_path)
        if answer.status_code == _CANCELLED_CODE or self.store.get(job.job_id).cancel_requested:
            raise JobCancelled()
        if answer.status_code != 200 or answer.body.get("status") != "completed":
            note = await self._salvage(job, wt, answer.reason)
            if note:
                run.wip_notes.append(note)
            if answer.status_code in _RETRYABLE_POOL_CODES:
                raise RetryableError(answer.reason)
            raise PermanentError(answer.reason)
        head = await self._git_step(self.git.head(wt))
        dirty = await self._git_step(self.git.is_dirty(wt))
        if not dirty and head == job.base_commit:
            refused = _tools_refused(answer.body)
            self.events.event(job.job_id, refused or "the agent changed nothing")
            return JobState.NO_CHANGES, refused
        sha = await self._git_step(self.git.commit_all(wt, commit_message(job, task_path))) if dirty else head
        await self._git_step(self.git.keep(job.repo, job.job_id, sha))
        await self._run_tests(job, wt)
        job = self.store.transition(job.job_id, JobState.PUSHING, commit_sha=sha)
        self.events.event(job.job_id, f"committed {sha[:12]}; pushing to {job.branch}")
        return await self._push(job, wt)

    async def _execute(self, job: Job, wt: Worktree, task_path: Path) -> PoolAnswer:
        self.executing[job.job_id] = job.task_id
        self.events.event(job.job_id, f"agent working (worker-pool task {job.task_id})")
        watcher = asyncio.create_task(self._watch_task(job))
        try:
            answer = await self._send(job, build_prompt(wt.path, task_path, job), str(wt.path))
        finally:
            self.executing.pop(job.job_id, None)
            self.live_output.pop(job.job_id, None)
            watcher.cancel()
        self.events.agent_output(job.job_id, answer.output)
        values = {"output_tail": answer.output[-OUTPUT_TAIL_CHARS:]}
        if answer.credits is not None:
            values["credits"] = answer.credits
        if answer.tokens is not None:
            values["tokens"] = json.dumps(answer.tokens)
        self.store.update(job.job_id, **values)
        duration = answer.body.get("duration_s")
        self.events.event(job.job_id, f"{answer.reason if answer.status_code != 200 else 'agent finished'}"
                          + (f" after {duration} s" if isinstance(duration, int | float) else "")
                          + _turn_summary(answer.body))
        return answer

    async def _send(self, job: Job, prompt: str, cwd: str) -> PoolAnswer:
        """``/execute`` within this attempt: a full pool (429, the task never ran) and a pool briefly out of reach
        (a restart; the same task_id makes a re-send harmless) are waited out, so they do not spend attempts."""
        started = time.monotonic()
        delay, told, resigned = 0.25, None, False
        while True:
            try:
                answer = await self.pool.execute(prompt=prompt, cwd=cwd, task_id=job.task_id)
                if answer.status_code == 409 and not resigned:
                    # The pool refuses an exact replay of a request it took before it restarted; a re-send in the
                    # same whole second as the first send carries the same signature. Once, in the next second.
                    resigned = True
                    self.events.event(job.job_id, "worker pool took this task before it restarted; sending it again")
                    await asyncio.sleep(1.05 - time.time() % 1)
                    continue
                why, limit = ("busy", self.pool_busy_wait) if answer.status_code == 429 else (None, 0.0)
            except PoolUnreachable as exc:
                answer, why, limit = None, "down", self.pool_down_wait
                reason = str(exc)
            if why is None:
                return answer
            waited = time.monotonic() - started
            if waited >= limit:
                if answer is not None:
                    return answer  # the caller counts it as a failed attempt
                raise RetryableError(f"{reason} for {waited:.0f} s")
            if told != why:
                told = why
                self.events.event(job.job_id, "worker pool is full; waiting for a free worker" if why == "busy"
                                  else "worker pool unreachable; waiting for it to come back")
            await asyncio.sleep(min(delay, limit - waited))
            delay = min(delay * 2, 5.0)
            self._check_cancel(job.job_id)

    async def _watch_task(self, job: Job) -> None:
        """While the agent works: tell the job's stream when the task waits for a worker and when one takes it."""
        last: tuple[object, object] | None = None
        while True:
            await asyncio.sleep(WATCH_S)
            try:
                view = await self.pool.task_view(job.task_id)
            except PoolUnreachable:
                continue
            if view is None or view.get("state") == "ended":
                continue
            tail = view.get("output_tail")
            if isinstance(tail, str) and tail and job.job_id in self.executing:
                self.live_output[job.job_id] = redact(tail)
            now = (view.get("state"), view.get("worker_id") or view.get("queue_position"))
            if now != last:
                last = now
                where = (f"on worker {view['worker_id']}" if view.get("worker_id") is not None
                         else f"waiting for a worker (position {view.get('queue_position')})")
                self.events.event(job.job_id, f"task {job.task_id} {view.get('state')} {where}")

    async def _run_tests(self, job: Job, wt: Worktree) -> None:
        """The repository's tests on the agent's commit, run by the pool as the agent; reported, never failing the
        job (a follow-up can fix them). Their leftovers are cleaned away: everything that matters is committed."""
        config = await self.git.show_file(job.repo, job.base_commit, repo_tests.CONFIG_FILE) if job.base_commit else None
        spec, warning = repo_tests.choose(config, self.test_command, self.test_timeout)
        if warning:
            self.events.event(job.job_id, warning, level=logging.WARNING)
        if spec is None:
            return
        self.events.event(job.job_id, f"running the tests ({spec.source}): {spec.command}")
        try:
            answer = await self.pool.run(task_id=f"{job.task_id}.tests", cwd=str(wt.path), command=spec.command,
                                         timeout_s=spec.timeout_s)
            if answer.status_code == 200:
                result = repo_tests.record(spec, answer.body)
            else:
                result = repo_tests.record(spec, None, not_run=f"the worker pool answered {answer.status_code} "
                                                               f"({answer.body.get('detail') or 'error'})")
        except PoolUnreachable as exc:
            result = repo_tests.record(spec, None, not_run=str(exc))
        self.store.update(job.job_id, tests=json.dumps(result))
        self.events.event(job.job_id, f"tests: {result['summary']}",
                          level=logging.INFO if result["failed"] == 0 else logging.WARNING)
        await self.git.clean(wt)

    # --- push and salvage -------------------------------------------------------------------------------------

    async def _push(self, job: Job, wt: Worktree | None) -> tuple[JobState, str | None]:
        sha = job.commit_sha
        if not sha or (wt is None and not await self.git.has_commit(job.repo, sha)):
            raise PermanentError(f"the job's commit {sha} is no longer in the mirror; it cannot be pushed")
        try:
            sha = await self._push_or_rebase(job, sha, wt)
        except PushRejected as exc:
            raise PermanentError(
                f"{exc.message}, again after rebasing the job's commit onto it; the branch keeps moving"
            ) from exc
        self.store.update(job.job_id, commit_sha=sha)
        self.events.event(job.job_id, f"pushed {sha[:12]} to {job.branch}")
        return JobState.SUCCEEDED, None

    async def _push_or_rebase(self, job: Job, sha: str, wt: Worktree | None) -> str:
        """Push ``sha``; when the branch moved, rebase the job's commits onto it and push once more. The final sha.

        Any other refusal (a ref the remote could not lock, a hook, a server error: ``PushRefused``) is a
        RetryableError: the recorded commit is pushed again on the next attempt, without running the agent."""
        try:
            await self.git.push(job.repo, sha, job.branch)
            return sha
        except PushRefused as exc:
            raise RetryableError(f"push failed: {exc.message}") from exc
        except PushRejected as exc:
            refused = exc
        tip = await self._tip_after_refusal(job, refused)
        if await self.git.is_ancestor(job.repo, sha, tip):
            self.events.event(job.job_id, f"{sha[:12]} is already on {job.branch}")
            return sha
        if await self.git.is_ancestor(job.repo, tip, sha):  # rewound to where the job left it since the refusal
            raise RetryableError(f"push failed: {refused.message}") from refused
        self.events.event(job.job_id, f"push rejected: {job.branch} moved to {tip[:12]}; rebasing the job's commit")
        theirs = await self.git.job_commit(job.repo, tip, job.job_id)
        if theirs:  # another processor ran this job too and pushed first: one commit per job, so ours is dropped
            self.events.event(job.job_id, f"{job.branch} already has this job's commit {theirs[:12]}, pushed by "
                                          f"another processor; dropping {sha[:12]}")
            return theirs
        own = wt is None
        if wt is None:
            wt = await self._git_step(self.git.add_worktree(job.repo, f"{job.job_id}.rebase", sha))
        try:
            new = await self._git_step(self.git.rebase(wt, tip, job.base_commit or tip))
        finally:
            if own:
                await self.git.remove_worktree(wt)
        await self._git_step(self.git.keep(job.repo, job.job_id, new))
        self.store.update(job.job_id, commit_sha=new, base_commit=tip)
        self.events.event(job.job_id, f"rebased onto {tip[:12]} as {new[:12]}; pushing once more")
        try:
            await self.git.push(job.repo, new, job.branch)
        except PushRejected:
            raise
        except GitError as exc:
            raise RetryableError(f"push failed: {exc.message}") from exc
        return new

    async def _tip_after_refusal(self, job: Job, refused: GitError) -> str:
        """The branch's tip, fetched after a refused push; a failed fetch leaves the push's own reason to report."""
        try:
            return await self.git.fetch_branch(job.repo, job.branch)
        except GitError as exc:
            self.events.event(job.job_id, f"fetching {job.branch} after the refused push failed too: {exc.message}",
                              level=logging.WARNING)
            raise RetryableError(f"push failed: {refused.message}") from refused

    async def _salvage(self, job: Job, wt: Worktree, reason: str) -> str:
        """Commit and push what the agent changed before its attempt failed; a note for the job's error ("" if none)."""
        try:
            head = await self.git.head(wt)
            if head == job.base_commit and not await self.git.is_dirty(wt):
                return ""
            sha = await self.git.commit_all(wt, wip_message(job, reason))
            sha = await self._push_or_rebase(job, sha, wt)
        except (GitError, RetryableError, PermanentError, PushRejected) as exc:
            note = f"the partial work of attempt {job.attempts} could not be saved: {exc}"
            self.events.event(job.job_id, note, level=logging.WARNING)
            return note
        self.store.update(job.job_id, commit_sha=sha)
        note = f"partial work of attempt {job.attempts} pushed as WIP commit {sha[:12]} to {job.branch}"
        self.events.event(job.job_id, note)
        return note


def _turn_summary(body: dict) -> str:
    """What the worker pool counted in the turn, for the transcript: tool calls approved and denied, retries, a stall."""
    counts = {key: body.get(key) for key in ("approvals", "denials", "trouble_retries")}
    parts = []
    if isinstance(counts["approvals"], int) or isinstance(counts["denials"], int):
        parts.append(f"tool calls: {counts['approvals'] or 0} approved, {counts['denials'] or 0} denied")
    if isinstance(counts["trouble_retries"], int) and counts["trouble_retries"] > 0:
        parts.append(f"{counts['trouble_retries']} agent retries")
    if body.get("stalled"):
        parts.append("stopped by the stall watchdog")
    return f" ({'; '.join(parts)})" if parts else ""
