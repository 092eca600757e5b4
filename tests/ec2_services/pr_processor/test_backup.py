"""Nightly ``VACUUM INTO`` copies of the job database: a copy is a whole, readable database with every job; the
last 7 are kept; one is due at start when the newest is over a day old; and a copy restored over a corrupt database
brings the jobs back."""

from __future__ import annotations

import os
import sqlite3

from ec2_services.pr_processor.backup import DAY_S, Backups
from ec2_services.pr_processor.db_check import job_db_problem
from ec2_services.pr_processor.store import JobStore


def store_with_jobs(path, n: int = 5) -> None:
    store = JobStore(path)
    for i in range(n):
        store.jobs.create(job_id=f"j-{i}", repo="acme/app", branch=f"aipm/s-{i}", base_branch=None, pr_number=i + 1,
                          task_file="TASK.md", callback_url=None, requested_by=None)
    store.close()


def test_a_backup_is_a_whole_database_with_every_job_and_seven_are_kept(tmp_path):
    db = tmp_path / "jobs.sqlite"
    store_with_jobs(db)
    now = [1_800_000_000.0]
    backups = Backups(db, tmp_path / "backups", clock=lambda: now[0])
    made = []
    for _ in range(9):
        made.append(backups.run_once())
        now[0] += DAY_S
    assert backups.files() == made[-7:]
    with sqlite3.connect(made[-1]) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 5
    assert not list((tmp_path / "backups").glob("*.partial"))


def test_a_backup_is_due_when_there_is_none_or_the_newest_is_a_day_old(tmp_path):
    db = tmp_path / "jobs.sqlite"
    store_with_jobs(db, 1)
    now = [1_800_000_000.0]
    backups = Backups(db, tmp_path / "backups", clock=lambda: now[0])
    assert backups.due()
    newest = backups.run_once()
    os.utime(newest, (now[0], now[0]))
    now[0] += DAY_S - 60
    assert not backups.due()
    now[0] += 60
    assert backups.due()


def test_the_newest_backup_copied_over_a_corrupt_database_brings_the_jobs_back(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    db = state / "jobs.sqlite"
    store_with_jobs(db, 3)
    copy = Backups(db, state / "backups").run_once()
    db.write_bytes(b"not a database at all, sixteen+ bytes of garbage")
    problem = job_db_problem(db, state)
    assert problem and "corrupt" in problem and str(state / "backups") in problem
    db.write_bytes(copy.read_bytes())
    assert job_db_problem(db, state) is None
    store = JobStore(db)
    assert {store.jobs.get(f"j-{i}").job_id for i in range(3)} == {"j-0", "j-1", "j-2"}
    store.close()
