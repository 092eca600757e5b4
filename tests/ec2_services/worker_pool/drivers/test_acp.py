"""What only the ACP driver has: permission options chosen by policy, a session per task in the task's cwd,
session/cancel, stop reasons, and the stall watchdog fed by any session/update (the ACP double, real processes)."""

from __future__ import annotations

import json
import signal
import time

import httpx

from aipm_common.signing import WORKER_POOL, SigningAuth
from tests.acp_double import command as acp_command
from tests.ec2_services.worker_pool.test_process import _alive, start_service
from tests.support.servers import free_port


def test_a_tool_on_the_deny_list_gets_a_reject_option_and_does_not_run(acp_pool_server):
    server = acp_pool_server(kiro_deny_tools="shell, write")
    workspace = server.root / "job-deny"
    workspace.mkdir()
    prompt = "[[tool shell]] [[tool read]] [[write blocked.txt nope]] [[say after]]"
    body = server.execute(prompt, "t-acp-deny", cwd=str(workspace)).json()
    assert body["status"] == "completed", body
    assert (body["approvals"], body["denials"]) == (1, 2)
    # The double names the option the client selected: a reject option, not a cancelled request.
    assert "Tool use was rejected: shell (reject_once)" in body["output"]
    assert "Tool use was rejected: write (reject_once)" in body["output"]
    assert "Tool shell finished." not in body["output"]
    assert "Tool read finished." in body["output"]
    assert not (workspace / "blocked.txt").exists()
    assert body["output"].endswith("Done.")


def test_a_tool_kind_on_the_deny_list_rejects_every_tool_of_that_kind(acp_pool_server):
    server = acp_pool_server(kiro_deny_tools="edit")  # ACP's kind of the double's `write` tool
    workspace = server.root / "job-kind"
    workspace.mkdir()
    body = server.execute("[[write a.txt x]] [[tool grep]]", "t-acp-kind", cwd=str(workspace)).json()
    assert (body["approvals"], body["denials"]) == (1, 1)
    assert "Tool use was rejected: write (reject_once)" in body["output"]
    assert not (workspace / "a.txt").exists()


def test_every_allowed_tool_gets_an_allow_option(acp_pool_server):
    server = acp_pool_server()
    body = server.execute("[[tool shell]] [[tool use_aws]]", "t-acp-allow").json()
    assert (body["status"], body["approvals"], body["denials"]) == ("completed", 2, 0)
    assert "rejected" not in body["output"]
    assert "Tool use_aws finished." in body["output"]


def test_the_session_runs_in_the_tasks_cwd_and_the_prompt_has_no_path_line(acp_pool_server):
    server = acp_pool_server()
    workspace = server.root / "job-cwd"
    workspace.mkdir()
    body = server.execute("Write [[write out/note.txt from acp]] [[pwd]]", "t-acp-cwd", cwd=str(workspace)).json()
    assert body["status"] == "completed", body
    assert (workspace / "out" / "note.txt").read_text() == "from acp\n"
    assert not (server.root / "out").exists()
    assert f"pwd: {workspace.resolve()}" in body["output"]
    # The agent got the prompt as sent: one line (the PTY driver would have put a working-directory line first).
    assert body["output"].splitlines()[0] == "Working on your message (1 lines)."
    # Without a cwd, the session opens in the workspace root.
    root_body = server.execute("[[pwd]]", "t-acp-root").json()
    assert f"pwd: {server.root.resolve()}" in root_body["output"]


def test_cancel_mid_prompt_sends_session_cancel_and_the_next_task_runs(acp_pool_server):
    server = acp_pool_server()
    pid = server.health()["workers"][0]["pid"]
    running = server.in_background("[[say begun]] [[sleep 20]]", "t-acp-cancel")
    server.wait_health(lambda h: h["workers"][0]["current_task"] == "t-acp-cancel")
    time.sleep(0.3)
    with server.client() as client:
        assert client.post("/tasks/t-acp-cancel/cancel").status_code == 200
    answer = running.result(timeout=10)
    assert answer.status_code == 499
    assert "begun" in answer.json()["output"]
    health = server.wait_all_idle()
    # The prompt's own "cancelled" response ended it: had the grace run out, the agent would have been killed and
    # respawned (another pid, a restart counted).
    assert health["workers"][0]["restarts"] == 0 and health["workers"][0]["pid"] == pid  # same process
    after = server.execute("[[say still here]] [[recall]]", "t-acp-after-cancel").json()
    assert after["status"] == "completed"
    assert "still here" in after["output"]
    assert "I remember 0 earlier message(s)" in after["output"]  # a new session: nothing of the cancelled task


def test_refusal_and_max_tokens_stop_reasons_are_agent_errors_not_completions(acp_pool_server):
    server = acp_pool_server()
    refused = server.execute("[[say partial]] [[refuse]]", "t-acp-refusal")
    assert refused.status_code == 503
    assert refused.json()["status"] == "agent_error" and "refusal" in refused.json()["detail"]
    assert "partial" in refused.json()["output"]
    cut = server.execute("[[maxtokens]]", "t-acp-maxtokens")
    assert cut.status_code == 503 and "max_tokens" in cut.json()["detail"]
    health = server.wait_all_idle()
    assert health["workers"][0]["restarts"] == 0  # the agent is fine; only those turns failed
    assert server.execute("[[say ok]]", "t-acp-after-refusal").json()["status"] == "completed"


