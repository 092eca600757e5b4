"""The job store: one SQLite database (WAL) and the parts that each own one concern of it.

- ``db``: the connection and the transaction discipline every part shares (``Database.tx``);
- ``jobs``: the jobs, one live per branch, and their changes (status through ``state_machine``);
- ``timeline``: each state a job entered; ``job_log``: its last log lines, and through ``transcripts`` (a gzip file
  per job) all of them; ``outbox``: the callbacks owed; ``receipts``: the job queue messages held (``AIPM_DISPATCH=sqs``).

``JobStore`` opens the database with every part's schema and wires the parts; the one write that spans all of them,
pruning ended jobs (``PR_JOB_RETENTION_DAYS``) with their transcript files, is its own. A job is written before the service answers 202.
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
from ec2_services.pr_processor.store.transcripts import Transcripts

_SWEEP_BATCH = 500


class JobStore:
    """The parts of the job database, on one connection: ``jobs``, ``timeline``, ``log``, ``outbox``, ``receipts``."""

    def __init__(self, path: Path, transcripts: Path | None = None):
        """``path``: the database; ``transcripts``: the directory of the jobs' transcript files (default: ``transcripts``
        beside the database)."""
        self.db = Database(path, schemas=(jobs.SCHEMA, timeline.SCHEMA, job_log.SCHEMA, outbox.SCHEMA),
                           added_columns=(*jobs.ADDED_COLUMNS, *receipts.ADDED_COLUMNS, *outbox.ADDED_COLUMNS))
        self.timeline = Timeline(self.db)
        self.log = JobLog(self.db, Transcripts(transcripts or path.parent / "transcripts"))
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
        briefly; their transcript files once it is committed. Returns how many jobs went."""
        removed = 0
        while True:
            with self.db.tx():
                ids = self.jobs.ended_before(ended_before, limit=batch)
                if not ids:
                    break
                for part in (self.log, self.timeline, self.outbox, self.jobs):
                    part.delete(ids)
            self.log.delete_files(ids)
            removed += len(ids)
        self._sweep_transcripts()
        return removed

    def _sweep_transcripts(self) -> None:
        """Delete the transcript files of jobs the database no longer has (a stop between a prune's commit and its
        files' removal). A job's row is made before its first line, so a file of a job being made is never taken."""
        files = self.log.transcripts.job_ids()
        for start in range(0, len(files), _SWEEP_BATCH):
            chunk = files[start:start + _SWEEP_BATCH]
            self.log.delete_files(sorted(set(chunk) - self.jobs.known(chunk)))

    def vacuum(self) -> int:
        return self.db.vacuum()

    def size_bytes(self) -> int:
        return self.db.size_bytes()

    def close(self) -> None:
        self.db.close()
