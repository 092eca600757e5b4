"""Tests in the result: after the agent, the repository's own tests (its ``.aipm.toml``) run on the agent's commit,
through the worker pool, and the PR's result comment says how they went. A failing run is reported, not a failed job.

The real local stack (three services, the local forge, the stand-in agent) on loopback.
"""

from __future__ import annotations

import re
import subprocess
import time

import httpx
import pytest

from tests.e2e.local_stack import git, running_stack

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("tests-in-result") / "state") as running:
        yield running


def generate(stack, title: str, criteria: list[str]) -> tuple[dict, dict]:
    with stack.client() as client:
        response = client.post("/api/generate-code", json={
            "repo": "local/example", "title": title, "description": "", "acceptance_criteria": criteria})
    assert response.status_code == 202, response.text
    created = response.json()
    return created, stack.wait_job(created["job_id"], timeout=120)


def result_comment(stack, created: dict, job_id: str) -> str:
    """The PR page once the job's callback (which writes the result comment) has been delivered."""
    deadline = time.monotonic() + 30
    with stack.client() as client:
        while client.get(f"/api/jobs/{job_id}").json()["callback"]["state"] != "delivered":
            assert time.monotonic() < deadline, "the result callback was not delivered"
            time.sleep(0.2)
    return httpx.get(created["pr_url"], timeout=10).text


def test_passing_tests_are_counted_in_the_job_and_the_comment(stack):
    created, job = generate(stack, "Triple a number", ["triple(3) == 9"])
    assert job["status"] == "succeeded", job
    tests = job["tests"]
    # The example's two tests and the stand-in's one per criterion, on the agent's commit.
    assert tests["summary"] == "3 passed / 0 failed" and tests["exit_code"] == 0, tests
    assert tests["source"] == ".aipm.toml" and "pytest" in tests["command"]
    page = result_comment(stack, created, job["job_id"])
    assert "3 passed / 0 failed" in page and "✅" in page
    assert "running the tests (.aipm.toml)" in job["log_tail"] and "tests: 3 passed / 0 failed" in job["log_tail"]
    # What the run left in the worktree is not committed: the commit is the agent's change alone.
    changed = set(git(stack.forge_repo, "diff", "--name-only", f"{created['branch']}~1", created["branch"]).split())
    assert changed == {"story_functions.py", "tests/test_story_functions.py"}


def test_failing_tests_are_reported_and_do_not_fail_the_job(stack, tmp_path):
    # A test on main that fails whatever the agent does.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(stack.forge_repo), str(clone)], check=True)
    (clone / "tests" / "test_broken.py").write_text("def test_broken():\n    assert 6 * 7 == 41, 'the answer is off'\n")
    for args in (["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "broken"],
                 ["push", "-q", "origin", "HEAD:main"]):
        subprocess.run(["git", *args], cwd=clone, check=True)

    created, job = generate(stack, "Quadruple a number", ["quadruple(2) == 8"])
    assert job["status"] == "succeeded", job
    tests = job["tests"]
    assert (tests["passed"], tests["failed"], tests["exit_code"]) == (3, 1, 1), tests
    assert "the answer is off" in tests["output_tail"]
    page = result_comment(stack, created, job["job_id"])
    assert "3 passed / 1 failed" in page and "❌" in page
    assert re.search(r"The tests(?:'|&#39;|&#x27;) output", page)
    assert "the answer is off" in page
