"""``AIPM_DISPATCH=sqs`` in an Auto Scaling group (``AIPM_ASG_NAME``): a host protects itself from scale-in while busy.

The group scales on the queue's backlog; scaling in may pick any host, and a host terminated mid-job loses that job's
work (its message returns after the visibility timeout and the job runs again elsewhere). So while this host has at
least one live job (queued, running or pushing), or the message of an ended one not yet deleted, it sets its own
instance's scale-in protection (``autoscaling:SetInstanceProtection``, ``ProtectedFromScaleIn=True``), and clears it
once it has none, so the group can take an idle host back.

Owns that protection and nothing else: the intake says whether the host is busy (``want``) whenever that may have
changed; an AWS call goes out only when the wanted state differs from the one last set (the first one at start, which
clears a protection left by a processor that stopped mid-job), one at a time, in a daemon thread. A failed call is
logged and tried again at the next change or the intake's next keep round; it never stops a job. Stopping the
processor leaves the protection as it is: the jobs it has are taken up again at restart.

The instance id comes from the instance metadata service (IMDSv2: a token, then the id), once. Where that service
answers is botocore's own setting (``AWS_EC2_METADATA_SERVICE_ENDPOINT``, default ``http://169.254.169.254``); the
Auto Scaling endpoint and region are boto3's own (``AWS_ENDPOINT_URL_AUTO_SCALING``, ``AWS_DEFAULT_REGION``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

import httpx

from aipm_common.aws import aws_client, describe, in_thread

log = logging.getLogger(__name__)

IMDS_DEFAULT = "http://169.254.169.254"
IMDS_TOKEN_TTL_S = 60  # the token is used at once, for one request
IMDS_TIMEOUT_S = 2.0
_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")


def metadata_endpoint() -> str:
    """botocore's instance metadata endpoint (its variable or config file), else the IPv4 default."""
    import botocore.session  # noqa: PLC0415 - only in sqs mode

    configured = botocore.session.get_session().get_config_variable("ec2_metadata_service_endpoint")
    return (configured or IMDS_DEFAULT).rstrip("/")


def fetch_instance_id(endpoint: str, timeout: float = IMDS_TIMEOUT_S) -> str:
    """This instance's id from IMDSv2 at ``endpoint``: PUT a session token, then GET the id with it."""
    # No proxy from the environment: the metadata service is reached directly or not at all.
    with httpx.Client(base_url=endpoint, timeout=timeout, trust_env=False) as client:
        try:
            token = client.put("/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds":
                                                             str(IMDS_TOKEN_TTL_S)})
            token.raise_for_status()
            answer = client.get("/latest/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": token.text})
            answer.raise_for_status()
        except httpx.HTTPError as exc:
            raise RuntimeError(f"the instance metadata service at {endpoint} did not give this instance's id "
                               f"({type(exc).__name__}: {exc})") from exc
    instance_id = answer.text.strip()
    if not _INSTANCE_ID.fullmatch(instance_id):
        raise RuntimeError(f"the instance metadata service at {endpoint} gave {instance_id[:40]!r}, not an instance id")
    return instance_id


class ScaleInProtection:
    """This instance's scale-in protection in ``group``, set to follow ``want(busy)``."""

    def __init__(self, group: str, *, client: Any = None, instance_id: str | None = None,
                 endpoint: str | None = None):
        self.group = group
        self.instance_id = instance_id
        self._client = client
        self._endpoint = endpoint
        self.wanted: bool | None = None  # what the host's jobs call for
        self.protected: bool | None = None  # what was last set; None until the first call succeeds
        self.changes = 0  # successful calls
        self.failures = 0
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def want(self, busy: bool) -> None:
        """On the event loop, whenever the host's live jobs may have changed: an AWS call only on a change."""
        self.wanted = busy
        if self.protected != busy and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._apply(), name="scale-in-protection")

    async def settle(self, timeout: float = 3) -> None:
        """Wait (at most ``timeout``) for a call in flight; at shutdown the protection itself stays as it is."""
        if self._task is not None and not self._task.done():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._task), timeout=timeout)

    def health(self) -> dict[str, Any]:
        return {"group": self.group, "instance": self.instance_id, "protected": self.protected,
                "changes": self.changes, "failures": self.failures, "last_error": self.last_error}

    async def _apply(self) -> None:
        while self.wanted is not None and self.protected != self.wanted:
            target = self.wanted
            try:
                await in_thread(self._set, target)
            except Exception as exc:
                self.failures += 1
                self.last_error = describe(exc)
                log.warning("could not %s this host's scale-in protection in Auto Scaling group %s (%s); trying "
                            "again at the next job start or end, or the next keep round%s", "set" if target else "clear",
                            self.group, self.last_error,
                            ": a scale-in may terminate this host mid-job" if target else "")
                if self.wanted == target:
                    return
                continue  # the jobs changed during the call: try what they call for now
            self.protected, self.last_error = target, None
            self.changes += 1
            log.info("scale-in protection %s for instance %s in Auto Scaling group %s (%s)",
                     "set" if target else "cleared", self.instance_id, self.group,
                     "a job is live here" if target else "no job is live here")

    def _set(self, protected: bool) -> None:
        """In a daemon thread: the instance id (once), the client (once), then the call."""
        if self.instance_id is None:
            endpoint = self._endpoint or metadata_endpoint()
            self.instance_id = fetch_instance_id(endpoint)
            log.info("this host is instance %s (from the instance metadata service at %s)", self.instance_id, endpoint)
        if self._client is None:
            self._client = aws_client("autoscaling", max_attempts=2)
        self._client.set_instance_protection(InstanceIds=[self.instance_id], AutoScalingGroupName=self.group,
                                             ProtectedFromScaleIn=protected)
