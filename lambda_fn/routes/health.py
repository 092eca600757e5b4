"""``GET /health``: the API is up, which forge it talks to and how callers sign in (no secret, no caller needed)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from lambda_fn.routes.deps import runtime
from lambda_fn.runtime import Runtime

router = APIRouter(tags=["health"])


@router.get("/health")
def health(rt: Annotated[Runtime, Depends(runtime)]):
    return {"status": "ok", "service": "lambda-api", "forge": rt.forge.kind, "auth": rt.authenticator.mode}
