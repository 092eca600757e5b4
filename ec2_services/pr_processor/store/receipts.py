"""The job queue messages this host holds (``AIPM_DISPATCH=sqs``): for a job, the message it came in and the receipt
handle this host holds it by, until the message is deleted (see ``sqs_intake``).

Owns the ``sqs_message_id`` / ``sqs_receipt_handle`` columns of the ``jobs`` table; a new job's message is recorded
inside the write that creates the job (``Jobs.create``), so a job accepted from the queue never lacks its receipt.
"""

from __future__ import annotations

from dataclasses import dataclass

from ec2_services.pr_processor.state_machine import JobState
from ec2_services.pr_processor.store.db import Database

# Added to ``jobs`` after databases already existed.
ADDED_COLUMNS = [("jobs", "sqs_message_id", "TEXT"), ("jobs", "sqs_receipt_handle", "TEXT")]


@dataclass
class HeldMessage:
    """A job queue message this host holds for a job: the job's id and state, the message id and receipt handle."""

    job_id: str
    status: JobState
    message_id: str
    receipt_handle: str


class Receipts:
    def __init__(self, db: Database):
        self._db = db

    def hold(self, job_id: str, message_id: str, receipt_handle: str) -> None:
        """Record the job queue message held for the job (a newer receipt handle replaces the one recorded)."""
        with self._db.tx():
            self._db.execute("UPDATE jobs SET sqs_message_id = ?, sqs_receipt_handle = ? WHERE job_id = ?",
                             (message_id, receipt_handle, job_id))

    def release(self, job_id: str, message_id: str) -> None:
        """Forget the job's message (deleted, or no longer ours); a different message recorded since is kept."""
        with self._db.tx():
            self._db.execute("UPDATE jobs SET sqs_message_id = NULL, sqs_receipt_handle = NULL"
                             " WHERE job_id = ? AND sqs_message_id = ?", (job_id, message_id))

    def held(self) -> list[HeldMessage]:
        """Every job with a job queue message still recorded, oldest first."""
        rows = self._db.fetchall(
            "SELECT job_id, status, sqs_message_id, sqs_receipt_handle FROM jobs"
            " WHERE sqs_receipt_handle IS NOT NULL AND sqs_message_id IS NOT NULL ORDER BY seq")
        return [HeldMessage(row[0], JobState(row[1]), row[2], row[3]) for row in rows]
