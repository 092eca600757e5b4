"""``python -m ec2_services.worker_pool.preflight`` (what ``make run`` asks before anything starts): one agent session
started and stopped as a worker would, and, when it cannot start, why in one line in the agent's own words."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from tests.acp_double import command as acp_command
from tests.kiro_double import command as pty_command
from tests.support.servers import ROOT

NOT_FOUND = "error: agent 'aipm' not found: run `kiro-cli agent create aipm`, or drop --agent"


def preflight(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AIPM_STATE_DIR": str(tmp_path / "state"), **variables}
    return subprocess.run([sys.executable, "-m", "ec2_services.worker_pool.preflight"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def failing_agent(tmp_path: Path) -> str:
    script = tmp_path / "broken-agent"
    script.write_text(f"#!/bin/sh\necho {shlex.quote(NOT_FOUND)} >&2\nexit 1\n")
    script.chmod(0o755)
    return str(script)


def test_an_acp_agent_that_answers_initialize_and_session_new_has_started(tmp_path):
    done = preflight(tmp_path, KIRO_DRIVER="acp", KIRO_ACP_COMMAND=acp_command())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "the agent started (version 1)"


def test_an_acp_agent_that_exits_at_start_is_refused_in_its_own_words(tmp_path):
    done = preflight(tmp_path, KIRO_DRIVER="acp", KIRO_ACP_COMMAND=failing_agent(tmp_path))
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert "the agent exited with status 1 before answering initialize" in line
    assert NOT_FOUND in line


def test_an_acp_agent_that_cannot_open_a_session_is_refused_with_kiros_error(tmp_path):
    done = preflight(tmp_path, KIRO_DRIVER="acp", KIRO_ACP_COMMAND=acp_command("--session-error", NOT_FOUND))
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("the agent could not open a session: Internal error: ")
    assert NOT_FOUND in line


def test_a_pty_agent_that_exits_before_its_prompt_says_its_last_line(tmp_path):
    done = preflight(tmp_path, KIRO_DRIVER="pty", KIRO_COMMAND=failing_agent(tmp_path))
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert "the agent exited with status 1 before its first prompt" in line and NOT_FOUND in line


def test_a_pty_agent_that_reaches_its_prompt_has_started(tmp_path):
    done = preflight(tmp_path, KIRO_DRIVER="pty", KIRO_COMMAND=pty_command())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "the agent started"
