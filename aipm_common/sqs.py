"""The SQS client both ends of the job queue use (``AIPM_DISPATCH=sqs``): the Lambda sends, the PR processors receive;
and the same for the Auto Scaling client a host protects itself from scale-in with (``scale_in``).

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
    return aws_client("sqs", region=region_of(queue_url), read_timeout=read_timeout, max_attempts=max_attempts)


def aws_client(service: str, *, region: str | None = None, read_timeout: float = 10,
               max_attempts: int = 3) -> Any:
    """A boto3 client for ``service`` (the job queue's ``sqs``, the host group's ``autoscaling``): ``region`` or
    boto3's own chain, the endpoint from boto3's own variables (``AWS_ENDPOINT_URL_<SERVICE>``)."""
    import boto3  # noqa: PLC0415 - only in sqs mode
    from botocore.config import Config  # noqa: PLC0415

    return boto3.client(service, region_name=region, config=Config(
        connect_timeout=3, read_timeout=read_timeout, retries={"mode": "standard", "max_attempts": max_attempts}))