def test_thought_updates_keep_the_stall_watchdog_quiet_but_silence_does_not(acp_pool_server):
    server = acp_pool_server(kiro_stall_timeout=0.8)
    working = server.execute("[[sleep 2]] [[say worked]]", "t-acp-working").json()
    assert working["status"] == "completed"  # a thought chunk every 0.5 s: alive, though no answer text
    assert "…" not in working["output"]  # thoughts are not part of the answer
    silent = server.execute("[[silent 5]]", "t-acp-silent")
    assert silent.status_code == 504 and silent.json()["stalled"] is True


def test_service_process_with_kiro_driver_acp_runs_logs_and_stops_its_agents(service_process, tmp_path, shared_secret):
    port = free_port()
    workspace = tmp_path / "state" / "workspaces" / "job-9"
    env = {
        "AIPM_SHARED_SECRET": shared_secret,
        "AIPM_STATE_DIR": str(tmp_path / "state"),
        "WORKER_POOL_PORT": str(port),
        "KIRO_POOL_SIZE": "2",
        "KIRO_DRIVER": "acp",
        "KIRO_ACP_COMMAND": acp_command(),
        "KIRO_COMMAND": str(tmp_path / "the-pty-command-is-not-used"),
    }
    proc, url = start_service(service_process, env)
    workspace.mkdir(parents=True)
    with httpx.Client(base_url=url, auth=SigningAuth(shared_secret, WORKER_POOL), timeout=30) as client:
        r = client.post("/execute", json={"prompt": "[[write out.txt done]] [[tool shell]] [[env AIPM_SHARED_SECRET]]",
                                          "task_id": "job-9.1", "cwd": str(workspace)})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["status"], body["approvals"], body["denials"]) == ("completed", 2, 0)
        assert (workspace / "out.txt").read_text() == "done\n"
        assert "AIPM_SHARED_SECRET is not set" in body["output"]
    agent_pids = [w["pid"] for w in httpx.get(url + "/health").json()["workers"]]
    proc.kill(signal.SIGTERM)
    for pid in agent_pids:
        assert not _alive(pid), f"agent {pid} outlived the service"
    records = [json.loads(line) for line in proc.output().splitlines() if line.startswith("{")]
    assert shared_secret not in proc.output()
    assert any(r["message"].startswith("[Worker ") and "Tool shell finished." in r["message"]
               and r.get("task_id") == "job-9.1" for r in records)
    assert {r.get("tool") for r in records if r.get("event") == "tool_approved"} == {"write", "shell"}
    ended = [r for r in records if r.get("event") == "task_ended"]
    assert ended and ended[0]["status"] == "completed"
    assert any("KIRO_DRIVER=acp" in r["message"] for r in records)


# ---- subagents (V2 runs each in a session of its own) -------------------------------------------------------------


def test_a_subagents_tool_gets_the_policy_answer_not_cancelled(acp_pool_server):
    server = acp_pool_server(kiro_deny_tools="use_aws")
    body = server.execute("[[subagent shell]] [[subagent use_aws]] [[say after]]", "t-acp-sub").json()
    assert body["status"] == "completed", body
    # A subagent's permission request carries its own sessionId: it gets the allow-once / reject-once the main
    # session's tools get, by the name on its tool_call (_meta.kiro.toolName), never "cancelled".
    assert "The subagent's shell got allow_once." in body["output"]
    assert "The subagent's use_aws got reject_once." in body["output"]
    assert (body["approvals"], body["denials"]) == (1, 1)
    assert "[subagent] ● Running shell" in body["output"]


def test_a_subagent_session_never_listed_is_still_the_turns_and_gets_the_policy(acp_pool_server):
    server = acp_pool_server(kiro_deny_tools="execute")
    body = server.execute("[[unlisted grep]]", "t-acp-unlisted").json()
    assert "The subagent's grep got reject_once." in body["output"]  # denied by its kind, as the main session's
    assert (body["approvals"], body["denials"]) == (0, 1)


def test_a_subagent_left_running_by_an_earlier_task_gets_cancelled_in_the_next_one(acp_pool_server):
    server = acp_pool_server()
    first = server.execute("[[linger shell]]", "t-acp-linger").json()
    assert first["status"] == "completed", first
    second = server.execute("[[lingered]] [[tool read]]", "t-acp-after").json()
    # The earlier task's subagent asks while the next task runs: that task did not start it, so no approval.
    assert "The earlier subagent's tool got cancelled." in second["output"]
    assert (second["approvals"], second["denials"]) == (1, 0)


# ---- throttling in Kiro's words ---------------------------------------------------------------------------------


def test_kiros_throttling_errors_and_frames_pause_and_retry(acp_pool_server):
    server = acp_pool_server()
    for what in ("ThrottlingException", "TooManyRequestsException", "rate_limit", "retry_warning"):
        body = server.execute(f"[[throttle 2 {what}]] [[say got through]]", f"t-acp-{what}").json()
        assert body["status"] == "completed", (what, body)
        assert body["trouble_retries"] == 2, (what, body)
        assert "got through" in body["output"]


def test_throttled_past_the_retries_fails_with_kiros_words(acp_pool_server):
    server = acp_pool_server(kiro_trouble_retries=1)
    body = server.execute("[[throttle 5 ThrottlingException]]", "t-acp-throttled-out").json()
    assert body["status"] == "agent_error", body
    assert "still throttled after 1 retries" in body["detail"]
    assert "ThrottlingException: Rate exceeded" in body["detail"]


def test_another_error_is_not_retried_and_fails_with_kiros_message(acp_pool_server):
    server = acp_pool_server()
    words = "Encountered an error in the response stream: ValidationException: Input is too long"
    body = server.execute(f"[[fail {words}]]", "t-acp-fail").json()
    assert body["status"] == "agent_error", body
    assert body["trouble_retries"] == 0
    assert f"Internal error: {words}" in body["detail"]
    assert words in body["output"]
