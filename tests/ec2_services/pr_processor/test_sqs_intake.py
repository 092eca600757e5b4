"""AIPM_DISPATCH=sqs on one PR processor (a real process) against moto's SQS on loopback: it takes no more jobs than
its workers can start, deletes a message when its job ends, leaves poison for the dead-letter queue, does not run
again a job whose commit is already on the branch, keeps POST /api/process-pr, and stops promptly; restarted on its
state within the visibility timeout, it keeps holding the messages of the jobs it takes up again (their receipt
handles are in the job store) and deletes them when the jobs end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sqlite3
import threading
import time
from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from aipm_common.settings import SettingsError, load_settings
from ec2_services.pr_processor.events import JobEvents
from ec2_services.pr_processor.settings import PrProcessorSettings
from ec2_services.pr_processor.sqs_intake import SqsIntake
from ec2_services.pr_processor.state_machine import JobState
from ec2_services.pr_processor.store import JobStore
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
    assert proc.output().count("AIPM_ASG_NAME is empty: this host does not protect itself from scale-in") == 1


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
    from aipm_common.aws import region_of

    assert region_of("https://sqs.eu-west-1.amazonaws.com/123456789012/aipm-jobs.fifo") == "eu-west-1"
    assert region_of("http://127.0.0.1:5000/123456789012/aipm-jobs.fifo") is None


# --- a restart within the visibility timeout -------------------------------------------------------------------


def held_in_store(state_dir) -> list[tuple[str, str | None, str | None]]:
    """(job, message id, receipt handle) of every job in a processor's database (read beside it: WAL)."""
    db = sqlite3.connect(state_dir / "jobs.sqlite")
    try:
        return db.execute("SELECT job_id, sqs_message_id, sqs_receipt_handle FROM jobs ORDER BY seq").fetchall()
    finally:
        db.close()


def test_a_processor_sigkilled_and_restarted_on_its_state_keeps_its_message_until_the_job_ends_then_deletes_it(
        start_processor, fake_pool, forge, job_queue):
    fake_pool.pool_size = 1  # the restarted processor's one worker is busy with the job: it polls for nothing
    fake_pool.plan("j-again", Plan(files={"done.txt": "done\n"}, sleep=9))  # twice the 4 s visibility, and more
    env = job_queue.env(PR_SQS_WAIT_S="1", PR_SQS_VISIBILITY_S="4")
    message_id = job_queue.send(job_body("j-again"))
    first = start_processor(**env)
    deadline = time.monotonic() + 20
    while "j-again.1" not in fake_pool.tasks:
        assert time.monotonic() < deadline, first.output()[-3000:]
        time.sleep(0.05)
    [(job_id, stored_id, handle)] = held_in_store(first.state_dir)
    assert (job_id, stored_id) == ("j-again", message_id) and handle
    time.sleep(1.5)  # the first processor has extended the message (every 4/3 s) at least once
    # Killed: at most 4 s of visibility left; the restart (about 1 s here) must take the message back in time.
    first.proc.kill(signal.SIGKILL)

    second = start_processor(**env)
    # Nobody else may receive the message while the job lives: the test polls the queue as another host would.
    while second.job("j-again")["status"] not in ("succeeded", "failed", "no_changes", "cancelled"):
        got = job_queue.client.receive_message(QueueUrl=job_queue.url, MaxNumberOfMessages=1, WaitTimeSeconds=0,
                                               VisibilityTimeout=60).get("Messages", [])
        assert got == [], f"the message was received by another consumer mid-job\n{second.output()[-3000:]}"
        assert job_queue.counts()[0] == 0
        assert time.monotonic() < deadline + 20, second.output()[-3000:]
        time.sleep(0.2)

    job = second.job("j-again")
    assert job["status"] == "succeeded", job
    assert fake_pool.started_tasks("j-again") == ["j-again.1"]  # the agent ran once (the restart re-attached)
    assert agent_commits(forge, BRANCH, "j-again") == [job["commit"]] == [forge.tip(REPO, BRANCH)]
    job_queue.wait_empty(timeout=10)  # deleted: nothing visible, nothing in flight
    assert job_queue.drain() == []  # and nothing in the dead-letter queue
    assert held_in_store(second.state_dir) == [("j-again", None, None)]
    queue_health = second.health()["job_queue"]
    assert (queue_health["adopted"], queue_health["held"], queue_health["received"]) == (1, 0, 0)
    log = second.output()
    assert f"job queue message {message_id} of job j-again (running) held before the restart" in log
    assert f"job queue message {message_id} of job j-again deleted" in log
    assert handle not in first.output() + log


