"""``KIRO_DRIVER=headless``: one ``kiro-cli chat --no-interactive`` per task (the headless double), with the pool's
semantics — answer and credits, cwd, deny-list by trust list, throttling retries read from Kiro's stderr only,
failures, crash, timeout, stall, cancel, two workers at once, ``[Worker N]`` logs."""

from __future__ import annotations

import logging
import sys

from ec2_services.worker_pool.drivers.headless import HeadlessDriver
from ec2_services.worker_pool.profiles import PROFILES
from tests.kiro_double import HEADLESS, kiro_cli


def test_a_task_runs_in_its_cwd_and_answers_with_credits(headless_pool_server, caplog):
    server = headless_pool_server()
    work = server.root / "job-1"
    work.mkdir()
    with caplog.at_level(logging.INFO):
        body = server.execute("Hello [[pwd]] [[write out.txt written]]", "h-1", cwd=str(work)).json()
    assert body["status"] == "completed", body
    assert body["output"].startswith("Working on your message") and body["output"].endswith("Done.")
    assert "\x1b" not in body["output"] and "> Done." not in body["output"]
    assert f"pwd: {work}" in body["output"]
    assert (work / "out.txt").read_text() == "written\n"
    assert body["credits"] == 0.28
    assert any("[Worker 1] Working on your message" in r.getMessage() for r in caplog.records)


def test_denied_tools_are_left_out_of_the_trust_list(headless_pool_server):
    server = headless_pool_server(kiro_deny_tools="shell,use_aws")
    body = server.execute("[[tool read]] [[tool shell]]", "h-deny").json()
    assert body["status"] == "completed", body
    assert "Ran read" in body["output"]
    assert "The shell tool was denied." in body["output"] and "Ran shell" not in body["output"]


def test_the_command_names_exactly_the_trusted_tools(tmp_path):
    driver = HeadlessDriver(1, "kiro-cli chat --agent aipm", PROFILES["kiro"], cwd=tmp_path, env={},
                            trust_tools=["read", "write"])
    assert driver.argv("do it") == ["kiro-cli", "chat", "--agent", "aipm", "--no-interactive",
                                    "--trust-tools=read,write", "do it"]


def test_kiro_throttling_on_stderr_is_retried_prose_is_not(headless_pool_server):
    server = headless_pool_server()
    body = server.execute("[[trouble 1]] [[say second run]]", "h-throttle").json()
    assert body["status"] == "completed" and body["trouble_retries"] == 1, body
    prose = server.execute("[[say Too many requests and ThrottlingException, says the log]]", "h-prose").json()
    assert prose["status"] == "completed" and prose["trouble_retries"] == 0


def test_kiro_failing_is_503_with_its_own_error_line(headless_pool_server):
    server = headless_pool_server()
    r = server.execute("[[say trying]] [[fail]]", "h-fail")
    assert r.status_code == 503
    assert "ValidationException" in r.json()["detail"] and "exit 1" in r.json()["detail"]
    assert "trying" in r.json()["output"]
    r = server.execute("[[mcpfail]]", "h-mcp")
    assert r.status_code == 503 and "MCP" in r.json()["detail"]


def test_a_crash_mid_turn_is_502_and_the_next_task_runs(headless_pool_server):
    server = headless_pool_server()
    r = server.execute("[[say about to fail]] [[crash]]", "h-crash")
    assert r.status_code == 502
    body = r.json()
    assert body["status"] == "agent_exited"
    assert "about to fail" in body["output"] and "panicked" in body["output"]
    health = server.wait_health(lambda h: h["workers"][0]["restarts"] == 1 and h["workers"][0]["state"] == "idle")
    assert health["status"] == "ok"
    assert server.execute("[[say alive]]", "h-after").json()["status"] == "completed"


def test_a_stall_is_504_stalled(headless_pool_server):
    server = headless_pool_server(kiro_stall_timeout=0.5)
    r = server.execute("[[say going quiet]] [[silent 10]]", "h-stall")
    assert r.status_code == 504 and r.json()["stalled"] is True
    assert "going quiet" in r.json()["output"]


def test_a_task_past_its_timeout_is_504_and_the_next_runs(headless_pool_server):
    server = headless_pool_server()
    r = server.execute("[[sleep 10]]", "h-timeout", timeout_s=1.0)
    assert r.status_code == 504 and r.json()["stalled"] is False
    assert server.execute("[[say back]]", "h-back").json()["status"] == "completed"


def test_cancel_stops_the_running_process(headless_pool_server):
    server = headless_pool_server()
    running = server.in_background("[[say started]] [[sleep 20]]", "h-cancel")
    server.wait_health(lambda h: h["workers"][0]["current_task"] == "h-cancel" and h["workers"][0]["pid"])
    with server.client() as client:
        assert client.post("/tasks/h-cancel/cancel").status_code == 200
    answer = running.result(timeout=15)
    assert answer.status_code == 499
    assert server.execute("[[say next]]", "h-next").json()["status"] == "completed"


def test_two_workers_run_two_tasks_at_once(headless_pool_server):
    server = headless_pool_server(size=2)
    first = server.in_background("[[sleep 3]]", "h-a")
    second = server.in_background("[[sleep 3]]", "h-b")
    # Both running at the same moment, each in its own process.
    both = server.wait_health(lambda h: all(w["state"] == "busy" and w["pid"] for w in h["workers"]), timeout=15)
    assert len({w["pid"] for w in both["workers"]}) == 2
    bodies = [first.result(timeout=30).json(), second.result(timeout=30).json()]
    assert {b["status"] for b in bodies} == {"completed"}
    assert {b["worker_id"] for b in bodies} == {1, 2}


def test_health_shows_each_headless_workers_kiro_cli_version_and_named_engine(headless_pool_server, tmp_path):
    fake = kiro_cli(tmp_path / "bin", "2.18.0", sys.executable, str(HEADLESS))
    server = headless_pool_server(size=2, kiro_headless_command=f"{fake} chat --agent-engine=v2 --state-dir {tmp_path}")
    workers = server.health()["workers"]
    assert [(w["agent_version"], w["agent_engine"]) for w in workers] == [("2.18.0", "v2")] * 2
    assert server.execute("[[say hi]]", "h-version").json()["status"] == "completed"
