"""What ``make run`` decides before it starts anything: which agent (and why), the secret, the children's variables."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from aipm_local.run import ROOT, STANDIN_SCRIPT, StackConfig, choose_agent, ensure_secret, read_config, stack_env


def fake_kiro(bin_dir: Path, whoami_status: int, said: str) -> None:
    bin_dir.mkdir()
    script = bin_dir / "kiro-cli"
    script.write_text(f'#!/bin/sh\n[ "$1" = whoami ] && {{ echo "{said}"; exit {whoami_status}; }}\nexit 9\n')
    script.chmod(0o755)


def test_without_kiro_cli_on_path_the_stand_in_is_used_and_the_reason_said(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    command, note = choose_agent(None)
    assert command is not None and str(STANDIN_SCRIPT) in command
    assert "NOT an AI, because kiro-cli is not on PATH" in note


def test_kiro_cli_not_signed_in_falls_back_to_the_stand_in_saying_whoami_failed(monkeypatch, tmp_path):
    fake_kiro(tmp_path / "bin", 1, "Not logged in")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    command, note = choose_agent(None)
    assert command is not None and str(STANDIN_SCRIPT) in command
    assert "`kiro-cli whoami` failed (exit 1: Not logged in)" in note and "kiro-cli login" in note


def test_signed_in_kiro_cli_keeps_the_pools_default_command(monkeypatch, tmp_path):
    fake_kiro(tmp_path / "bin", 0, "Logged in as dev@example.com")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    monkeypatch.setenv("HOME", str(tmp_path))
    command, note = choose_agent(None)
    assert command is None
    assert note.startswith("agent: kiro-cli (Logged in as dev@example.com)")
    assert "~/.kiro/agents/aipm.json does not exist" in note
    (tmp_path / ".kiro" / "agents").mkdir(parents=True)
    (tmp_path / ".kiro" / "agents" / "aipm.json").write_text("{}")
    assert choose_agent(None) == (None, "agent: kiro-cli (Logged in as dev@example.com)")


def test_kiro_command_overrides_the_choice(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert choose_agent("my-agent --fast") == ("my-agent --fast", "agent: KIRO_COMMAND=my-agent --fast")


def test_the_secret_is_generated_once_with_mode_600_and_reused(tmp_path):
    first = ensure_secret(tmp_path / "state")
    path = tmp_path / "state" / "secret"
    assert len(first) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    assert ensure_secret(tmp_path / "state") == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("kiro_command", [None, "agent --x"])
def test_children_get_spec_local_run_variables(tmp_path, kiro_command):
    config = StackConfig(state_dir=tmp_path, forge_dir=tmp_path / "forge", api_port=8100, processor_port=8102,
                         pool_port=8101, kiro_command=None)
    env = stack_env(config, "s" * 40, kiro_command)
    assert env["AIPM_FORGE"] == "local" and env["AIPM_AUTH"] == "none"
    assert env["GIT_BASE_URL"] == f"file://{tmp_path / 'forge'}"
    assert env["AIPM_CALLBACK_ORIGINS"] == env["PUBLIC_API_URL"] == "http://127.0.0.1:8100"
    assert env["WORKER_POOL_URL"] == "http://127.0.0.1:8101"
    assert env["PR_PROCESSOR_URL"] == "http://127.0.0.1:8102"
    assert Path(env["AIPM_UI_DIR"], "index.html").is_file()
    assert env.get("KIRO_COMMAND") == kiro_command


def test_state_and_forge_default_to_the_checkout_and_follow_the_variables(monkeypatch, tmp_path):
    for name in ("AIPM_STATE_DIR", "AIPM_LOCAL_FORGE_DIR", "AIPM_API_PORT", "PR_PROCESSOR_PORT", "WORKER_POOL_PORT"):
        monkeypatch.delenv(name, raising=False)
    config = read_config()
    assert config.state_dir == ROOT / ".aipm" and config.forge_dir == ROOT / ".aipm" / "forge"
    assert (config.api_port, config.processor_port, config.pool_port) == (8000, 8082, 8081)

    monkeypatch.setenv("AIPM_STATE_DIR", str(tmp_path / "state"))
    assert read_config().forge_dir == tmp_path / "state" / "forge"
    monkeypatch.setenv("AIPM_LOCAL_FORGE_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("AIPM_API_PORT", "9000")
    config = read_config()
    assert config.state_dir == tmp_path / "state" and config.forge_dir == tmp_path / "elsewhere"
    assert config.api_port == 9000


def test_the_pools_first_start_error_is_read_from_its_log_after_this_runs_offset(tmp_path):
    from aipm_local.run import start_error

    log = tmp_path / "worker-pool.log"
    old = '{"message": "worker 1: could not start the agent: old", "start_error": "from an earlier run"}\n'
    log.write_text(old + "not json\n")
    offset = len(old) + len("not json\n")
    assert start_error(log, offset) is None
    with log.open("a") as out:
        out.write('{"message": "task accepted"}\n')
        out.write('{"message": "worker 1: could not start ...", "event": "worker_restart", '
                  '"start_error": "the agent exited with status 1 before its first prompt; its last line: boom"}\n')
    assert start_error(log, offset) == "the agent exited with status 1 before its first prompt; its last line: boom"
    assert start_error(tmp_path / "missing.log", 0) is None
