"""The signed callback: delivered from the outbox with retries (a 4xx too) for up to PR_CALLBACK_MAX_AGE after the
job's end, once; redirects are not followed."""

from __future__ import annotations

import signal
import time

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse

from aipm_common.signing import LAMBDA_API, SignatureVerifier
from tests.ec2_services.pr_processor.conftest import BRANCH, REPO
from tests.ec2_services.pr_processor.fake_pool import Plan
from tests.support.servers import free_port, serve_in_thread


class Receiver:
    """The Lambda's callback endpoint as the processor sees it: signed for lambda-api; answers ``fail`` times with
    ``fail_status`` and ``{"detail": detail}`` first."""

    def __init__(self, secret: str, fail: int = 0, fail_status: int = 503, detail: str = "not yet"):
        self.fail = fail
        self.fail_status = fail_status
        self.detail = detail
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
                return JSONResponse({"detail": self.detail}, status_code=self.fail_status)
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
    assert job["callback"] == {"state": "delivered", "attempts": 3, "last_status": 200, "last_error": None}
    assert len(receiver.calls) == 3 and len(receiver.accepted) == 1
    body = receiver.accepted[0]
    assert set(body) == {"job_id", "status", "commit", "error", "pr_number", "repo", "branch", "attempts",
                         "duration_s", "credits", "output_tail"}
    assert body["job_id"] == "j-cb" and body["status"] == "succeeded" and body["commit"] == forge.tip(REPO, BRANCH)
    assert (body["pr_number"], body["repo"], body["branch"], body["attempts"]) == (12, REPO, BRANCH, 1)
    assert body["credits"] == 1.25 and body["duration_s"] > 0 and body["error"] is None
    assert len(body["output_tail"]) == 4000 and body["output_tail"].endswith("final words")


def test_the_agents_tokens_reach_the_job_and_its_callback(start_processor, forge, fake_pool, shared_secret):
    """An agent that reports its model tokens (the pool's ``tokens``): the job shows them and the callback sends them;
    a malformed report is dropped, not stored."""
    receiver = Receiver(shared_secret)
    fake_pool.plan("j-tok", Plan(files={"t.txt": "t\n"}, tokens={"input": 12345, "output": 678}))
    fake_pool.plan("j-bad", Plan(files={"b.txt": "b\n"}, tokens={"input": "many", "output": -1}))
    with serve_in_thread(receiver.app) as url:
        proc = start_processor(AIPM_CALLBACK_ORIGINS=url)
        for job_id, branch in (("j-tok", BRANCH), ("j-bad", "aipm/story-2")):
            assert proc.submit(job_id, branch=branch, callback_url=url + "/api/callbacks/job").status_code == 202
        jobs = {job_id: _wait_callback(proc, job_id, "delivered") for job_id in ("j-tok", "j-bad")}
    assert jobs["j-tok"]["tokens"] == {"input": 12345, "output": 678}
    assert jobs["j-bad"]["tokens"] is None
    sent = {body["job_id"]: body for body in receiver.accepted}
    assert sent["j-tok"]["tokens"] == {"input": 12345, "output": 678}
    assert "tokens" not in sent["j-bad"]


LEAKY = "ghp_" + "CallbackDetailLeak" + "0123456789abcdef"


def test_callback_refused_with_401_is_retried_and_delivered_once(start_processor, fake_pool, shared_secret):
    # A Lambda whose clock or secret is briefly wrong answers 401: that heals, so the callback is not given up.
    receiver = Receiver(shared_secret, fail=2, fail_status=401, detail=f"signature too old; token {LEAKY}")
    with serve_in_thread(receiver.app) as url:
        proc = start_processor(AIPM_CALLBACK_ORIGINS=url)
        assert proc.submit("j-401", callback_url=url + "/api/callbacks/job").status_code == 202
        job = _wait_callback(proc, "j-401", "delivered")
        time.sleep(0.6)  # nothing more is sent after delivery
    assert job["callback"] == {"state": "delivered", "attempts": 3, "last_status": 200, "last_error": None}
    assert len(receiver.calls) == 3 and len(receiver.accepted) == 1
    output = proc.output()
    warnings = [line for line in output.splitlines() if "callback refused with HTTP 401" in line]
    assert len(warnings) == 2 and all("signature too old" in line for line in warnings), output[-3000:]
    assert "WARNING" in warnings[0] or '"warning"' in warnings[0].lower()
    assert LEAKY not in output


def test_callback_still_refused_at_its_max_age_ends_failed_with_its_last_status(start_processor, fake_pool,
                                                                                shared_secret):
    receiver = Receiver(shared_secret, fail=10**6, fail_status=401, detail="bad signature")
    with serve_in_thread(receiver.app) as url:
        proc = start_processor(AIPM_CALLBACK_ORIGINS=url, PR_CALLBACK_MAX_AGE="1.5")
        assert proc.submit("j-never", callback_url=url + "/api/callbacks/job").status_code == 202
        pending = proc.wait("j-never", lambda j: j["callback"]["attempts"] >= 1)
        assert pending["callback"]["state"] in ("pending", "failed")
        job = _wait_callback(proc, "j-never", "failed")
        tries = len(receiver.calls)
        time.sleep(0.6)  # given up: nothing more is sent
    assert len(receiver.calls) == tries >= 2  # a 401 is tried again, not given up at once
    assert job["callback"]["attempts"] == tries
    assert job["callback"]["last_status"] == 401 and job["callback"]["last_error"] == "HTTP 401: bad signature"
    assert "not delivered within PR_CALLBACK_MAX_AGE" in proc.output()


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
