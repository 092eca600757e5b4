"""Parked worktrees: a finished job's worktree waits, cleaned, for the repository's next job, which gets it at its own
commit — and no job ever sees another job's files."""

from __future__ import annotations

import asyncio
import os
import subprocess

from ec2_services.pr_processor.git_ops import PARKED_DIR, PARKED_PER_REPO, GitOps
from tests.ec2_services.pr_processor.conftest import BRANCH, REPO


def ops(tmp_path, forge) -> GitOps:
    return GitOps(base_url=forge.base_url, token=None, state_dir=tmp_path / "state",
                  workspace_root=tmp_path / "workspaces", author_name="Bot", author_email="bot@example.com")


def files_of(path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if ".git" not in p.relative_to(path).parts[:1]}


def test_the_next_job_gets_the_parked_worktree_at_its_own_commit_with_nothing_of_the_last_job(tmp_path, forge):
    async def scenario() -> None:
        git = ops(tmp_path, forge)
        first_tip = await git.fetch_branch(REPO, BRANCH)
        first = await git.add_worktree(REPO, "job-a.1", first_tip)
        clean_files = files_of(first.path)
        # The first job leaves everything a job can leave: a change, untracked and ignored files, a nested repository,
        # a rewritten .git file, an unreadable directory's sibling, a committed change.
        (first.path / "TASK.md").write_text("changed by job a\n")
        (first.path / "untracked.txt").write_text("a's secret\n")
        (first.path / ".gitignore").write_text("*.log\n")
        (first.path / "build.log").write_text("ignored\n")
        (first.path / "nested").mkdir()
        subprocess.run(["git", "init", "-q", str(first.path / "nested")], check=True)
        (first.path / ".git").write_text("gitdir: /nowhere\n")
        await git.remove_worktree(first)
        parked = list((git.workspace_root / PARKED_DIR).rglob("wt-*"))
        assert len(parked) == 1 and not first.path.exists()

        forge.push_commit(REPO, BRANCH, {"human.txt": "a human's change\n"})
        tip = await git.fetch_branch(REPO, BRANCH)
        second = await git.add_worktree(REPO, "job-b.1", tip)
        assert second.git_dir == first.git_dir  # the parked one, moved here
        assert not list((git.workspace_root / PARKED_DIR).rglob("wt-*"))
        assert await git.head(second) == tip and not await git.is_dirty(second)
        assert files_of(second.path) == clean_files | {"human.txt"}
        assert (second.path / "human.txt").read_text() == "a human's change\n"
        # The service's git still works there and finds the worktree by its path after a restart.
        (second.path / "b.txt").write_text("b\n")
        sha = await git.commit_all(second, "aipm: b")
        assert sha != tip
        again = ops(tmp_path, forge).existing_worktree(REPO, "job-b.1")
        assert again is not None and again.git_dir == second.git_dir

    asyncio.run(scenario())


def test_at_most_a_few_wait_per_repository_and_the_rest_are_removed(tmp_path, forge):
    async def scenario() -> None:
        git = ops(tmp_path, forge)
        tip = await git.fetch_branch(REPO, BRANCH)
        worktrees = [await git.add_worktree(REPO, f"job-{n}.1", tip) for n in range(PARKED_PER_REPO + 2)]
        for wt in worktrees:
            await git.remove_worktree(wt)
        assert len(list((git.workspace_root / PARKED_DIR).rglob("wt-*"))) == PARKED_PER_REPO
        admin = git.mirror_dir(REPO) / "worktrees"
        assert len(list(admin.iterdir())) == PARKED_PER_REPO  # the others are gone from git's list too
        for folder, _dirs, names in os.walk(admin):  # the agent's group cannot change what the service's git reads
            assert os.stat(folder).st_mode & 0o022 == 0
            assert all(os.lstat(os.path.join(folder, n)).st_mode & 0o022 == 0 for n in names)

    asyncio.run(scenario())


def test_a_parked_worktree_that_cannot_be_cleaned_is_not_handed_out(tmp_path, forge):
    async def scenario() -> None:
        git = ops(tmp_path, forge)
        tip = await git.fetch_branch(REPO, BRANCH)
        wt = await git.add_worktree(REPO, "job-x.1", tip)
        await git.remove_worktree(wt)
        [parked] = list((git.workspace_root / PARKED_DIR).rglob("wt-*"))
        # Something lands in the parked worktree after it was cleaned (and its admin files are broken).
        (parked / "late.txt").write_text("left behind\n")
        fresh = await git.add_worktree(REPO, "job-y.1", tip)
        assert not (fresh.path / "late.txt").exists() and not await git.is_dirty(fresh)
        assert await git.head(fresh) == tip

    asyncio.run(scenario())
