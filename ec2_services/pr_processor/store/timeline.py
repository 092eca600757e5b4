"""A job's timeline: each state it entered and when (the job page's queued → running → pushing → final).

Owns the ``job_states`` table. Rows are written by ``Jobs`` inside the write that changes the state.
"""

from __future__ import annotations

from collections.abc import Sequence

from ec2_services.pr_processor.state_machine import JobState
from ec2_services.pr_processor.store.db import Database, marks

SCHEMA = """
CREATE TABLE IF NOT EXISTS job_states (
    job_id TEXT NOT NULL,
    status TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS job_states_job ON job_states(job_id, ts);
"""


class Timeline:
    def __init__(self, db: Database):
        self._db = db

    def record(self, job_id: str, status: JobState, ts: float) -> None:
        with self._db.tx():
            self._db.execute("INSERT INTO job_states (job_id, status, ts) VALUES (?, ?, ?)", (job_id, status.value, ts))

    def states(self, job_id: str) -> list[tuple[str, float]]:
        """The states the job went through, in order, with the time it entered each."""
        rows = self._db.fetchall("SELECT status, ts FROM job_states WHERE job_id = ? ORDER BY ts, rowid", (job_id,))
        return [(r[0], float(r[1])) for r in rows]

    def delete(self, job_ids: Sequence[str]) -> None:
        """Forget these jobs' timelines (joins the caller's ``tx``: ``JobStore.prune``)."""
        with self._db.tx():
            self._db.execute(f"DELETE FROM job_states WHERE job_id IN ({marks(job_ids)})", job_ids)
