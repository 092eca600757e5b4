"""Follow-up from the pull request: a comment ``/aipm <what to change>`` runs the agent again on the same branch.

The comment's text is appended to the branch's TASK.md as "Follow-up n" (the story and earlier follow-ups stay
above it as the history), and a re-run of the branch's job starts (``lambda_fn.rerun``: the same pull request, a
result comment of its own). The thread gets an answer either way: the job that started, or why nothing did (no write
permission, a run still in progress, a closed pull request, a branch that is not AIPM's).

Owns: what a follow-up comment must satisfy, TASK.md's follow-up section, and its idempotency (a comment redelivered
by GitHub starts nothing twice: the answer carries the comment's id in a hidden marker). Who the caller is (a
signed GitHub webhook, or the local forge's comment box) is the route's business.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from lambda_fn import naming
from lambda_fn.forge.base import Conflict, Forge, ForgeError, PullRequest
from lambda_fn.processor import ProcessorClient, ProcessorError
from lambda_fn.queue import DISPATCHED, JobQueue, status_from_labels
from lambda_fn.rerun import Rerunner
from lambda_fn.results import fenced, neutralise
from lambda_fn.tasks import TASK_FILE

log = logging.getLogger(__name__)

WRITE_ROLES = ("admin", "maintain", "write")
MAX_FOLLOW_UP_CHARS = 20_000
_LIVE = ("queued", "running", "pushing", DISPATCHED)


@dataclass(frozen=True)
class FollowUp:
    repo: str
    number: int
    comment_id: int
    author: str
    text: str  # the comment without its prefix
    comment_url: str | None = None


def parse(body: str, prefix: str) -> str | None:
    """The follow-up's text when ``body`` starts with ``prefix`` (``/aipm ``) and says something, else None."""
    stripped = body.lstrip()
    if not prefix.strip() or not stripped.startswith(prefix.rstrip()):
        return None
    rest = stripped[len(prefix.rstrip()):]
    if rest and not rest[0].isspace():
        return None  # `/aipmx …` is not ours
    text = rest.strip()
    return text or None


def marker(comment_id: int) -> str:
    return f"<!-- aipm-followup:{comment_id} -->"


def task_with_follow_up(task: str, follow_up: FollowUp) -> str:
    """TASK.md with a new last section; earlier sections are kept as they are."""
    count = len(re.findall(r"^## Follow-up \d+\b", task, flags=re.M)) + 1
    asked = f"_Asked by {neutralise(follow_up.author)}" + (f" in {follow_up.comment_url}" if follow_up.comment_url else "")
    return (
        f"{task.rstrip()}\n\n## Follow-up {count}\n\n{asked}. This follow-up is the task now: change the code on this "
        "branch as it asks, keeping what the sections above asked for unless it says otherwise._\n\n"
        f"{follow_up.text.strip()}\n"
    )


