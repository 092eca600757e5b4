"""The ACP driver against real ``kiro-cli acp`` traffic: every capture in ``tests/fixtures/kiro-acp/`` replayed as the
agent (``tests/acp_double/replay.py``), driven through the real worker pool service on loopback.

The replay sends nothing before the client asks for it (a prompt's frames after the prompt, a cancelled turn's end
after ``session/cancel``), so what each task is credited with is decided by the wire order alone: a turn's credits
are the metering that arrived before its prompt's response; what comes after that response counts for no task.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.acp_double import CAPTURES, replay_command

INSTALLER_DENY = "use_aws,aws"  # the installer's default KIRO_DENY_TOOLS


class Replayed:
    """A pool of one worker whose agent replays CAPTURE; ``events`` is what the replay saw of the client."""

    def __init__(self, acp_pool_server, tmp_path: Path, capture: str, **overrides):
        self.log = tmp_path / f"{capture}.events.jsonl"
        overrides.setdefault("kiro_deny_tools", INSTALLER_DENY)
        self.server = acp_pool_server(
            kiro_acp_command=replay_command(capture, self.log), kiro_task_timeout=60, cancel_grace=60, **overrides
        )

    def execute(self, task_id: str, prompt: str = "replayed prompt") -> dict:
        return self.server.execute(prompt, task_id).json()

    def events(self, event: str | None = None, method: str | None = None) -> list[dict]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        found = [json.loads(line) for line in lines]
        return [e for e in found if (event is None or e["event"] == event) and (method is None or e["method"] == method)]

    def permission_answers(self) -> list[dict]:
        return [e["answer"]["result"]["outcome"] for e in self.events("answer", "session/request_permission")]

    def refusals(self) -> dict[str, dict]:
        return {e["method"]: e["answer"]["error"] for e in self.events("answer") if "error" in e["answer"]}

    def wait_for(self, event: str, method: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.events(event, method):
            assert time.monotonic() < deadline, f"the replay never logged {event} {method}: {self.events()}"
            time.sleep(0.02)

    def cancel(self, task_id: str) -> dict:
        """Cancel TASK_ID once the replay waits for the client's session/cancel (it sends nothing before that)."""
        running = self.server.in_background("replayed prompt", task_id)
        self.wait_for("waiting", "session/cancel")
        with self.server.client() as client:
            assert client.post(f"/tasks/{task_id}/cancel").status_code == 200
        answer = running.result(timeout=60)
        assert answer.status_code == 499, answer.text
        return answer.json()

    def worker(self) -> dict:
        return self.server.health()["workers"][0]


@pytest.fixture
def replayed(acp_pool_server, tmp_path):
    return lambda capture, **overrides: Replayed(acp_pool_server, tmp_path, capture, **overrides)


def test_every_capture_has_a_test_here():
    source = Path(__file__).read_text()
    for capture in sorted(p.name for p in CAPTURES.iterdir() if p.name != "README.md"):
        assert f'"{capture}"' in source, f"no test replays {capture}"


# ---- V2 (kiro-cli acp, the default engine) ----------------------------------------------------------------------


def test_v2_2_18_1_answer_then_shell_tool_named_by_its_tool_call_allowed_once(replayed):
    replay = replayed("v2-live-2.18.1.jsonl")
    assert (replay.worker()["agent_version"], replay.worker()["agent_engine"]) == ("2.18.1", "v2")
    first = replay.execute("t-v2-sum")
    assert first["status"] == "completed", first
    assert "The final answer is **283**." in first["output"]
    assert first["credits"] == pytest.approx(0.04015828988391376)
    second = replay.execute("t-v2-shell")
    assert second["status"] == "completed", second
    # The installer's deny-list leaves Kiro's `shell` (named on the tool_call: _meta.kiro.toolName) allowed, once.
    assert (second["approvals"], second["denials"]) == (1, 0)
    assert replay.permission_answers() == [{"outcome": "selected", "optionId": "allow_once"}]
    assert "cyril-wire-check-2.18.0" in second["output"]
    # Only this turn's two metering entries: nothing of the first task's.
    assert second["credits"] == pytest.approx(0.030730780762852402 + 0.025118795024875618)


