"""The PR processor's routes (docs/contracts.md, "PR Processor API"): thin routes over ``ProcessorService``, and the
app's state (``ProcessorState``, at ``app.state.processor``) that every route reads through ``processor_state``.

Every route but /health is signed for ``pr-processor`` (``router``); ``app.create_app`` builds the state and includes
``health_router`` and ``router``. Errors leave as JSON ``{"detail": ...}`` through the shared edge.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from aipm_common.contracts import ProcessPrAccepted
from aipm_common.http import AppVerifier, started
from aipm_common.signing import SignatureVerifier
from ec2_services.pr_processor.models import JOB_ID_RE, InvalidInput, ProcessPrRequest, RerunRequest
from ec2_services.pr_processor.service import JobConflict, ProcessorService
from ec2_services.pr_processor.settings import PrProcessorSettings
from ec2_services.pr_processor.state_machine import JobState

if TYPE_CHECKING:
    from ec2_services.pr_processor.sqs_intake import SqsIntake

MAX_PAGE = 200  # jobs per page of GET /api/jobs, whatever limit asks


@dataclass
class ProcessorState:
    """What the routes read, in one place (``app.state.processor``): built by ``create_app``; the service (and, with
    ``AIPM_DISPATCH=sqs``, the queue's intake) made, started and stopped by the app's lifespan."""

    settings: PrProcessorSettings
    verifier: SignatureVerifier  # for receiver pr-processor
    service: ProcessorService | None = None
    intake: SqsIntake | None = None


def processor_state(request: Request) -> ProcessorState:
    return request.app.state.processor


def _service(request: Request) -> ProcessorService:
    return started(processor_state(request).service, "the PR processor")


def _known_job_id(job_id: str) -> str:
    if not JOB_ID_RE.fullmatch(job_id):
        raise HTTPException(404, f"no job {job_id!r}")
    return job_id


health_router = APIRouter()
router = APIRouter(prefix="/api", dependencies=[Depends(AppVerifier(lambda request: processor_state(request).verifier))])


@health_router.get("/health")
async def health(state: ProcessorState = Depends(processor_state), service: ProcessorService = Depends(_service)):
    await service.refresh_pool()
    body = service.health()
    if state.intake is not None:  # sqs mode only: the job queue this host takes jobs from
        body["job_queue"] = state.intake.health()
    return body


@router.post("/process-pr", status_code=202, response_model=ProcessPrAccepted, responses={200: {}, 400: {}, 409: {}})
async def process_pr(body: ProcessPrRequest, service: ProcessorService = Depends(_service)):
    try:
        job, created = service.submit(body)
    except InvalidInput as exc:
        raise HTTPException(400, str(exc)) from exc
    except JobConflict as exc:
        raise HTTPException(409, str(exc)) from exc
    if created:
        return ProcessPrAccepted(job_id=job.job_id, status=job.status.value)
    return JSONResponse(service.to_json(job), status_code=200)

@router.get("/jobs")
async def list_jobs(
    limit: int = Query(50, ge=1, le=1000),
    status: JobState | None = Query(None),
    repo: str | None = Query(None, max_length=140),
    before: int | None = Query(None, ge=1, le=2**62),
    service: ProcessorService = Depends(_service),
):
    """Newest first, a page of ``limit`` (at most ``MAX_PAGE``: a larger limit gets that many, and
    ``next_before``); ``next_before`` is the cursor of the next (older) page, or null. Read in a thread: a page
    of the database must not hold up the event loop (the agent's stream, other requests)."""
    limit = min(limit, MAX_PAGE)

    def page() -> dict:
        jobs = service.list(limit=limit, status=status, repo=repo, before=before)
        return {"jobs": [service.to_json(job) for job in jobs],
                "next_before": jobs[-1].seq if len(jobs) == limit else None}

    return await asyncio.to_thread(page)

@router.get("/jobs/{job_id}")
async def get_job(job_id: str = Depends(_known_job_id), service: ProcessorService = Depends(_service)):
    job = service.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return service.to_json(job)

@router.get("/jobs/{job_id}/transcript")
async def job_transcript(
    job_id: str = Depends(_known_job_id),
    after: int = Query(0, ge=0, le=2**62),
    limit: int = Query(500, ge=1, le=2000),
    service: ProcessorService = Depends(_service),
):
    job = service.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return service.transcript(job, after=after, limit=limit)

@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: str = Depends(_known_job_id), service: ProcessorService = Depends(_service)):
    try:
        job = await service.cancel(job_id)
    except KeyError:
        raise HTTPException(404, f"no job {job_id!r}") from None
    except JobConflict as exc:
        raise HTTPException(409, str(exc)) from exc
    return service.to_json(job)

@router.post("/jobs/{job_id}/rerun", status_code=202, responses={400: {}, 404: {}, 409: {}})
async def rerun_job(body: RerunRequest | None = None, job_id: str = Depends(_known_job_id),
                    service: ProcessorService = Depends(_service)):
    """A new job on the ended job's branch and pull request; the answer is the new job."""
    try:
        job = service.rerun(job_id, requested_by=body.requested_by if body else None)
    except KeyError:
        raise HTTPException(404, f"no job {job_id!r}") from None
    except InvalidInput as exc:
        raise HTTPException(400, str(exc)) from exc
    except JobConflict as exc:
        raise HTTPException(409, str(exc)) from exc
    return service.to_json(job)

@router.get("/jobs/{job_id}/events")
async def job_events(job_id: str = Depends(_known_job_id), service: ProcessorService = Depends(_service)):
    if service.get(job_id) is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return StreamingResponse(
        _sse(service, job_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )



async def _sse(service: ProcessorService, job_id: str) -> AsyncIterator[bytes]:
    async for item in service.stream(job_id):
        if item is None:
            yield b": keep-alive\n\n"
            continue
        line_id, line = item
        line = line.replace("\r", " ").replace("\n", " ")  # one SSE data line per job line, whatever it holds
        yield f"id: {line_id}\nevent: line\ndata: {line}\n\n".encode()
    job = service.get(job_id)
    end = {"status": job.status.value if job else None, "commit": job.commit_sha if job else None}
    yield f"event: end\ndata: {json.dumps(end)}\n\n".encode()