class _Service:
    """What the intake uses of ProcessorService when it keeps and deletes messages."""

    def __init__(self, store: JobStore):
        self.store = store
        self.events = JobEvents(store.log, store.jobs)

    def get(self, job_id: str):
        return self.store.jobs.get(job_id)


class _Sqs:
    """An SQS client whose ChangeMessageVisibility fails with ``error``; it records every call."""

    def __init__(self, error: Exception | None):
        self.error = error
        self.calls: list[tuple[str, str]] = []

    def change_message_visibility(self, *, QueueUrl: str, ReceiptHandle: str, VisibilityTimeout: int) -> None:
        self.calls.append(("extend", ReceiptHandle))
        if self.error is not None:
            raise self.error

    def delete_message(self, *, QueueUrl: str, ReceiptHandle: str) -> None:
        self.calls.append(("delete", ReceiptHandle))


def _stored_job(store: JobStore, job_id: str, branch: str, handle: str) -> None:
    store.jobs.create(job_id=job_id, repo=REPO, branch=branch, base_branch=None, pr_number=None, task_file="TASK.md",
                      callback_url=None, requested_by=None, message=(f"m-{job_id}", handle))


def _client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "The receipt handle has expired."}},
                       "ChangeMessageVisibility")


@pytest.mark.parametrize("error, stale", [
    (_client_error("ReceiptHandleIsInvalid"), True),
    (_client_error("AWS.SimpleQueueService.MessageNotInflight"), True),
    (_client_error("InvalidParameterValue"), True),  # AWS's words for a handle from before a newer receive
    (_client_error("ServiceUnavailable"), False),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:1/"), False),
], ids=["ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidParameterValue", "unavailable", "unreachable"])
def test_at_start_held_messages_are_extended_or_deleted_and_a_stale_receipt_handle_is_logged_and_dropped(
        tmp_path, caplog, error, stale):
    store = JobStore(tmp_path / "jobs.sqlite")
    live, ended = "AQEBlive" + "L" * 300, "AQEBended" + "E" * 300
    _stored_job(store, "j-live", "aipm/a", live)
    _stored_job(store, "j-ended", "aipm/b", ended)
    store.jobs.transition("j-live", JobState.RUNNING)
    store.jobs.transition("j-ended", JobState.CANCELLED)  # it ended; the process died before the delete went out
    sqs = _Sqs(error)
    intake = SqsIntake(_Service(store), queue_url="http://127.0.0.1:1/1/q.fifo", wait_s=1, visibility_s=3,
                       client=sqs)

    with caplog.at_level(logging.INFO, logger="ec2_services.pr_processor.sqs_intake"):
        intake.adopt_held()
        asyncio.run(intake._keep_round())

    assert sqs.calls == [("extend", live), ("delete", ended)]
    assert intake.adopted == 2
    held = [(m.job_id, m.message_id) for m in store.receipts.held()]
    if stale:  # dropped: neither held in memory nor recorded any more
        assert intake.held == {} and held == [] and intake.stale == 1
        assert "job queue message m-j-live of job j-live can no longer be held" in caplog.text
        assert "dropping the handle" in caplog.text and "AQEBlive… (308 chars)" in caplog.text
    else:  # a passing failure: the next round tries again
        assert list(intake.held) == ["j-live"] and held == [("j-live", "m-j-live")] and intake.stale == 0
        assert "could not extend job queue message m-j-live of job j-live" in caplog.text
    assert "job queue message m-j-ended of job j-ended deleted" in caplog.text
    assert live not in caplog.text and ended not in caplog.text
    store.close()