class FollowUps:
    def __init__(self, forge: Forge, processor: ProcessorClient, queue: JobQueue | None):
        self.forge = forge
        self.processor = processor
        self.queue = queue

    def start(self, follow_up: FollowUp, *, callback_url: str | None) -> dict:
        """Start the follow-up and answer in the thread; ``{"started": job_id}`` or ``{"ignored": reason}``."""
        repo = self.forge.get_repo(follow_up.repo).full_name
        if any(c.body.startswith(marker(follow_up.comment_id)) for c in self.forge.list_comments(repo, follow_up.number)):
            return {"ignored": f"comment {follow_up.comment_id} was answered already"}
        pr = self.forge.get_pull(repo, follow_up.number)
        why = self._refusal(repo, pr, follow_up)
        job = None if why else self._latest_run(repo, pr)
        if job is not None and job.get("status") in _LIVE:
            why = (f"run `{job['job_id']}` of this branch is still {job['status']}; comment again once its result is "
                   "here (or cancel it from AIPM)")
        if why:
            self._answer(repo, follow_up, f"⏸️ No follow-up was started: {why}.")
            return {"ignored": why}
        self._append_to_task(repo, pr.head, follow_up)
        started = self._run(repo, pr, job, follow_up, callback_url)
        self._answer(repo, follow_up, f"▶️ Follow-up started as job `{started}`: the agent works on this branch again, "
                                      f"with your comment as the last section of `{TASK_FILE}`. The result will be "
                                      "posted here.")
        log.info("follow-up from comment %s on %s#%s started job %s", follow_up.comment_id, repo, pr.number, started)
        return {"started": started}

    def _refusal(self, repo: str, pr: PullRequest, follow_up: FollowUp) -> str | None:
        if not pr.is_open:
            return f"pull request #{pr.number} is {'merged' if pr.merged else 'closed'}"
        if not pr.head.startswith(naming.BRANCH_PREFIX) or not naming.valid_branch(pr.head):
            return f"this pull request's branch is not one AIPM works on (`{naming.BRANCH_PREFIX}…`)"
        if not any(p.number == pr.number for p in self.forge.pulls_for_branch(repo, pr.head)):
            return "this pull request's branch is in another repository (a fork); AIPM pushes only to its own branches"
        if len(follow_up.text) > MAX_FOLLOW_UP_CHARS:
            return f"the follow-up is longer than {MAX_FOLLOW_UP_CHARS:,} characters"
        role = self.forge.permission(repo, follow_up.author)
        if role not in WRITE_ROLES:
            return (f"{neutralise(follow_up.author)} has `{role}` access to {repo}; a follow-up needs write access, "
                    "because it pushes to this branch")
        return None

    def _latest_run(self, repo: str, pr: PullRequest) -> dict | None:
        """The branch's newest run as ``GET /api/jobs/{id}`` shows it; None when the PR processor knows none."""
        first = naming.job_id(repo, pr.head)
        if self.queue is not None:
            status = status_from_labels(pr)
            return {"job_id": first, "repo": repo, "branch": pr.head, "pr_number": pr.number,
                    "status": DISPATCHED if status == DISPATCHED else "ended"}
        try:
            job = self.processor.get_job(first)
        except ProcessorError as exc:
            if exc.status == 404:
                return None
            raise
        runs = job.get("runs") or []
        latest = runs[-1].get("job_id") if runs and isinstance(runs[-1], dict) else None
        return self.processor.get_job(latest) if latest and latest != first else job

    def _append_to_task(self, repo: str, branch: str, follow_up: FollowUp) -> None:
        for _ in range(3):  # someone else committed TASK.md meanwhile: read it again
            current = self.forge.get_file(repo, branch, TASK_FILE)
            text, blob = current if current else ("", None)
            try:
                self.forge.put_file(repo, branch, TASK_FILE, task_with_follow_up(text, follow_up),
                                    f"{TASK_FILE}: follow-up from #{follow_up.number} (comment {follow_up.comment_id})",
                                    blob_sha=blob)
                return
            except Conflict:
                continue
        raise ForgeError(f"{TASK_FILE} on {branch} kept changing; the follow-up was not added", status=409)

    def _run(self, repo: str, pr: PullRequest, job: dict | None, follow_up: FollowUp, callback_url: str | None) -> str:
        if job is None:  # the PR processor knows no run of this branch (e.g. pruned): the branch's first job
            payload = {"job_id": naming.job_id(repo, pr.head), "repo": repo, "branch": pr.head, "base_branch": pr.base,
                       "pr_number": pr.number, "task_file": TASK_FILE, "callback_url": callback_url,
                       "requested_by": follow_up.author, "title": pr.title[:200]}
            _, answer = (self.queue or self.processor).submit(payload)
            return str(answer.get("job_id") or payload["job_id"])
        rerun = Rerunner(self.forge, self.queue or self.processor).rerun(
            {**job, "repo": repo, "branch": pr.head, "pr_number": pr.number},
            requested_by=follow_up.author, callback_url=callback_url)
        return rerun.job_id

    def _answer(self, repo: str, follow_up: FollowUp, text: str) -> None:
        quoted = fenced(neutralise(follow_up.text[:2000]))
        self.forge.create_comment(repo, follow_up.number, f"{marker(follow_up.comment_id)}\n{text}\n\n{quoted}\n")
