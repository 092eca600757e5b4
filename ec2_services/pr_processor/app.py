"""The PR processor's HTTP API (docs/contracts.md, "PR Processor API"): thin routes over ``ProcessorService``, and with
``AIPM_DISPATCH=sqs`` the job queue's intake (``sqs_intake``) started and stopped beside them.

Every route but /health is signed for ``pr-processor``. Errors leave as JSON ``{"detail": ...}`` through the shared edge.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from aipm_common.contracts import ProcessPrAccepted
from aipm_common.http import install_edge
from aipm_common.signing import PR_PROCESSOR, SignatureVerifier
from ec2_services.pr_processor.models import JOB_ID_RE, InvalidInput, ProcessPrRequest, RerunRequest
from ec2_services.pr_processor.service import JobConflict, ProcessorService
from ec2_services.pr_processor.settings import PrProcessorSettings
from ec2_services.pr_processor.state_machine import JobState

log = logging.getLogger("ec2_services.pr_processor")

MAX_PAGE = 200  # jobs per page of GET /api/jobs, whatever limit asks


def _service(request: Request) -> ProcessorService:
    return request.app.state.service


def _known_job_id(job_id: str) -> str:
    if not JOB_ID_RE.match(job_id):
        raise HTTPException(404, f"no job {job_id!r}")
    return job_id


def jobs_router(verify: SignatureVerifier) -> APIRouter:  # noqa: C901 - the route closures count into the factory; module routers (issue 19) will remove it
    router = APIRouter(prefix="/api", dependencies=[Depends(verify)])

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

    return router


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


def create_app(settings: PrProcessorSettings, secret: str | None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service = ProcessorService(settings, secret)
        app.state.service = service
        app.state.intake = None
        await service.start()
        try:
            if settings.aipm_dispatch == "sqs":
                from ec2_services.pr_processor.scale_in import ScaleInProtection
                from ec2_services.pr_processor.sqs_intake import SqsIntake

                assert settings.aipm_job_queue_url is not None  # the settings refuse sqs mode without it
                protection = ScaleInProtection(settings.aipm_asg_name) if settings.aipm_asg_name else None
                app.state.intake = SqsIntake(service, queue_url=settings.aipm_job_queue_url,
                                             wait_s=settings.pr_sqs_wait_s, visibility_s=settings.pr_sqs_visibility_s,
                                             protection=protection)
                await app.state.intake.start()
            elif settings.aipm_asg_name:
                log.warning("AIPM_ASG_NAME is ignored with AIPM_DISPATCH=http: only sqs mode runs in a group")
            yield
        finally:
            if app.state.intake is not None:
                await app.state.intake.stop()
            await service.stop()

    # Signed JSON from our own parts: a body without a Content-Type is read as JSON (no browser can send a signed one).
    app = FastAPI(title="AIPM PR processor", lifespan=lifespan, strict_content_type=False)
    install_edge(app)

    @app.exception_handler(sqlite3.OperationalError)
    async def _job_store_unavailable(request: Request, exc: sqlite3.OperationalError):
        # The write was rolled back: nothing was accepted, and the caller may simply send it again.
        log.error("job database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {"detail": f"job database unavailable ({exc}): nothing was recorded; send the request again later"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.get("/health")
    async def health(request: Request):
        service: ProcessorService = request.app.state.service
        await service.refresh_pool()
        body = service.health()
        if request.app.state.intake is not None:  # sqs mode only: the job queue this host takes jobs from
            body["job_queue"] = request.app.state.intake.health()
        return body

    app.include_router(jobs_router(SignatureVerifier(secret, PR_PROCESSOR)))
    return app
