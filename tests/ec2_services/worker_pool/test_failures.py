"""When the agent misbehaves: crash, hang, silence, cancel — the caller gets the right answer and the pool stays whole
(under both drivers)."""

from __future__ import annotations

import time

import httpx


def test_agent_crash_mid_task_is_502_and_the_pool_stays_whole(pool_server):
    server = pool_server(double_args=("--startup-seconds", "0.4"))
    r = server.execute("Go [[say about to fail]] [[crash]]", "t-crash")
    assert r.status_code == 502
    body = r.json()
    assert body["status"] == "agent_exited"
    assert body["worker_id"] == 1
    assert "about to fail" in body["output"] and "panicked" in body["output"]
    assert "detail" in body and body["duration_s"] > 0
    # While the new session starts, /health says so.
    restarting = server.wait_health(lambda h: h["workers"][0]["state"] == "restarting", timeout=2)
    assert restarting["status"] == "degraded"
    health = server.wait_all_idle()
    assert health["status"] == "ok"
    assert health["workers"][0]["restarts"] == 1
    assert server.execute("Again [[say alive]]", "t-after-crash").json()["status"] == "completed"


def test_hung_agent_is_504_near_the_timeout_and_respawned(pool_server):
    server = pool_server()
    old_pid = server.health()["workers"][0]["pid"]
    started = time.monotonic()
    r = server.execute("[[say hanging now]] [[hang]]", "t-hang", timeout_s=1.0)
    elapsed = time.monotonic() - started
    assert r.status_code == 504
    body = r.json()
    assert body["status"] == "timeout" and body["stalled"] is False
    assert 1.0 <= body["duration_s"] < 2.0
    assert 1.0 <= elapsed < 3.0
    assert "hanging now" in body["output"]
    health = server.wait_all_idle()
    assert health["workers"][0]["restarts"] == 1
    assert health["workers"][0]["pid"] != old_pid
    assert server.execute("[[say back]]", "t-after-hang").json()["status"] == "completed"


def test_timeout_s_is_capped_at_the_task_timeout(pool_server):
    server = pool_server(kiro_task_timeout=1)
    r = server.execute("[[hang]]", "t-cap", timeout_s=60)
    assert r.status_code == 504
    assert r.json()["duration_s"] < 2.0


def test_silent_agent_is_reported_stalled_and_handled_as_a_timeout(pool_server):
    server = pool_server(kiro_stall_timeout=0.5)
    r = server.execute("[[say then quiet]] [[silent 5]]", "t-stall")
    assert r.status_code == 504
    body = r.json()
    assert body["stalled"] is True
    assert body["duration_s"] < 2.0
    assert server.wait_all_idle()["workers"][0]["restarts"] == 1


def test_agent_dying_while_idle_is_respawned_and_counted(pool_server):
    import os
    import signal

    server = pool_server()
    pid = server.health()["workers"][0]["pid"]
    os.kill(pid, signal.SIGKILL)
    health = server.wait_health(lambda h: h["workers"][0]["restarts"] == 1 and h["workers"][0]["state"] == "idle")
    assert health["workers"][0]["pid"] not in (None, pid)
    assert server.execute("[[say fine]]", "t-after-death").json()["status"] == "completed"


def test_cancel_of_a_running_task_stops_it_without_a_respawn(pool_server):
    # PTY: Ctrl+C and the prompt comes back; ACP: session/cancel and the prompt's response says "cancelled".
    server = pool_server()
    running = server.in_background("[[say started]] [[sleep 20]]", "t-cancel-run")
    server.wait_health(lambda h: h["workers"][0]["current_task"] == "t-cancel-run")
    time.sleep(0.2)
    with server.client() as client:
        r = client.post("/tasks/t-cancel-run/cancel")
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled"
    answer = running.result(timeout=10)
    assert answer.status_code == 499
    body = answer.json()
    assert body["status"] == "cancelled" and body["worker_id"] == 1
    assert "started" in body["output"]
    health = server.wait_all_idle()
    assert health["workers"][0]["restarts"] == 0  # the prompt came back: no respawn needed
    with server.client() as client:
        assert client.post("/tasks/t-cancel-run/cancel").status_code == 409
        assert client.post("/tasks/nobody/cancel").status_code == 404


