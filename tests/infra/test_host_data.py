"""The host keeps its data across redeploys (issue 17): a pinned image, and the state and the agent's sign-in on a
separate, retained, snapshotted EBS volume that a new host takes over at boot (``aipm-data-volume``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from infra.host import DATA_BINDS, DATA_VOLUME_LOGICAL_ID, INSTANCE_LOGICAL_ID, SNAPSHOTS_KEPT
from tests.infra.conftest import ROOT
from tests.infra.templates import install_env, policy_of_role

SCRIPT = ROOT / "infra" / "host_install" / "aipm-data-volume"
VOLUME_ID = "vol-0123456789abcdef0"


def test_the_data_volume_survives_replacement_of_the_instance(default_synth):
    volume = default_synth.resources[DATA_VOLUME_LOGICAL_ID]
    instance = default_synth.resources[INSTANCE_LOGICAL_ID]
    assert volume["Type"] == "AWS::EC2::Volume", "its own resource, not a block device of the instance"
    assert (volume["DeletionPolicy"], volume["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert volume["Properties"]["Encrypted"] is True and volume["Properties"]["VolumeType"] == "gp3"
    assert INSTANCE_LOGICAL_ID not in json.dumps(volume), "nothing about the volume changes with the instance"
    assert not default_synth.of_type("AWS::EC2::VolumeAttachment"), "the host attaches it (an attachment cannot move)"
    assert len(instance["Properties"]["BlockDeviceMappings"]) == 1, "only the root volume goes with the instance"
    subnet = instance["Properties"]["SubnetId"]["Ref"]
    assert volume["Properties"]["AvailabilityZone"] == \
        default_synth.resources[subnet]["Properties"]["AvailabilityZone"], "in the instance's zone"


def test_the_data_volume_is_snapshotted_daily_by_its_tag(default_synth):
    volume = default_synth.resources[DATA_VOLUME_LOGICAL_ID]["Properties"]
    policy = default_synth.one("AWS::DLM::LifecyclePolicy")["Properties"]
    details = policy["PolicyDetails"]
    assert policy["State"] == "ENABLED" and details["ResourceTypes"] == ["VOLUME"]
    (target,) = details["TargetTags"]
    assert {"Key": target["Key"], "Value": target["Value"]} in volume["Tags"]
    (schedule,) = details["Schedules"]
    assert schedule["CreateRule"]["Interval"] == 24 and schedule["RetainRule"]["Count"] == SNAPSHOTS_KEPT


def test_the_host_is_told_its_volume_and_may_take_it_over_from_this_stack_only(default_synth):
    env = install_env(default_synth)
    assert env["AIPM_DATA_VOLUME_ID"] == {"Ref": DATA_VOLUME_LOGICAL_ID}
    binds = dict(pair.split(":") for pair in env["AIPM_DATA_BINDS"].split())
    assert binds["state"] == "/var/lib/aipm", "AIPM_STATE_DIR: job database, mirrors, workspaces"
    assert binds["kiro-cli-data"] == "/home/kiro/.local/share/kiro-cli", "kiro-cli's login database"
    assert binds["kiro-config"] == "/home/kiro/.kiro"
    statements = policy_of_role(default_synth, "HostRole")
    takeover = [s for s in statements if "ec2:StopInstances" in s["Action"]]
    assert takeover and all(s["Condition"]["StringEquals"]["aws:ResourceTag/aws:cloudformation:stack-name"]
                            for s in takeover)
    assert any(s["Action"] == ["ec2:AttachVolume", "ec2:DetachVolume"] and DATA_VOLUME_LOGICAL_ID in json.dumps(s)
               for s in statements)


def test_dispatch_sqs_hosts_have_no_shared_data_volume(sqs_synth):
    assert not sqs_synth.of_type("AWS::EC2::Volume")


def test_synth_without_a_pinned_image_warns_and_says_how_to_pin_it(tmp_path):
    """`cdk synth` works on the defaults (every context key optional), but says the host is not pinned."""
    context = {**json.loads((ROOT / "cdk.json").read_text())["context"], "amiId": "",
               "aws:cdk:bundling-stacks": []}  # the Lambda's pip bundling needs the network; not what this tests
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py")], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "CDK_CONTEXT_JSON": json.dumps(context), "CDK_OUTDIR": str(tmp_path),
             "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "amiId is not set" in result.stderr and "aws ssm get-parameter" in result.stderr
    [template] = [json.loads(p.read_text()) for p in tmp_path.glob("*.template.json")]
    [instance] = [r for r in template["Resources"].values() if r["Type"] == "AWS::EC2::Instance"]
    assert "Ref" in instance["Properties"]["ImageId"]  # the SSM parameter of the latest image, resolved per deploy


# --- aipm-data-volume, with a fake aws CLI -----------------------------------------------------------------------

FAKE_AWS = """#!/bin/sh
echo "$*" >> "$AWS_CALLS"
case "$*" in
  *" ec2 describe-volumes "*) echo "$HOLDER" ;;
