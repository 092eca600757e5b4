"""``GET /api/jobs/{id}/events``: the job's Server-Sent Events, relayed from the PR processor to the browser.

Only where an answer can stream: the API under uvicorn (``python -m aipm_local.api``: the local stack) with
``AIPM_DISPATCH=http``. Behind a Lambda function URL (Mangum) an answer reaches the browser only once it has ended,
so there the route answers 409, as it does with ``sqs`` dispatch (no one host streams every job); the UI then polls
``GET /api/jobs/{id}``, backing off while nothing changes. The caller signs in as for every route (the UI reads the
stream with fetch(), which sends the Authorization header; EventSource cannot).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from lambda_fn.auth import Caller, current_caller
from lambda_fn.routes.api import _visible_job, check_job_id
from lambda_fn.routes.deps import runtime
from lambda_fn.runtime import Runtime

router = APIRouter(prefix="/api", tags=["generate"])


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}, 404: {}, 409: {}})
async def job_events(job_id: str, request: Request, caller: Annotated[Caller, Depends(current_caller)],
                     rt: Annotated[Runtime, Depends(runtime)]):
    """The PR processor's stream of the job as it is: ``event: line`` per job line, keep-alive comments, one
    ``event: end``; 409 where the API cannot stream (a Lambda function URL, ``AIPM_DISPATCH=sqs``)."""
    check_job_id(job_id)
    if "aws.event" in request.scope:
        raise HTTPException(409, "this API runs behind a Lambda function URL, which answers only once a request has "
                                 f"ended: no event stream; poll GET /api/jobs/{job_id}")
    if rt.queue is not None:
        raise HTTPException(409, f"job {job_id} has no event stream with AIPM_DISPATCH=sqs: it runs on whichever "
                                 "host took it from the queue; poll GET /api/jobs/{id}?repo=&branch=")
    await run_in_threadpool(_visible_job, rt, job_id)  # 404 unknown, or outside AIPM_ALLOWED_REPOS
    events = await rt.processor.open_events(job_id)
    return StreamingResponse(events.chunks(), media_type="text/event-stream", background=events.close_task(),
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
