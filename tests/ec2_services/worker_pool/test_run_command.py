"""``POST /run``: a repository's test command, run in the job's worktree as the agent runs, summarised for the PR."""

from __future__ import annotations

import shlex
import sys
import textwrap
import time

import httpx
import pytest

from aipm_common.signing import WORKER_POOL, SigningAuth
from ec2_services.worker_pool.app import create_app
from ec2_services.worker_pool.commands import summarise
from ec2_services.worker_pool.settings import WorkerPoolSettings
from tests.conftest import SECRET
from tests.kiro_double import command
from tests.support.servers import serve_in_thread

PYTEST = f"{shlex.quote(sys.executable)} -m pytest -q -p no:cacheprovider"
# KIRO_RUN_AS is a prefix that runs the command as someone (on a host: `setpriv … --`); here a program that execs it.
RUN_AS = f"{shlex.quote(sys.executable)} -I -c {shlex.quote('import os, sys; os.execvp(sys.argv[1], sys.argv[1:])')}"


@pytest.fixture
def pool(tmp_path, monkeypatch):
    root = tmp_path / "workspaces"
    (root / "job").mkdir(parents=True)
    # Secrets the service holds, and an agent's own key: the tests must see none of them.
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_servicetoken")
    monkeypatch.setenv("KIRO_API_KEY", "kiro-key")
    settings = WorkerPoolSettings(aipm_shared_secret=SECRET, kiro_pool_size=1, kiro_command=command(),
                                  kiro_workspace_root=root, kiro_run_as=RUN_AS)
    with serve_in_thread(create_app(settings, secret=SECRET)) as url, \
            httpx.Client(base_url=url, auth=SigningAuth(SECRET, WORKER_POOL), timeout=60) as client:
        yield client, root / "job"


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def write(folder, name, text):
    (folder / name).write_text(textwrap.dedent(text))


def test_pytest_counts_and_the_failing_tail_come_back(pool):
    client, job = pool
    write(job, "test_a.py", """
        import os
        def test_one(): assert 1 + 1 == 2
        def test_two(): assert True
        def test_no_secrets(): assert "GITHUB_TOKEN" not in os.environ and "KIRO_API_KEY" not in os.environ
        def test_broken(): assert 2 * 2 == 5, "two times two"
    """)
    answer = client.post("/run", json={"task_id": "j-1.1.tests", "cwd": str(job), "command": PYTEST})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["passed"], body["failed"], body["exit_code"]) == (3, 1, 1), body
    assert body["summary"] == "3 passed / 1 failed"
    assert "two times two" in body["output"] and not body["timed_out"]


def test_a_replayed_task_id_answers_the_same_run_without_running_again(pool):
    client, job = pool
    counter = job / "runs.txt"
    run = {"task_id": "j-2.1.tests", "cwd": str(job), "command": f"sh -c {shlex.quote(f'echo run >> {counter}')}"}
    first = client.post("/run", json=run).json()
    again = client.post("/run", json=run).json()
    assert first == again and first["summary"] == "passed (exit code 0)"
    assert counter.read_text() == "run\n"
    other = client.post("/run", json={**run, "command": run["command"] + " x"})
    assert other.status_code == 400 and "another command" in other.json()["detail"]


def test_a_command_past_its_time_is_killed_with_its_children(pool):
    client, job = pool
    pid_file = job / "child.pid"
    script = f"sleep 60 & echo $! > {pid_file}; sleep 60"
    answer = client.post("/run", json={"task_id": "j-3.1.tests", "cwd": str(job), "timeout_s": 1,
                                       "command": f"sh -c {shlex.quote(script)}"}).json()
    assert answer["timed_out"] and answer["summary"] == "timed out" and answer["exit_code"] is None
    # The background child was in the killed group: it is gone too.
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


@pytest.mark.parametrize("fields, why", [
    ({"cwd": "/etc"}, "outside KIRO_WORKSPACE_ROOT"),
    ({"command": "pytest\x1b[2J"}, "control character"),
    ({"command": "pytest 'unclosed"}, "cannot be split"),
    ({"command": "   "}, "empty"),
])
def test_bad_requests_are_400_and_run_nothing(pool, fields, why):
    client, job = pool
    answer = client.post("/run", json={"task_id": "j-4.1.tests", "cwd": str(job), "command": "true", **fields})
    assert answer.status_code == 400 and why in answer.json()["detail"], answer.text


def test_unsigned_is_401(pool):
    client, job = pool
    answer = httpx.post(str(client.base_url) + "/run", json={"task_id": "x", "cwd": str(job), "command": "true"})
    assert answer.status_code == 401


@pytest.mark.parametrize("output, code, expected", [
    ("..F\n=== 2 passed, 1 failed in 0.12s ===\n", 1, (2, 1, "2 passed / 1 failed")),
    ("=== 5 passed, 1 error in 1.00s ===", 1, (5, 1, "5 passed / 1 failed")),
    ("1 failed, 3 passed in 0.05s", 1, (3, 1, "3 passed / 1 failed")),
    ("...\n----\nRan 3 tests in 0.001s\n\nFAILED (failures=1, errors=1)\n", 1, (1, 2, "1 passed / 2 failed")),
    ("Ran 4 tests in 0.1s\n\nOK\n", 0, (4, 0, "4 passed / 0 failed")),
    ("all good\n", 0, (None, None, "passed (exit code 0)")),
    ("npm ERR!\n", 2, (None, None, "failed (exit code 2)")),
    ("=== 3 passed in 0.1s ===", 5, (3, 0, "3 passed / 0 failed (exit code 5)")),
])
def test_summaries_of_common_runners(output, code, expected):
    assert summarise(output, code, False) == expected
