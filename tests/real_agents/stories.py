"""The two stories every real agent is put through end to end (``test_claude_code_e2e.py``, ``test_gemini_e2e.py``:
a file per agent, so the test workers run them side by side), as ``make run AIPM_AGENT=<agent> AIPM_MODEL=scripted``
runs them: a story through the API (local forge) → pull request → PR processor → worker pool → the real agent, whose
model calls the scripted model answers → the agent's commit, with a test that passes in a fresh clone → the result
comment. And the same story with the agent's edit and shell kinds on the deny-list: the job says plainly that its
tools were refused."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from tests.e2e.local_stack import git, running_stack

STORY = {
    "repo": "local/example",
    "title": "Multiply two numbers",
    "description": "A multiply() helper next to add().",
    "acceptance_criteria": ["multiply(4, 5) == 20", "`multiply(-2, 3) == -6`"],
}


def agent_stack(tmp_path, agent: str, **env: str):
    return running_stack(tmp_path / "state", pool_size=1, AIPM_AGENT=agent, AIPM_MODEL="scripted",
                         HOME=str(tmp_path / "home"), **env)


def story_job(stack) -> tuple[dict, dict]:
    """Generate Code & PR for STORY: (what the API answered, the job once it ended)."""
    with stack.client() as client:
        response = client.post("/api/generate-code", json=STORY)
    assert response.status_code == 202, response.text
    created = response.json()
    return created, stack.wait_job(created["job_id"], timeout=150)


def comment_saying(url: str, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        page = httpx.get(url, timeout=10).text
        if text in page or time.monotonic() > deadline:
            return page
        time.sleep(0.2)


def story_ends_with_the_agents_commit_and_a_passing_test(agent: str, tmp_path) -> None:
    with agent_stack(tmp_path, agent) as stack:
        assert f"agent: the real {agent} agent" in stack.output() and "SCRIPTED model" in stack.output()
        created, job = story_job(stack)
        assert job["status"] == "succeeded", job

        branch, repo = created["branch"], stack.forge_repo
        assert git(repo, "rev-parse", f"refs/heads/{branch}").strip() == job["commit"]
        changed = set(git(repo, "diff", "--name-only", f"{branch}~1", branch).split())
        assert {"story_functions.py"} < changed and any(name.endswith("test_story_functions.py") for name in changed)

        clone = tmp_path / "clone"
        subprocess.run(["git", "clone", "-q", "-b", branch, str(repo), str(clone)], check=True)
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=clone,
                               capture_output=True, text=True, timeout=60)
        assert tests.returncode == 0 and "4 passed" in tests.stdout, tests.stdout + tests.stderr

        page = comment_saying(created["pr_url"], "the tests pass")
        assert "The agent finished this task" in page and "scripted model (not an AI)" in page


def story_whose_every_tool_is_refused_reports_that_not_success(agent: str, tmp_path) -> None:
    # By kind: Claude Code stops at its first refused Write; Gemini CLI goes on to the shell, refused too.
    with agent_stack(tmp_path, agent, KIRO_DENY_TOOLS="use_aws,edit,execute") as stack:
        created, job = story_job(stack)
        assert job["status"] == "no_changes", job
        assert "the agent's tools were refused" in job["error"], job
        page = comment_saying(created["pr_url"], "tools were refused")
        assert "the agent&#x27;s tools were refused" in page or "the agent's tools were refused" in page
        assert "finished this task" not in page
