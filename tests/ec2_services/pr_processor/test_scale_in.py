"""Scale-in protection while busy (AIPM_ASG_NAME, sqs mode): a PR processor (a real process) against moto's SQS and
Auto Scaling on loopback, its instance id from a fake IMDSv2 on loopback (botocore's AWS_EC2_METADATA_SERVICE_ENDPOINT).
The host's instance is protected while its job runs and released after, with one call per change and the id read
once; a protection call that fails is logged and tried again, and never stops a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from ec2_services.pr_processor.scale_in import ScaleInProtection, fetch_instance_id
from ec2_services.pr_processor.sqs_intake import SqsIntake
from ec2_services.pr_processor.state_machine import JobState
from ec2_services.pr_processor.store import JobStore
from tests.ec2_services.pr_processor.fake_pool import Plan
from tests.ec2_services.pr_processor.test_sqs_intake import FAST, _Service, _Sqs, _stored_job, job_body, wait_taken
from tests.support.servers import free_port
from tests.support.sqs import REGION

pytestmark = pytest.mark.timeout(60)

_names = itertools.count(1)
INSTANCE_ID_PATH = "/latest/meta-data/instance-id"


# --- a fake IMDSv2 ------------------------------------------------------------------------------------------------


@dataclass
class FakeImds:
    url: str
    instance_id: str
    requests: list[tuple[str, str]] = field(default_factory=list)


@contextlib.contextmanager
def fake_imds(instance_id: str) -> Iterator[FakeImds]:
    """IMDSv2 on 127.0.0.1: PUT /latest/api/token (with a TTL header) gives a token; GET of the instance id needs it."""
    token = f"token-{next(_names)}"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, text: str = "") -> None:
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self) -> None:
            imds.requests.append(("PUT", self.path))
            if self.path != "/latest/api/token" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                return self._answer(400)
            self._answer(200, token)

        def do_GET(self) -> None:
            imds.requests.append(("GET", self.path))
            if self.headers.get("X-aws-ec2-metadata-token") != token:
                return self._answer(401)  # IMDSv2 only, as the launch template requires
            self._answer(200, instance_id) if self.path == INSTANCE_ID_PATH else self._answer(404)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    imds = FakeImds(f"http://127.0.0.1:{server.server_port}/", instance_id)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield imds
    finally:
        server.shutdown()
        server.server_close()


# --- a host group in moto -----------------------------------------------------------------------------------------


@dataclass
class HostGroup:
    endpoint: str
    name: str
    instance_id: str
    client: Any

    def protected(self) -> bool:
        (instance,) = self.client.describe_auto_scaling_instances(InstanceIds=[self.instance_id])["AutoScalingInstances"]
        assert instance["AutoScalingGroupName"] == self.name
        return instance["ProtectedFromScaleIn"]


@pytest.fixture
def host_group(_moto_sqs) -> HostGroup:
    """An Auto Scaling group of one instance (moto launches it) in the moto server that holds the job queue."""
    kw = {"endpoint_url": _moto_sqs, "region_name": REGION, "aws_access_key_id": "testing",
          "aws_secret_access_key": "testing"}
    ec2, autoscaling = boto3.client("ec2", **kw), boto3.client("autoscaling", **kw)
    name = f"aipm-hosts-{next(_names)}-{int(time.time() * 1000) % 10**8}"
    ec2.create_launch_template(LaunchTemplateName=name,
                               LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.medium"})
    autoscaling.create_auto_scaling_group(AutoScalingGroupName=name, LaunchTemplate={"LaunchTemplateName": name},
                                          MinSize=1, MaxSize=1, DesiredCapacity=1,
                                          AvailabilityZones=[f"{REGION}a"])
    (instance,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0][
        "Instances"]
    return HostGroup(_moto_sqs, name, instance["InstanceId"], autoscaling)


def wait_for(what: str, check, proc, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not seen in {timeout} s\n{proc.output()[-3000:]}"
        time.sleep(0.05)


# --- the PR processor ---------------------------------------------------------------------------------------------


def test_the_host_is_protected_from_scale_in_while_its_job_runs_and_released_when_it_ends(
        start_processor, fake_pool, job_queue, host_group):
    fake_pool.default = Plan(files={"done.txt": "done\n"}, sleep=2)
    with fake_imds(host_group.instance_id) as imds:
        proc = start_processor(**job_queue.env(**FAST, AIPM_ASG_NAME=host_group.name,
                                               AWS_ENDPOINT_URL_AUTO_SCALING=host_group.endpoint,
                                               AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url))
        # At start, idle: the protection is cleared once (a processor that stopped mid-job may have left it set).
        wait_for("the protection cleared at start", lambda: "scale-in protection cleared" in proc.output(), proc)
        assert host_group.protected() is False

        job_queue.send(job_body("j-protected"))
        wait_for("the job running", lambda: "j-protected.1" in fake_pool.tasks, proc)
        wait_for("the protection set", host_group.protected, proc, timeout=2)
        assert proc.job("j-protected")["status"] in ("queued", "running", "pushing")  # set while the job is live

        assert wait_taken(proc, "j-protected")["status"] == "succeeded"
        wait_for("the protection cleared", lambda: not host_group.protected(), proc)
        # The instance id was read once, over IMDSv2 (token first).
        assert imds.requests == [("PUT", "/latest/api/token"), ("GET", INSTANCE_ID_PATH)]

    time.sleep(1.1)  # the receive loop polls on (1 s long polls): still no call without a change
    log = proc.output()
    assert log.count("scale-in protection set") == 1 and log.count("scale-in protection cleared") == 2
    assert f"instance {host_group.instance_id} in Auto Scaling group {host_group.name}" in log
    protection = proc.health()["job_queue"]["scale_in_protection"]
    assert protection == {"group": host_group.name, "instance": host_group.instance_id, "protected": False,
                          "changes": 3, "failures": 0, "last_error": None}


def test_a_protection_call_that_fails_is_logged_and_does_not_stop_the_jobs(start_processor, fake_pool, job_queue):
    fake_pool.default = Plan(files={"done.txt": "done\n"}, sleep=1.5)  # longer than a failing call and its retry
    with fake_imds("i-0123456789abcdef0") as imds:
        proc = start_processor(**job_queue.env(**FAST, AIPM_ASG_NAME="aipm-hosts",
                                               AWS_ENDPOINT_URL_AUTO_SCALING=f"http://127.0.0.1:{free_port()}",
                                               AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url))
        for n in (1, 2):
            job_queue.send(job_body(f"j-unprotected-{n}", f"aipm/story-{n}"))
        for n in (1, 2):
            assert wait_taken(proc, f"j-unprotected-{n}")["status"] == "succeeded"
        job_queue.wait_empty(timeout=10)
        assert imds.requests == [("PUT", "/latest/api/token"), ("GET", INSTANCE_ID_PATH)]  # read once all the same

    log = proc.output()
    assert "could not clear this host's scale-in protection in Auto Scaling group aipm-hosts" in log
    assert "could not set this host's scale-in protection" in log and "terminate this host mid-job" in log
    protection = proc.health()["job_queue"]["scale_in_protection"]
    assert protection["failures"] >= 2 and protection["changes"] == 0 and protection["protected"] is None
    assert "Could not connect" in protection["last_error"]


# --- the protection on its own (no process) -------------------------------------------------------------------------


class _Autoscaling:
    """SetInstanceProtection that fails while ``failing``; records each call."""

    def __init__(self, failing: int = 0):
        self.failing = failing
        self.calls: list[bool] = []

    def set_instance_protection(self, *, InstanceIds: list[str], AutoScalingGroupName: str,
                                ProtectedFromScaleIn: bool) -> None:
        assert (InstanceIds, AutoScalingGroupName) == (["i-0123456789abcdef0"], "aipm-hosts")
        self.calls.append(ProtectedFromScaleIn)
        if self.failing:
            self.failing -= 1
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "not authorized"}}, "SetInstanceProtection")


def test_only_a_change_makes_a_call_and_a_failed_one_is_tried_again_at_the_next(caplog):
    autoscaling = _Autoscaling(failing=1)

    async def scenario(protection: ScaleInProtection) -> list[list[bool]]:
        seen = []

        async def want(busy: bool) -> None:
            protection.want(busy)
            await protection.settle()  # the call runs in its thread

        for busy in (True, True, True, False, False, True, False):
            await want(busy)
            seen.append(list(autoscaling.calls))
        return seen

    with fake_imds("i-0123456789abcdef0") as imds, caplog.at_level(logging.INFO, "ec2_services.pr_processor"):
        protection = ScaleInProtection("aipm-hosts", client=autoscaling, endpoint=imds.url.rstrip("/"))
        seen = asyncio.run(scenario(protection))
        assert len(imds.requests) == 2, "the instance id is read once"
    # The first call is refused (logged), the next round tries again; repeats make no call.
    assert seen == [[True], [True, True], [True, True], [True, True, False], [True, True, False],
                    [True, True, False, True], [True, True, False, True, False]]
    assert (protection.changes, protection.failures, protection.protected) == (4, 1, False)
    assert "could not set this host's scale-in protection in Auto Scaling group aipm-hosts (AccessDenied: not " \
           "authorized)" in caplog.text


def test_the_instance_id_comes_from_imdsv2_and_a_missing_service_says_where_it_looked():
    with fake_imds("i-0123456789abcdef0") as imds:
        assert fetch_instance_id(imds.url.rstrip("/")) == "i-0123456789abcdef0"
    with fake_imds("<html>not an id</html>") as imds, pytest.raises(RuntimeError, match="not an instance id"):
        fetch_instance_id(imds.url.rstrip("/"))
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RuntimeError, match=f"the instance metadata service at {closed} did not give"):
        fetch_instance_id(closed, timeout=0.5)


class _WantRecorder:
    """A ScaleInProtection stand-in: what the intake wants, in order."""

    def __init__(self):
        self.wants: list[bool] = []

    def want(self, busy: bool) -> None:
        self.wants.append(busy)

    async def settle(self) -> None:
        pass


class _SlowDeleteSqs(_Sqs):
    """DeleteMessage that waits until ``release`` is set."""

    def __init__(self):
        super().__init__(None)
        self.deleting, self.release = threading.Event(), threading.Event()

    def delete_message(self, *, QueueUrl: str, ReceiptHandle: str) -> None:
        self.deleting.set()
        assert self.release.wait(10)
        super().delete_message(QueueUrl=QueueUrl, ReceiptHandle=ReceiptHandle)


def test_the_host_stays_protected_until_an_ended_jobs_message_is_deleted(tmp_path):
    # Let go between the job's end and the delete, a scaled-in host would have its ended job run again elsewhere.
    store = JobStore(tmp_path / "jobs.sqlite")
    _stored_job(store, "j-end", "aipm/a", "AQEBend")
    store.jobs.transition("j-end", JobState.RUNNING)
    store.jobs.transition("j-end", JobState.FAILED)
    sqs, protection = _SlowDeleteSqs(), _WantRecorder()
    intake = SqsIntake(_Service(store), queue_url="http://127.0.0.1:1/1/q.fifo", wait_s=1, visibility_s=30,
                       client=sqs, protection=protection)

    async def scenario() -> None:
        intake.adopt_held()
        intake._busy_changed()  # no live job, but a message still held
        delete = asyncio.create_task(intake._delete_message("j-end", intake.held["j-end"]))
        await asyncio.to_thread(sqs.deleting.wait, 5)
        intake._busy_changed()  # another job's end, a keep round… while the delete is in flight
        sqs.release.set()
        await delete

    asyncio.run(scenario())
    assert sqs.calls == [("delete", "AQEBend")] and intake.held == {}
    assert protection.wants == [True, True, False]
    store.close()
