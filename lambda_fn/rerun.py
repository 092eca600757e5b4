"""Re-run: a new job on an ended job's branch and pull request, the earlier runs kept (``POST /api/jobs/{id}/rerun``).

Owns the rules of when a re-run is possible and how it is started in each dispatch mode. With ``AIPM_DISPATCH=http``
the PR processor makes the new job (it knows every run of the branch and numbers the new one ``<first id>-r<n>``).
With ``AIPM_DISPATCH=sqs`` no host knows the runs: the pull request does. Each ended run left one result comment
(marked with its job id), so the new run is numbered after them, and a run is only started while the pull request's
label says the last one ended; the new job goes to the job queue like any other (the same message body). Either way
the pull request is labelled in progress again, and each run's result arrives as a comment of its own.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from lambda_fn import naming
from lambda_fn.forge.base import Forge, ForgeError, PullRequest
from lambda_fn.processor import ProcessorClient, ProcessorError
from lambda_fn.queue import DISPATCHED, JobQueue, status_from_labels
from lambda_fn.results import ALL_LABELS, IN_PROGRESS
from lambda_fn.tasks import TASK_FILE

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Rerun:
    job_id: str
    rerun_of: str
    repo: str
    branch: str
    pr: PullRequest
    status: str

    def body(self) -> dict:
        return {"job_id": self.job_id, "rerun_of": self.rerun_of, "repo": self.repo, "branch": self.branch,
                "pr_number": self.pr.number, "pr_url": self.pr.html_url, "status": self.status}


def run_number(comment: str, first_job: str) -> int:
    """Which run of the branch a result comment reports (1 for the first job, n for ``<first>-r<n>``), else 0."""
    match = re.fullmatch(rf"<!-- aipm-job:{re.escape(first_job)}(?:-r(\d{{1,12}}))? -->",
                         comment.split("\n", 1)[0].strip())
    if not match:
        return 0
    return int(match[1]) if match[1] else 1


class Rerunner:
    def __init__(self, forge: Forge, dispatcher: ProcessorClient | JobQueue):
        self.forge = forge
        self.dispatcher = dispatcher

    def rerun(self, job: dict, *, requested_by: str | None, callback_url: str | None) -> Rerun:
        """``job``: the ended job as ``GET /api/jobs/{id}`` answers it (repo, branch, status, pr_number)."""
        repo = self.forge.get_repo(str(job["repo"])).full_name
        branch = str(job["branch"])
        pr = self._open_pull(repo, branch, job)
        if isinstance(self.dispatcher, JobQueue):
            new = self._queued(repo, branch, pr, job, requested_by, callback_url)
        else:
            new = self.dispatcher.rerun(job["job_id"], requested_by=requested_by)
        self._in_progress(repo, pr)
        log.info("job %s re-runs %s on %s %s (#%s)", new["job_id"], job["job_id"], repo, branch, pr.number)
        return Rerun(job_id=new["job_id"], rerun_of=job["job_id"], repo=repo, branch=branch, pr=pr,
                     status=str(new.get("status") or "queued"))

    def _open_pull(self, repo: str, branch: str, job: dict) -> PullRequest:
        number = job.get("pr_number")
        pulls = [self.forge.get_pull(repo, number)] if isinstance(number, int) else \
            self.forge.pulls_for_branch(repo, branch)
        if not pulls:
            raise ForgeError(f"job {job['job_id']} cannot be re-run: no pull request has head {branch} in {repo}",
                             status=409)
        pr = pulls[0]
        if not pr.is_open:
            state = "merged" if pr.merged else "closed"
            raise ForgeError(f"job {job['job_id']} cannot be re-run: its pull request #{pr.number} is {state}, and a "
                             "re-run pushes to that pull request's branch. Submit the story again for a new pull "
                             "request", status=409)
        return pr

    def _queued(self, repo: str, branch: str, pr: PullRequest, job: dict, requested_by, callback_url) -> dict:
        if status_from_labels(pr) == DISPATCHED:
            raise ForgeError(f"job {job['job_id']} cannot be re-run yet: pull request #{pr.number} has no result "
                             "label, so a run of it is still on the job queue or on a host; re-run it once its "
                             "result comment is there", status=409)
        last = max((run_number(c.body, naming.job_id(repo, branch)) for c in self.forge.list_comments(repo, pr.number)),
                   default=1)
        new_id = naming.rerun_job_id(repo, branch, max(last, 1) + 1)
        payload = {"job_id": new_id, "repo": repo, "branch": branch, "base_branch": pr.base, "pr_number": pr.number,
                   "task_file": TASK_FILE, "callback_url": callback_url, "requested_by": requested_by,
                   "title": pr.title[:200]}
        _, answer = self.dispatcher.submit(payload)  # same id again within 5 minutes: the queue drops the copy
        return answer

    def _in_progress(self, repo: str, pr: PullRequest) -> None:
        """The pull request says a run is under way again; a label that cannot be changed is logged, not fatal."""
        try:
            for old in pr.labels:
                if old in ALL_LABELS and old != IN_PROGRESS:
                    self.forge.remove_label(repo, pr.number, old)
            if IN_PROGRESS not in pr.labels:
                self.forge.add_labels(repo, pr.number, [IN_PROGRESS])
        except (ForgeError, ProcessorError) as exc:
            log.warning("could not label #%s in progress for its re-run: %s", pr.number, exc)
