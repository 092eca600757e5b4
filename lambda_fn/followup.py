"""Follow-up from the pull request: a comment starting with ``AIPM_FOLLOWUP_PREFIX`` (``/aipm `` by default) asks
the agent for a change on the same branch.

Owns turning the comment into the next run: the comment's text is appended to TASK.md on the branch as
``## Follow-up <n>`` (the story and every earlier follow-up stay above it: the task's history), then the branch's
newest run is re-run (``lambda_fn.rerun``: the same pull request, ``<first job id>-r<n>``, its result a comment of its
own in the thread), and a reply says which job took it. Refused, with the reason, on a closed pull request, one that is
not AIPM's, or while a run of the branch is live. Who may comment is the forge's business (on the local forge:
whoever can reach its page; a GitHub webhook would check write permission first).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lambda_fn import naming
from lambda_fn.forge.base import Conflict, Forge, ForgeError, PullRequest
from lambda_fn.processor import ProcessorClient, ProcessorError
from lambda_fn.queue import DISPATCHED, JobQueue, job_from_pull
from lambda_fn.rerun import Rerun, Rerunner
from lambda_fn.tasks import TASK_FILE, inline_code

log = logging.getLogger(__name__)

FOLLOWUP_HEADING = "## Follow-up "
LIVE = frozenset({"queued", "running", "pushing", DISPATCHED})


def with_followup(task: str, text: str, *, pr_number: int, requested_by: str | None) -> tuple[str, int]:
    """TASK.md with the next follow-up appended, and its number."""
    n = sum(1 for line in task.splitlines() if line.startswith(FOLLOWUP_HEADING)) + 1
    by = f" by {inline_code(requested_by)}" if requested_by else ""
    return f"{task.rstrip()}\n\n{FOLLOWUP_HEADING}{n} (a comment on pull request #{pr_number}{by})\n\n{text.strip()}\n", n


@dataclass(frozen=True)
class FollowUpStarted:
    number: int
    run: Rerun


class FollowUp:
    def __init__(self, forge: Forge, dispatcher: ProcessorClient | JobQueue):
        self.forge = forge
        self.dispatcher = dispatcher

    def start(self, repo: str, number: int, text: str, *, requested_by: str | None,
              callback_url: str | None) -> FollowUpStarted:
        repo = self.forge.get_repo(repo).full_name
        pr = self.forge.get_pull(repo, number)
        if not pr.is_open:
            raise ForgeError(f"pull request #{number} is {'merged' if pr.merged else 'closed'}: a follow-up needs an "
                             "open one (submit the story again for a new pull request)", status=409)
        if not pr.head.startswith(naming.BRANCH_PREFIX):
            raise ForgeError(f"pull request #{number} is not AIPM's (its branch {pr.head} is not under "
                             f"{naming.BRANCH_PREFIX}): no agent works on it", status=409)
        if not text.strip():
            raise ForgeError("the follow-up says nothing after its prefix: write what the agent should change",
                             status=400)
        job = self._newest_run(repo, pr)
        if job["status"] in LIVE:
            raise ForgeError(f"a run of pull request #{number} is still {job['status']} (job {job['job_id']}): "
                             "comment again once it has ended, or cancel it", status=409)
        followup = self._write_task(repo, pr, text, requested_by)
        run = Rerunner(self.forge, self.dispatcher).rerun(job, requested_by=requested_by, callback_url=callback_url)
        self.forge.create_comment(repo, number, f"Follow-up {followup} started as job `{run.job_id}`: the agent works "
                                                f"on `{TASK_FILE}`'s new section, and its result is answered here.")
        log.info("follow-up %s on %s#%s: job %s", followup, repo, number, run.job_id)
        return FollowUpStarted(followup, run)

    def _newest_run(self, repo: str, pr: PullRequest) -> dict:
        first = naming.job_id(repo, pr.head)
        if isinstance(self.dispatcher, JobQueue):
            return {**job_from_pull(first, repo, pr.head, pr), "pr_number": pr.number}
        try:
            job = self.dispatcher.get_job(first)
            runs = job.get("runs") or []
            if runs and runs[-1].get("job_id") not in (None, first):
                job = self.dispatcher.get_job(str(runs[-1]["job_id"]))
        except ProcessorError as exc:
            if exc.status != 404:
                raise
            raise ForgeError(f"pull request #{pr.number} has no AIPM job ({first} is unknown to the PR processor)",
                             status=409) from None
        return job

    def _write_task(self, repo: str, pr: PullRequest, text: str, requested_by: str | None) -> int:
        for _ in range(3):
            current = self.forge.get_file(repo, pr.head, TASK_FILE)
            if current is None:
                raise ForgeError(f"{TASK_FILE} is missing on {pr.head}: nothing to follow up", status=409)
            task, n = with_followup(current[0], text, pr_number=pr.number, requested_by=requested_by)
            try:
                self.forge.put_file(repo, pr.head, TASK_FILE, task, f"{TASK_FILE}: follow-up {n} from #{pr.number}",
                                    blob_sha=current[1])
                return n
            except Conflict:
                continue  # written meanwhile: read again
        raise ForgeError(f"{TASK_FILE} on {pr.head} kept changing while the follow-up was being written; try again",
                         status=409)
