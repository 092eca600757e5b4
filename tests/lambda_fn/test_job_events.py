"""``GET /api/jobs/{id}/events``: the PR processor's event stream of a job, relayed to the browser by the API under
uvicorn (the local stack); 409 behind a Lambda function URL (buffered answers) and with AIPM_DISPATCH=sqs."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import StreamingResponse

from aipm_common.signing import PR_PROCESSOR, SignatureVerifier
from tests.conftest import SECRET
from tests.lambda_fn.conftest import REPO, UI_TOKEN
from tests.support.servers import serve_in_thread

JOB = "j-0123456789abcdef01234567"
AUTH = {"Authorization": f"Bearer {UI_TOKEN}"}


class StreamingProcessor:
    """A PR processor that knows one job and streams its lines when the test says so (signed calls only)."""

    def __init__(self):
        self.release = threading.Event()
        self.opened = threading.Event()
        self.closed = threading.Event()
        self.app = FastAPI()
        signed = [Depends(SignatureVerifier(SECRET, PR_PROCESSOR))]

        @self.app.get("/api/jobs/{job_id}", dependencies=signed)
        def job(job_id: str):
            if job_id != JOB:
                raise HTTPException(404, f"no job {job_id!r}")
            return {"job_id": JOB, "repo": REPO, "branch": "aipm/x", "status": "running"}

        @self.app.get("/api/jobs/{job_id}/events", dependencies=signed)
        async def events(job_id: str):
            async def body():
                self.opened.set()
                try:
                    yield b"id: 1\nevent: line\ndata: [aipm] accepted\n\n"
                    yield b": keep-alive\n\n"
                    while not self.release.is_set():
                        await asyncio.sleep(0.02)
                    yield b"id: 2\nevent: line\ndata: [aipm] job ended: succeeded\n\n"
                    yield b'event: end\ndata: {"status": "succeeded", "commit": null}\n\n'
                finally:
                    self.closed.set()

            return StreamingResponse(body(), media_type="text/event-stream")


@pytest.fixture
def streaming_processor():
    processor = StreamingProcessor()
    with serve_in_thread(processor.app) as url:
        processor.url = url
        yield processor
    processor.release.set()


def test_the_api_under_uvicorn_relays_the_jobs_events_as_they_come(make_api, streaming_processor):
    api = make_api(pr_processor_url=streaming_processor.url)
    with api.serve() as base, httpx.stream("GET", f"{base}/api/jobs/{JOB}/events", headers=AUTH, timeout=10) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["cache-control"] == "no-cache"
        chunks = resp.iter_text()
        seen = ""
        while "accepted" not in seen:
            seen += next(chunks)
        # The first line came through while the job still runs: the API did not wait for the stream's end.
        assert "id: 1\nevent: line\ndata: [aipm] accepted\n\n" in seen and "job ended" not in seen
        streaming_processor.release.set()
        seen += "".join(chunks)
    assert seen.endswith('event: end\ndata: {"status": "succeeded", "commit": null}\n\n')
    assert ": keep-alive" in seen


def test_a_browser_that_goes_away_closes_the_stream_to_the_processor(make_api, streaming_processor):
    api = make_api(pr_processor_url=streaming_processor.url)
    with api.serve() as base:
        with httpx.stream("GET", f"{base}/api/jobs/{JOB}/events", headers=AUTH, timeout=10) as resp:
            assert resp.status_code == 200
            next(resp.iter_bytes())
        assert streaming_processor.closed.wait(10), "the relay kept the processor's stream open"


def test_the_events_need_sign_in_and_a_known_job(make_api, streaming_processor):
    api = make_api(pr_processor_url=streaming_processor.url)
    with api.serve() as base:
        assert httpx.get(f"{base}/api/jobs/{JOB}/events", timeout=10).status_code == 401
        unknown = httpx.get(f"{base}/api/jobs/j-ffffffffffffffffffffffff/events", headers=AUTH, timeout=10)
        assert unknown.status_code == 404
        assert httpx.get(f"{base}/api/jobs/..%2Fx/events", headers=AUTH, timeout=10).status_code in (400, 404)
    assert not streaming_processor.opened.is_set()


def test_behind_a_lambda_function_url_the_events_are_409_and_say_to_poll(make_api, streaming_processor):
    api = make_api(pr_processor_url=streaming_processor.url)
    answer = api.call("GET", f"/api/jobs/{JOB}/events")
    assert answer.status_code == 409
    assert "Lambda function URL" in answer.json()["detail"] and f"GET /api/jobs/{JOB}" in answer.json()["detail"]
    assert not streaming_processor.opened.is_set()


def test_with_sqs_dispatch_the_events_are_409(make_api, job_queue, streaming_processor):
    api = make_api(pr_processor_url=streaming_processor.url, aipm_dispatch="sqs", aipm_job_queue_url=job_queue.url)
    with api.serve() as base:
        answer = httpx.get(f"{base}/api/jobs/{JOB}/events", headers=AUTH, timeout=10)
    assert answer.status_code == 409 and "AIPM_DISPATCH=sqs" in answer.json()["detail"]
