"""The worker pool drives Google's real, unmodified Gemini CLI (``gemini --acp``, npm, pinned) over ACP: it reads
TASK.md, writes the function and its test with its own ``write_file``, runs them with its own ``run_shell_command``,
and the pool approves each tool — against the scripted model's Gemini API on loopback, no account, no network.

Gemini CLI names a tool only in its toolCallId (``write_file__…``): the deny-list matches that name, or the ACP kind.
Unlike Claude Code it goes on after a refusal, so a refused write is followed by the next step of the script."""

from __future__ import annotations

import pytest

from aipm_local.scripted_model import FixedScript, ToolCall
from tests.real_agents.conftest import GEMINI_KEY, execute_in_service, gemini_env, prompt_for, task_workspace


def test_the_real_gemini_cli_writes_the_function_and_its_test_and_runs_them(gemini_pool, model):
    server = gemini_pool()
    workspace = task_workspace(server.root, "job-multiply")
    body = server.execute(prompt_for(workspace), "t-gemini-1", cwd=str(workspace)).json()

    assert body["status"] == "completed", body
    assert "def multiply(a, b):" in (workspace / "story_functions.py").read_text()
    assert (workspace / "test_story_functions.py").exists()
    # The script says "the tests pass" only when the agent's own shell tool returned pytest's "2 passed".
    assert "done: wrote story_functions.py, test_story_functions.py; the tests pass" in body["output"]
    assert (body["approvals"], body["denials"]) == (3, 0), body  # two write_file and the run_shell_command
    turns = model.main_requests
    # Gemini CLI reports the turn's tokens (the scripted model says 10 in, 20 out per answer); credits it has none.
    assert body["tokens"] == {"input": 10 * len(turns), "output": 20 * len(turns)} and body["credits"] is None
    assert {"read_file", "write_file", "run_shell_command"} <= set(turns[0].tool_names)
    assert all(seen.headers.get("x-goog-api-key") == GEMINI_KEY for seen in model.requests)
    assert f"- {workspace}" in str(turns[0].body["contents"][0])  # the session's workspace is the job's cwd


@pytest.mark.parametrize("deny", ["write_file", "edit"])
def test_a_tool_denied_by_name_or_kind_is_refused_and_nothing_is_written(gemini_pool, deny):
    server = gemini_pool(kiro_deny_tools=f"use_aws, {deny}")
    workspace = task_workspace(server.root, f"job-deny-{deny}")
    body = server.execute(prompt_for(workspace), f"t-gemini-deny-{deny}", cwd=str(workspace)).json()

    # read_file needs no permission; both writes are refused; the shell (not listed) is allowed and finds no tests.
    assert (body["approvals"], body["denials"]) == (1, 2), body
    assert "2 of my tool calls were refused" in body["output"]
    assert not (workspace / "story_functions.py").exists() and not (workspace / "test_story_functions.py").exists()


def test_gemini_receives_its_own_key_and_none_of_the_services_secrets(
    gemini_cli, model, service_process, tmp_path, shared_secret
):
    secrets = {"AIPM_SHARED_SECRET": shared_secret, "GITHUB_TOKEN": "ghp_" + "b" * 36,
               "ANTHROPIC_API_KEY": "sk-ant-not-for-gemini-0123456789", "AWS_SECRET_ACCESS_KEY": "aws-secret-value-5678"}
    model.script = FixedScript([ToolCall("run_shell_command", {"command": "env", "description": "Show the environment"})])
    proc, body = execute_in_service(service_process, {**gemini_env(model, tmp_path / "home"), **secrets},
                                    agent="gemini", command=f"{gemini_cli} --acp", secret=shared_secret,
                                    state_dir=tmp_path / "state", prompt="Show me your environment.",
                                    task_id="t-gemini-env")

    assert body["status"] == "completed", body
    assert body["approvals"] == 1, body
    shell = [seen for seen in model.main_requests if "GEMINI_CLI_NO_RELAUNCH" in str(seen.body.get("contents"))]
    assert shell, "the env tool result reached the model"
    printed = str(shell[-1].body["contents"])
    for name, value in secrets.items():
        assert name not in printed and value not in printed, name
    assert "GEMINI_CLI_NO_RELAUNCH=true" in printed  # the profile's own setting reached it
    assert all(seen.headers.get("x-goog-api-key") == GEMINI_KEY for seen in model.requests)  # its key, and it works
    logged = proc.output()
    assert GEMINI_KEY not in logged and shared_secret not in logged
