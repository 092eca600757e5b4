"""PR_JOB_RETENTION_DAYS: finished jobs older than the retention leave the database with their log lines, timeline
and callback outbox row; live jobs and recent ones stay; the freed pages go back to the file system (incremental
vacuum on a new database). Real SQLite files, the clock injected, no sleeps."""

from __future__ import annotations

import sqlite3

from ec2_services.pr_processor.retention import DAY_S, Retention
from ec2_services.pr_processor.state_machine import JobState
from ec2_services.pr_processor.store import JobStore

NOW = 1_800_000_000.0  # the injected "now" of every pruning below


def _job(store: JobStore, job_id: str, *, ended_days_ago: float | None, state: JobState = JobState.SUCCEEDED,
         lines: int = 20) -> None:
    store.jobs.create(job_id=job_id, repo="octo/app", branch=f"aipm/{job_id}", base_branch="main", pr_number=1,
                      task_file="TASK.md", callback_url="https://api.example/api/callbacks/job", requested_by=None)
    store.log.append(job_id, [f"{job_id} line {i} " + "x" * 200 for i in range(lines)])
    if ended_days_ago is None:
        return
    store.jobs.transition(job_id, JobState.RUNNING)
    if state is JobState.SUCCEEDED:
        store.jobs.transition(job_id, JobState.PUSHING)
    store.jobs.transition(job_id, state, ended_at=NOW - ended_days_ago * DAY_S)


def _rows(path, table: str, job_id: str) -> int:
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT count(*) FROM {table} WHERE job_id = ?", (job_id,)).fetchone()[0]


def test_finished_jobs_past_the_retention_go_with_their_logs_timeline_and_callback(tmp_path):
    path = tmp_path / "jobs.sqlite"
    store = JobStore(path)
    _job(store, "j-old-ok", ended_days_ago=31)
    _job(store, "j-old-failed", ended_days_ago=45, state=JobState.FAILED)
    _job(store, "j-recent", ended_days_ago=29)
    _job(store, "j-live", ended_days_ago=None)  # queued, however old
    store.jobs.update("j-live", created_at=NOW - 90 * DAY_S)
    assert _rows(path, "outbox", "j-old-ok") == 1 and _rows(path, "job_states", "j-old-ok") == 4  # queued → … → succeeded

    assert Retention(store, days=30, clock=lambda: NOW).run_once() == 2

    assert {job.job_id for job in store.jobs.list(limit=10)} == {"j-recent", "j-live"}
    for job_id in ("j-old-ok", "j-old-failed"):
        assert store.jobs.get(job_id) is None
        for table in ("job_log", "job_states", "outbox"):
            assert _rows(path, table, job_id) == 0, table
    assert len(store.log.lines("j-recent")) == 20 and _rows(path, "outbox", "j-recent") == 1
    # Nothing more is due until time passes.
    assert Retention(store, days=30, clock=lambda: NOW).run_once() == 0
    assert Retention(store, days=30, clock=lambda: NOW + 2 * DAY_S).run_once() == 1
    assert [job.job_id for job in store.jobs.list(limit=10)] == ["j-live"]


def test_retention_zero_keeps_every_job(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    _job(store, "j-ancient", ended_days_ago=3650)
    assert Retention(store, days=0, clock=lambda: NOW).run_once() == 0
    assert store.jobs.get("j-ancient") is not None


def test_pruning_gives_the_pages_back_to_the_file_system(tmp_path):
    path = tmp_path / "jobs.sqlite"
    store = JobStore(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL on a new database
    for k in range(60):
        _job(store, f"j-{k:03d}", ended_days_ago=40 if k < 50 else 1, lines=40)
    full = store.size_bytes()
    assert Retention(store, days=30, clock=lambda: NOW).run_once() == 50
    assert store.size_bytes() < full / 2
    assert len(store.jobs.list(limit=100)) == 10


def test_a_database_made_before_keeps_working_and_is_pruned(tmp_path):
    """An existing database (no incremental vacuum) opens as before; pruning deletes, the pages stay free inside."""
    path = tmp_path / "jobs.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE unrelated (x)").connection.close()  # an old file: mode already fixed
    store = JobStore(path)
    _job(store, "j-old", ended_days_ago=40)
    assert Retention(store, days=30, clock=lambda: NOW).run_once() == 1
    assert store.jobs.get("j-old") is None and store.vacuum() >= 0
