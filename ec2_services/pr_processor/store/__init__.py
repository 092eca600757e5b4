"""The job store: one SQLite database (WAL) and the parts that each own one concern of it.

- ``db``: the connection and the transaction discipline every part shares (``Database.tx``);
- ``jobs``: the jobs, one live per branch, and their changes (status through ``state_machine``);
- ``timeline``: each state a job entered; ``job_log``: its log lines; ``outbox``: the callbacks owed;
  ``receipts``: the job queue messages held (``AIPM_DISPATCH=sqs``).

``JobStore`` opens the database with every part's schema and wires the parts; the one write that spans all of them,
pruning ended jobs (``PR_JOB_RETENTION_DAYS``), is its own. A job is written before the service answers 202.
"""

from __future__ import annotations

from pathlib import Path

from ec2_services.pr_processor.store import job_log, jobs, outbox, receipts, timeline
from ec2_services.pr_processor.store.db import Database
from ec2_services.pr_processor.store.job_log import JobLog
from ec2_services.pr_processor.store.jobs import Jobs
from ec2_services.pr_processor.store.outbox import Outbox
from ec2_services.pr_processor.store.receipts import Receipts
from ec2_services.pr_processor.store.timeline import Timeline


class JobStore:
    """The parts of the job database, on one connection: ``jobs``, ``timeline``, ``log``, ``outbox``, ``receipts``."""

    def __init__(self, path: Path):
        self.db = Database(path, schemas=(jobs.SCHEMA, timeline.SCHEMA, job_log.SCHEMA, outbox.SCHEMA),
                           added_columns=(*jobs.ADDED_COLUMNS, *receipts.ADDED_COLUMNS, *outbox.ADDED_COLUMNS))
        self.timeline = Timeline(self.db)
        self.log = JobLog(self.db)
        self.outbox = Outbox(self.db)
        self.receipts = Receipts(self.db)
        self.jobs = Jobs(self.db, timeline=self.timeline, outbox=self.outbox, receipts=self.receipts)

    @property
    def write_error(self) -> str | None:
        """Why the last write failed, until one succeeds again (/health)."""
        return self.db.write_error

    def prune(self, ended_before: float, *, batch: int = 500) -> int:
        """Delete the jobs that ended before ``ended_before`` (a final state; live jobs are never touched) with their
        log lines, state timeline and callback outbox row; a ``batch`` of jobs per transaction, so the lock is held
        briefly. Returns how many jobs went."""
        removed = 0
        while True:
            with self.db.tx():
                ids = self.jobs.ended_before(ended_before, limit=batch)
                if not ids:
                    return removed
                for part in (self.log, self.timeline, self.outbox, self.jobs):
                    part.delete(ids)
            removed += len(ids)

    def vacuum(self) -> int:
        return self.db.vacuum()

    def size_bytes(self) -> int:
        return self.db.size_bytes()

    def close(self) -> None:
        self.db.close()