class _SlowDelete(_Sqs):
    """DeleteMessage blocks until ``done`` is set, as a slow call to SQS does."""

    def __init__(self):
        super().__init__(None)
        self.done = threading.Event()

    def delete_message(self, *, QueueUrl: str, ReceiptHandle: str) -> None:
        super().delete_message(QueueUrl=QueueUrl, ReceiptHandle=ReceiptHandle)
        assert self.done.wait(10)


def test_a_message_of_an_ended_job_counts_against_the_pool_until_its_delete_is_done(tmp_path):
    # One worker: the job ended, but while its message is not deleted yet the host takes no second message (it
    # would hold two for one worker); the delete's end frees the worker and wakes the receive loop.
    store = JobStore(tmp_path / "jobs.sqlite")
    _stored_job(store, "j-1", "aipm/a", "AQEB" + "x" * 200)
    store.jobs.transition("j-1", JobState.CANCELLED)
    service = _Service(store)
    service.scheduler = SimpleNamespace(pool_reachable=True, capacity=1)
    sqs = _SlowDelete()
    intake = SqsIntake(service, queue_url="http://127.0.0.1:1/1/q.fifo", wait_s=1, visibility_s=3, client=sqs)
    intake.adopt_held()

    async def scenario() -> list[int]:
        free = [await intake.free_workers()]  # ended, its message held
        deleting = asyncio.create_task(intake._delete_message("j-1", intake.held["j-1"]))
        while not sqs.calls:
            await asyncio.sleep(0.01)
        assert "j-1" not in intake.held and not intake._room.is_set()
        free.append(await intake.free_workers())  # the delete in flight
        sqs.done.set()
        await deleting
        assert intake._room.is_set()
        free.append(await intake.free_workers())
        return free

    assert asyncio.run(scenario()) == [0, 0, 1]
    assert store.receipts.held() == []
    store.close()


_OLD_JOBS_TABLE = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL UNIQUE, repo TEXT NOT NULL, repo_key TEXT NOT NULL,
    branch TEXT NOT NULL, base_branch TEXT, pr_number INTEGER, task_file TEXT NOT NULL, callback_url TEXT,
    requested_by TEXT, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, commit_sha TEXT, base_commit TEXT,
    error TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL, started_at REAL, ended_at REAL, credits REAL,
    output_tail TEXT NOT NULL DEFAULT '', cancel_requested INTEGER NOT NULL DEFAULT 0
);
INSERT INTO jobs (job_id, repo, repo_key, branch, task_file, status, created_at, updated_at)
    VALUES ('j-old', 'acme/app', 'acme/app', 'aipm/old', 'TASK.md', 'running', 1, 1);
"""


def test_a_job_database_from_before_the_message_columns_opens_and_gets_them(tmp_path):
    path = tmp_path / "jobs.sqlite"
    db = sqlite3.connect(path)
    db.executescript(_OLD_JOBS_TABLE)
    db.close()

    store = JobStore(path)
    assert store.jobs.get("j-old").status is JobState.RUNNING
    assert store.receipts.held() == []
    store.receipts.hold("j-old", "m-old", "handle-1")
    assert [(m.job_id, m.status, m.message_id, m.receipt_handle) for m in store.receipts.held()] == [
        ("j-old", JobState.RUNNING, "m-old", "handle-1")]
    store.close()

    store = JobStore(path)  # opening it again changes nothing
    columns = [row[1] for row in store.db.connection.execute("PRAGMA table_info(jobs)")]
    assert columns.count("sqs_message_id") == 1 and columns.count("sqs_receipt_handle") == 1
    store.receipts.release("j-old", "m-other")  # another message's release leaves this one
    assert len(store.receipts.held()) == 1
    store.receipts.release("j-old", "m-old")
    assert store.receipts.held() == []
    store.close()


__all__ = ["git"]