def test_v2_2_18_1_a_listed_tool_gets_the_reject_once_option(replayed):
    replay = replayed("v2-live-2.18.1.jsonl", kiro_deny_tools="shell")
    replay.execute("t-v2-first")
    body = replay.execute("t-v2-denied")
    assert (body["approvals"], body["denials"]) == (0, 1)
    assert replay.permission_answers() == [{"outcome": "selected", "optionId": "reject_once"}]


def test_v2_2_7_0_file_write_named_only_by_its_tool_call_chunk(replayed):
    # 2.7.0 has no _meta.kiro.toolName: the name `write` comes from `_kiro.dev/session/update` tool_call_chunk.
    replay = replayed("probe-goal-complete-2.7.0.log", kiro_deny_tools="write")
    assert (replay.worker()["agent_version"], replay.worker()["agent_engine"]) == ("2.7.0", "v2")
    body = replay.execute("t-v2-write")
    assert body["status"] == "completed", body
    assert (body["approvals"], body["denials"]) == (0, 1)
    assert replay.permission_answers() == [{"outcome": "selected", "optionId": "reject_once"}]
    assert body["credits"] == pytest.approx(0.014288509187396351 + 0.013375637147595357 + 0.010141807164179105)


def test_v2_2_7_0_the_installer_deny_list_allows_the_write_once(replayed):
    replay = replayed("probe-goal-complete-2.7.0.log")
    body = replay.execute("t-v2-write-ok")
    assert (body["status"], body["approvals"], body["denials"]) == ("completed", 1, 0)
    assert replay.permission_answers() == [{"outcome": "selected", "optionId": "allow_once"}]
    assert "marked the goal complete" in body["output"]


def test_v2_2_11_0_where_kiros_own_client_chose_always_the_pool_chooses_once(replayed):
    replay = replayed("v2-live-session-trace-2.11.0.jsonl")
    body = replay.execute("t-v2-trace")
    assert body["status"] == "completed", body
    answers = replay.permission_answers()
    assert answers and all(a == {"outcome": "selected", "optionId": "allow_once"} for a in answers)
    assert body["approvals"] == len(answers) and body["denials"] == 0
    assert "Issue.notes" in body["output"]
    assert body["credits"] == pytest.approx(sum([
        0.23903582255389721, 0.25957833167495853, 0.26898447429519073, 0.2755330182421227,
        0.28532522388059706, 0.2858360414593698, 0.2868647064676617, 0.29572702321724714,
    ]))


def test_v2_2_19_0_a_stream_error_fails_the_task_with_kiros_message_and_data(replayed):
    replay = replayed("v2-watchdog-hard-2.19.0.jsonl")
    body = replay.execute("t-v2-stall")
    assert body["status"] == "agent_error", body
    kiro_words = "Internal error: Encountered an error in the response stream: The stream timed out"
    assert kiro_words in body["detail"]
    assert kiro_words in body["output"]
    assert body["trouble_retries"] == 0  # a stream timeout is not throttling
    assert body["credits"] is None
    assert replay.worker()["restarts"] == 0


def test_v2_2_4_1_throttled_subagents_then_a_cancel_whose_trailing_frame_counts_for_no_one(replayed):
    replay = replayed("trace-2.4.1-multi-subagent.jsonl")
    assert replay.worker()["agent_engine"] == "v2"
    first = replay.execute("t-v2-throttled")
    assert first["status"] == "completed", first
    assert first["credits"] == pytest.approx(0.276658166583748)
    # The subagents' sessions are this turn's: their throttling notices are shown (Kiro retried them itself).
    assert "Retrying in 8s (attempt 2/3)" in first["output"]
    assert "Rate limit exceeded. Please wait a moment before trying again." in first["output"]
    # The cancelled turn: no metering arrived before its response, so no credits; the `turnDurationMs` metadata
    # that follows the response belongs to this turn and is counted for no task.
    cancelled = replay.cancel("t-v2-cancel")
    assert cancelled["status"] == "cancelled"
    assert cancelled["credits"] is None
    assert replay.events("request", "session/cancel")
    health = replay.server.wait_all_idle()
    assert health["workers"][0]["restarts"] == 0  # the agent answered the cancel: no kill


