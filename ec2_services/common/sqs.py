"""The SQS client both ends of the job queue use (``AIPM_DISPATCH=sqs``): the Lambda sends, the PR processors receive.

Owns how the client is made: boto3 imported only here and only when called; the region taken from the queue's URL
when it is an AWS one (``https://sqs.<region>.amazonaws.com/…``), else from boto3's own chain (``AWS_DEFAULT_REGION``,
the instance metadata); the endpoint from boto3's own variables (``AWS_ENDPOINT_URL_SQS`` for a local SQS such as
moto). It reads no variable itself.
"""

from __future__ import annotations

import re
from typing import Any

_AWS_QUEUE_RE = re.compile(r"^https://sqs[.-]([a-z]{2}(?:-[a-z]+)+-\d)\.amazonaws\.com(?:\.cn)?/")


def region_of(queue_url: str) -> str | None:
    match = _AWS_QUEUE_RE.match(queue_url)
    return match.group(1) if match else None


def sqs_client(queue_url: str, *, read_timeout: float, max_attempts: int = 3) -> Any:
    """A boto3 SQS client for ``queue_url``; ``read_timeout`` must exceed any long poll's wait."""
    import boto3  # noqa: PLC0415 - only in sqs mode
    from botocore.config import Config  # noqa: PLC0415

    return boto3.client("sqs", region_name=region_of(queue_url), config=Config(
        connect_timeout=3, read_timeout=read_timeout, retries={"mode": "standard", "max_attempts": max_attempts}))
