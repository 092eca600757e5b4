"""``POST /api/callbacks/job``: the PR processor's signed report that a job ended (signed for ``lambda-api``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException

from aipm_common.contracts import JobResult
from aipm_common.http import AppVerifier
from lambda_fn import naming
from lambda_fn.callbacks import Recorder
from lambda_fn.routes.deps import runtime
from lambda_fn.runtime import Runtime

router = APIRouter(prefix="/api/callbacks", tags=["callbacks"],
                   dependencies=[Depends(AppVerifier(lambda request: runtime(request).callback_verifier))])


@router.post("/job")
def job_ended(result: JobResult, rt: Annotated[Runtime, Depends(runtime)]):
    if not naming.valid_repo(result.repo):
        raise HTTPException(400, "repo must be of the form owner/name")
    if not naming.valid_branch(result.branch) or not result.branch.startswith(naming.BRANCH_PREFIX):
        raise HTTPException(400, "branch must be a valid branch under aipm/")
    if not naming.repo_allowed(result.repo, rt.allowed_repos):
        raise HTTPException(403, f"repository {result.repo} is not in AIPM_ALLOWED_REPOS")
    return Recorder(rt.forge).record(result.model_dump())
