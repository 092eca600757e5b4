"""A SIGKILLed service, restarted on the same state, brings every job to a final state without a second commit."""

from __future__ import annotations

import gzip
import json
import signal
import sqlite3

import pytest

from tests.ec2_services.pr_processor.conftest import BRANCH, REPO
from tests.ec2_services.pr_processor.fake_pool import Plan
from tests.ec2_services.pr_processor.forge import git
from tests.support.servers import free_port


def _job_commits(forge, job_id: str) -> list[str]:
    return [c.sha for c in forge.log(REPO, BRANCH) if f"AIPM-Job: {job_id}" in c.body]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_stop_mid_job_then_restart_reattaches_to_the_pool_task(start_processor, forge, fake_pool, sig):
    fake_pool.plan("j-crash", Plan(files={"crash.txt": "survived\n"}, sleep=2.0))
    port = free_port()
    first = start_processor(port=port)
    assert first.submit("j-crash").status_code == 202
    first.wait("j-crash", lambda j: j["status"] == "running" and "j-crash.1" in fake_pool.tasks)
    first.proc.kill(sig)
    assert first.proc.proc.returncode is not None  # stopped (a SIGTERM within the 15 s kill() waits)

    second = start_processor(port=port)
    job = second.wait("j-crash")
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 1
    assert fake_pool.started_tasks("j-crash") == ["j-crash.1"]  # the agent ran once
    assert [b["task_id"] for b in fake_pool.executes] == ["j-crash.1", "j-crash.1"]  # the replay re-attached
    assert _job_commits(forge, "j-crash") == [job["commit"]] == [forge.tip(REPO, BRANCH)]
    assert "re-attaching" in job["log_tail"]
    assert not (second.state_dir / "workspaces" / "j-crash.1").exists()
    # The transcript goes on across the stop: every line once, in order, in the job's file as in the API.
    whole = second.client.get("/api/jobs/j-crash/transcript", params={"limit": 2000}).json()
    texts, ids = [line["text"] for line in whole["lines"]], [line["id"] for line in whole["lines"]]
    assert texts[0].startswith("[aipm] accepted") and texts[-1] == "[aipm] job ended: succeeded", texts
    assert any("re-attaching" in text for text in texts) and ids == sorted(set(ids))
    with gzip.open(second.state_dir / "transcripts" / "j-crash.jsonl.gz", "rt") as f:
        assert [json.loads(line)[2] for line in f] == texts


def test_sigkill_then_restart_when_the_pool_forgot_the_task_starts_a_clean_attempt(start_processor, forge, fake_pool):
    fake_pool.plan("j-lost", Plan(files={"lost.txt": "attempt one\n"}, hang=True), Plan(files={"lost.txt": "two\n"}))
    port = free_port()
    first = start_processor(port=port)
    assert first.submit("j-lost").status_code == 202
    first.wait("j-lost", lambda j: j["status"] == "running" and "j-lost.1" in fake_pool.tasks)
    first.proc.kill(signal.SIGKILL)
    fake_pool.tasks["j-lost.1"].cancelled.set()  # the pool restarted: its task is gone
    fake_pool.tasks.pop("j-lost.1")

    second = start_processor(port=port)
    job = second.wait("j-lost")
    assert job["status"] == "succeeded" and job["attempts"] == 2, job
    assert forge.show(REPO, BRANCH, "lost.txt") == "two\n"
    assert _job_commits(forge, "j-lost") == [job["commit"]]
    assert "clean worktree" in job["log_tail"]


def test_pushing_job_pushes_its_recorded_commit_again_after_a_restart(start_processor, forge, fake_pool):
    fake_pool.plan("j-push", Plan(files={"pushed.txt": "once\n"}))
    port = free_port()
    first = start_processor(port=port)
    assert first.submit("j-push").status_code == 202
    done = first.wait("j-push")
    assert done["status"] == "succeeded"
    first.proc.stop()
    # Rewind to "crashed while pushing": the remote does not have the commit yet, the record says pushing.
    parent = forge.log(REPO, BRANCH)[1].sha
    git("--git-dir", str(forge.bare(REPO)), "update-ref", f"refs/heads/{BRANCH}", parent)
    db = sqlite3.connect(first.state_dir / "jobs.sqlite")
    with db:
        db.execute("UPDATE jobs SET status = 'pushing', ended_at = NULL WHERE job_id = 'j-push'")
    db.close()

    second = start_processor(port=port)
    job = second.wait("j-push")
    assert job["status"] == "succeeded" and job["commit"] == done["commit"] == forge.tip(REPO, BRANCH)
    assert _job_commits(forge, "j-push") == [done["commit"]]
    assert len(fake_pool.executes) == 1  # the agent did not run again
    assert "pushing the recorded commit" in job["log_tail"]


def test_queued_jobs_survive_a_restart(start_processor, forge, fake_pool):
    fake_pool.pool_size = 1
    fake_pool.plan("j-first", Plan(hang=True))
    fake_pool.plan("j-later", Plan(files={"later.txt": "later\n"}))
    port = free_port()
    first = start_processor(port=port)
    assert first.submit("j-first").status_code == 202
    first.wait("j-first", lambda j: j["status"] == "running" and "j-first.1" in fake_pool.tasks)
    assert first.submit("j-later", branch="aipm/story-2").status_code == 202
    assert first.job("j-later")["status"] == "queued"
    first.proc.kill(signal.SIGKILL)
    fake_pool.tasks["j-first.1"].cancelled.set()  # the hanging task ends (cancelled) while the service is down

    second = start_processor(port=port)
    assert second.wait("j-later")["status"] == "succeeded"
    assert second.wait("j-first")["status"] in {"cancelled", "failed"}
