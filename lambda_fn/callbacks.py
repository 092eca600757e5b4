"""A job's end, recorded on its pull request: one result comment (edited on a repeated callback, kept to one when
callbacks for the job arrive at once in different containers: ``lambda_fn.comments``) and one label.

Owns the order of those writes and the checks that the callback names a job this API could have made (its job id
is the one derived from repo and branch, and the pull request's head is that branch).
"""

from __future__ import annotations

import logging
import re

from aipm_common.logging import log_context
from lambda_fn import naming
from lambda_fn.comments import write_marked
from lambda_fn.forge.base import Forge, ForgeError, NotFound
from lambda_fn.results import ALL_LABELS, STATUS_LABELS, job_marker, render_result

log = logging.getLogger(__name__)

SHA_RE = re.compile(r"^[0-9a-f]{7,64}$")


class Recorder:
    def __init__(self, forge: Forge):
        self.forge = forge

    def record(self, result: dict) -> dict:
        job, repo_name, branch = result["job_id"], result["repo"], result["branch"]
        with log_context(job_id=job):
            if naming.job_id(repo_name, branch) != naming.run_root(job):  # the first run, or a re-run
                raise ForgeError(f"job_id {job} is not the job of {repo_name} {branch}", status=400)
            repo = self.forge.get_repo(repo_name)
            pr = self._pull(repo.full_name, branch, result.get("pr_number"))
            commit = result.get("commit")
            commit = commit.lower() if isinstance(commit, str) and SHA_RE.fullmatch(commit.lower()) else None
            body = render_result(
                job_id=job, status=result["status"], commit=commit,
                commit_url=self.forge.commit_url(repo, commit) if commit else None,
                duration_s=result.get("duration_s"), credits=result.get("credits"), attempts=result.get("attempts"),
                error=result.get("error"), output_tail=result.get("output_tail"), tests=result.get("tests"),
                tokens=result.get("tokens"),
            )
            comment, action = write_marked(self.forge, repo.full_name, pr.number, job_marker(job), body)
            label = STATUS_LABELS[result["status"]]
            for old in pr.labels:
                if old in ALL_LABELS and old != label:
                    self.forge.remove_label(repo.full_name, pr.number, old)
            if label not in pr.labels:
                self.forge.add_labels(repo.full_name, pr.number, [label])
            log.info("job %s ended %s: comment %s %s on #%s", job, result["status"], comment.id, action, pr.number)
            return {"job_id": job, "pr_number": pr.number, "comment_id": comment.id, "comment": action, "label": label}

    def _pull(self, repo: str, branch: str, number: int | None):
        if number is None:
            pulls = self.forge.pulls_for_branch(repo, branch)
            if not pulls:
                raise NotFound(f"no pull request has head {branch} in {repo}")
            return next((p for p in pulls if p.is_open), pulls[0])
        pr = self.forge.get_pull(repo, number)
        if pr.head != branch:
            raise ForgeError(f"pull request #{number} of {repo} is not on branch {branch}", status=400)
        return pr