def test_cancel_of_a_task_that_ignores_it_respawns_the_agent(pool_server):
    server = pool_server()
    running = server.in_background("[[hang]]", "t-cancel-hang")
    server.wait_health(lambda h: h["workers"][0]["current_task"] == "t-cancel-hang")
    time.sleep(0.3)  # past the double's spinner: it now ignores Ctrl+C
    with server.client(timeout=30) as client:
        assert client.post("/tasks/t-cancel-hang/cancel").status_code == 200
    assert running.result(timeout=15).status_code == 499
    assert server.wait_all_idle()["workers"][0]["restarts"] == 1


def test_cancel_of_a_queued_task_answers_499_without_a_worker(pool_server):
    server = pool_server()
    first = server.in_background("[[sleep 1.5]]", "t-first")
    server.wait_health(lambda h: h["workers"][0]["current_task"] == "t-first")
    queued = server.in_background("[[say never]]", "t-queued")
    server.wait_health(lambda h: h["queue_depth"] == 1)
    with server.client() as client:
        view = client.get("/tasks/t-queued").json()
        assert view["state"] == "queued" and view["queue_position"] == 1
        assert client.post("/tasks/t-queued/cancel").status_code == 200
    answer = queued.result(timeout=5)
    assert answer.status_code == 499
    assert answer.json()["worker_id"] is None
    assert first.result(timeout=10).status_code == 200
    assert server.health()["workers"][0]["tasks_completed"] == 1


def test_health_during_start_then_idle_then_busy(pool_server):
    server = pool_server(size=2, double_args=("--startup-seconds", "0.6"), wait=False)
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "degraded"
    assert [w["state"] for w in health["workers"]] == ["starting", "starting"]
    assert health["pool_size"] == 2 and health["queue_depth"] == 0
    health = server.wait_all_idle()
    assert health["status"] == "ok"
    assert all(isinstance(w["pid"], int) for w in health["workers"])
    running = server.in_background("secret prompt text [[sleep 1]]", "t-health")
    health = server.wait_health(lambda h: any(w["state"] == "busy" for w in h["workers"]))
    assert health["status"] == "ok"
    busy = next(w for w in health["workers"] if w["state"] == "busy")
    assert busy["current_task"] == "t-health"
    assert "secret prompt text" not in httpx.get(server.url + "/health").text
    assert running.result(timeout=10).status_code == 200


def test_an_agent_that_cannot_start_gives_a_quick_503_not_a_hang(pool_server, tmp_path):
    missing = str(tmp_path / "no-such-kiro-cli")
    server = pool_server(kiro_command=missing, kiro_acp_command=missing, wait=False)
    health = server.wait_health(lambda h: h["workers"][0]["restarts"] >= 1)
    assert health["status"] == "degraded" and health["workers"][0]["pid"] is None
    started = time.monotonic()
    r = server.execute("[[say hi]]", "t-no-agent")
    assert time.monotonic() - started < 5.0  # at once, far below the 10 s task timeout a hang would reach
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "agent_error" and body["worker_id"] is None
    assert "no-such-kiro-cli" in body["detail"]


def test_running_task_view_shows_the_agents_latest_lines(pool_server):
    server = pool_server()
    running = server.in_background("[[say first progress line]] [[say second progress line]] [[sleep 4]]", "t-progress")
    deadline = time.monotonic() + 10
    with server.client() as client:
        while True:
            view = client.get("/tasks/t-progress").json()
            if "second progress line" in view.get("output_tail", ""):
                break
            assert time.monotonic() < deadline, f"progress never showed: {view}"
            time.sleep(0.05)
    assert view["state"] == "running" and view["worker_id"] == 1
    tail = view["output_tail"].splitlines()
    assert tail.index("first progress line") < tail.index("second progress line")
    assert all("\x1b" not in line and "Thinking" not in line for line in tail)
    assert "[[say" not in view["output_tail"]  # the echoed prompt is not progress
    body = running.result(timeout=15).json()
    assert body["status"] == "completed"
    with server.client() as client:
        assert "output_tail" not in client.get("/tasks/t-progress").json()  # ended: the /execute body itself
