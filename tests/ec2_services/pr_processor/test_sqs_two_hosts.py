"""Two hosts on one job queue (AIPM_DISPATCH=sqs, moto's SQS on loopback): two PR processors, each a real process
with its own state directory and its own worker pool, share the jobs without running any twice; a host killed
mid-job keeps its message invisible only while it lives, and the other host then finishes the job.
"""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path

import pytest

from tests.ec2_services.pr_processor.conftest import BRANCH, REPO
from tests.ec2_services.pr_processor.fake_pool import FakePool, Plan, running_fake_pool
from tests.ec2_services.pr_processor.forge import git
from tests.ec2_services.pr_processor.test_sqs_intake import agent_commits, job_body, wait_taken

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def second_pool(shared_secret):
    """The other host's worker pool."""
    with running_fake_pool(shared_secret) as pool:
        yield pool


def add_branches(forge, names: list[str]) -> None:
    """Every branch at the tip of BRANCH (which holds TASK.md), in one push."""
    with tempfile.TemporaryDirectory() as tmp:
        git("clone", "-q", "-b", BRANCH, str(forge.bare(REPO)), tmp)
        git("push", "-q", "origin", *[f"HEAD:refs/heads/{name}" for name in names], cwd=Path(tmp))


def host(start_processor, tmp_path, name: str, pool, queue, **env: str):
    return start_processor(AIPM_STATE_DIR=str(tmp_path / name), WORKER_POOL_URL=pool.url, **queue.env(**env))


def ran(pool: FakePool) -> list[str]:
    """The job of every task the pool started."""
    return [task_id.rsplit(".", 1)[0] for task_id in pool.tasks]


def test_two_processors_on_one_queue_share_fifty_jobs_and_run_each_once(
        start_processor, fake_pool, second_pool, forge, job_queue, tmp_path):
    jobs = {f"j-share-{n:02d}": f"aipm/share-{n:02d}" for n in range(1, 51)}
    add_branches(forge, list(jobs.values()))
    for pool in (fake_pool, second_pool):
        pool.default = Plan(files={"done.txt": "done\n"}, sleep=0.05)
    env = {"PR_SQS_WAIT_S": "1", "PR_SQS_VISIBILITY_S": "30"}
    a = host(start_processor, tmp_path, "host-a", fake_pool, job_queue, **env)
    b = host(start_processor, tmp_path, "host-b", second_pool, job_queue, **env)
    for job_id, branch in jobs.items():
        job_queue.send(job_body(job_id, branch))

    job_queue.wait_empty(timeout=90)  # every message deleted: every job ended somewhere
    on_a, on_b = ran(fake_pool), ran(second_pool)
    assert sorted(on_a + on_b) == sorted(jobs)  # each job's agent ran exactly once, on one host
    assert on_a and on_b, (len(on_a), len(on_b))  # and both hosts took a share
    assert max(fake_pool.max_running, second_pool.max_running) <= 2
    for job_id, branch in jobs.items():
        owner = a if job_id in on_a else b
        job = owner.job(job_id)
        assert job["status"] == "succeeded", job
        assert agent_commits(forge, branch, job_id) == [job["commit"]] == [forge.tip(REPO, branch)]
    for proc, mine in ((a, on_a), (b, on_b)):
        assert sorted(j["job_id"] for j in proc.client.get("/api/jobs?limit=100").json()["jobs"]) == sorted(mine)
    assert job_queue.drain() == []


def test_a_host_killed_mid_job_lets_its_message_return_and_the_other_host_finishes_it(
        start_processor, fake_pool, second_pool, forge, job_queue, tmp_path):
    fake_pool.plan("j-kill", Plan(files={"done.txt": "host a\n"}, hang=True))
    second_pool.default = Plan(files={"done.txt": "host b\n"})
    env = {"PR_SQS_WAIT_S": "1", "PR_SQS_VISIBILITY_S": "3"}
    a = host(start_processor, tmp_path, "host-a", fake_pool, job_queue, **env)
    job_queue.send(job_body("j-kill"))
    deadline = time.monotonic() + 20
    while "j-kill.1" not in fake_pool.tasks:
        assert time.monotonic() < deadline, a.output()[-3000:]
        time.sleep(0.05)

    try:
        # While host A lives it keeps the message invisible past the 3 s visibility timeout: B does not get it.
        b = host(start_processor, tmp_path, "host-b", second_pool, job_queue, **env)
        time.sleep(4.5)
        assert b.client.get("/api/jobs/j-kill").status_code == 404
        assert job_queue.counts() == (0, 1)

        a.proc.kill(signal.SIGKILL)
        killed = time.monotonic()
        job = wait_taken(b, "j-kill", timeout=30)
        assert time.monotonic() - killed < 10  # the visibility timeout (3 s) plus a poll, not more
    finally:
        fake_pool.tasks["j-kill.1"].cancelled.set()  # host A's agent would have died with its host
    assert job["status"] == "succeeded", job
    assert second_pool.started_tasks("j-kill") == ["j-kill.1"]
    assert agent_commits(forge, BRANCH, "j-kill") == [job["commit"]] == [forge.tip(REPO, BRANCH)]
    assert forge.show(REPO, BRANCH, "done.txt") == "host b\n"
    job_queue.wait_empty(timeout=10)
    assert job_queue.drain() == []
