"""``POST /api/callbacks/job``: the PR processor's signed report that a job ended (signed for ``lambda-api``)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from aipm_common.bounds import Count, Credits, PrNumber, Seconds
from lambda_fn import naming
from lambda_fn.callbacks import Recorder


class TestRun(BaseModel):
    """The repository's tests on the agent's commit (run by the worker pool as the agent)."""

    command: str = Field(max_length=2000)
    source: str | None = Field(None, max_length=40)
    summary: str = Field(max_length=200)
    passed: int | None = Field(None, ge=0, le=10_000_000)
    failed: int | None = Field(None, ge=0, le=10_000_000)
    exit_code: int | None = Field(None, ge=-255, le=255)
    timed_out: bool = False
    duration_s: float | None = Field(None, ge=0)
    output_tail: str = Field("", max_length=100_000)


class JobResult(BaseModel):
    job_id: str = Field(pattern=naming.JOB_ID_RE.pattern)
    status: Literal["succeeded", "failed", "no_changes", "cancelled"]
    repo: str = Field(max_length=140)
    branch: str = Field(max_length=200)
    commit: str | None = Field(None, max_length=64)
    error: str | None = Field(None, max_length=200_000)
    pr_number: PrNumber | None = None
    attempts: Count | None = None
    duration_s: Seconds | None = None
    credits: Credits | None = None
    output_tail: str | None = Field(None, max_length=500_000)
    tests: TestRun | None = None


class _Verify:
    """``SignatureVerifier(secret, "lambda-api")``, built on the first callback (signing imports httpx)."""

    verifies_signature = True

    def __init__(self, secret: str | None):
        self._secret = secret
        self._verifier = None

    async def __call__(self, request: Request) -> None:
        if self._verifier is None:
            from aipm_common.signing import LAMBDA_API, SignatureVerifier

            self._verifier = SignatureVerifier(self._secret, LAMBDA_API)
        await self._verifier(request)


def callbacks_router(secret: str | None) -> APIRouter:
    router = APIRouter(prefix="/api/callbacks", tags=["callbacks"])
    verify = _Verify(secret)

    @router.post("/job", dependencies=[Depends(verify)])
    def job_ended(result: JobResult, request: Request):
        if not naming.valid_repo(result.repo):
            raise HTTPException(400, "repo must be of the form owner/name")
        if not naming.valid_branch(result.branch) or not result.branch.startswith(naming.BRANCH_PREFIX):
            raise HTTPException(400, "branch must be a valid branch under aipm/")
        runtime = request.app.state.runtime
        if not naming.repo_allowed(result.repo, runtime.allowed_repos):
            raise HTTPException(403, f"repository {result.repo} is not in AIPM_ALLOWED_REPOS")
        return Recorder(runtime.forge).record(result.model_dump())

    return router
