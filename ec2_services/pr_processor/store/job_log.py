"""A job's log lines: its own events and the agent's answers, redacted and cut to a sane length before they are kept.

Owns the ``job_log`` table, which keeps each job's last ``TAIL_LINES`` (``log_tail``, and a live transcript's next
page, read from the database), and the job's whole transcript through ``transcripts`` (a file per job). Line ids come
from one AUTOINCREMENT sequence, so they only grow (the transcript's ``after`` cursor and the SSE ``id:`` rely on it).

A line reaches the database first (its id), then the file; only lines the file holds are cut from the database. The
first append of a process for a job first repairs the job's file and writes into it the lines the database has and
it lacks (a crash between the two writes, or a job logged before transcripts were files), so a restart mid-job goes on
appending and loses nothing.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence

from aipm_common.logging import redact
from ec2_services.pr_processor.store.db import Database, marks
from ec2_services.pr_processor.store.transcripts import Row, Transcripts

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 100
TAIL_LINES = LOG_TAIL_LINES  # the lines a job keeps in the database: log_tail's
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
    def __init__(self, db: Database, transcripts: Transcripts):
        self._db = db
        self.transcripts = transcripts
        self._current: set[str] = set()  # jobs whose file this process has repaired and brought up to date

    def append(self, job_id: str, lines: list[str]) -> list[tuple[int, str]]:
        """Store lines (redacted, each cut to a sane length); returns them with their ids. ValueError for a job id
        that cannot name a file (nothing is stored)."""
        self.transcripts.path(job_id)
        clean = [redact(line)[:MAX_LINE_CHARS] for line in lines]
        now = time.time()
        with self._db.lock:  # the file gets the lines in the order of their ids
            # Committed here, before the file has them: inside another write a rollback would reuse their ids.
            assert not self._db.connection.in_transaction, "JobLog.append inside a transaction"
            with self._db.tx():
                stored = [(int(self._db.execute("INSERT INTO job_log (job_id, ts, line) VALUES (?, ?, ?)",
                                                (job_id, now, line)).lastrowid or 0), now, line) for line in clean]
            if stored and self._write_file(job_id, stored):
                self._trim(job_id)
        return [(line_id, line) for line_id, _, line in stored]

    def _write_file(self, job_id: str, stored: list[Row]) -> bool:
        """The lines into the job's file (after what the file lacks, on the process's first append for the job);
        False when the file could not be written: the database then keeps every line until it can."""
        try:
            if job_id not in self._current:
                last = self.transcripts.repair(job_id)
                stored = self._rows(job_id, after_id=last, before_id=stored[0][0]) + stored
            self.transcripts.append(job_id, stored)
        except OSError as exc:
            self._current.discard(job_id)
            log.warning("transcript of job %s not written (%s): its lines stay in the database", job_id, exc,
                        extra={"job_id": job_id})
            return False
        self._current.add(job_id)
        return True

    def _trim(self, job_id: str) -> None:
        """Cut the job's lines in the database to its last ``TAIL_LINES`` (the file has them all). The lines are
        stored already: a database that refuses this write now is cut at a later append."""
        try:
            with self._db.tx():
                self._db.execute(
                    "DELETE FROM job_log WHERE job_id = ? AND id <= "
                    "(SELECT id FROM job_log WHERE job_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (job_id, job_id, TAIL_LINES))
        except sqlite3.OperationalError as exc:
            log.warning("log lines of job %s not cut to the last %d (%s)", job_id, TAIL_LINES, exc,
                        extra={"job_id": job_id})

    def _rows(self, job_id: str, *, after_id: int, before_id: int | None = None,
              limit: int | None = None) -> list[Row]:
        rows = self._db.fetchall(
            "SELECT id, ts, line FROM job_log WHERE job_id = ? AND id > ? AND id < ? ORDER BY id LIMIT ?",
            (job_id, after_id, 2**63 - 1 if before_id is None else before_id, -1 if limit is None else limit))
        return [(int(r[0]), float(r[1]), r[2]) for r in rows]

    def _whole(self, job_id: str, *, after_id: int, limit: int | None) -> list[Row]:
        """Every line after ``after_id`` (at most ``limit``): the database's when it reaches back that far, else the
        file's and the database's together."""
        rows = self._rows(job_id, after_id=after_id, limit=limit)
        first = self._db.fetchone("SELECT min(id) FROM job_log WHERE job_id = ?", (job_id,))
        if first is not None and first[0] is not None and after_id >= first[0] - 1:
            return rows
        merged = {row[0]: row for row in self.transcripts.read(job_id, after_id=after_id, limit=limit)}
        merged.update((row[0], row) for row in rows)
        return sorted(merged.values())[:limit]

    def lines(self, job_id: str, *, last: int | None = LOG_TAIL_LINES, after_id: int = 0) -> list[tuple[int, str]]:
        """The job's lines after ``after_id``, oldest first: the ``last`` of them (at most ``TAIL_LINES``, from the
        database), or with ``last=None`` all of them."""
        if last is None:
            return [(line_id, line) for line_id, _, line in self._whole(job_id, after_id=after_id, limit=None)]
        rows = self._db.fetchall(
            "SELECT id, line FROM job_log WHERE job_id = ? AND id > ? ORDER BY id DESC LIMIT ?",
            (job_id, after_id, last))[::-1]
        return [(int(r[0]), r[1]) for r in rows]

    def page(self, job_id: str, *, after_id: int = 0, limit: int = 500) -> list[Row]:
        """Up to ``limit`` lines after ``after_id``, oldest first, with their times: the transcript, a page at a time."""
        return self._whole(job_id, after_id=after_id, limit=limit)

    def delete(self, job_ids: Sequence[str]) -> None:
        """Forget these jobs' lines (joins the caller's ``tx``: ``JobStore.prune``); their files go with
        ``delete_files`` once that transaction is committed."""
        with self._db.tx():
            self._db.execute(f"DELETE FROM job_log WHERE job_id IN ({marks(job_ids)})", job_ids)

    def delete_files(self, job_ids: Sequence[str]) -> None:
        self._current.difference_update(job_ids)
        self.transcripts.delete(job_ids)
