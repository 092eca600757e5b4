"""The jobs themselves: one row per job, made before the service answers 202, read by every route.

Owns the ``jobs`` table (but for its job queue columns, ``receipts``'), one live job per branch, and the writes that
change a job: ``update`` for any field but ``status``, ``transition`` for ``status``, which asks the state machine
(``state_machine.check``) and, in the same transaction, records the timeline row and, for an ended job with a
callback, the outbox row. It must not run git or talk HTTP; it must never hold the GitHub token (``error`` and
``output_tail`` are redacted here, and callers redact before they write anything else).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from aipm_common.logging import redact
from ec2_services.pr_processor import state_machine
from ec2_services.pr_processor.state_machine import FINAL_STATES, JobState
from ec2_services.pr_processor.store.db import Database, marks
from ec2_services.pr_processor.store.outbox import Outbox
from ec2_services.pr_processor.store.receipts import Receipts
from ec2_services.pr_processor.store.timeline import Timeline

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    repo TEXT NOT NULL,
    repo_key TEXT NOT NULL,
    branch TEXT NOT NULL,
    base_branch TEXT,
    pr_number INTEGER,
    task_file TEXT NOT NULL,
    callback_url TEXT,
    requested_by TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    commit_sha TEXT,
    base_commit TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    credits REAL,
    output_tail TEXT NOT NULL DEFAULT '',
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
-- One live job per branch, enforced by the database itself.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_live_branch ON jobs(repo_key, branch)
    WHERE status IN ('queued', 'running', 'pushing');
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);
-- A branch's runs (every job's JSON lists them): without it each job of a page of GET /api/jobs scans the table.
CREATE INDEX IF NOT EXISTS jobs_branch ON jobs(repo_key, branch, seq);
"""

# Columns added after databases already existed: a database made before gets them when it is opened (CREATE TABLE IF
# NOT EXISTS leaves an existing table as it is).
ADDED_COLUMNS = [("jobs", "title", "TEXT"),  # the pull request's title, for the history list
                 ("jobs", "tests", "TEXT"),  # the repository's test run after the agent (JSON)
                 ("jobs", "rerun_of", "TEXT"),  # POST /api/jobs/{id}/rerun: the job run again
                 ("jobs", "tokens", "TEXT")]  # the model tokens the agent reported, {input, output} (JSON)


class BranchBusy(Exception):
    """Another job is live on the same repository branch."""

    def __init__(self, job_id: str):
        super().__init__(job_id)
        self.job_id = job_id


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Job:
    seq: int
    job_id: str
    repo: str
    branch: str
    base_branch: str | None
    pr_number: int | None
    task_file: str
    callback_url: str | None
    requested_by: str | None
    status: JobState
    attempts: int
    commit_sha: str | None
    base_commit: str | None
    error: str | None
    created_at: float
    updated_at: float
    started_at: float | None
    ended_at: float | None
    credits: float | None
    output_tail: str
    cancel_requested: bool
    title: str | None = None
    tests: str | None = None  # the test run's result as JSON (ec2_services.pr_processor.repo_tests)
    rerun_of: str | None = None  # the job this one runs again, on the same branch and pull request
    tokens: str | None = None  # the model tokens the agent reported, {"input": n, "output": n} as JSON

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else time.time()
        return round(end - self.started_at, 3)

    @property
    def tests_result(self) -> dict[str, Any] | None:
        return json.loads(self.tests) if self.tests else None

    @property
    def tokens_used(self) -> dict[str, int] | None:
        return json.loads(self.tokens) if self.tokens else None

    @property
    def task_id(self) -> str:
        return f"{self.job_id}.{self.attempts}"


_JOB_COLUMNS = [f.name for f in fields(Job)]
_SELECT = f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs"


def _job(row: Any) -> Job:
    data = dict(row)
    data["status"] = JobState(data["status"])
    data["cancel_requested"] = bool(data["cancel_requested"])
    return Job(**data)


