"""``task_file`` names a regular file of the work tree, outside ``.git``: a symlink into ``.git`` or a directory on the
branch fails the job at once, before the agent runs (a name into ``.git`` is 400 at the edge: test_validation.py).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.ec2_services.pr_processor.conftest import BRANCH, REPO
from tests.ec2_services.pr_processor.forge import git


def push_tree(forge, branch: str, make) -> None:
    """Someone pushes ``branch`` with what ``make(work_dir)`` builds (symlinks and directories included)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        git("clone", "-q", "-b", BRANCH, str(forge.bare(REPO)), str(work))
        git("checkout", "-q", "-B", branch, cwd=work)
        make(work)
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", "odd task file", cwd=work)
        git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=work)


def _symlink_into_git(work: Path) -> None:
    os.symlink(".git", work / "TASK-link.md")


def _symlink_into_git_config(work: Path) -> None:
    os.symlink(".git/config", work / "TASK-link.md")


def _directory(work: Path) -> None:
    (work / "TASK-link.md").mkdir()
    (work / "TASK-link.md" / "inside.md").write_text("# a file in a directory\n")


def _symlink_to_a_directory(work: Path) -> None:
    (work / "docs").mkdir()
    (work / "docs" / "a.md").write_text("x\n")
    os.symlink("docs", work / "TASK-link.md")


@pytest.mark.parametrize(("make", "reason"), [
    (_symlink_into_git, "points into .git/"),
    (_symlink_into_git_config, "points into .git/"),
    (_directory, "is not a regular file"),
    (_symlink_to_a_directory, "is not a regular file"),
])
def test_a_task_file_that_is_a_symlink_into_git_or_a_directory_fails_at_once_without_the_agent(
        start_processor, forge, fake_pool, make, reason):
    branch = "aipm/odd-task"
    push_tree(forge, branch, make)
    proc = start_processor()
    assert proc.submit("j-odd", branch=branch, task_file="TASK-link.md").status_code == 202
    job = proc.wait("j-odd")
    assert job["status"] == "failed" and job["attempts"] == 1, job
    assert reason in job["error"] and "TASK-link.md" in job["error"], job["error"]
    assert fake_pool.executes == []
    assert job["commit"] is None


def test_a_symlink_to_a_regular_file_in_the_work_tree_is_still_a_task_file(start_processor, forge, fake_pool):
    branch = "aipm/linked-task"
    push_tree(forge, branch, lambda work: os.symlink("TASK.md", work / "TASK-link.md"))
    proc = start_processor()
    assert proc.submit("j-linked", branch=branch, task_file="TASK-link.md").status_code == 202
    job = proc.wait("j-linked")
    assert job["status"] == "no_changes", job
    assert len(fake_pool.executes) == 1
