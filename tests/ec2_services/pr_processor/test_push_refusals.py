"""A push the remote refuses for a reason other than a moved branch (a ref it cannot lock, a server error) is retried
as it is, without running the agent again, and fails with git's own reason only once the attempts are spent."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ec2_services.pr_processor.git_ops import GitOps, PushRefused, PushRejected
from tests.ec2_services.pr_processor.conftest import BRANCH, FINAL, REPO
from tests.ec2_services.pr_processor.fake_pool import Plan


def _ref_lock(forge, branch: str = BRANCH) -> Path:
    """The lock file git takes to update ``branch`` in the bare remote: while it exists, no push can update it."""
    return forge.bare(REPO) / "refs" / "heads" / f"{branch}.lock"


def test_git_tells_a_branch_it_cannot_lock_from_a_branch_that_moved(tmp_path, forge):
    async def scenario() -> None:
        git = GitOps(base_url=forge.base_url, token=None, state_dir=tmp_path / "state",
                     workspace_root=tmp_path / "workspaces", author_name="Bot", author_email="bot@example.com")
        tip = await git.fetch_branch(REPO, BRANCH)
        wt = await git.add_worktree(REPO, "w", tip)
        (wt.path / "new.txt").write_text("new\n")
        sha = await git.commit_all(wt, "aipm: new file")

        lock = _ref_lock(forge)
        lock.touch()
        with pytest.raises(PushRefused) as refused:
            await git.push(REPO, sha, BRANCH)
        assert not isinstance(refused.value, PushRejected)
        assert "refused by the remote" in refused.value.message and "lock" in refused.value.message
        assert forge.tip(REPO, BRANCH) == tip

        lock.unlink()
        forge.push_commit(REPO, BRANCH, {"human.txt": "human\n"})
        with pytest.raises(PushRejected):
            await git.push(REPO, sha, BRANCH)

    asyncio.run(scenario())


def test_push_refused_while_the_remote_cannot_lock_the_branch_goes_through_once_the_lock_is_gone(
        start_processor, forge, fake_pool):
    before = forge.tip(REPO, BRANCH)
    lock = _ref_lock(forge)
    fake_pool.plan("j-lock", Plan(files={"l.txt": "l\n"}, action=lambda cwd: lock.touch()))
    proc = start_processor(PR_RETRY_BASE_DELAY="1.0", PR_MAX_ATTEMPTS="3")
    assert proc.submit("j-lock").status_code == 202
    refused = proc.wait("j-lock", lambda j: "refused by the remote" in j["log_tail"] or j["status"] in FINAL)
    assert refused["status"] == "pushing", refused  # the commit is recorded; only the push is tried again
    lock.unlink()
    job = proc.wait("j-lock")
    assert job["status"] == "succeeded" and job["error"] is None, job
    assert job["attempts"] >= 2
    assert fake_pool.started_tasks("j-lock") == ["j-lock.1"] and len(fake_pool.executes) == 1
    log = forge.log(REPO, BRANCH)
    assert log[0].sha == job["commit"] and log[0].subject.startswith("aipm: ") and log[1].sha == before
    assert "rebas" not in job["log_tail"]  # the branch never moved: nothing was rebased
    assert "pushing the recorded commit" in job["log_tail"]


def test_a_branch_the_remote_never_unlocks_fails_the_job_with_gits_reason(start_processor, forge, fake_pool):
    before = forge.tip(REPO, BRANCH)
    lock = _ref_lock(forge)
    fake_pool.plan("j-locked", Plan(files={"l.txt": "l\n"}, action=lambda cwd: lock.touch()))
    proc = start_processor(PR_MAX_ATTEMPTS="2")
    assert proc.submit("j-locked").status_code == 202
    job = proc.wait("j-locked")
    assert job["status"] == "failed" and job["attempts"] == 2, job
    assert "refused by the remote" in job["error"] and "lock" in job["error"], job["error"]
    assert "gave up after 2 attempts" in job["error"]
    assert "keeps moving" not in job["error"] and "moved" not in job["error"]
    assert fake_pool.started_tasks("j-locked") == ["j-locked.1"] and len(fake_pool.executes) == 1
    assert forge.tip(REPO, BRANCH) == before
