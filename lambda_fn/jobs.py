"""Finding a story's job: its current branch is read from the forge, its state from the PR processor (with
``AIPM_DISPATCH=sqs``, from the pull request's label: no one host knows every job).

Owns nothing but that lookup; the answer has the same shape as the PR processor's job, plus the pull request.
"""

from __future__ import annotations

from lambda_fn import naming
from lambda_fn.forge.base import Forge
from lambda_fn.generate import MAX_STORY_PULLS
from lambda_fn.processor import ProcessorClient, ProcessorError
from lambda_fn.queue import job_from_pull


def story_jobs(forge: Forge, processor: ProcessorClient, repo: str, story_id: str, *, queued: bool = False) -> list[dict]:
    """The story's jobs, newest first: one per pull request the story has had."""
    full_name = forge.get_repo(repo).full_name
    found = []
    for n in range(1, MAX_STORY_PULLS + 1):
        branch = naming.story_branch(story_id, n)
        pulls = forge.pulls_for_branch(full_name, branch)
        if not pulls:
            break
        found.append((branch, pulls[0]))
    jobs = []
    for branch, pr in reversed(found):
        job_id = naming.job_id(full_name, branch)
        job = job_from_pull(job_id, full_name, branch, pr) if queued else _processor_job(processor, job_id, full_name,
                                                                                           branch)
        jobs.append({**job, "story_id": story_id, "pr_number": pr.number, "pr_url": pr.html_url,
                     "pr_state": "merged" if pr.merged else pr.state})
    return jobs


def _processor_job(processor: ProcessorClient, job_id: str, repo: str, branch: str) -> dict:
    try:
        return processor.get_job(job_id)
    except ProcessorError as exc:
        if exc.status != 404:
            raise
        return {"job_id": job_id, "repo": repo, "branch": branch, "status": "not_started",
                "error": "the PR processor has no such job: it was never started or its record is gone"}