# ---- V3 (kiro-cli acp --agent-engine v3) -------------------------------------------------------------------------


def test_v3_2_19_1_shell_permission_named_by_the_request_tool_id_allowed_once(replayed):
    replay = replayed("kas-content-chunk-2.19.1.jsonl")
    assert (replay.worker()["agent_version"], replay.worker()["agent_engine"]) == (None, "v3")
    # V3 asks the client for an access token while initializing: refused, in words that name the fix.
    auth = replay.refusals()["_kiro/auth/getAccessToken"]
    assert auth["code"] == -32601 and "--agent-engine v2" in auth["data"]["reason"]
    body = replay.execute("t-v3-shell")
    assert body["status"] == "completed", body
    assert replay.permission_answers() == [{"outcome": "selected", "optionId": "accept"}]  # allow_once, not always
    assert (body["approvals"], body["denials"]) == (1, 0)
    assert "five ticks" in body["output"]
    assert body["credits"] == pytest.approx(0.14968605572139307)  # the turn_completion summary


def test_v3_2_19_1_run_command_on_the_deny_list_gets_the_reject_option(replayed):
    replay = replayed("kas-content-chunk-2.19.1.jsonl", kiro_deny_tools="run_command")
    body = replay.execute("t-v3-deny")
    assert (body["approvals"], body["denials"]) == (0, 1)
    assert replay.permission_answers() == [{"outcome": "selected", "optionId": "reject"}]


def test_v3_2_18_0_client_side_fs_and_terminal_requests_are_refused_and_fail_the_task(replayed):
    replay = replayed("kas-turn-2.18.0.jsonl")
    read = replay.execute("t-v3-read")
    # The agent asked to read a file through the client (which offered no file system): refused, task failed.
    assert read["status"] == "agent_error", read
    assert "fs/read_text_file" in read["detail"]
    assert "4242" in read["output"]  # the agent's own words stay in the answer
    assert read["credits"] == pytest.approx(0.1036662600331675)
    shell = replay.execute("t-v3-terminal")
    assert shell["status"] == "agent_error" and "terminal/create" in shell["detail"]
    assert shell["approvals"] == 1
    write = replay.execute("t-v3-write")
    assert write["status"] == "agent_error" and "fs/write_text_file" in write["detail"]
    subagent = replay.execute("t-v3-subagent")
    assert subagent["status"] == "completed", subagent
    assert subagent["credits"] == pytest.approx(0.15198577661691542)
    assert replay.permission_answers() == [{"outcome": "selected", "optionId": "accept"}] * 2
    refused = replay.refusals()
    assert {"fs/read_text_file", "fs/write_text_file", "terminal/create", "_kiro/terminal/shell_type"} <= set(refused)
    assert all(error["code"] == -32601 and error["data"]["reason"] for error in refused.values())
    assert replay.worker()["restarts"] == 0


def test_v3_2_16_0_each_edit_tool_is_named_and_the_listed_one_rejected(replayed):
    replay = replayed("kas-fs-write-2.16.0.jsonl", kiro_deny_tools="delete_file, use_aws")
    bodies = [replay.execute(f"t-v3-fs-{n}") for n in range(3)]
    assert [b["denials"] for b in bodies] == [0, 0, 1]
    assert [a["optionId"] for a in replay.permission_answers()] == ["accept", "accept", "reject"]
    # `_kiro/fs/*` host callbacks are refused: each task fails and says so.
    assert all(b["status"] == "agent_error" and "_kiro/fs/" in b["detail"] for b in bodies), bodies
    assert [b["credits"] for b in bodies] == pytest.approx([0.14546157960199008, 0.07941001127694859,
                                                            0.07752465008291874])


