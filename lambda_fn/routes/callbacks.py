"""``POST /api/callbacks/job``: the PR processor's signed report that a job ended (signed for ``lambda-api``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request

from aipm_common.contracts import JobResult
from lambda_fn import naming
from lambda_fn.callbacks import Recorder


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