class Jobs:
    def __init__(self, db: Database, *, timeline: Timeline, outbox: Outbox, receipts: Receipts):
        self._db = db
        self._timeline = timeline
        self._outbox = outbox
        self._receipts = receipts

    def create(self, *, job_id: str, repo: str, branch: str, base_branch: str | None, pr_number: int | None,
               task_file: str, callback_url: str | None, requested_by: str | None,
               message: tuple[str, str] | None = None, title: str | None = None,
               rerun_of: str | None = None) -> tuple[Job, bool]:
        """The job with this id: ``(job, True)`` when made now, ``(existing, False)`` when it existed.

        ``message``: the ``(message id, receipt handle)`` of the job queue message it came in, recorded with a new job
        in the same write. Raises ``BranchBusy`` when another job is live on the branch.
        """
        now = time.time()
        with self._db.tx():
            existing = self.get(job_id)
            if existing is not None:
                return existing, False
            row = self._db.fetchone(
                "SELECT job_id FROM jobs WHERE repo_key = ? AND branch = ? AND status IN ('queued','running','pushing')",
                (repo.lower(), branch),
            )
            if row is not None:
                raise BranchBusy(row["job_id"])
            self._db.execute(
                "INSERT INTO jobs (job_id, repo, repo_key, branch, base_branch, pr_number, task_file, callback_url,"
                " requested_by, status, created_at, updated_at, title, rerun_of) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (job_id, repo, repo.lower(), branch, base_branch, pr_number, task_file, callback_url, requested_by,
                 JobState.QUEUED.value, now, now, title, rerun_of),
            )
            if message is not None:
                self._receipts.hold(job_id, *message)
            self._timeline.record(job_id, JobState.QUEUED, now)
            job = self.get(job_id)
            assert job is not None
            return job, True

    def get(self, job_id: str) -> Job | None:
        row = self._db.fetchone(f"{_SELECT} WHERE job_id = ?", (job_id,))
        return _job(row) if row else None

    def list(self, *, limit: int = 50, status: JobState | None = None, repo: str | None = None,
             before: int | None = None) -> list[Job]:
        """Newest first; ``before``: only jobs older than the one with that ``seq`` (the next page's cursor)."""
        query = f"{_SELECT} WHERE 1 = 1"
        args: list[Any] = []
        if status is not None:
            query += " AND status = ?"
            args.append(status.value)
        if repo is not None:
            query += " AND repo_key = ?"
            args.append(repo.lower())
        if before is not None:
            query += " AND seq < ?"
            args.append(before)
        query += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        return [_job(row) for row in self._db.fetchall(query, args)]

    def branch_jobs(self, repo: str, branch: str) -> list[Job]:
        """Every job of the repository's branch, oldest first: its first run and each re-run."""
        rows = self._db.fetchall(f"{_SELECT} WHERE repo_key = ? AND branch = ? ORDER BY seq", (repo.lower(), branch))
        return [_job(row) for row in rows]

    def in_states(self, *states: JobState) -> list[Job]:
        """Jobs in these states, oldest first."""
        rows = self._db.fetchall(f"{_SELECT} WHERE status IN ({marks(states)}) ORDER BY seq", [s.value for s in states])
        return [_job(row) for row in rows]

    def queue_position(self, job: Job) -> int | None:
        if job.status is not JobState.QUEUED:
            return None
        row = self._db.fetchone("SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND seq <= ?", (job.seq,))
        return int(row[0]) if row else None

    def counts(self) -> dict[str, int]:
        rows = self._db.fetchall("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return {row[0]: int(row[1]) for row in rows}

    def update(self, job_id: str, **values: Any) -> Job:
        """Change fields other than ``status``."""
        if "status" in values:
            raise ValueError("status changes go through transition()")
        with self._db.tx():
            return self._write(job_id, values)

    def transition(self, job_id: str, to: JobState, **values: Any) -> Job:
        """Move a job to ``to`` if the state machine allows it (and set ``values`` in the same write); the timeline
        row, and for an ended job with a callback its outbox row, are written in the same transaction."""
        with self._db.tx():
            job = self.get(job_id)
            if job is None:
                raise KeyError(job_id)
            state_machine.check(job_id, job.status, to)
            values = {**values, "status": to.value}
            if to is JobState.RUNNING and job.started_at is None:
                values.setdefault("started_at", time.time())
            if to.final:
                values.setdefault("ended_at", time.time())
                values["cancel_requested"] = 0
            job = self._write(job_id, values)
            self._timeline.record(job_id, to, job.updated_at)
            if to.final and job.callback_url:
                self._outbox.enqueue(job)
            return job

    def _write(self, job_id: str, values: dict[str, Any]) -> Job:
        unknown = set(values) - set(_JOB_COLUMNS)
        if unknown:
            raise ValueError(f"unknown job fields: {sorted(unknown)}")
        values = {k: (redact(v) if isinstance(v, str) and k in ("error", "output_tail") else v) for k, v in values.items()}
        values["updated_at"] = time.time()
        sets = ", ".join(f"{k} = ?" for k in values)
        self._db.execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", [*values.values(), job_id])
        job = self.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def ended_before(self, ended_before: float, *, limit: int) -> list[str]:
        """Up to ``limit`` ids of jobs in a final state that ended before ``ended_before``, oldest first."""
        final = [state.value for state in FINAL_STATES]
        rows = self._db.fetchall(
            f"SELECT job_id FROM jobs WHERE status IN ({marks(final)})"
            " AND COALESCE(ended_at, updated_at) < ? ORDER BY seq LIMIT ?", (*final, ended_before, limit))
        return [row[0] for row in rows]

    def known(self, job_ids: Sequence[str]) -> set[str]:
        """Which of these ids are jobs in the database."""
        rows = self._db.fetchall(f"SELECT job_id FROM jobs WHERE job_id IN ({marks(job_ids)})", job_ids)
        return {row[0] for row in rows}

    def delete(self, job_ids: Sequence[str]) -> None:
        """Forget these jobs (in the caller's ``tx``, with every other part's rows of them: ``JobStore.prune``)."""
        with self._db.tx():
            self._db.execute(f"DELETE FROM jobs WHERE job_id IN ({marks(job_ids)})", job_ids)
