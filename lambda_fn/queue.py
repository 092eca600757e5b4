"""``AIPM_DISPATCH=sqs``: the job goes to a FIFO SQS queue that every host's PR processor long-polls, instead of
straight to one PR processor; and a job's state is read from its pull request, since no single host knows it.

Owns the SQS client (boto3, imported and built on first use, once per container), the message (its body is exactly
the JSON body of ``POST /api/process-pr``; the job id is both its group, so jobs run in parallel, and its
deduplication id, so a re-send within SQS's five-minute window is dropped by the queue itself) and the mapping of a
failed send to the API's errors (the client itself: ``aipm_common.aws``). It must not talk to the PR processor: nothing in this mode does.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from lambda_fn.forge.base import PullRequest
from lambda_fn.httpclient import LazyClient
from lambda_fn.processor import ProcessorError
from lambda_fn.results import STATUS_LABELS

log = logging.getLogger(__name__)

# A job handed to the queue whose pull request has no final label yet: some host has it, or will take it.
DISPATCHED = "dispatched"
_LABEL_STATUS = {label: status for status, label in STATUS_LABELS.items()}


class JobQueue:
    """The Lambda's end of the job queue: ``submit`` has the same shape as ``ProcessorClient.submit``."""

    def __init__(self, queue_url: str, *, timeout: float = 10.0):
        self.queue_url = queue_url
        self._timeout = timeout
        self._client: LazyClient[Any] = LazyClient(self._new_client)

    def _new_client(self):
        from aipm_common.aws import sqs_client  # noqa: PLC0415 - boto3 only once a job is sent

        return sqs_client(self.queue_url, read_timeout=self._timeout)

    def close(self) -> None:
        self._client.close()

    def submit(self, job: dict) -> tuple[bool, dict]:
        """Send the job; ``(True, {"job_id", "status": "queued"})``. A failure raises ``ProcessorError`` saying what."""
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            answer = self._client.get().send_message(
                QueueUrl=self.queue_url, MessageBody=json.dumps(job),
                MessageGroupId=job["job_id"], MessageDeduplicationId=job["job_id"],
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", "error"), error.get("Message", "")
            raise ProcessorError(
                f"the job queue refused job {job['job_id']} ({code}: {message}); check AIPM_JOB_QUEUE_URL and that "
                "the API's role may sqs:SendMessage to it", 502) from None
        except BotoCoreError as exc:
            raise ProcessorError(
                f"the job queue could not be reached to send job {job['job_id']} ({type(exc).__name__}: {exc})",
                503) from None
        log.info("job %s sent to the job queue as message %s", job["job_id"], answer.get("MessageId"))
        return True, {"job_id": job["job_id"], "status": "queued"}


def status_from_labels(pr: PullRequest) -> str:
    """The job's state as its pull request shows it: the final label the callback put there, else ``dispatched``."""
    for label in pr.labels:
        if label in _LABEL_STATUS:
            return _LABEL_STATUS[label]
    return DISPATCHED


def job_from_pull(job_id: str, repo: str, branch: str, pr: PullRequest) -> dict:
    """A job as ``GET /api/jobs/{id}`` answers it in sqs mode: the contract's job fields that the pull request can tell."""
    status = status_from_labels(pr)
    return {
        "job_id": job_id, "repo": repo, "branch": branch, "status": status, "attempts": None, "commit": None,
        "error": None, "log_tail": "", "queue_position": None, "credits": None, "tokens": None, "duration_s": None,
        "dispatch": "sqs",
        "detail": ("sent to the job queue; a host takes it when a worker is free" if status == DISPATCHED
                   else "ended: the result comment on the pull request has the details"),
    }
