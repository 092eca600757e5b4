"""A replayed ``/execute`` after a restart of the pool (a new app on the same state directory) never runs the agent
again: a task that ended answers its stored result; the very same signed request for a task the restart interrupted
is 409; only a freshly signed request (the PR processor sending the task again) runs an interrupted task."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from aipm_common.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, WORKER_POOL, receiver_key, signature
from ec2_services.worker_pool.app import create_app
from ec2_services.worker_pool.settings import WorkerPoolSettings
from tests.conftest import SECRET
from tests.kiro_double import command
from tests.support.servers import serve_in_thread


@contextlib.contextmanager
def pool_on(state: Path):
    """One life of the pool on ``state`` (its task ledger there), as (url, stop); stopped when the block ends."""
    root = state / "workspaces"
    root.mkdir(parents=True, exist_ok=True)
    settings = WorkerPoolSettings(aipm_shared_secret=SECRET, kiro_pool_size=1, kiro_command=command(),
                                  kiro_workspace_root=root, aipm_state_dir=state, kiro_task_timeout=60)
    app = create_app(settings, secret=SECRET)
    with serve_in_thread(app) as url:
        wait_for(url, lambda h: h["status"] == "ok")
        yield url, app.state.on_stopping  # the second: what SIGTERM calls (a restart or a deploy)


def wait_for(url: str, predicate, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while not predicate(health := httpx.get(url + "/health", timeout=5).json()):
        assert time.monotonic() < deadline, health
        time.sleep(0.02)
    return health


def signed_request(prompt: str, task_id: str, *, after: tuple[bytes, dict[str, str]] | None = None
                   ) -> tuple[bytes, dict[str, str]]:
    """The exact bytes and headers of one signed ``/execute``: what a captured request replays. ``after``: a request
    this one must not share a signature with (the same body signed in the same second would)."""
    payload = json.dumps({"prompt": prompt, "task_id": task_id}).encode()
    ts = str(int(time.time()) if after is None else max(int(time.time()), int(after[1][TIMESTAMP_HEADER]) + 1))
    sig = signature(receiver_key(SECRET, WORKER_POOL), ts, "POST", "/execute", payload)
    return payload, {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sig, "content-type": "application/json"}


def send(url: str, request: tuple[bytes, dict[str, str]]) -> httpx.Response:
    payload, headers = request
    return httpx.post(url + "/execute", content=payload, headers=headers, timeout=60)


def tasks_run(url: str) -> int:
    return sum(w["tasks_completed"] for w in httpx.get(url + "/health", timeout=5).json()["workers"])


@pytest.mark.timeout(120)
def test_a_replay_of_an_ended_task_after_a_restart_answers_its_stored_result_without_running(tmp_path):
    captured = signed_request("first run [[say hello from the agent]]", "t-replay-done")
    with pool_on(tmp_path / "state") as (url, stop):
        first = send(url, captured)
        assert first.status_code == 200 and "hello from the agent" in first.json()["output"]
        assert tasks_run(url) == 1
    with pool_on(tmp_path / "state") as (url, stop):  # a new app: nothing in memory
        again = send(url, captured)
        assert again.status_code == 200, again.text
        assert again.json() == first.json()
        fresh = send(url, signed_request("first run [[say hello from the agent]]", "t-replay-done"))
        assert fresh.status_code == 200 and fresh.json() == first.json()
        with httpx.Client(base_url=url, timeout=10) as client:
            ts = str(int(time.time()))
            sig = signature(receiver_key(SECRET, WORKER_POOL), ts, "GET", "/tasks/t-replay-done", b"")
            view = client.get("/tasks/t-replay-done", headers={TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sig})
        assert view.status_code == 200 and view.json()["state"] == "ended"
        assert view.json()["output"] == first.json()["output"]
        assert tasks_run(url) == 0  # the agent never ran in this life


@pytest.mark.timeout(120)
def test_the_same_signed_request_for_a_task_a_restart_interrupted_is_409_and_a_fresh_one_runs(tmp_path):
    captured = signed_request("long one [[sleep 2]] [[say finished]]", "t-replay-cut")
    answers: list[httpx.Response] = []
    with pool_on(tmp_path / "state") as (url, stop):
        sender = threading.Thread(target=lambda: answers.append(send(url, captured)))
        sender.start()
        wait_for(url, lambda h: h["workers"][0]["current_task"] == "t-replay-cut")
        stop()
    sender.join(timeout=30)
    assert answers and answers[0].status_code == 503  # the stopping pool answered it: "send the task again"
    with pool_on(tmp_path / "state") as (url, stop):
        replay = send(url, captured)
        assert replay.status_code == 409, replay.text
        assert "not run again" in replay.json()["detail"]
        assert tasks_run(url) == 0
        # The PR processor sends an interrupted task again under a new signature: that one runs, once.
        resent = send(url, signed_request("long one [[sleep 2]] [[say finished]]", "t-replay-cut", after=captured))
        assert resent.status_code == 200 and "finished" in resent.json()["output"]
        assert send(url, captured).json() == resent.json()  # from now on its result is what any replay gets
        assert tasks_run(url) == 1


def test_a_task_that_never_ran_is_not_refused_after_a_restart(tmp_path):
    with pool_on(tmp_path / "state") as (url, stop):
        assert send(url, signed_request("[[say one]]", "t-a")).status_code == 200
    with pool_on(tmp_path / "state") as (url, stop):
        other = send(url, signed_request("[[say two]]", "t-b"))
        assert other.status_code == 200 and "two" in other.json()["output"]
        assert tasks_run(url) == 1
