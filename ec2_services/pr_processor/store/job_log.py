"""A job's log lines: its own events and the agent's answers, redacted and cut to a sane length before they are kept.

Owns the ``job_log`` table. Line ids come from one AUTOINCREMENT sequence, so they only grow (the transcript's
``after`` cursor and the SSE ``id:`` rely on it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from aipm_common.logging import redact
from ec2_services.pr_processor.store.db import Database, marks

LOG_TAIL_LINES = 100
MAX_LINE_CHARS = 2000

SCHEMA = """
CREATE TABLE IF NOT EXISTS job_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    ts REAL NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_log_job ON job_log(job_id, id);
"""


class JobLog:
    def __init__(self, db: Database):
        self._db = db

    def append(self, job_id: str, lines: list[str]) -> list[tuple[int, str]]:
        """Store lines (redacted, each cut to a sane length), in one write; returns them with their ids."""
        clean = [redact(line)[:MAX_LINE_CHARS] for line in lines]
        now = time.time()
        with self._db.tx():
            return [(int(self._db.execute("INSERT INTO job_log (job_id, ts, line) VALUES (?, ?, ?)",
                                          (job_id, now, line)).lastrowid or 0), line) for line in clean]

    def lines(self, job_id: str, *, last: int | None = LOG_TAIL_LINES, after_id: int = 0) -> list[tuple[int, str]]:
        """The job's lines after ``after_id``, oldest first; only the ``last`` of them unless None."""
        if last is None:
            rows = self._db.fetchall(
                "SELECT id, line FROM job_log WHERE job_id = ? AND id > ? ORDER BY id", (job_id, after_id))
        else:
            rows = self._db.fetchall(
                "SELECT id, line FROM job_log WHERE job_id = ? AND id > ? ORDER BY id DESC LIMIT ?",
                (job_id, after_id, last))[::-1]
        return [(int(r[0]), r[1]) for r in rows]

    def page(self, job_id: str, *, after_id: int = 0, limit: int = 500) -> list[tuple[int, float, str]]:
        """Up to ``limit`` lines after ``after_id``, oldest first, with their times: the transcript, a page at a time."""
        rows = self._db.fetchall(
            "SELECT id, ts, line FROM job_log WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?", (job_id, after_id, limit))
        return [(int(r[0]), float(r[1]), r[2]) for r in rows]

    def delete(self, job_ids: Sequence[str]) -> None:
        """Forget these jobs' lines (joins the caller's ``tx``: ``JobStore.prune``)."""
        with self._db.tx():
            self._db.execute(f"DELETE FROM job_log WHERE job_id IN ({marks(job_ids)})", job_ids)
