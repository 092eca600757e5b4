"""A corrupt job database, or an empty one where the state directory shows earlier jobs, stops the PR processor at
start with one line on stderr that names the file and the way back (exit 2), instead of a traceback or a silent
empty history."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ec2_services.pr_processor.db_check import job_db_problem
from ec2_services.pr_processor.store import JobStore
from tests.support.servers import ROOT, free_port


def start_on(state: Path, secret: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AIPM_SHARED_SECRET": secret, "AIPM_STATE_DIR": str(state),
           "PR_PROCESSOR_PORT": str(free_port())}
    return subprocess.run([sys.executable, "-m", "ec2_services.pr_processor"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def a_job_store(state: Path) -> Path:
    db = state / "jobs.sqlite"
    state.mkdir(parents=True, exist_ok=True)
    store = JobStore(db)
    for n in range(40):
        store.jobs.create(job_id=f"j-{n}", repo="acme/app", branch=f"aipm/s-{n}", base_branch=None, pr_number=n + 1,
                          task_file="TASK.md", callback_url=None, requested_by=None)
    store.close()
    return db


def garbage_header(db: Path) -> None:
    data = bytearray(db.read_bytes())
    data[:16] = b"not a database!!"
    db.write_bytes(bytes(data))


def garbage_pages(db: Path) -> None:
    data = bytearray(db.read_bytes())
    data[4096:4096 * 3] = b"\xff" * (4096 * 2)
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [garbage_header, garbage_pages])
def test_a_corrupt_job_database_stops_the_start_with_one_line_naming_the_file_and_the_recovery(
        tmp_path, shared_secret, damage):
    db = a_job_store(tmp_path / "state")
    damage(db)
    result = start_on(tmp_path / "state", shared_secret)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "corrupt" in line and str(db) in line and f"mv {db} {db}.corrupt" in line and "restore the last backup" in line
    assert "Traceback" not in result.stderr + result.stdout


def test_an_empty_job_database_where_mirrors_show_earlier_jobs_is_refused(tmp_path, shared_secret):
    state = tmp_path / "state"
    (state / "mirrors" / "acme").mkdir(parents=True)
    (state / "jobs.sqlite").write_bytes(b"")
    result = start_on(state, shared_secret)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "empty (0 bytes)" in line and str(state / "jobs.sqlite") in line and "Restore the last backup" in line
    assert (state / "jobs.sqlite").stat().st_size == 0  # left as it was for whoever restores it


def test_transcript_files_also_show_earlier_jobs(tmp_path):
    state = tmp_path / "state"
    (state / "transcripts").mkdir(parents=True)
    (state / "jobs.sqlite").write_bytes(b"")
    assert job_db_problem(state / "jobs.sqlite", state) is None  # an empty folder shows nothing
    (state / "transcripts" / "j-1.jsonl.gz").write_bytes(b"")
    problem = job_db_problem(state / "jobs.sqlite", state)
    assert problem is not None and f"job transcripts in {state / 'transcripts'}" in problem
