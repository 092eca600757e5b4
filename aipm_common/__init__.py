"""What every part shares: request signing, settings, logging and the HTTP edge (body limit, errors).

A top-level package imported by both EC2 services, by the Lambda (whose zip ships it beside ``lambda_fn``), by the
local stack and by the benchmarks. It imports no service, and depends only on fastapi/pydantic/httpx, never on
host-only packages (ptyprocess, pyte, uvicorn) at import time.
"""
