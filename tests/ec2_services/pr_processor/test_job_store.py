"""The job store on a real SQLite file: the one transition table, one live job per branch, the outbox."""

from __future__ import annotations

import json
import os
import sqlite3
import stat

import pytest

from ec2_services.pr_processor.state_machine import TRANSITIONS, InvalidTransition, JobState
from ec2_services.pr_processor.store import JobStore
from ec2_services.pr_processor.store.jobs import BranchBusy
from ec2_services.pr_processor.store.outbox import CallbackState


@pytest.fixture
def store(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    yield store
    store.close()


def _new(store: JobStore, job_id: str, branch: str = "aipm/a", callback: str | None = None):
    return store.jobs.create(job_id=job_id, repo="Acme/App", branch=branch, base_branch=None, pr_number=3,
                             task_file="TASK.md", callback_url=callback, requested_by="bob")


_PATH_TO = {
    JobState.QUEUED: [],
    JobState.RUNNING: [JobState.RUNNING],
    JobState.PUSHING: [JobState.RUNNING, JobState.PUSHING],
    JobState.SUCCEEDED: [JobState.RUNNING, JobState.PUSHING, JobState.SUCCEEDED],
    JobState.FAILED: [JobState.RUNNING, JobState.FAILED],
    JobState.NO_CHANGES: [JobState.RUNNING, JobState.NO_CHANGES],
    JobState.CANCELLED: [JobState.CANCELLED],
}


def _force(store: JobStore, job_id: str, state: JobState) -> None:
    for step in _PATH_TO[state]:
        store.jobs.transition(job_id, step)


def test_database_uses_wal_and_survives_reopening(tmp_path):
    first = JobStore(tmp_path / "jobs.sqlite")
    _new(first, "j-1")
    assert first.db.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    first.close()
    again = JobStore(tmp_path / "jobs.sqlite")
    job = again.jobs.get("j-1")
    assert job is not None and job.status is JobState.QUEUED and job.requested_by == "bob" and job.pr_number == 3
    again.close()


def test_the_database_files_are_the_services_alone_whatever_the_umask(tmp_path):
    """On the host the units' umask (0002) serves the workspaces' group, which the agent's user is in: the job
    database, its WAL and shared-memory files must still be 0600; one left group-writable is tightened at start."""
    path = tmp_path / "jobs.sqlite"
    old_umask = os.umask(0o002)
    try:
        store = JobStore(path)
        _new(store, "j-mode")
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir() if p.name.startswith("jobs")}
        assert modes == {"jobs.sqlite": 0o600, "jobs.sqlite-wal": 0o600, "jobs.sqlite-shm": 0o600}
        store.close()
        path.chmod(0o664)
        JobStore(path).close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old_umask)


@pytest.mark.parametrize("start", list(JobState))
@pytest.mark.parametrize("target", list(JobState))
def test_only_transitions_in_the_table_are_allowed(store, start, target):
    _new(store, "j-t")
    _force(store, "j-t", start)
    assert store.jobs.get("j-t").status is start
    if target in TRANSITIONS[start]:
        assert store.jobs.transition("j-t", target).status is target
    else:
        with pytest.raises(InvalidTransition):
            store.jobs.transition("j-t", target)
        assert store.jobs.get("j-t").status is start


def test_final_states_have_no_way_out_and_live_ones_reach_an_end():
    for state, targets in TRANSITIONS.items():
        assert (not targets) == state.final
        if state.live:
            assert any(t.final for t in targets)


def test_same_job_id_is_one_job_and_a_live_branch_refuses_another_id(store):
    job, created = _new(store, "j-a")
    assert created
    again, created = _new(store, "j-a", branch="aipm/other")
    assert not created and again.branch == "aipm/a"
    with pytest.raises(BranchBusy) as busy:
        store.jobs.create(job_id="j-b", repo="acme/app", branch="aipm/a", base_branch=None, pr_number=None,
                          task_file="TASK.md", callback_url=None, requested_by=None)  # repo compared case-insensitively
    assert busy.value.job_id == "j-a"
    _force(store, "j-a", JobState.FAILED)
    assert _new(store, "j-b")[1]  # once the job ended the branch is free


