"""SQS for the tests: moto in server mode on loopback (one server per session), a fresh FIFO job queue and its
dead-letter queue per test, and the variables a service needs to reach them (boto3's own: no custom endpoint
variable).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
               "AWS_REGION": REGION}
_names = itertools.count(1)


@dataclass
class JobQueue:
    endpoint: str
    url: str
    dlq_url: str
    client: Any

    def env(self, **extra: str) -> dict[str, str]:
        """What a service needs for AIPM_DISPATCH=sqs against this queue."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL_SQS": self.endpoint, "AIPM_DISPATCH": "sqs",
                "AIPM_JOB_QUEUE_URL": self.url, **extra}

    def send(self, body: dict | str, group: str | None = None) -> str:
        """Send as the Lambda does (group and deduplication id = the job id); returns the message id."""
        text = body if isinstance(body, str) else json.dumps(body)
        group = group or (body["job_id"] if isinstance(body, dict) else f"g-{next(_names)}")
        return self.client.send_message(QueueUrl=self.url, MessageBody=text, MessageGroupId=group,
                                        MessageDeduplicationId=group)["MessageId"]

    def counts(self, url: str | None = None) -> tuple[int, int]:
        """(visible, in flight) messages of the queue (default: the job queue)."""
        attrs = self.client.get_queue_attributes(
            QueueUrl=url or self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def drain(self, url: str | None = None) -> list[dict[str, Any]]:
        """Every message now visible on the queue (default: the DLQ), received once and left in flight."""
        out: list[dict[str, Any]] = []
        while True:
            got = self.client.receive_message(
                QueueUrl=url or self.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=60,
                AttributeNames=["All"]).get("Messages", [])
            if not got:
                return out
            out += got

    def wait_empty(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.counts() != (0, 0):
            assert time.monotonic() < deadline, f"job queue not empty after {timeout} s: {self.counts()}"
            time.sleep(0.1)


@contextlib.contextmanager
def moto_sqs_server() -> Iterator[str]:
    """moto in server mode on 127.0.0.1 (a free port); yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        with contextlib.suppress(Exception):
            server.stop()


@pytest.fixture(scope="session")
def _moto_sqs() -> Iterator[str]:
    with moto_sqs_server() as endpoint:
        yield endpoint


@pytest.fixture
def job_queue(_moto_sqs) -> JobQueue:
    """A FIFO job queue with a DLQ (redrive after 3 receives: the stack says 5; fewer keeps the tests short)."""
    return make_queue(_moto_sqs, max_receive=3)


def make_queue(endpoint: str, *, max_receive: int = 5, visibility: int = 30) -> JobQueue:
    """A new FIFO queue and its DLQ (redrive after ``max_receive`` receives) on the moto server at ``endpoint``."""
    client = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    name = f"aipm-jobs-{next(_names)}-{int(time.time() * 1000) % 10**8}"
    dlq = client.create_queue(QueueName=f"{name}-dlq.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = client.create_queue(QueueName=f"{name}.fifo", Attributes={
        "FifoQueue": "true", "VisibilityTimeout": str(visibility),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive)}),
    })["QueueUrl"]
    return JobQueue(endpoint=endpoint, url=url, dlq_url=dlq, client=client)
