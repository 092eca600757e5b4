"""A PR processor stand-in for the API's tests: checks the signature (for ``pr-processor``) and records jobs.

Speaks the PR Processor API of docs/contracts.md where the Lambda depends on it: 202 for a new job, 200 with the current state
for the same ``job_id`` again, 409 for another job on a live branch; ``GET /api/jobs[/{id}]``, cancel (409 once
ended), rerun (``<first id>-r<n>``, 409 while live). ``fail_with`` makes every call answer that status (with ``fail_headers``), to test the API's retries and errors.
"""

from __future__ import annotations

import threading

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from aipm_common.signing import PR_PROCESSOR, SignatureVerifier

ENDED = {"succeeded", "failed", "no_changes", "cancelled"}


class FakeProcessor:
    def __init__(self, secret: str | None):
        self.lock = threading.Lock()
        self.reset()
        self.app = self._build(secret)

    def reset(self) -> None:
        with self.lock:
            self.jobs: dict[str, dict] = {}
            self.submissions: list[dict] = []
            self.fail_with: int | None = None
            self.fail_headers: dict[str, str] = {}
            self.calls = 0

    def _build(self, secret: str | None) -> FastAPI:  # noqa: C901 - a test double: its route closures count into the builder
        app = FastAPI()
        fake = self
        signed = [Depends(SignatureVerifier(secret, PR_PROCESSOR))]

        @app.middleware("http")
        async def failing(request: Request, call_next):
            fake.calls += 1
            if fake.fail_with is not None and request.url.path != "/health":
                return JSONResponse({"detail": "injected failure"}, status_code=fake.fail_with,
                                    headers=fake.fail_headers)
            return await call_next(request)

        @app.get("/health")
        def health():
            return {"status": "ok"}

        @app.post("/api/process-pr", dependencies=signed)
        async def process_pr(request: Request):
            body = await request.json()
            with fake.lock:
                fake.submissions.append(body)
                if body["job_id"] in fake.jobs:
                    return JSONResponse(fake.jobs[body["job_id"]], status_code=200)
                for job in fake.jobs.values():
                    if job["branch"] == body["branch"] and job["status"] not in ENDED:
                        return JSONResponse({"detail": f"branch has live job {job['job_id']}"}, status_code=409)
                job = {**body, "status": "queued", "attempts": 0, "commit": None, "error": None}
                fake.jobs[body["job_id"]] = job
            return JSONResponse({"job_id": body["job_id"], "status": "queued"}, status_code=202)

        @app.get("/api/jobs", dependencies=signed)
        def list_jobs(limit: int = 50, status: str | None = None, repo: str | None = None, before: int | None = None):
            jobs = [{**j, "seq": n} for n, j in enumerate(fake.jobs.values(), 1)][::-1]
            jobs = [j for j in jobs if (status is None or j["status"] == status)
                    and (repo is None or j["repo"].lower() == repo.lower()) and (before is None or j["seq"] < before)]
            return {"jobs": jobs[:limit], "next_before": jobs[limit - 1]["seq"] if len(jobs) > limit else None}

        @app.get("/api/jobs/{job_id}", dependencies=signed)
        def get_job(job_id: str):
            if job_id not in fake.jobs:
                return JSONResponse({"detail": f"job {job_id} not found"}, status_code=404)
            return fake.jobs[job_id]

        @app.get("/api/jobs/{job_id}/transcript", dependencies=signed)
        def transcript(job_id: str, after: int = 0, limit: int = 500):
            job = fake.jobs.get(job_id)
            if job is None:
                return JSONResponse({"detail": f"job {job_id} not found"}, status_code=404)
            lines = [{"id": i, "at": None, "text": t} for i, t in enumerate(job.get("lines", []), 1) if i > after]
            return {"job_id": job_id, "status": job["status"], "lines": lines[:limit], "live": None,
                    "next": lines[:limit][-1]["id"] if lines else after, "complete": job["status"] in ENDED}

        @app.post("/api/jobs/{job_id}/rerun", dependencies=signed)
        async def rerun(job_id: str, request: Request):
            body = await request.json()
            with fake.lock:
                job = fake.jobs.get(job_id)
                if job is None:
                    return JSONResponse({"detail": f"job {job_id} not found"}, status_code=404)
                if job["status"] not in ENDED:
                    return JSONResponse({"detail": f"job {job_id} is still {job['status']}"}, status_code=409)
                runs = [j for j in fake.jobs.values() if j["branch"] == job["branch"]]
                new_id = f"{runs[0]['job_id']}-r{len(runs) + 1}"
                fake.jobs[new_id] = {**job, "job_id": new_id, "status": "queued", "attempts": 0, "commit": None,
                                     "error": None, "rerun_of": job_id, "requested_by": body.get("requested_by")}
                return JSONResponse(fake.jobs[new_id], status_code=202)

        @app.post("/api/jobs/{job_id}/cancel", dependencies=signed)
        def cancel(job_id: str):
            job = fake.jobs.get(job_id)
            if job is None:
                return JSONResponse({"detail": f"job {job_id} not found"}, status_code=404)
            if job["status"] in ENDED:
                return JSONResponse({"detail": f"job {job_id} has already ended ({job['status']})"}, status_code=409)
            job["status"] = "cancelled"
            return {"job_id": job_id, "status": "cancelled"}

        return app
