"""The job database looked at before the PR processor starts: a corrupt file, or an empty one where the state
directory shows earlier jobs, stops the start with one line that names the file and the way back.

Owns only that look (read-only queries); opening, migrating and writing the store is ``store.JobStore``'s business.
A database that is merely locked or read-only is not refused here: the service starts and answers 503 while it lasts.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def _earlier_jobs(state_dir: Path, db: Path) -> str | None:
    """What in the state directory shows that jobs ran here before, or None."""
    mirrors = state_dir / "mirrors"
    if mirrors.is_dir() and any(mirrors.iterdir()):
        return f"repository mirrors in {mirrors}"
    transcripts = state_dir / "transcripts"
    if transcripts.is_dir() and any(transcripts.glob("*.jsonl.gz")):
        return f"job transcripts in {transcripts}"
    wal = db.with_name(db.name + "-wal")
    if wal.is_file() and wal.stat().st_size > 0:
        return f"a write-ahead log {wal}"
    return None


def job_db_problem(db: Path, state_dir: Path) -> str | None:
    """Why the processor must not start on ``db``, in one line with the recovery; None when it may."""
    if not db.exists():
        return None
    if db.is_file() and db.stat().st_size == 0:
        earlier = _earlier_jobs(state_dir, db)
        if earlier:
            return (f"the job database {db} is empty (0 bytes) but {earlier} show earlier jobs: starting would lose the "
                    f"job history and the callbacks not yet sent. Restore the last backup ({state_dir}/backups/"
                    f"jobs-*.sqlite) to {db}, or remove {db} to start with an empty history on purpose")
        return None
    try:
        conn = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None  # not openable now (permissions): the store says so when it opens it
    try:
        verdict = [row[0] for row in conn.execute("PRAGMA quick_check(1)")]
    except sqlite3.OperationalError:
        return None  # locked, or not readable now: the store's own errors (503) say so while it lasts
    except sqlite3.DatabaseError as exc:
        return _corrupt(db, state_dir, str(exc))
    finally:
        conn.close()
    if verdict != ["ok"]:
        return _corrupt(db, state_dir, "; ".join(verdict)[:200])
    return None


def _corrupt(db: Path, state_dir: Path, why: str) -> str:
    why = " ".join(why.split())  # quick_check's report spans lines; the message is one
    return (f"the job database {db} is corrupt ({why}): move it aside (mv {db} {db}.corrupt) and restore the last "
            f"backup ({state_dir}/backups/jobs-*.sqlite) to {db}, or start without it for an empty history")
