"""The pool's task ledger on disk (SQLite, ``KIRO_TASK_DB``): which task ids ``/execute`` took, under which
signatures, and the result of each that ended, so that a replay after a restart never runs the agent again.

Owns that file and its rows, not the in-memory registry (``pool.py``), which answers replays while the process
lives. After a restart: a task that ended answers its stored result; a request whose very signature was seen before
(a captured request sent again) is refused, since its task was interrupted and its result is lost; a task id that was
interrupted but arrives under a fresh signature (the PR processor sending it again, which it may) runs.

Results are kept for ``KIRO_RESULT_TTL`` (as in memory), signatures for twice the signing window (one is accepted up
to ``WINDOW_S`` either side of its timestamp); both are pruned as tasks come. Results of ``agent_error`` (the pool
stopping, no session) are not stored: sending those again is how a caller retries.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from aipm_common.signing import WINDOW_S

_NOT_STORED = {"agent_error"}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    task_id TEXT PRIMARY KEY,
    ended_at REAL NOT NULL,
    http_status INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS signatures (
    signature TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    seen_at REAL NOT NULL,
    life TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Ended:
    """A task that ended before: its answer, to give again."""

    http_status: int
    body: dict


class Replayed(Exception):
    """The same signed request again after a restart, for a task whose result was lost: it must not run again."""


class TaskLedger:
    def __init__(self, path: Path, *, result_ttl: float, clock=time.time):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._result_ttl = result_ttl
        self._signature_ttl = 2 * WINDOW_S  # a signature is accepted up to WINDOW_S either side of its timestamp
        self._clock = clock
        self._lock = threading.Lock()
        self._life = uuid.uuid4().hex  # this process's; a signature seen in an earlier life is a replay
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # no fsync per task; a power cut may lose the last few rows
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def before_run(self, task_id: str, signature: str | None) -> Ended | None:
        """For a task id the pool does not hold in memory: its stored answer, None to run it, or ``Replayed``."""
        ended = self.stored(task_id)
        if ended is not None:
            return ended
        with self._lock:  # signatures of this life are the in-memory registry's business (it keeps results longer)
            seen = signature and self._db.execute(
                "SELECT 1 FROM signatures WHERE signature = ? AND seen_at >= ? AND life != ?",
                (signature, self._clock() - self._signature_ttl, self._life)).fetchone()
        if seen:
            raise Replayed(
                f"task {task_id!r}: this exact signed request was taken before the worker pool restarted, and the "
                "task's result was lost with it; it is not run again (sign a new request to run it)"
            )
        return None

    def taken(self, task_id: str, signature: str | None) -> None:
        now = self._clock()
        with self._lock:
            self._db.execute("DELETE FROM results WHERE ended_at < ?", (now - self._result_ttl,))
            self._db.execute("DELETE FROM signatures WHERE seen_at < ?", (now - self._signature_ttl,))
            if signature:
                self._db.execute("INSERT OR IGNORE INTO signatures (signature, task_id, seen_at, life) "
                                 "VALUES (?, ?, ?, ?)", (signature, task_id, now, self._life))

    def ended(self, task_id: str, http_status: int, body: dict) -> None:
        if body.get("status") in _NOT_STORED:
            return
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO results (task_id, ended_at, http_status, body) VALUES (?, ?, ?, ?)",
                             (task_id, self._clock(), http_status, json.dumps(body)))

    def stored(self, task_id: str) -> Ended | None:
        """The stored answer of a task ended within the result TTL (``GET /tasks/{id}`` after a restart), or None."""
        with self._lock:
            row = self._db.execute("SELECT http_status, body FROM results WHERE task_id = ? AND ended_at >= ?",
                                   (task_id, self._clock() - self._result_ttl)).fetchone()
        return Ended(row[0], json.loads(row[1])) if row else None
