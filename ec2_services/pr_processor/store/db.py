"""The job database's one SQLite connection and its transaction discipline, shared by every part of the store.

Owns opening (WAL, private files, the schema each part declares, columns added since), the lock, and ``tx``: one
``BEGIN IMMEDIATE`` write transaction, re-entrant, so a write that spans parts (a state change and its outbox row,
a new job and its queue message) is one commit. It knows no table.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

BUSY_TIMEOUT_S = 5.0


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


def marks(values: Sequence[object]) -> str:
    """``?, ?, ?``: one placeholder per value, for ``IN (...)``."""
    return ", ".join("?" * len(values))


class Database:
    """Thread-safe access to the job database: reads under ``lock``, writes in ``tx``."""

    def __init__(self, path: Path, schemas: Iterable[str], added_columns: Iterable[tuple[str, str, str]]):
        """``schemas``: each part's CREATE statements (IF NOT EXISTS); ``added_columns``: ``(table, column,
        declaration)`` added after databases already existed, added to an older database when it is opened."""
        path.parent.mkdir(parents=True, exist_ok=True)
        _private_files(path)
        # The store runs on the event loop: a lock held by someone else may stall it this long, not more.
        self.connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                                          timeout=BUSY_TIMEOUT_S)
        # Why the last write failed (locked, read-only, disk full), until a write succeeds again: /health shows it.
        self.write_error: str | None = None
        self.connection.row_factory = sqlite3.Row
        self.lock = threading.RLock()
        with self.lock:
            self._set_incremental_vacuum()
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=NORMAL")
            for schema in schemas:
                self.connection.executescript(schema)
            self._add_missing_columns(list(added_columns))

    def _set_incremental_vacuum(self) -> None:
        """A new database frees the pages of what pruning deletes with ``PRAGMA incremental_vacuum`` (the mode can
        only be chosen before the first table; an older database keeps its mode and is compacted by ``VACUUM``)."""
        if self.connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
            self.connection.execute("PRAGMA auto_vacuum=INCREMENTAL")

    def _add_missing_columns(self, columns: list[tuple[str, str, str]]) -> None:
        with self.tx():  # one writer at a time: two processes opening an old database do not both add a column
            for table, name, declaration in columns:
                have = {row[1] for row in self.connection.execute(f"PRAGMA table_info({table})")}
                if name not in have:
                    self.connection.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")

    def execute(self, sql: str, args: Iterable[object] = ()) -> sqlite3.Cursor:
        """One write statement under the lock (inside ``tx`` when it must be atomic with others)."""
        with self.lock:
            return self.connection.execute(sql, tuple(args))

    def fetchall(self, sql: str, args: Iterable[object] = ()) -> list[sqlite3.Row]:
        """A query's rows, read whole under the lock (the connection is shared between threads)."""
        with self.lock:
            return self.connection.execute(sql, tuple(args)).fetchall()

    def fetchone(self, sql: str, args: Iterable[object] = ()) -> sqlite3.Row | None:
        with self.lock:
            return self.connection.execute(sql, tuple(args)).fetchone()

    @contextlib.contextmanager
    def tx(self) -> Iterator[None]:
        """One write transaction (re-entrant within the lock holder: an inner ``tx`` joins the outer one)."""
        with self.lock:
            if self.connection.in_transaction:
                yield
                return
            try:
                self.connection.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    if self.connection.in_transaction:
                        self.connection.execute("ROLLBACK")
                    raise
                self.connection.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self.write_error = str(exc)
                if self.connection.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self.connection.execute("ROLLBACK")
                raise
            self.write_error = None

    def vacuum(self) -> int:
        """Give the free pages back to the file system (incremental vacuum; nothing on a database made before it);
        returns how many pages were free before."""
        with self.lock:
            free = self.connection.execute("PRAGMA freelist_count").fetchone()[0]
            if free and self.connection.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:  # 2: INCREMENTAL
                # executescript runs it to the end; execute() would step once, freeing a single page.
                self.connection.executescript("PRAGMA incremental_vacuum;")
            return free

    def size_bytes(self) -> int:
        """The database's pages in use or free, in bytes (the WAL not counted)."""
        with self.lock:
            pages = self.connection.execute("PRAGMA page_count").fetchone()[0]
            return pages * self.connection.execute("PRAGMA page_size").fetchone()[0]

    def close(self) -> None:
        with self.lock:
            self.connection.close()
