"""The callback outbox: the result each ended job owes its ``callback_url``, written in the same transaction as the
job's final state (``Jobs.transition``) and sent, retried and marked by ``callbacks.CallbackSender``.

Owns the ``outbox`` table and the callback's body (``callback_payload``).
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aipm_common.contracts import JobResult, dump_job_result
from aipm_common.logging import redact
from ec2_services.pr_processor.store.db import Database, marks

if TYPE_CHECKING:
    from ec2_services.pr_processor.store.jobs import Job

OUTPUT_TAIL_CHARS = 4000
CALLBACK_ERROR_CHARS = 200_000  # what the receiver takes (JobResult.error)

SCHEMA = """
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
# The HTTP status of the callback's last try (null: not tried yet, or no answer: a connection error).
ADDED_COLUMNS = [("outbox", "last_status", "INTEGER")]


class CallbackState(enum.StrEnum):
    NONE = "none"
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


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
        tokens=job.tokens_used,
    ))


class Outbox:
    def __init__(self, db: Database):
        self._db = db

    def enqueue(self, job: Job) -> None:
        """The ended job's callback, due now (once: a second call for the job changes nothing). Called inside the
        transaction that ends the job."""
        assert job.callback_url
        now = time.time()
        with self._db.tx():
            self._db.execute(
                "INSERT OR IGNORE INTO outbox (job_id, url, payload, state, next_at, created_at) VALUES (?,?,?,?,?,?)",
                (job.job_id, job.callback_url, json.dumps(callback_payload(job)), CallbackState.PENDING.value, now,
                 now),
            )

    def status(self, job_id: str) -> dict[str, Any]:
        """The contract's ``{"state", "attempts"}``, plus the last try's HTTP status and error (why it is still pending)."""
        row = self._db.fetchone(
            "SELECT state, attempts, last_status, last_error FROM outbox WHERE job_id = ?", (job_id,))
        if row is None:
            return {"state": CallbackState.NONE.value, "attempts": 0, "last_status": None, "last_error": None}
        return {"state": row["state"], "attempts": int(row["attempts"]), "last_status": row["last_status"],
                "last_error": row["last_error"]}

    def due(self, now: float) -> list[OutboxItem]:
        rows = self._db.fetchall(
            "SELECT * FROM outbox WHERE state = 'pending' AND next_at <= ? ORDER BY next_at", (now,))
        return [OutboxItem(**{**dict(r), "state": CallbackState(r["state"])}) for r in rows]

    def record(self, job_id: str, *, state: CallbackState, next_at: float, error: str | None,
               status: int | None = None) -> None:
        """One try's outcome: the state it leaves, when to try again, and why it failed."""
        with self._db.tx():
            self._db.execute(
                "UPDATE outbox SET state = ?, attempts = attempts + 1, next_at = ?, last_error = ?, last_status = ?"
                " WHERE job_id = ?",
                (state.value, next_at, redact(error) if error else None, status, job_id),
            )

    def delete(self, job_ids: Sequence[str]) -> None:
        """Forget these jobs' callbacks (joins the caller's ``tx``: ``JobStore.prune``)."""
        with self._db.tx():
            self._db.execute(f"DELETE FROM outbox WHERE job_id IN ({marks(job_ids)})", job_ids)
