"""Generate Code & PR: from a story to a branch with TASK.md, an open pull request and a job on the PR processor
(or, with ``AIPM_DISPATCH=sqs``, on the job queue: ``lambda_fn.queue``).

Owns idempotency, which is read from the forge and never from memory, so it holds across Lambda containers: a
story's branches are ``aipm/story-<slug>``, ``-2``, ``-3``…; the first without a closed pull request is the story's
current one. An open pull request there is answered again (200) and its job re-sent (the PR processor treats the same
job id as a no-op); "already exists" from the forge (two calls at once) means reuse what the other call made.
Every failure names the step that failed; a pull request opened whose job could not be started gets a comment.

The click's GitHub round trips (``forge.github``), for a new story: the repository and the story's first branch's pull
requests are read at once (with the base branch's head too when the story names its base), then the base's head,
the branch, TASK.md (written straight away on a branch just made: it is read first only when GitHub says one is
there), the pull request and its label follow one another — 7 calls, 6 in sequence (5 with a base branch given;
it was 8 and 8). The label is put before the job is sent, so a fast job's own labels can never be overwritten by it.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aipm_common.contracts import ProcessPrRequest
from aipm_common.logging import log_context
from lambda_fn import naming
from lambda_fn.comments import write_marked
from lambda_fn.forge.base import AlreadyExists, Conflict, Forge, ForgeError, PullRequest, Repo
from lambda_fn.processor import ProcessorClient, ProcessorError
from lambda_fn.queue import DISPATCHED, JobQueue, status_from_labels
from lambda_fn.rerun import run_number
from lambda_fn.results import IN_PROGRESS, dispatch_marker, render_not_started, render_started_late
from lambda_fn.tasks import TASK_FILE, render_pr_body, render_task

log = logging.getLogger(__name__)

MAX_STORY_PULLS = 50
ENDED = frozenset({"succeeded", "failed", "no_changes", "cancelled"})


@dataclass(frozen=True)
class Story:
    repo: str
    title: str
    description: str
    acceptance_criteria: list[str]
    base_branch: str | None
    story_id: str | None


@dataclass(frozen=True)
class Outcome:
    created: bool  # True: this call opened the pull request (202); False: it answered an existing one (200)
    job_id: str
    pr: PullRequest
    branch: str
    status: str

    def body(self) -> dict:
        answer = {"job_id": self.job_id, "pr_number": self.pr.number, "pr_url": self.pr.html_url,
                  "branch": self.branch, "status": self.status, "existing": not self.created}
        if not self.created:
            state = "" if self.pr.is_open else (", merged" if self.pr.merged else ", closed")
            answer["detail"] = (f"this story has pull request #{self.pr.number} ({self.status}{state}): open it"
                                + (" or re-run it" if self.status in ENDED and self.pr.is_open else ""))
        return answer


class StepFailed(Exception):
    """A step after the pull request was opened failed: the answer carries the PR so nothing is left unreported."""

    def __init__(self, status: int, detail: str, extra: dict, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.detail, self.extra, self.headers = status, detail, extra, headers or {}


class Generator:
    def __init__(self, forge: Forge, processor: ProcessorClient | JobQueue, *, ui_url: str | None = None,
                 admit: Callable[[], Callable[[], None]] | None = None):
        """``admit`` is called before a pull request is opened (the caller's rate limit: it raises when over) and
        returns what gives the call back when an existing pull request is answered instead."""
        self.forge = forge
        self.processor = processor
        self.ui_url = ui_url
        self.admit = admit or (lambda: lambda: None)
        self._base_read: Callable[[], str | None] | None = None  # the base branch's head, when read ahead

    def run(self, story: Story, *, requested_by: str | None, idempotency_key: str | None,
            callback_url: str | None) -> Outcome:
        if story.story_id:
            candidates = [naming.story_branch(story.story_id, n) for n in range(1, MAX_STORY_PULLS + 1)]
        else:
            candidates = [naming.title_branch(story.title, idempotency_key)]
        reads = [lambda: self.forge.get_repo(story.repo), lambda: self.forge.pulls_for_branch(story.repo, candidates[0])]
        if story.base_branch:  # read ahead for a new pull request; its error counts only if one is opened
            reads.append(functools.partial(_settled, self.forge.branch_sha, story.repo, story.base_branch))
        repo, first_pulls, *base_read = at_once(self.forge, *reads)
        if repo.full_name != story.repo:  # another spelling (or a moved repository): read again by its own name
            first_pulls, base_read = None, []
        self._base_read = base_read[0] if base_read else None
        for branch in candidates:
            if branch == candidates[0] and first_pulls is not None:
                pulls = first_pulls
            else:
                pulls = self.forge.pulls_for_branch(repo.full_name, branch)
            live = next((p for p in pulls if p.is_open), None)
            if live is None and pulls and story.story_id:
                continue  # that PR of the story was closed or merged: the next one gets a new branch
            with log_context(job_id=naming.job_id(repo.full_name, branch)):
                if live is not None or pulls:
                    return self._again(repo, branch, live or pulls[0], story, requested_by, callback_url)
                return self._open(repo, branch, story, requested_by, callback_url)
        raise ForgeError(f"story {story.story_id!r} already has {MAX_STORY_PULLS} pull requests; use a new story id",
                         status=409)

    # --- a new pull request --------------------------------------------------------------------------------

    def _open(self, repo: Repo, branch: str, story: Story, requested_by, callback_url) -> Outcome:
        give_back = self.admit()
        base = story.base_branch or repo.default_branch
        base_sha = self._base_read() if self._base_read else self.forge.branch_sha(repo.full_name, base)
        if base_sha is None:
            raise ForgeError(f"base branch {base!r} does not exist in {repo.full_name}", status=400)
        try:
            self.forge.create_branch(repo.full_name, branch, base_sha)
            made = True
        except AlreadyExists:
            log.info("branch %s already exists in %s: reusing it", branch, repo.full_name)
            made = False
        job = naming.job_id(repo.full_name, branch)
        self._write_task(repo, branch, story, job, fresh=made)
        body = render_pr_body(description=story.description, acceptance_criteria=story.acceptance_criteria,
                              story_id=story.story_id, job_id=job, ui_url=self.ui_url, requested_by=requested_by)
        try:
            pr = self.forge.open_pull(repo.full_name, head=branch, base=base, title=story.title, body=body)
            created = True
        except AlreadyExists:
            pr = next((p for p in self.forge.pulls_for_branch(repo.full_name, branch) if p.is_open), None)
            if pr is None:
                raise ForgeError(f"a pull request for {branch} was reported open but cannot be found") from None
            created = False
            give_back()  # a concurrent call opened it: this one only answers it again
        except ForgeError as exc:
            raise ForgeError(f"{exc.detail}. Branch {branch} (with its {TASK_FILE}) was left in {repo.full_name}; "
                             "no pull request was opened", status=exc.status, headers=exc.headers) from exc
        log.info("pull request #%s %s for %s on %s", pr.number, "opened" if created else "reused", repo.full_name, branch)
        if created:
            self._labelled(repo, pr, job, branch)
        answer = self._dispatch(repo, pr, branch, base, job, requested_by, callback_url, new_pull=created)
        if created:
            return Outcome(created=True, job_id=job, pr=pr, branch=branch, status="queued")
        return self._latest(job, pr, branch, answer)

    def _write_task(self, repo: Repo, branch: str, story: Story, job: str, *, fresh: bool) -> None:
        """Commit TASK.md on ``branch``. On a branch this call just made (``fresh``) it is written without reading
        first: GitHub refuses the write (``Conflict``) when the base had a TASK.md, and then it is read."""
        text = render_task(title=story.title, description=story.description,
                           acceptance_criteria=story.acceptance_criteria, story_id=story.story_id,
                           branch=branch, job_id=job)
        for attempt in range(3):
            current = None if fresh and attempt == 0 else self.forge.get_file(repo.full_name, branch, TASK_FILE)
            if current is not None and current[0] == text:
                return
            try:
                self.forge.put_file(repo.full_name, branch, TASK_FILE, text, f"Add {TASK_FILE}: {story.title}"[:120],
                                    blob_sha=current[1] if current else None)
                return
            except Conflict:
                continue  # a concurrent call wrote it: read again
        raise ForgeError(f"{TASK_FILE} on {branch} kept changing while it was being written; try again", status=409)

    def _labelled(self, repo: Repo, pr: PullRequest, job: str, branch: str) -> None:
        try:
            self.forge.add_labels(repo.full_name, pr.number, [IN_PROGRESS])
        except ForgeError as exc:
            raise StepFailed(exc.status, f"pull request #{pr.number} was opened but could not be labelled: {exc.detail}",
                             _pr_extra(pr, job, branch), exc.headers) from exc

    # --- an existing pull request --------------------------------------------------------------------------

    def _again(self, repo: Repo, branch: str, pr: PullRequest, story: Story, requested_by, callback_url) -> Outcome:
        job = naming.job_id(repo.full_name, branch)
        if not pr.is_open:  # an Idempotency-Key replay of a request whose PR was closed since: answer what it made
            return Outcome(created=False, job_id=job, pr=pr, branch=branch, status=self._status(job, pr))
        if isinstance(self.processor, JobQueue):
            # The newest run the pull request's comments and label tell of. Once one run has ended, nothing is queued
            # again: a queued copy would run it again on a host that never saw it (a re-run in flight is dispatched).
            status = status_from_labels(pr)
            ended = max((run_number(c.body, job) for c in self.forge.list_comments(repo.full_name, pr.number)),
                        default=0)
            if status != DISPATCHED or ended:
                newest = ended + 1 if status == DISPATCHED else max(ended, 1)
                newest_id = job if newest == 1 else naming.rerun_job_id(repo.full_name, branch, newest)
                return Outcome(created=False, job_id=newest_id, pr=pr, branch=branch, status=status)
        answer = self._dispatch(repo, pr, branch, pr.base, job, requested_by, callback_url, new_pull=False)
        return self._latest(job, pr, branch, answer)

    @staticmethod
    def _latest(job: str, pr: PullRequest, branch: str, answer: dict) -> Outcome:
        """The branch's newest run as the processor's answer lists it (a re-run of the job, when there is one)."""
        runs = answer.get("runs") if isinstance(answer.get("runs"), list) else []
        newest = runs[-1] if runs and isinstance(runs[-1], dict) else {}
        return Outcome(created=False, job_id=str(newest.get("job_id") or job), pr=pr, branch=branch,
                       status=str(newest.get("status") or answer.get("status") or "queued"))

    def _status(self, job: str, pr: PullRequest) -> str:
        if isinstance(self.processor, JobQueue):
            return status_from_labels(pr)
        try:
            return str(self.processor.get_job(job).get("status", "unknown"))
        except ProcessorError:
            return "unknown"

    # --- the job -------------------------------------------------------------------------------------------

    def _dispatch(self, repo: Repo, pr: PullRequest, branch: str, base: str, job: str, requested_by,
                  callback_url, *, new_pull: bool) -> dict:
        payload = ProcessPrRequest(job_id=job, repo=repo.full_name, branch=branch, base_branch=base,
                                   pr_number=pr.number, task_file=TASK_FILE, callback_url=callback_url,
                                   requested_by=requested_by, title=pr.title[:200]).model_dump()
        try:
            started_now, answer = self.processor.submit(payload)
        except ProcessorError as exc:
            log.error("job %s was not started: %s", job, exc.detail)
            noted = self._note(repo, pr, job, render_not_started(job_id=job, reason=exc.detail))
            detail = f"pull request #{pr.number} was opened but its job was not started: {exc.detail}"
            if not noted:
                detail += " (and the comment saying so could not be written on the pull request)"
            raise StepFailed(exc.status if exc.status != 404 else 502, detail, _pr_extra(pr, job, branch),
                             exc.headers) from exc
        log.info("job %s sent to the %s: %s", job, "job queue" if isinstance(self.processor, JobQueue)
                 else "PR processor", answer.get("status"))
        if started_now and not new_pull:
            # A job the processor had never seen, on an existing PR: an earlier start failed. Say it is running now.
            self._note(repo, pr, job, render_started_late(job_id=job), only_if_present=True)
        return answer

    def _note(self, repo: Repo, pr: PullRequest, job: str, body: str, *, only_if_present: bool = False) -> bool:
        """Write (or edit) the job's one start-problem comment; False when the forge refused."""
        try:
            write_marked(self.forge, repo.full_name, pr.number, dispatch_marker(job), body,
                         only_if_present=only_if_present)
            return True
        except ForgeError as exc:
            log.error("could not comment on #%s about the start of job %s: %s", pr.number, job, exc.detail)
            return False


def _settled(call: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """``call(*args)`` made now; what it returned, or raised, given back (or raised) when the result is asked for."""
    try:
        value = call(*args)
    except ForgeError as exc:
        error = exc

        def failed():
            raise error
        return failed
    return lambda: value


def at_once(forge: Forge, *calls: Callable[[], Any]) -> list[Any]:
    """Each call's result, in order: made at the same time (threads, each in a copy of the request's context, so the
    Lambda deadline bounds their waits) when the forge takes concurrent calls (``concurrent``), else one after another.
    The first call's error is the one raised, as if they had been made in turn."""
    if len(calls) < 2 or not getattr(forge, "concurrent", False):
        return [call() for call in calls]
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415 - only on a click

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(contextvars.copy_context().run, call) for call in calls]
    return [future.result() for future in futures]


def _pr_extra(pr: PullRequest, job: str, branch: str) -> dict:
    return {"job_id": job, "pr_number": pr.number, "pr_url": pr.html_url, "branch": branch}
