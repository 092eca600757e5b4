"""The very same signed ``POST /api/process-pr`` sent again after the processor restarted (a new process on the same
state directory) answers the job as it stands and runs nothing: the job ids are on disk with the jobs."""

from __future__ import annotations

import json
import signal
import time

import httpx

from aipm_common.signing import PR_PROCESSOR, SIGNATURE_HEADER, TIMESTAMP_HEADER, receiver_key, signature
from tests.ec2_services.pr_processor.conftest import BRANCH, REPO
from tests.ec2_services.pr_processor.fake_pool import Plan
from tests.support.servers import free_port


def captured_request(secret: str, job_id: str) -> tuple[bytes, dict[str, str]]:
    payload = json.dumps({"job_id": job_id, "repo": REPO, "branch": BRANCH, "task_file": "TASK.md"}).encode()
    ts = str(int(time.time()))
    sig = signature(receiver_key(secret, PR_PROCESSOR), ts, "POST", "/api/process-pr", payload)
    return payload, {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sig, "content-type": "application/json"}


def test_a_replayed_process_pr_after_a_restart_answers_the_stored_job_and_runs_nothing(
        start_processor, forge, fake_pool, shared_secret):
    fake_pool.plan("j-replayed", Plan(files={"once.txt": "once\n"}))
    payload, headers = captured_request(shared_secret, "j-replayed")
    port = free_port()
    first = start_processor(port=port)
    assert httpx.post(first.url + "/api/process-pr", content=payload, headers=headers).status_code == 202
    ended = first.wait("j-replayed")
    assert ended["status"] == "succeeded"
    tip = forge.tip(REPO, BRANCH)
    first.proc.kill(signal.SIGKILL)

    second = start_processor(port=port)
    replay = httpx.post(second.url + "/api/process-pr", content=payload, headers=headers)
    assert replay.status_code == 200, replay.text
    assert replay.json()["status"] == "succeeded" and replay.json()["commit"] == ended["commit"]
    assert second.job("j-replayed")["attempts"] == 1
    assert [b["task_id"] for b in fake_pool.executes] == ["j-replayed.1"]  # the agent was asked once
    assert forge.tip(REPO, BRANCH) == tip
