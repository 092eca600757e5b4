"""`python -m ec2_services.worker_pool` as a real process with the Kiro double, driven over signed HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx

from aipm_common.signing import WORKER_POOL, SigningAuth
from tests.kiro_double import command
from tests.support.servers import ROOT, free_port, wait_http


def test_service_process_runs_tasks_logs_them_and_stops_its_agents(service_process, tmp_path, shared_secret):
    port = free_port()
    workspace = tmp_path / "state" / "workspaces" / "job-7"
    env = {
        "AIPM_SHARED_SECRET": shared_secret,
        "AIPM_STATE_DIR": str(tmp_path / "state"),
        "WORKER_POOL_PORT": str(port),
        "KIRO_POOL_SIZE": "2",
        "KIRO_COMMAND": command("--credits", "0.1"),
        "KIRO_APPROVAL_REPLY": "y\\r",
    }
    proc, url = start_service(service_process, env)
    workspace.mkdir(parents=True)
    with httpx.Client(base_url=url, auth=SigningAuth(shared_secret, WORKER_POOL), timeout=30) as client:
        r = client.post(
            "/execute",
            json={"prompt": "Write it [[write out.txt done]] [[tool shell]]", "task_id": "job-7.1", "cwd": str(workspace)},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["status"], body["approvals"], body["credits"]) == ("completed", 2, 0.1)
        assert (workspace / "out.txt").read_text() == "done\n"
        assert client.get("/tasks/job-7.1").json()["status"] == "completed"
    assert httpx.post(url + "/execute", json={"prompt": "x", "task_id": "job-7.2"}).status_code == 401

    agent_pids = [w["pid"] for w in httpx.get(url + "/health").json()["workers"]]
    proc.kill(signal.SIGTERM)
    assert proc.proc.returncode is not None
    for pid in agent_pids:
        assert not _alive(pid), f"agent {pid} outlived the service"

    log = proc.output()
    assert shared_secret not in log
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    messages = [r["message"] for r in records]
    assert any(m.startswith("[Worker ") and "Working on your message" in m for m in messages)
    assert all("\x1b" not in m for m in messages)
    # The agent's lines carry the task they belong to.
    assert any(r["message"].startswith("[Worker ") and r.get("task_id") == "job-7.1" for r in records)
    ended = [r for r in records if r.get("event") == "task_ended"]
    assert ended and ended[0]["task_id"] == "job-7.1" and ended[0]["status"] == "completed"
    emf = [r for r in records if "_aws" in r and r.get("TasksCompleted") == 1]
    assert emf and emf[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "AIPM"
    assert emf[0]["Service"] == "worker-pool" and emf[0]["TaskDuration"] > 0
    depth = [r for r in records if "_aws" in r and "QueueDepth" in r]
    assert depth and depth[0]["Service"] == "worker-pool" and depth[0]["QueueDepth"] == 0
    approvals = [r for r in records if r.get("event") == "tool_approved"]
    assert {r.get("tool") for r in approvals} == {"write", "shell"}


def start_service(service_process, env: dict[str, str]):
    """``python -m ec2_services.worker_pool`` with ``env`` (WORKER_POOL_PORT set), once every worker is idle."""
    proc = service_process("ec2_services.worker_pool", env)
    url = f"http://127.0.0.1:{env['WORKER_POOL_PORT']}"
    wait_http(url + "/health", proc=proc.proc)
    deadline = time.monotonic() + 15
    while httpx.get(url + "/health").json()["status"] != "ok":
        assert time.monotonic() < deadline, proc.output()
        time.sleep(0.05)
    return proc, url


def test_service_refuses_to_start_without_a_secret(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("AIPM_SHARED_SECRET", "AIPM_INSECURE_DEV")}
    env.update({"AIPM_STATE_DIR": str(tmp_path), "WORKER_POOL_PORT": str(free_port()), "KIRO_COMMAND": command()})
    result = subprocess.run(
        [sys.executable, "-m", "ec2_services.worker_pool"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "AIPM_SHARED_SECRET" in result.stderr + result.stdout


def _alive(pid: int) -> bool:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.05)
    return True


def test_sigterm_answers_open_tasks_at_once_in_json_so_callers_retry(service_process, tmp_path, shared_secret):
    """A restart or deploy (SIGTERM) while a task runs and another waits: both requests get 503 `agent_error` in
    JSON at once (a caller retries that; a 499 would read as a cancel), not uvicorn's plain-text 500 after its grace
    period; the service then exits and takes its agents with it."""
    env = {
        "AIPM_SHARED_SECRET": shared_secret,
        "AIPM_STATE_DIR": str(tmp_path / "state"),
        "WORKER_POOL_PORT": str(free_port()),
        "KIRO_POOL_SIZE": "1",
        "KIRO_COMMAND": command(),
    }
    proc, url = start_service(service_process, env)
    agent_pid = httpx.get(url + "/health").json()["workers"][0]["pid"]
    with httpx.Client(base_url=url, auth=SigningAuth(shared_secret, WORKER_POOL), timeout=30) as client:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as executor:
            running = executor.submit(client.post, "/execute", json={"prompt": "Work [[sleep 60]]", "task_id": "t-run"})
            deadline = time.monotonic() + 10
            while httpx.get(url + "/health").json()["workers"][0]["current_task"] != "t-run":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            waiting = executor.submit(client.post, "/execute", json={"prompt": "Next [[say hi]]", "task_id": "t-wait"})
            while httpx.get(url + "/health").json()["queue_depth"] != 1:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            sent = time.monotonic()
            os.kill(proc.proc.pid, signal.SIGTERM)  # the service only, as a supervisor's stop signal
            answers = [running.result(timeout=15), waiting.result(timeout=15)]
            answered_in = time.monotonic() - sent
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["status"] == "agent_error" and "stopping" in answer.json()["detail"]
    assert answered_in < 5, f"answered after {answered_in:.1f} s: uvicorn's grace period (10 s) was waited out"
    proc.proc.wait(timeout=20)
    assert not _alive(agent_pid), "the agent outlived the service"