esac
exit 0
"""


def _run(tmp_path: Path, step: str, **env: str) -> subprocess.CompletedProcess:
    aws = tmp_path / "aws"
    aws.write_text(FAKE_AWS)
    aws.chmod(0o755)
    return subprocess.run(["bash", str(SCRIPT), step], capture_output=True, text=True, timeout=60, env={
        "PATH": f"{tmp_path}:{os.environ['PATH']}", "AIPM_AWS_CLI": str(aws), "AWS_CALLS": str(tmp_path / "calls"),
        "AIPM_DATA_VOLUME_ID": VOLUME_ID, "AIPM_INSTANCE_ID": "i-new", "AWS_REGION": "eu-west-1", **env})


def test_a_new_host_stops_the_one_it_replaces_before_taking_the_volume(tmp_path):
    result = _run(tmp_path, "attach", HOLDER="i-old")
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "calls").read_text().splitlines()
    assert all(line.startswith("--region eu-west-1 ") for line in lines)
    steps = [line.split()[2:4] for line in lines]
    assert steps == [["ec2", "describe-volumes"], ["ec2", "stop-instances"], ["ec2", "wait"], ["ec2", "detach-volume"],
                     ["ec2", "wait"], ["ec2", "attach-volume"], ["ec2", "wait"]]
    assert "--instance-ids i-old" in lines[1], "the instance being replaced is stopped, its file systems unmounted"
    assert "--instance-id i-old" in lines[3] and "--instance-id i-new --device /dev/sdf" in lines[5]


def test_a_host_that_already_holds_its_volume_changes_nothing(tmp_path):
    result = _run(tmp_path, "attach", HOLDER="i-new")
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "calls").read_text().splitlines()) == 1, "only the look"


def test_a_used_volume_is_never_formatted_again(tmp_path):
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as out:
        out.truncate(8 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(disk)], check=True, capture_output=True)
    mkfs = tmp_path / "mkfs.xfs"
    mkfs.write_text(f"#!/bin/sh\necho \"$*\" >> {tmp_path}/formatted\n")
    mkfs.chmod(0o755)
    result = _run(tmp_path, "prepare", AIPM_DATA_DEVICE=str(disk))
    assert result.returncode == 0, result.stderr
    assert "already has a file system (ext4): kept" in result.stderr
    assert not (tmp_path / "formatted").exists()
    empty = tmp_path / "empty.img"
    with open(empty, "wb") as out:
        out.truncate(8 * 1024 * 1024)
    assert _run(tmp_path, "prepare", AIPM_DATA_DEVICE=str(empty)).returncode == 0
    assert (tmp_path / "formatted").read_text().split() == ["-q", "-L", "aipm-data", str(empty)]


def test_the_installer_starts_the_volume_before_the_services(tmp_path):
    from tests.infra.test_installer import _install, parse_unit, read_env_file, values

    _install(tmp_path, AIPM_DATA_VOLUME_ID=VOLUME_ID, AIPM_DATA_BINDS=" ".join(DATA_BINDS), AIPM_AWS_REGION="eu-west-1")
    conf = read_env_file(tmp_path / "etc/aipm/data-volume.conf")
    assert (conf["AIPM_DATA_VOLUME_ID"], conf["AIPM_DATA_MOUNT"]) == (VOLUME_ID, "/data")
    unit = parse_unit(tmp_path / "etc/systemd/system/aipm-data.service")
    assert values(unit, "Install", "RequiredBy") == ["aipm-worker-pool.service aipm-pr-processor.service"]
    assert "aipm-worker-pool.service" in values(unit, "Unit", "Before")[0]
    assert values(unit, "Service", "ExecStart") == [f"{tmp_path}/opt/aipm/bin/aipm-data-volume all"]