def test_queue_positions_count_from_one_and_are_null_once_running(store):
    for n in range(3):
        _new(store, f"j-{n}", branch=f"aipm/{n}")
    assert [store.jobs.queue_position(store.jobs.get(f"j-{n}")) for n in range(3)] == [1, 2, 3]
    store.jobs.transition("j-0", JobState.RUNNING)
    assert [store.jobs.queue_position(store.jobs.get(f"j-{n}")) for n in range(3)] == [None, 1, 2]


def test_ending_a_job_writes_its_callback_to_the_outbox_in_the_same_step(store):
    _new(store, "j-cb", callback="https://x.example/cb")
    assert store.outbox.status("j-cb") == {"state": "none", "attempts": 0, "last_status": None, "last_error": None}
    store.jobs.transition("j-cb", JobState.RUNNING)
    store.jobs.update("j-cb", output_tail="done", credits=2.0, attempts=1)
    store.jobs.transition("j-cb", JobState.NO_CHANGES)
    assert store.outbox.status("j-cb") == {"state": "pending", "attempts": 0, "last_status": None, "last_error": None}
    (item,) = store.outbox.due(now=10**10)
    payload = json.loads(item.payload)
    assert payload["status"] == "no_changes" and payload["output_tail"] == "done" and payload["credits"] == 2.0
    assert payload["attempts"] == 1 and payload["repo"] == "Acme/App"
    store.outbox.record("j-cb", state=CallbackState.PENDING, next_at=0, error="HTTP 401: bad signature", status=401)
    assert store.outbox.status("j-cb") == {"state": "pending", "attempts": 1, "last_status": 401,
                                             "last_error": "HTTP 401: bad signature"}
    (item,) = store.outbox.due(now=10**10)
    assert item.last_status == 401


def test_an_outbox_made_before_last_status_gets_the_column_when_opened(tmp_path):
    path = tmp_path / "jobs.sqlite"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE outbox (job_id TEXT PRIMARY KEY, url TEXT NOT NULL, payload TEXT NOT NULL,"
                " state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,"
                " created_at REAL NOT NULL, last_error TEXT)")
    old.execute("INSERT INTO outbox VALUES ('j-old', 'https://x.example/cb', '{}', 'pending', 2, 0, 0, 'HTTP 503')")
    old.commit()
    old.close()
    store = JobStore(path)
    assert store.outbox.status("j-old") == {"state": "pending", "attempts": 2, "last_status": None,
                                              "last_error": "HTTP 503"}
    store.close()


def test_errors_and_log_lines_are_redacted_before_they_are_stored(store):
    _new(store, "j-r")
    token = "ghp_" + "a" * 36
    store.log.append("j-r", [f"agent printed {token}"])
    store.jobs.transition("j-r", JobState.FAILED, error=f"push to https://x:{token}@github.com failed")
    raw = store.db.connection.execute("SELECT error FROM jobs").fetchone()[0] + store.log.lines("j-r")[0][1]
    assert token not in raw and "***" in raw


def test_a_locked_database_refuses_the_write_records_why_and_recovers(tmp_path, monkeypatch):
    import sqlite3

    from ec2_services.pr_processor.store import db

    monkeypatch.setattr(db, "BUSY_TIMEOUT_S", 0.2)
    store = JobStore(tmp_path / "jobs.sqlite")
    locker = sqlite3.connect(str(tmp_path / "jobs.sqlite"), isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _new(store, "j-locked")
    assert store.write_error and "locked" in store.write_error
    assert store.jobs.get("j-locked") is None  # nothing half-written
    locker.execute("ROLLBACK")
    locker.close()
    job, created = _new(store, "j-locked")
    assert created and store.write_error is None
    store.close()
