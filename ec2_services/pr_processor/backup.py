"""Nightly copies of the job database: ``VACUUM INTO`` a new file under ``$AIPM_STATE_DIR/backups`` once a day
(at start when the newest copy is over a day old), keeping the last ``keep`` (7).

Owns the backup files and when they are made; it only reads the job database (``VACUUM INTO`` copies a consistent
snapshot while the store goes on writing, WAL mode). The way back from a corrupt or emptied database is to copy the
newest of these over it (``db_check`` says so at start).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("ec2_services.pr_processor.backup")

DAY_S = 86_400.0
PREFIX = "jobs-"


def backups_dir(state_dir: Path) -> Path:
    return state_dir / "backups"


class Backups:
    def __init__(self, db: Path, directory: Path, *, keep: int = 7, every_s: float = DAY_S, check_s: float = 3600.0,
                 clock: Callable[[], float] = time.time):
        self.db = db
        self.directory = directory
        self.keep = keep
        self.every_s = every_s
        self.check_s = check_s
        self.clock = clock

    def files(self) -> list[Path]:
        """The backups, oldest first (their names sort by the UTC time they were made)."""
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.glob(f"{PREFIX}*.sqlite") if p.is_file())

    def due(self) -> bool:
        files = self.files()
        return not files or self.clock() - files[-1].stat().st_mtime >= self.every_s

    def run_once(self) -> Path:
        """Copy the database now and drop all but the newest ``keep`` copies; returns the new copy."""
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.clock()))
        target = self.directory / f"{PREFIX}{stamp}.sqlite"
        partial = target.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        conn = sqlite3.connect(f"{self.db.absolute().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            conn.execute("VACUUM INTO ?", (str(partial),))
        finally:
            conn.close()
        partial.replace(target)  # a copy cut short by a crash never looks like a backup
        for old in self.files()[:-self.keep]:
            old.unlink(missing_ok=True)
        log.info("job database backed up to %s (%d kept)", target, min(len(self.files()), self.keep))
        return target

    async def run_forever(self) -> None:
        while True:
            try:
                if self.due():
                    await asyncio.to_thread(self.run_once)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("backup of the job database failed; trying again in %g s", self.check_s)
            await asyncio.sleep(self.check_s)