def test_v3_2_11_0_a_question_then_a_cancel_credits_what_came_before_the_response(replayed):
    replay = replayed("kas-live-session-trace-2.11.0.jsonl")
    cancelled = replay.cancel("t-v3-cancel")
    assert cancelled["status"] == "cancelled"
    # The clarifying question (`user_input`) is answered with one of its own options, each kind allow_once.
    [answer] = replay.permission_answers()
    assert answer["optionId"].endswith("-option-0")
    assert "multiple-notes" in cancelled["output"]
    # turn_completion(aborted) came after session/cancel but before the prompt's response: it is this turn's.
    assert cancelled["credits"] == pytest.approx(0.04634630739635157)
    assert replay.server.wait_all_idle()["workers"][0]["restarts"] == 0


def test_v3_2_16_2_turn_end_error_without_a_response_fails_the_task_with_kiros_words(replayed):
    replay = replayed("terminal-failed-2.16.2.jsonl")
    body = replay.execute("t-v3-token")
    assert body["status"] == "agent_error", body
    assert "TokenInvalidError" in body["detail"] and "Authentication token is invalid" in body["detail"]
    assert "_kiro/auth/getAccessToken" in body["output"]  # the refused mid-turn request is shown too
    assert body["trouble_retries"] == 0


# ---- what no capture has: other agents' names, odd requests ------------------------------------------------------


def test_the_tool_name_is_read_under_any_vendor_key_and_on_top():
    from ec2_services.worker_pool.drivers.acp import tool_name

    assert tool_name({"kiro": {"toolName": "shell"}}) == "shell"
    assert tool_name({"kiro": {"toolId": "run_command", "consent": {"capability": "shell"}}}) == "run_command"
    assert tool_name({"claudeCode": {"toolName": "Bash"}}) == "Bash"
    assert tool_name({"toolName": "write"}) == "write"
    assert tool_name({"kiro": {"toolOrigin": "builtin"}}) is None
    assert tool_name(None) is None


def test_the_default_acp_command_names_the_v2_engine():
    from ec2_services.worker_pool.drivers.acp import _identify
    from ec2_services.worker_pool.settings import WorkerPoolSettings

    command = WorkerPoolSettings.model_fields["kiro_acp_command"].default
    assert "--agent-engine v2" in command
    assert _identify({}, ["kiro-cli", "acp", "--agent-engine=v3"]) == (None, "v3")
    assert _identify({"agentInfo": {"name": "Kiro CLI Agent", "version": "2.19.0"}}, ["kiro-cli", "acp"]) == (
        "2.19.0", "v2")


def test_a_permission_without_an_allow_once_option_is_refused_and_fails_the_task(acp_pool_server):
    server = acp_pool_server()
    body = server.execute("[[options allow_always,reject_always]] [[say after]]", "t-acp-odd").json()
    assert body["status"] == "agent_error", body
    assert "no allow-once option" in body["detail"] and "opt-allow_always=allow_always" in body["detail"]
    assert "The client chose cancelled." in body["output"]  # never the lasting "always"
    assert "after" in body["output"]


def test_an_unknown_client_request_is_refused_in_words_and_fails_the_task(acp_pool_server):
    server = acp_pool_server()
    body = server.execute("[[request vendor/mystery]] [[say carried on]]", "t-acp-ask").json()
    assert body["status"] == "agent_error", body
    assert "_vendor/mystery" in body["detail"]
    assert "The client refused vendor/mystery: Method not found: _vendor/mystery" in body["output"]
    assert "carried on" in body["output"]
    assert server.health()["workers"][0]["restarts"] == 0
