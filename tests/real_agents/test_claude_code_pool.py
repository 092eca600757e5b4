"""The worker pool drives the real, unmodified ``claude-code-acp`` (npm, pinned) over ACP: the agent reads TASK.md,
writes the function and its test with its own Write tool, runs the tests with its own Bash tool, and the pool
approves each tool — against the scripted model on loopback, no account, no network."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from aipm_local.scripted_model import FixedScript, ToolCall
from tests.real_agents.conftest import API_KEY, agent_env, execute_in_service, prompt_for, task_workspace


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes() and alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(predicate, timeout: float = 60, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not seen within {timeout} s")


def test_the_real_agent_writes_the_function_and_its_test_and_runs_them(claude_pool, model):
    server = claude_pool()
    workspace = task_workspace(server.root, "job-multiply")
    body = server.execute(prompt_for(workspace), "t-real-1", cwd=str(workspace)).json()

    assert body["status"] == "completed", body
    assert (workspace / "story_functions.py").exists() and (workspace / "test_story_functions.py").exists()
    assert "def multiply(a, b):" in (workspace / "story_functions.py").read_text()
    assert "2 passed" in body["output"]  # the agent's own Bash ran the tests
    assert "done: wrote story_functions.py, test_story_functions.py; the tests pass" in body["output"]
    assert body["approvals"] >= 2 and body["denials"] == 0  # a Write and the Bash, each asked and allowed
    assert body["tokens"] is None and body["credits"] is None  # claude-code-acp 0.16.2 reports no usage at all
    turns = model.main_requests
    assert {"Read", "Write", "Bash"} <= set(turns[0].tool_names)
    assert all(seen.headers.get("x-api-key") == API_KEY for seen in model.requests)
    assert f"Working directory: {workspace}" in str(turns[0].body["system"])  # the session's cwd is the job's


def test_the_agent_receives_its_own_key_and_none_of_the_services_secrets(
    claude_code_acp, model, service_process, tmp_path, shared_secret
):
    secrets = {"AIPM_SHARED_SECRET": shared_secret, "GITHUB_TOKEN": "ghp_" + "a" * 36,
               "OPENAI_API_KEY": "sk-openai-not-for-claude", "AWS_SECRET_ACCESS_KEY": "aws-secret-value-1234"}
    model.script = FixedScript([ToolCall("Bash", {"command": "env", "description": "Show the environment"})])
    proc, body = execute_in_service(service_process, {**agent_env(model, tmp_path / "home"), **secrets},
                                    agent="claude-code", command=str(claude_code_acp), secret=shared_secret,
                                    state_dir=tmp_path / "state", prompt="Show me your environment.",
                                    task_id="t-real-env")

    assert body["status"] == "completed", body
    for name, value in secrets.items():
        assert name not in body["output"] and value not in body["output"], name
    assert f"ANTHROPIC_API_KEY={API_KEY}" in body["output"]  # its own key: the one variable of its kind it gets
    assert "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1" in body["output"]
    logged = proc.output()
    assert "ANTHROPIC_API_KEY=***" in logged  # the agent printed it; the service's log has it redacted
    assert API_KEY not in logged and shared_secret not in logged


@pytest.mark.parametrize("ending", ["cancel", "timeout"])
def test_cancel_and_timeout_end_the_agents_whole_process_tree(claude_pool, model, tmp_path, ending):
    marker = f"aipm-real-agent-{ending}-{os.getpid()}"
    model.script = FixedScript([ToolCall("Bash", {"command": f"sleep 300; echo {marker}",
                                                  "description": "A long command"})])
    server = claude_pool(kiro_task_timeout=120 if ending == "cancel" else 8)
    agent_pid = server.health()["workers"][0]["pid"]
    pending = server.in_background("Run the long command.", f"t-real-{ending}")
    # On a loaded machine the 8 s timeout may end the task before the agent starts its shell: then there is no
    # command to see, and what is checked is that none is left behind.
    wait_for(lambda: processes_with(marker) or (ending == "timeout" and pending.done()),
             what="the agent's shell command")
    if ending == "cancel":
        with server.client() as client:
            assert client.post(f"/tasks/t-real-{ending}/cancel").status_code == 200
    response = pending.result(timeout=90)
    assert response.status_code == (499 if ending == "cancel" else 504), response.text
    wait_for(lambda: not processes_with(marker), 30, "the end of the agent's shell command")
    if ending == "timeout":
        wait_for(lambda: not alive(agent_pid), 30, "the end of the timed-out agent")
    server.wait_all_idle(timeout=60)  # a fresh agent takes the next task


@pytest.mark.parametrize("deny", ["Write", "edit"])
def test_a_tool_denied_by_name_or_kind_is_refused_and_the_real_agent_stops_there(claude_pool, deny):
    server = claude_pool(kiro_deny_tools=f"use_aws, {deny}")
    workspace = task_workspace(server.root, f"job-deny-{deny}")
    body = server.execute(prompt_for(workspace), f"t-real-deny-{deny}", cwd=str(workspace)).json()

    assert (body["approvals"], body["denials"]) == (0, 1), body  # Read needs no permission; the Write is refused
    assert "User refused permission to run tool" in body["output"]  # Claude Code ends the turn at a refusal
    assert not (workspace / "story_functions.py").exists() and not (workspace / "test_story_functions.py").exists()


def test_denying_a_kind_leaves_the_agents_other_tools_allowed(claude_pool):
    server = claude_pool(kiro_deny_tools="execute")  # Bash's kind; Write is of kind edit
    workspace = task_workspace(server.root, "job-deny-execute")
    body = server.execute(prompt_for(workspace), "t-real-deny-execute", cwd=str(workspace)).json()

    assert (body["approvals"], body["denials"]) == (2, 1), body  # both Writes allowed (once each), Bash refused
    assert (workspace / "story_functions.py").exists() and (workspace / "test_story_functions.py").exists()
    assert "passed" not in body["output"]


def test_a_session_the_agent_cannot_open_says_why(claude_pool):
    server = claude_pool(env={"CLAUDE_CODE_EXECUTABLE": "/nonexistent/claude"})
    response = server.execute("Anything.", "t-real-no-session")

    assert response.status_code == 503, response.text
    detail = response.json()["detail"]
    assert "could not open a session" in detail
    assert "native binary not found at /nonexistent/claude" in detail  # the ACP error's data, not "Internal error"
