"""The signed callback: delivered from the outbox with retries, once; redirects are not followed."""

from __future__ import annotations

import signal
import time

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse

from ec2_services.common.signing import LAMBDA_API, SignatureVerifier
from tests.ec2_services.pr_processor.conftest import BRANCH, REPO
from tests.ec2_services.pr_processor.fake_pool import Plan
from tests.support.servers import free_port, serve_in_thread


class Receiver:
    """The Lambda's callback endpoint as the processor sees it: signed for lambda-api; fails ``fail`` times first."""

    def __init__(self, secret: str, fail: int = 0):
        self.fail = fail
        self.calls: list[dict] = []
        self.accepted: list[dict] = []
        self.redirected_to = 0
        self.app = FastAPI()
        verify = SignatureVerifier(secret, LAMBDA_API)

        @self.app.post("/api/callbacks/job", dependencies=[Depends(verify)])
        async def callback(request: Request):
            body = await request.json()
            self.calls.append(body)
            if len(self.calls) <= self.fail:
                return JSONResponse({"detail": "not yet"}, status_code=503)
            self.accepted.append(body)
            return {"ok": True}

        @self.app.post("/moved")
        async def moved():
            return RedirectResponse("/elsewhere", status_code=307)

        @self.app.post("/elsewhere")
        async def elsewhere():
            self.redirected_to += 1
            return {"ok": True}


def _wait_callback(proc, job_id: str, state: str, timeout: float = 20) -> dict:
    return proc.wait(job_id, lambda j: j["callback"]["state"] == state, timeout=timeout)


def test_callback_is_signed_retried_past_two_failures_and_delivered_once(start_processor, forge, fake_pool,
                                                                         shared_secret):
    receiver = Receiver(shared_secret, fail=2)
    fake_pool.plan("j-cb", Plan(files={"cb.txt": "cb\n"}, output="x" * 5000 + "\nfinal words"))
    with serve_in_thread(receiver.app) as url:
        proc = start_processor(AIPM_CALLBACK_ORIGINS=url)
        assert proc.submit("j-cb", callback_url=url + "/api/callbacks/job", pr_number=12).status_code == 202
        job = _wait_callback(proc, "j-cb", "delivered")
        time.sleep(0.6)  # nothing more is sent after delivery
    assert job["callback"] == {"state": "delivered", "attempts": 3}
    assert len(receiver.calls) == 3 and len(receiver.accepted) == 1
    body = receiver.accepted[0]
    assert set(body) == {"job_id", "status", "commit", "error", "pr_number", "repo", "branch", "attempts",
                         "duration_s", "credits", "output_tail"}
    assert body["job_id"] == "j-cb" and body["status"] == "succeeded" and body["commit"] == forge.tip(REPO, BRANCH)
    assert (body["pr_number"], body["repo"], body["branch"], body["attempts"]) == (12, REPO, BRANCH, 1)
    assert body["credits"] == 1.25 and body["duration_s"] > 0 and body["error"] is None
    assert len(body["output_tail"]) == 4000 and body["output_tail"].endswith("final words")


def test_callback_redirect_is_not_followed_and_callback_ends_failed(start_processor, fake_pool, shared_secret):
    receiver = Receiver(shared_secret)
    with serve_in_thread(receiver.app) as url:
        proc = start_processor(AIPM_CALLBACK_ORIGINS=url, PR_CALLBACK_MAX_AGE="1")
        assert proc.submit("j-redir", callback_url=url + "/moved").status_code == 202
        job = _wait_callback(proc, "j-redir", "failed")
    assert receiver.redirected_to == 0
    assert job["status"] == "no_changes" and job["callback"]["attempts"] >= 1


@pytest.mark.timeout(60)
def test_pending_callback_is_sent_after_a_restart(start_processor, fake_pool, shared_secret):
    receiver = Receiver(shared_secret, fail=10**6)
    port = free_port()
    with serve_in_thread(receiver.app) as url:
        first = start_processor(port=port, AIPM_CALLBACK_ORIGINS=url)
        assert first.submit("j-later", callback_url=url + "/api/callbacks/job").status_code == 202
        first.wait("j-later", lambda j: j["callback"]["attempts"] >= 1)
        first.proc.kill(signal.SIGKILL)
        receiver.fail = 0
        second = start_processor(port=port, AIPM_CALLBACK_ORIGINS=url)
        job = _wait_callback(second, "j-later", "delivered")
    assert receiver.accepted[-1]["job_id"] == "j-later" and receiver.accepted[-1]["status"] == "no_changes"
    assert job["callback"]["attempts"] >= 2
