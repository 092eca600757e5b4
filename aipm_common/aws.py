"""The AWS helpers the parts share: the boto3 clients (the job queue's SQS client at both ends of
``AIPM_DISPATCH=sqs``, the Auto Scaling client a host protects itself from scale-in with), running a blocking boto3
call off the event loop, and reading an AWS error.

Owns how a client is made: boto3 imported only here and only when called; the region taken from the queue's URL
when it is an AWS one (``https://sqs.<region>.amazonaws.com/…``), else from boto3's own chain (``AWS_DEFAULT_REGION``,
the instance metadata); the endpoint from boto3's own variables (``AWS_ENDPOINT_URL_SQS`` for a local SQS such as
moto). It reads no variable itself and knows no job, queue message or service.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

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


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a daemon thread (unlike ``asyncio.to_thread``, nothing waits for it at exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = fn(*args, **kwargs), None
        except BaseException as exc:  # handed to the awaiting coroutine
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=f"aws-{getattr(fn, '__name__', 'call')}", daemon=True).start()
    return await future


def describe(exc: BaseException) -> str:
    """An AWS error as ``Code: message`` (botocore's ClientError), else its type and text."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        error = response["Error"]
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}"
    return f"{type(exc).__name__}: {exc}"


def error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        return str(response["Error"].get("Code") or "") or None
    return None
