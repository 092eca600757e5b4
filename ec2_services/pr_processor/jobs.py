"""The job store: SQLite (WAL) holding jobs, their log lines and the callback outbox, and the job state machine.

Owns the states and the one table of allowed transitions; every status change goes through ``transition`` so no
code path can move a job where the table says it cannot go. A job is written before the service answers 202.
It must not run git or talk HTTP; it must never hold the GitHub token (callers redact before they write).
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aipm_common.contracts import JobResult, dump_job_result
from aipm_common.logging import redact

LOG_TAIL_LINES = 100
BUSY_TIMEOUT_S = 5.0
OUTPUT_TAIL_CHARS = 4000
CALLBACK_ERROR_CHARS = 200_000  # what the receiver takes (JobResult.error)
MAX_LINE_CHARS = 2000


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PUSHING = "pushing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NO_CHANGES = "no_changes"
    CANCELLED = "cancelled"

    @property
    def live(self) -> bool:
        return self in LIVE_STATES

    @property
    def final(self) -> bool:
        return not self.live


LIVE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING, JobState.PUSHING})

# The whole state machine. A retried attempt stays in its state (running, or pushing for a push retried without
# running the agent again); a pushing job is past cancelling: its commit is made and goes out.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.PUSHING, JobState.NO_CHANGES, JobState.FAILED, JobState.CANCELLED}),
    JobState.PUSHING: frozenset({JobState.SUCCEEDED, JobState.FAILED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.NO_CHANGES: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class InvalidTransition(RuntimeError):
    pass


class BranchBusy(Exception):
    """Another job is live on the same repository branch."""

    def __init__(self, job_id: str):
        super().__init__(job_id)
        self.job_id = job_id


class CallbackState(enum.StrEnum):
    NONE = "none"
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


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
    def task_id(self) -> str:
        return f"{self.job_id}.{self.attempts}"


_JOB_COLUMNS = [f.name for f in fields(Job)]

_SCHEMA = """
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
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    sqs_message_id TEXT,
    sqs_receipt_handle TEXT
);
-- One live job per branch, enforced by the database itself.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_live_branch ON jobs(repo_key, branch)
    WHERE status IN ('queued', 'running', 'pushing');
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);
-- A branch's runs (every job's JSON lists them): without it each job of a page of GET /api/jobs scans the table.
CREATE INDEX IF NOT EXISTS jobs_branch ON jobs(repo_key, branch, seq);
CREATE TABLE IF NOT EXISTS job_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    ts REAL NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_log_job ON job_log(job_id, id);
-- Each state a job entered and when: the job page's timeline (queued → running → pushing → final).
CREATE TABLE IF NOT EXISTS job_states (
    job_id TEXT NOT NULL,
    status TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS job_states_job ON job_states(job_id, ts);
CREATE TABLE IF NOT EXISTS outbox (
    job_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    created_at REAL NOT NULL,
    last_error TEXT
);
"""


# Columns added after databases already existed: a database made before gets them when it is opened (CREATE TABLE IF
# NOT EXISTS leaves an existing table as it is). With AIPM_DISPATCH=sqs, the job queue message a job came in and the
# receipt handle this host holds it by, until the message is deleted (see sqs_intake).
_ADDED_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "jobs": [("sqs_message_id", "TEXT"), ("sqs_receipt_handle", "TEXT"),
             ("title", "TEXT"),  # the pull request's title, for the history list
             ("tests", "TEXT"),  # the repository's test run after the agent (JSON)
             ("rerun_of", "TEXT")],  # POST /api/jobs/{id}/rerun: the job run again
    # The HTTP status of the callback's last try (null: not tried yet, or no answer: a connection error).
    "outbox": [("last_status", "INTEGER")],
}


@dataclass
class HeldMessage:
    """A job queue message this host holds for a job: the job's id and state, the message id and receipt handle."""

    job_id: str
    status: JobState
    message_id: str
    receipt_handle: str


@dataclass
class OutboxItem:
    job_id: str
    url: str
    payload: str
    state: CallbackState
    attempts: int
    next_at: float
    created_at: float
    last_error: str | None
    last_status: int | None = None


def _private_files(path: Path) -> None:
    """The database (and its WAL and shared-memory files, which SQLite creates with the database's mode) readable and
    writable by the service's user only: on the host the units' umask 0002 serves the workspaces' group, to which the
    agent's user belongs, and the agent must not write the jobs."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(OSError):  # not there, not ours, or immutable: SQLite reports what matters
            if candidate.stat().st_mode & 0o077:
                candidate.chmod(0o600)


class JobStore:
    """Thread-safe access to the job database; every public method is one short transaction."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _private_files(path)
        # The store runs on the event loop: a lock held by someone else may stall it this long, not more.
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        # Why the last write failed (locked, read-only, disk full), until a write succeeds again: /health shows it.
        self.write_error: str | None = None
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._set_incremental_vacuum()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._add_missing_columns()

    def _set_incremental_vacuum(self) -> None:
        """A new database frees the pages of what ``prune`` deletes with ``PRAGMA incremental_vacuum`` (the mode can
        only be chosen before the first table; an older database keeps its mode and is compacted by ``VACUUM``)."""
        if self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")

    def _add_missing_columns(self) -> None:
        with self._tx():  # one writer at a time: two processes opening an old database do not both add a column
            for table, columns in _ADDED_COLUMNS.items():
                have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                for name, declaration in columns:
                    if name not in have:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """One write transaction (re-entrant within the lock holder)."""
        with self._lock:
            if self._db.in_transaction:
                yield
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self.write_error = str(exc)
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise
            self.write_error = None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- jobs -------------------------------------------------------------------------------------------------

    def create(self, *, job_id: str, repo: str, branch: str, base_branch: str | None, pr_number: int | None,
               task_file: str, callback_url: str | None, requested_by: str | None,
               message: tuple[str, str] | None = None, title: str | None = None,
               rerun_of: str | None = None) -> tuple[Job, bool]:
        """The job with this id: ``(job, True)`` when made now, ``(existing, False)`` when it existed.

        ``message``: the ``(message id, receipt handle)`` of the job queue message it came in, recorded with a new job
        in the same write. Raises ``BranchBusy`` when another job is live on the branch.
        """
        message_id, receipt_handle = message if message is not None else (None, None)
        now = time.time()
        with self._tx():
            existing = self.get(job_id)
            if existing is not None:
                return existing, False
            row = self._db.execute(
                "SELECT job_id FROM jobs WHERE repo_key = ? AND branch = ? AND status IN ('queued','running','pushing')",
                (repo.lower(), branch),
            ).fetchone()
            if row is not None:
                raise BranchBusy(row["job_id"])
            self._db.execute(
                "INSERT INTO jobs (job_id, repo, repo_key, branch, base_branch, pr_number, task_file, callback_url,"
                " requested_by, status, created_at, updated_at, sqs_message_id, sqs_receipt_handle, title, rerun_of)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (job_id, repo, repo.lower(), branch, base_branch, pr_number, task_file, callback_url, requested_by,
                 JobState.QUEUED.value, now, now, message_id, receipt_handle, title, rerun_of),
            )
            self._db.execute("INSERT INTO job_states (job_id, status, ts) VALUES (?, ?, ?)",
                             (job_id, JobState.QUEUED.value, now))
            job = self.get(job_id)
            assert job is not None
            return job, True

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def list(self, *, limit: int = 50, status: JobState | None = None, repo: str | None = None,
             before: int | None = None) -> list[Job]:
        """Newest first; ``before``: only jobs older than the one with that ``seq`` (the next page's cursor)."""
        query = f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE 1 = 1"
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
        with self._lock:
            return [_job(row) for row in self._db.execute(query, args).fetchall()]

    def branch_jobs(self, repo: str, branch: str) -> list[Job]:
        """Every job of the repository's branch, oldest first: its first run and each re-run."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE repo_key = ? AND branch = ? ORDER BY seq",
                (repo.lower(), branch)).fetchall()
        return [_job(row) for row in rows]

    def in_states(self, *states: JobState) -> list[Job]:
        """Jobs in these states, oldest first."""
        marks = ",".join("?" for _ in states)
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE status IN ({marks}) ORDER BY seq",
                [s.value for s in states],
            ).fetchall()
        return [_job(row) for row in rows]

    def queue_position(self, job: Job) -> int | None:
        if job.status is not JobState.QUEUED:
            return None
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND seq <= ?", (job.seq,)).fetchone()
        return int(row[0])

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {row[0]: int(row[1]) for row in rows}

    def update(self, job_id: str, **values: Any) -> Job:
        """Change fields other than ``status``."""
        if "status" in values:
            raise ValueError("status changes go through transition()")
        return self._write(job_id, values)

    def transition(self, job_id: str, to: JobState, **values: Any) -> Job:
        """Move a job to ``to`` if TRANSITIONS allows it (and set ``values`` in the same write)."""
        with self._tx():
            job = self.get(job_id)
            if job is None:
                raise KeyError(job_id)
            if to not in TRANSITIONS[job.status]:
                raise InvalidTransition(f"job {job_id}: {job.status.value} → {to.value} is not allowed")
            values = {**values, "status": to.value}
            if to is JobState.RUNNING and job.started_at is None:
                values.setdefault("started_at", time.time())
            if to.final:
                values.setdefault("ended_at", time.time())
                values["cancel_requested"] = 0
            job = self._write(job_id, values)
            self._db.execute("INSERT INTO job_states (job_id, status, ts) VALUES (?, ?, ?)",
                             (job_id, to.value, job.updated_at))
            if to.final and job.callback_url:
                self._enqueue_callback(job)
            return job

    def _write(self, job_id: str, values: dict[str, Any]) -> Job:
        unknown = set(values) - set(_JOB_COLUMNS)
        if unknown:
            raise ValueError(f"unknown job fields: {sorted(unknown)}")
        values = {k: (redact(v) if isinstance(v, str) and k in ("error", "output_tail") else v) for k, v in values.items()}
        values["updated_at"] = time.time()
        sets = ", ".join(f"{k} = ?" for k in values)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", [*values.values(), job_id])
            job = self.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    # --- job queue messages (AIPM_DISPATCH=sqs) ---------------------------------------------------------------

    def hold_message(self, job_id: str, message_id: str, receipt_handle: str) -> None:
        """Record the job queue message held for the job (a newer receipt handle replaces the one recorded)."""
        with self._tx():
            self._db.execute("UPDATE jobs SET sqs_message_id = ?, sqs_receipt_handle = ? WHERE job_id = ?",
                             (message_id, receipt_handle, job_id))

    def release_message(self, job_id: str, message_id: str) -> None:
        """Forget the job's message (deleted, or no longer ours); a different message recorded since is kept."""
        with self._tx():
            self._db.execute("UPDATE jobs SET sqs_message_id = NULL, sqs_receipt_handle = NULL"
                             " WHERE job_id = ? AND sqs_message_id = ?", (job_id, message_id))

    def held_messages(self) -> list[HeldMessage]:
        """Every job with a job queue message still recorded, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT job_id, status, sqs_message_id, sqs_receipt_handle FROM jobs"
                " WHERE sqs_receipt_handle IS NOT NULL AND sqs_message_id IS NOT NULL ORDER BY seq").fetchall()
        return [HeldMessage(row[0], JobState(row[1]), row[2], row[3]) for row in rows]

    # --- log lines --------------------------------------------------------------------------------------------

    def append_log(self, job_id: str, lines: list[str]) -> list[str]:
        """Store lines (redacted, each cut to a sane length); returns what was stored."""
        clean = [redact(line)[:MAX_LINE_CHARS] for line in lines]
        now = time.time()
        with self._lock:
            self._db.executemany(
                "INSERT INTO job_log (job_id, ts, line) VALUES (?, ?, ?)", [(job_id, now, line) for line in clean]
            )
        return clean

    def log_lines(self, job_id: str, *, last: int | None = LOG_TAIL_LINES, after_id: int = 0) -> list[tuple[int, str]]:
        with self._lock:
            if last is None:
                rows = self._db.execute(
                    "SELECT id, line FROM job_log WHERE job_id = ? AND id > ? ORDER BY id", (job_id, after_id)
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT id, line FROM job_log WHERE job_id = ? AND id > ? ORDER BY id DESC LIMIT ?",
                    (job_id, after_id, last),
                ).fetchall()[::-1]
        return [(int(r[0]), r[1]) for r in rows]

    def log_page(self, job_id: str, *, after_id: int = 0, limit: int = 500) -> list[tuple[int, float, str]]:
        """Up to ``limit`` lines after ``after_id``, oldest first, with their times: the transcript, a page at a time."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, ts, line FROM job_log WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?",
                (job_id, after_id, limit),
            ).fetchall()
        return [(int(r[0]), float(r[1]), r[2]) for r in rows]

    def states(self, job_id: str) -> list[tuple[str, float]]:
        """The states the job went through, in order, with the time it entered each."""
        with self._lock:
            rows = self._db.execute(
                "SELECT status, ts FROM job_states WHERE job_id = ? ORDER BY ts, rowid", (job_id,)).fetchall()
        return [(r[0], float(r[1])) for r in rows]

    # --- callback outbox ---------------------------------------------------------------------------------------

    def _enqueue_callback(self, job: Job) -> None:
        payload = json.dumps(callback_payload(job))
        now = time.time()
        self._db.execute(
            "INSERT OR IGNORE INTO outbox (job_id, url, payload, state, next_at, created_at) VALUES (?,?,?,?,?,?)",
            (job.job_id, job.callback_url, payload, CallbackState.PENDING.value, now, now),
        )

    def callback_status(self, job_id: str) -> dict[str, Any]:
        """The contract's ``{"state", "attempts"}``, plus the last try's HTTP status and error (why it is still pending)."""
        with self._lock:
            row = self._db.execute(
                "SELECT state, attempts, last_status, last_error FROM outbox WHERE job_id = ?", (job_id,)
            ).fetchone()
        if row is None:
            return {"state": CallbackState.NONE.value, "attempts": 0, "last_status": None, "last_error": None}
        return {"state": row["state"], "attempts": int(row["attempts"]), "last_status": row["last_status"],
                "last_error": row["last_error"]}

    def due_callbacks(self, now: float) -> list[OutboxItem]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM outbox WHERE state = 'pending' AND next_at <= ? ORDER BY next_at", (now,)
            ).fetchall()
        return [OutboxItem(**{**dict(r), "state": CallbackState(r["state"])}) for r in rows]

    def record_callback(self, job_id: str, *, state: CallbackState, next_at: float, error: str | None,
                        status: int | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET state = ?, attempts = attempts + 1, next_at = ?, last_error = ?, last_status = ?"
                " WHERE job_id = ?",
                (state.value, next_at, redact(error) if error else None, status, job_id),
            )

    # --- retention ----------------------------------------------------------------------------------------------

    def prune(self, ended_before: float, *, batch: int = 500) -> int:
        """Delete the jobs that ended before ``ended_before`` (a final state; live jobs are never touched) with their
        log lines, state timeline and callback outbox row; a ``batch`` of jobs per transaction, so the lock is held
        briefly. Returns how many jobs went."""
        final = [state.value for state in JobState if state.final]
        marks = ", ".join("?" * len(final))
        removed = 0
        while True:
            with self._tx():
                ids = [row[0] for row in self._db.execute(
                    f"SELECT job_id FROM jobs WHERE status IN ({marks}) AND COALESCE(ended_at, updated_at) < ? "
                    "ORDER BY seq LIMIT ?", (*final, ended_before, batch))]
                if not ids:
                    return removed
                id_marks = ", ".join("?" * len(ids))
                for table in ("job_log", "job_states", "outbox", "jobs"):
                    self._db.execute(f"DELETE FROM {table} WHERE job_id IN ({id_marks})", ids)
            removed += len(ids)

    def vacuum(self) -> int:
        """Give the free pages back to the file system (incremental vacuum; nothing on a database made before it);
        returns how many pages were free before."""
        with self._lock:
            free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
            if free and self._db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:  # 2: INCREMENTAL
                # executescript runs it to the end; execute() would step once, freeing a single page.
                self._db.executescript("PRAGMA incremental_vacuum;")
            return free

    def size_bytes(self) -> int:
        """The database's pages in use or free, in bytes (the WAL not counted)."""
        with self._lock:
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            return pages * self._db.execute("PRAGMA page_size").fetchone()[0]


def callback_payload(job: Job) -> dict[str, Any]:
    """The callback body (``aipm_common.contracts.JobResult``) of an ended job; ``tests`` only when they ran."""
    duration = job.duration_s
    return dump_job_result(JobResult(
        job_id=job.job_id,
        status=job.status.value,
        commit=job.commit_sha,
        error=job.error[:CALLBACK_ERROR_CHARS] if job.error else job.error,
        pr_number=job.pr_number,
        repo=job.repo,
        branch=job.branch,
        attempts=job.attempts,
        duration_s=None if duration is None else max(duration, 0.0),  # a clock stepped back is not a negative time
        credits=job.credits,
        output_tail=job.output_tail[-OUTPUT_TAIL_CHARS:],
        tests=job.tests_result,
    ))


def _job(row: sqlite3.Row) -> Job:
    data = dict(row)
    data["status"] = JobState(data["status"])
    data["cancel_requested"] = bool(data["cancel_requested"])
    return Job(**data)
