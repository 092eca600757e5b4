"""User-facing endpoints: ``POST /api/generate-code`` and the jobs (``GET /api/jobs…``, ``POST …/cancel``).

Validates at the edge (repo form, allow-list, branch names, sizes) and calls the service objects; every route
needs a signed-in caller (``auth.current_caller``). With ``AIPM_DISPATCH=sqs`` no PR processor knows every job: a
job is read from its pull request (``lambda_fn.queue``), so reading one needs its repo and branch, and cancel is refused.
"""

from __future__ import annotations

import functools
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from lambda_fn import naming
from lambda_fn.auth import Caller, current_caller
from lambda_fn.forge.base import ForgeError
from lambda_fn.generate import Generator, Story
from lambda_fn.jobs import story_jobs
from lambda_fn.processor import ProcessorError
from lambda_fn.queue import DISPATCHED, job_from_pull
from lambda_fn.rerun import Rerunner
from lambda_fn.routes.deps import callback_url, require_json, runtime
from lambda_fn.runtime import Runtime

router = APIRouter(prefix="/api", tags=["generate"])

class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    repo: str = Field(max_length=140, description="owner/name")
    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=65_536)
    acceptance_criteria: list[Annotated[str, Field(max_length=4000)]] = Field(default_factory=list, max_length=100)
    base_branch: str | None = Field(None, max_length=200)
    story_id: str | None = Field(None, min_length=1, max_length=200)

    @field_validator("title")
    @classmethod
    def _title_not_blank(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("title is blank")
        return value


class GenerateResponse(BaseModel):
    job_id: str
    pr_number: int
    pr_url: str
    branch: str
    status: str


def check_repo(repo: str, rt: Runtime) -> str:
    """400 for a name not of the form owner/name, 403 for one outside ``AIPM_ALLOWED_REPOS``."""
    if not naming.valid_repo(repo):
        raise HTTPException(400, f"repo must be of the form owner/name (got {repo[:140]!r})")
    if not naming.repo_allowed(repo, rt.allowed_repos):
        raise HTTPException(403, f"repository {repo} is not in AIPM_ALLOWED_REPOS")
    return repo


def check_job_id(job_id: str) -> str:
    if not naming.JOB_ID_RE.fullmatch(job_id):
        raise HTTPException(400, "job id must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")
    return job_id


def ui_url(rt: Runtime) -> str | None:
    origins = rt.settings.allowed_origin_list
    if origins:
        return origins[0] + "/"
    if rt.settings.aipm_ui_dir and rt.settings.public_api_url:
        return rt.settings.public_api_url.rstrip("/") + "/"
    return None


@router.post("/generate-code", status_code=202, response_model=GenerateResponse, dependencies=[Depends(require_json)],
             responses={200: {"model": GenerateResponse, "description": "the story's open pull request, again"}})
def generate_code(
    body: GenerateRequest,
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    rt: Annotated[Runtime, Depends(runtime)],
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
):
    check_repo(body.repo, rt)
    if body.base_branch is not None and not naming.valid_branch(body.base_branch):
        raise HTTPException(400, f"base_branch {body.base_branch[:200]!r} is not a valid branch name")
    story = Story(repo=body.repo, title=body.title, description=body.description,
                  acceptance_criteria=body.acceptance_criteria, base_branch=body.base_branch, story_id=body.story_id)
    admit = functools.partial(rt.rate_limiter.check, caller.identity)  # counted only when a pull request is opened
    outcome = Generator(rt.forge, rt.dispatcher, ui_url=ui_url(rt), admit=admit).run(
        story, requested_by=caller.requested_by, idempotency_key=idempotency_key, callback_url=callback_url(request, rt))
    return JSONResponse(outcome.body(), status_code=202 if outcome.created else 200)


JobStatus = Literal["queued", "running", "pushing", "succeeded", "failed", "no_changes", "cancelled"]


@router.get("/jobs")
def list_jobs(
    caller: Annotated[Caller, Depends(current_caller)],
    rt: Annotated[Runtime, Depends(runtime)],
    repo: Annotated[str | None, Query(max_length=140)] = None,
    story_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    status: Annotated[JobStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(ge=1, le=2**62, description="next_before of the previous page")] = None,
):
    """The job history, newest first, a page of ``limit`` at a time (``before=next_before`` for the next page)."""
    if repo is not None:
        check_repo(repo, rt)
    if story_id is not None:
        if repo is None:
            raise HTTPException(400, "story_id needs repo: GET /api/jobs?repo=owner/name&story_id=…")
        return {"jobs": story_jobs(rt.forge, rt.processor, repo, story_id, queued=rt.queue is not None),
                "next_before": None}
    if rt.queue is not None:
        raise HTTPException(400, "with AIPM_DISPATCH=sqs jobs run on whichever host took them from the queue and no "
                                 "one lists them all: ask for a story's jobs with GET /api/jobs?repo=owner/name&story_id=…")
    page = rt.processor.list_jobs({"limit": limit, "status": status, "repo": repo, "before": before})
    jobs = [_with_pr_url(rt, j) for j in page.get("jobs", [])
            if naming.repo_allowed(str(j.get("repo", "")), rt.allowed_repos)]
    return {"jobs": jobs, "next_before": page.get("next_before")}


def _visible_job(rt: Runtime, job_id: str) -> dict:
    job = rt.processor.get_job(check_job_id(job_id))
    if not naming.repo_allowed(str(job.get("repo", "")), rt.allowed_repos):
        raise ProcessorError(f"job {job_id} not found", 404)
    return job


def _with_pr_url(rt: Runtime, job: dict) -> dict:
    """The job with its pull request's address, so a page that knows only the job id can link to it."""
    repo, number = str(job.get("repo", "")), job.get("pr_number")
    if job.get("pr_url") or not isinstance(number, int) or not naming.valid_repo(repo):
        return job
    key = repo.lower()
    if key not in rt.repo_urls:  # asked once per container: a job page polls every second
        try:
            rt.repo_urls[key] = rt.forge.get_repo(repo).html_url
        except ForgeError:
            return job  # the link is a convenience: the job's state still answers
    return {**job, "pr_url": f"{rt.repo_urls[key]}/pull/{number}"}


def _queued_job(rt: Runtime, job_id: str, repo: str | None, branch: str | None) -> dict:
    """sqs mode: the job of ``repo``/``branch`` as its pull request shows it (the id must be that branch's job)."""
    check_job_id(job_id)
    if not repo or not branch:
        raise HTTPException(400, "with AIPM_DISPATCH=sqs a job's state is read from its pull request: "
                                 f"GET /api/jobs/{job_id}?repo=owner/name&branch=aipm/…")
    check_repo(repo, rt)
    if not naming.valid_branch(branch) or naming.job_id(repo, branch) != naming.run_root(job_id):
        raise HTTPException(404, f"job {job_id} is not the job of {repo} {branch[:200]}")
    key = repo.lower()
    if key not in rt.full_names:  # asked once per container: a job page polls every second
        rt.full_names[key] = rt.forge.get_repo(repo).full_name
    full_name = rt.full_names[key]
    pulls = rt.forge.pulls_for_branch(full_name, branch)  # a conditional read: 304 while nothing changed
    pr = next((p for p in pulls if p.is_open), pulls[0] if pulls else None)
    if pr is None:
        raise HTTPException(404, f"job {job_id}: no pull request has head {branch} in {full_name}")
    return {**job_from_pull(job_id, full_name, branch, pr), "pr_number": pr.number, "pr_url": pr.html_url,
            "pr_state": "merged" if pr.merged else pr.state}


@router.get("/jobs/{job_id}")
def get_job(job_id: str, caller: Annotated[Caller, Depends(current_caller)], rt: Annotated[Runtime, Depends(runtime)],
            repo: Annotated[str | None, Query(max_length=140)] = None,
            branch: Annotated[str | None, Query(max_length=200)] = None):
    if rt.queue is not None:
        return _queued_job(rt, job_id, repo, branch)
    return _with_pr_url(rt, _visible_job(rt, job_id))


@router.get("/jobs/{job_id}/transcript")
def job_transcript(job_id: str, caller: Annotated[Caller, Depends(current_caller)],
                   rt: Annotated[Runtime, Depends(runtime)],
                   after: Annotated[int, Query(ge=0, le=2**62)] = 0,
                   limit: Annotated[int, Query(ge=1, le=2000)] = 500):
    """The job's whole transcript, a page of lines after line ``after``; poll with ``after=next`` while it is live."""
    if rt.queue is not None:
        raise HTTPException(409, f"job {check_job_id(job_id)}'s transcript stays on the host that ran it with "
                                 "AIPM_DISPATCH=sqs: its result is on the pull request; the transcript needs "
                                 "AIPM_DISPATCH=http")
    _visible_job(rt, job_id)
    return rt.processor.transcript(job_id, after=after, limit=limit)


@router.post("/jobs/{job_id}/rerun", status_code=202, dependencies=[Depends(require_json)])
def rerun_job(job_id: str, request: Request, caller: Annotated[Caller, Depends(current_caller)],
              rt: Annotated[Runtime, Depends(runtime)],
              repo: Annotated[str | None, Query(max_length=140)] = None,
              branch: Annotated[str | None, Query(max_length=200)] = None):
    """A new job on the ended job's branch and pull request; the earlier runs stay (409 says why when it cannot)."""
    job = _queued_job(rt, job_id, repo, branch) if rt.queue is not None else _visible_job(rt, job_id)
    if job.get("status") in ("queued", "running", "pushing", DISPATCHED):
        raise HTTPException(409, f"job {job_id} is still {job['status']}: a job is re-run once it has ended"
                                 + ("" if rt.queue is not None else " (cancel it first to start again now)"))
    done = Rerunner(rt.forge, rt.dispatcher).rerun(job, requested_by=caller.requested_by,
                                                   callback_url=callback_url(request, rt))
    return done.body()


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, caller: Annotated[Caller, Depends(current_caller)],
               rt: Annotated[Runtime, Depends(runtime)]):
    if rt.queue is not None:
        raise HTTPException(409, f"job {check_job_id(job_id)} cannot be cancelled with AIPM_DISPATCH=sqs: it runs on "
                                 "whichever host took it from the queue and no API call reaches that host; cancel "
                                 "needs AIPM_DISPATCH=http")
    _visible_job(rt, job_id)
    return rt.processor.cancel(job_id)
