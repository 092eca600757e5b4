"""End to end on loopback: ``python -m aipm_local.run`` with its three real services, the local forge and the
stand-in agent — Generate Code & PR ends with the agent's commit on the branch — and the runner's life: SIGTERM stops
everything within 15 s and frees the ports, a dead service stops the rest, a busy port is said plainly."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.local_stack import git, running_stack
from tests.support.servers import ROOT, free_port

pytestmark = pytest.mark.timeout(120)


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def child_pid(runner_pid: int, module: str) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[-1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if ppid == runner_pid and module in cmdline:
            return int(entry.name)
    raise AssertionError(f"no child {module} of {runner_pid}")


def test_generate_code_ends_with_the_agents_commit_on_the_local_branch(tmp_path):
    with running_stack(tmp_path / "state", kiro_command="") as stack:
        assert f"open http://127.0.0.1:{stack.api_port}/" in stack.output()
        assert "STAND-IN agent, NOT an AI, because kiro-cli is not on PATH" in stack.output()
        secret = stack.state_dir / "secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600

        with stack.client() as client:
            page = client.get("/")
            assert page.status_code == 200 and "Generate Code &amp; PR" in page.text
            response = client.post("/api/generate-code", json={
                "repo": "local/example",
                "title": "Multiply two numbers",
                "description": "A multiply() helper next to add().",
                "acceptance_criteria": ["multiply(4, 5) == 20", "`multiply(-2, 3) == -6`", "The README mentions it"],
            })
        assert response.status_code == 202, response.text
        created = response.json()
        job = stack.wait_job(created["job_id"])
        assert job["status"] == "succeeded", job
        branch = created["branch"]

        # The branch on the bare repository: TASK.md from the API, then the agent's commit on top.
        repo = stack.forge_repo
        head = git(repo, "rev-parse", f"refs/heads/{branch}").strip()
        assert head == job["commit"]
        log = git(repo, "log", "--format=%an|%s", f"main..{branch}").strip().splitlines()
        assert len(log) == 2, log
        assert log[0].startswith("AIPM Kiro Bot|")
        assert "TASK.md" in log[1]
        files = set(git(repo, "ls-tree", "-r", "--name-only", branch).split())
        assert {"TASK.md", "story_functions.py", "tests/test_story_functions.py", "AIPM_NOTES.md"} <= files
        changed = set(git(repo, "diff", "--name-only", f"{branch}~1", branch).split())
        assert changed == {"story_functions.py", "tests/test_story_functions.py", "AIPM_NOTES.md"}
        assert "- [ ] The README mentions it" in git(repo, "show", f"{branch}:AIPM_NOTES.md")

        # The change is real: the criteria hold in a fresh clone of the branch.
        clone = tmp_path / "clone"
        subprocess.run(["git", "clone", "-q", "-b", branch, str(repo), str(clone)], check=True)
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=clone,
                               capture_output=True, text=True, timeout=60)
        assert tests.returncode == 0, tests.stdout + tests.stderr
        assert "4 passed" in tests.stdout  # the example's two tests and one per function criterion

        # The PR page shows the result comment, which says the stand-in is not an AI.
        deadline = time.monotonic() + 15
        while True:
            pr_page = httpx.get(created["pr_url"], timeout=10)
            if "not an AI" in pr_page.text or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert pr_page.status_code == 200
        assert "Multiply two numbers" in pr_page.text and "not an AI" in pr_page.text

        # `make status`: the three services up, and the job in the queue listing (a signed call with the secret).
        env = {**os.environ, "AIPM_STATE_DIR": str(stack.state_dir), "AIPM_API_PORT": str(stack.api_port),
               "PR_PROCESSOR_PORT": str(stack.processor_port), "WORKER_POOL_PORT": str(stack.pool_port)}
        status = subprocess.run([sys.executable, "-m", "aipm_local.status"], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=30)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count("UP ") == 3
        assert re.search(rf"{created['job_id']}\s+succeeded\s+local/example\s+{branch}\s+{head[:12]}", status.stdout)
    status = subprocess.run([sys.executable, "-m", "aipm_local.status"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=30)
    assert status.returncode == 1 and status.stdout.count("DOWN") == 3


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl+C"])
def test_a_stop_signal_to_the_runner_stops_services_and_a_busy_agent_within_15_s(tmp_path, sig):
    with running_stack(tmp_path / "state", agent_args=("--delay", "120")) as stack:
        with stack.client() as client:
            response = client.post("/api/generate-code", json={
                "repo": "local/example", "title": "Slow story", "acceptance_criteria": ["double(2) == 4"]})
        assert response.status_code == 202, response.text
        stack.wait_job(response.json()["job_id"], until={"running"})
        assert any(stack.tag in line for line in stack.leftovers()), "the agent sessions should be running"

        took = stack.stop(sig)
        assert stack.proc.returncode is not None, "the runner did not exit"
        assert took <= 15, f"took {took:.1f} s"
        assert all(port_is_free(port) for port in stack.ports), "a port is still bound"
        assert stack.leftovers() == []
        assert f"{sig.name} received: stopping the services" in stack.output()
        assert stack.proc.returncode == 0


def test_a_service_that_dies_is_named_and_the_rest_are_stopped(tmp_path):
    with running_stack(tmp_path / "state") as stack:
        os.kill(child_pid(stack.proc.pid, "ec2_services.pr_processor"), signal.SIGKILL)
        stack.proc.wait(timeout=20)
        assert stack.proc.returncode == 1
        assert "pr-processor exited unexpectedly" in stack.output()
        assert all(port_is_free(port) for port in stack.ports)
        assert stack.leftovers() == []


def test_a_busy_port_is_said_plainly_and_nothing_starts(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "AIPM_STATE_DIR": str(tmp_path), "AIPM_API_PORT": str(port),
               "PR_PROCESSOR_PORT": str(free_port()), "WORKER_POOL_PORT": str(free_port())}
        done = subprocess.run([sys.executable, "-m", "aipm_local.run"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=30)
    assert done.returncode == 1
    assert f"port {port} for the API and UI is busy" in done.stderr
    assert "AIPM_API_PORT=<port> make run" in done.stderr
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("driver", ["pty", "acp"])
def test_an_agent_that_cannot_start_is_said_in_its_own_words_and_nothing_is_ready(tmp_path, driver):
    said = "error: agent 'aipm' not found: run `kiro-cli agent create aipm`"
    agent = tmp_path / "kiro-cli"
    agent.write_text(f"#!/bin/sh\necho {shlex.quote(said)} >&2\nexit 1\n")
    agent.chmod(0o755)
    env = {**os.environ, "AIPM_STATE_DIR": str(tmp_path / "state"), "AIPM_API_PORT": str(free_port()),
           "PR_PROCESSOR_PORT": str(free_port()), "WORKER_POOL_PORT": str(free_port()), "KIRO_DRIVER": driver,
           "KIRO_COMMAND": f"{agent} chat", "KIRO_ACP_COMMAND": f"{agent} acp"}
    done = subprocess.run([sys.executable, "-m", "aipm_local.run"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=90)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "aipm: ready" not in done.stdout
    [line] = [line for line in done.stderr.splitlines() if "NOT ready" in line]
    assert line.startswith("aipm: NOT ready: the agent did not start: the agent exited")
    assert said in line
    assert not (tmp_path / "state" / "logs").exists()  # no service was started
