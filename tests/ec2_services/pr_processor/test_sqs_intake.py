"""AIPM_DISPATCH=sqs on one PR processor (a real process) against moto's SQS on loopback: it takes no more jobs than
its workers can start, deletes a message when its job ends, leaves poison for the dead-letter queue, does not run
again a job whose commit is already on the branch, keeps POST /api/process-pr, and stops promptly.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from ec2_services.common.settings import PrProcessorSettings, SettingsError, load_settings
from tests.ec2_services.pr_processor.conftest import BRANCH, REPO
from tests.ec2_services.pr_processor.fake_pool import Plan
from tests.ec2_services.pr_processor.forge import git

pytestmark = pytest.mark.timeout(90)

FAST = {"PR_SQS_WAIT_S": "1", "PR_SQS_VISIBILITY_S": "30"}


def job_body(job_id: str, branch: str = BRANCH, **extra) -> dict:
    """What the Lambda puts on the queue: the body of POST /api/process-pr."""
    return {"job_id": job_id, "repo": REPO, "branch": branch, "base_branch": "main", "pr_number": 1,
            "task_file": "TASK.md", "callback_url": None, "requested_by": "ann", **extra}


def wait_taken(proc, job_id: str, timeout: float = 30) -> dict:
    """The job once the processor has taken it from the queue and it has ended."""
    deadline = time.monotonic() + timeout
    while proc.client.get(f"/api/jobs/{job_id}").status_code == 404:
        assert time.monotonic() < deadline, f"{job_id} never taken from the queue\n{proc.output()[-3000:]}"
        time.sleep(0.05)
    return proc.wait(job_id, timeout=max(1.0, deadline - time.monotonic()))


def agent_commits(forge, branch: str, job_id: str) -> list[str]:
    return [c.sha for c in forge.log(REPO, branch) if f"AIPM-Job: {job_id}" in c.body]


def test_takes_only_as_many_jobs_as_its_pool_can_start_and_deletes_each_message_when_its_job_ends(
        start_processor, fake_pool, forge, job_queue):
    fake_pool.pool_size = 1
    fake_pool.default = Plan(files={"done.txt": "done\n"}, sleep=0.6)
    branches = [BRANCH, "aipm/story-2", "aipm/story-3"]
    for n, branch in enumerate(branches, 1):
        job_queue.send(job_body(f"j-cap-{n}", branch))
    proc = start_processor(**job_queue.env(**FAST))

    most_in_flight, deadline = 0, time.monotonic() + 30
    while job_queue.counts() != (0, 0):
        most_in_flight = max(most_in_flight, job_queue.counts()[1])
        assert time.monotonic() < deadline, proc.output()[-3000:]
        time.sleep(0.05)
    assert most_in_flight == 1  # one worker: one message taken at a time, the others left for other hosts
    assert fake_pool.max_running == 1
    for n, branch in enumerate(branches, 1):
        job = proc.job(f"j-cap-{n}")
        assert job["status"] == "succeeded", job
        assert agent_commits(forge, branch, f"j-cap-{n}") == [job["commit"]]
        assert "taken from the job queue" in job["log_tail"]
    assert job_queue.drain() == []
    queue_health = proc.health()["job_queue"]
    assert queue_health["received"] == 3 and queue_health["held"] == 0 and queue_health["poison"] == 0


def test_poison_messages_are_logged_without_their_body_and_land_in_the_dead_letter_queue(
        start_processor, fake_pool, forge, job_queue):
    fake_pool.default = Plan(files={"done.txt": "done\n"})
    secretish = "ghp_" + "PoisonBodyMustNotBeLogged" + "0123456789"
    poison = {
        "not JSON": "{this is not json " + secretish,
        "no repo": json.dumps({"job_id": "j-norepo", "branch": BRANCH, "note": secretish}),
        "branch outside aipm/": json.dumps(job_body("j-main", "main", requested_by=secretish)),
    }
    ids = {job_queue.send(body): why for why, body in poison.items()}
    job_queue.send(job_body("j-good"))
    proc = start_processor(**job_queue.env(**FAST))

    assert wait_taken(proc, "j-good")["status"] == "succeeded"
    deadline = time.monotonic() + 30
    while job_queue.counts(job_queue.dlq_url)[0] < len(poison):
        assert time.monotonic() < deadline, (job_queue.counts(), job_queue.counts(job_queue.dlq_url))
        time.sleep(0.1)
    dead = job_queue.drain()
    assert {m["MessageId"] for m in dead} == set(ids)
    assert {m["Body"] for m in dead} == set(poison.values())
    job_queue.wait_empty(timeout=10)
    log = proc.output()
    for message_id in ids:
        assert f"job queue message {message_id}" in log and "is not a valid job" in log
    assert "repo: Field required" in log and "must start with 'aipm/'" in log
    assert secretish not in log
    assert proc.client.get("/api/jobs/j-main").status_code == 404  # nothing was run for a refused message


def test_a_job_whose_commit_is_already_on_the_branch_is_not_run_or_committed_again(
        start_processor, fake_pool, forge, job_queue):
    # Another host ran j-done, pushed, and died before deleting its message: the message comes back here.
    earlier = forge.push_commit(REPO, BRANCH, {"hello.py": "print('hi')\n"},
                                message="aipm: Add a greeting\n\nMade by the agent.\n\nAIPM-Job: j-done\n")
    job_queue.send(job_body("j-done"))
    proc = start_processor(**job_queue.env(**FAST))

    job = wait_taken(proc, "j-done")
    assert (job["status"], job["commit"]) == ("succeeded", earlier), job
    assert "another processor ran it" in job["log_tail"]
    assert fake_pool.executes == []  # the agent was not asked again
    assert forge.tip(REPO, BRANCH) == earlier and agent_commits(forge, BRANCH, "j-done") == [earlier]
    job_queue.wait_empty(timeout=10)


def test_a_wip_commit_of_a_failed_attempt_does_not_count_as_the_job_done(start_processor, fake_pool, forge, job_queue):
    forge.push_commit(REPO, BRANCH, {"half.py": "x = 1\n"},
                      message="wip: TASK.md (AIPM job j-wip, attempt 1)\n\nsaved.\n\nAIPM-Job: j-wip\n")
    fake_pool.default = Plan(files={"whole.py": "x = 2\n"})
    job_queue.send(job_body("j-wip"))
    proc = start_processor(**job_queue.env(**FAST))
    job = wait_taken(proc, "j-wip")
    assert job["status"] == "succeeded" and fake_pool.started_tasks("j-wip") == ["j-wip.1"]
    assert forge.log(REPO, BRANCH)[0].subject.startswith("aipm: ") and forge.tip(REPO, BRANCH) == job["commit"]


def test_http_submissions_still_work_and_a_stop_ends_the_long_poll_within_seconds(start_processor, fake_pool,
                                                                                   job_queue):
    fake_pool.default = Plan(files={"done.txt": "done\n"})
    proc = start_processor(**job_queue.env(PR_SQS_WAIT_S="20"))
    assert proc.submit("j-http").status_code == 202
    assert proc.wait("j-http")["status"] == "succeeded"
    time.sleep(0.5)  # the intake is inside a 20 s long poll now
    started = time.monotonic()
    proc.proc.kill(signal.SIGTERM)
    assert proc.proc.proc.returncode is not None
    assert time.monotonic() - started < 5
    assert "Application shutdown complete." in proc.output()  # a clean stop, not a kill after a timeout


def test_sqs_mode_needs_a_fifo_queue_url_and_sane_timings():
    with pytest.raises(SettingsError, match="AIPM_JOB_QUEUE_URL"):
        load_settings(PrProcessorSettings, aipm_dispatch="sqs")
    with pytest.raises(SettingsError, match="PR_SQS_WAIT_S"):
        load_settings(PrProcessorSettings, aipm_dispatch="sqs", pr_sqs_wait_s=21,
                      aipm_job_queue_url="https://sqs.eu-west-1.amazonaws.com/1/q.fifo")
    settings = load_settings(PrProcessorSettings, aipm_dispatch="SQS",
                             aipm_job_queue_url="https://sqs.eu-west-1.amazonaws.com/1/q.fifo")
    assert (settings.aipm_dispatch, settings.pr_sqs_wait_s, settings.pr_sqs_visibility_s) == ("sqs", 20, 300)


def test_the_queue_region_comes_from_an_aws_queue_url():
    from ec2_services.common.sqs import region_of

    assert region_of("https://sqs.eu-west-1.amazonaws.com/123456789012/aipm-jobs.fifo") == "eu-west-1"
    assert region_of("http://127.0.0.1:5000/123456789012/aipm-jobs.fifo") is None


__all__ = ["git"]
