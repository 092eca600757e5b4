"""dispatch=sqs (issue 11): the job queue and its dead letters, the hosts as an Auto Scaling group scaled on the
queue, least-privilege queue grants, monitoring of queue and hosts; and dispatch=http keeps none of it."""

from __future__ import annotations

import json

from infra.host import GROUP_LOGICAL_ID, INSTANCE_LOGICAL_ID
from infra.job_queue import VISIBILITY_S
from tests.infra.conftest import ADMIN_CIDR, SQS_JOBS_PER_HOST, SQS_MAX_HOSTS, SQS_MIN_HOSTS, TEST_AMI
from tests.infra.templates import as_list, as_text, init_config, install_env, lambda_env, policy_of_role

SQS_ACTIONS_OF = {
    "ApiRole": {"sqs:SendMessage", "sqs:GetQueueAttributes"},
    "HostRole": {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"},
}
QUEUE_METRICS = ("ApproximateNumberOfMessagesVisible", "ApproximateNumberOfMessagesNotVisible",
                 "ApproximateAgeOfOldestMessage")


def queues(synth) -> tuple[str, str]:
    """(job queue, dead-letter queue) logical IDs: the job queue is the one with a redrive policy."""
    found = synth.of_type("AWS::SQS::Queue")
    assert len(found) == 2, sorted(found)
    (jobs,) = [k for k, q in found.items() if "RedrivePolicy" in q["Properties"]]
    (dead,) = [k for k in found if k != jobs]
    return jobs, dead


def arn(logical_id: str) -> dict:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


# --- The queue --------------------------------------------------------------------------------------------------------

def test_job_queue_is_fifo_without_content_dedup_and_redrives_to_a_fifo_dlq_after_5_receives(sqs_synth):
    jobs, dead = queues(sqs_synth)
    queue = sqs_synth.resources[jobs]["Properties"]
    # The Lambda sends MessageDeduplicationId = MessageGroupId = job id: deduplication is by job, not by body.
    assert queue["FifoQueue"] is True and queue["ContentBasedDeduplication"] is False
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": arn(dead), "maxReceiveCount": 5}
    assert queue["VisibilityTimeout"] == VISIBILITY_S == 300
    assert queue["ReceiveMessageWaitTimeSeconds"] == 20
    assert queue["MessageRetentionPeriod"] == 4 * 86400
    dlq = sqs_synth.resources[dead]["Properties"]
    assert dlq["FifoQueue"] is True, "a FIFO queue's dead-letter queue must be FIFO too"
    assert dlq["MessageRetentionPeriod"] == 14 * 86400
    for props in (queue, dlq):
        assert props["SqsManagedSseEnabled"] is True
        assert "QueueName" not in props, "CloudFormation names it (with the .fifo suffix)"


def test_both_queues_refuse_requests_without_tls(sqs_synth):
    denied = {}
    for policy in sqs_synth.of_type("AWS::SQS::QueuePolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Effect"] == "Deny" and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}:
                denied[statement["Resource"]["Fn::GetAtt"][0]] = statement["Action"]
    assert denied == dict.fromkeys(queues(sqs_synth), "sqs:*")


def test_queue_grants_are_least_privilege_and_on_the_job_queue_only(sqs_synth):
    jobs, _ = queues(sqs_synth)
    for role, expected in SQS_ACTIONS_OF.items():
        statements = [s for s in policy_of_role(sqs_synth, role)
                      if any(a.startswith("sqs:") for a in as_list(s["Action"]))]
        assert len(statements) == 1, (role, statements)
        (statement,) = statements
        assert statement["Effect"] == "Allow"
        assert set(as_list(statement["Action"])) == expected, role
        assert as_list(statement["Resource"]) == [arn(jobs)], f"{role}: the job queue only, not the DLQ, not *"
    every_policy = json.dumps([p["Properties"] for p in sqs_synth.of_type("AWS::IAM::Policy").values()])
    assert '"sqs:*"' not in every_policy


def test_lambda_sends_jobs_to_the_queue_instead_of_calling_a_host(sqs_synth):
    jobs, _ = queues(sqs_synth)
    env = lambda_env(sqs_synth)
    assert env["AIPM_DISPATCH"] == "sqs"
    assert env["AIPM_JOB_QUEUE_URL"] == {"Ref": jobs}, "Ref of a queue is its URL"
    assert "PR_PROCESSOR_URL" not in env, "nothing to call: no Elastic IP, no 8082"


# --- The hosts --------------------------------------------------------------------------------------------------------

def test_hosts_are_an_auto_scaling_group_sized_from_context_that_waits_for_min_hosts_installs(sqs_synth):
    assert not sqs_synth.of_type("AWS::EC2::Instance")
    group = sqs_synth.resources[GROUP_LOGICAL_ID]
    assert group["Type"] == "AWS::AutoScaling::AutoScalingGroup"
    props = group["Properties"]
    assert (props["MinSize"], props["MaxSize"]) == (str(SQS_MIN_HOSTS), str(SQS_MAX_HOSTS))
    assert "DesiredCapacity" not in props, "a deploy must not reset what the scaling chose"
    assert group["CreationPolicy"]["ResourceSignal"] == {"Count": SQS_MIN_HOSTS, "Timeout": "PT30M"}
    assert group["UpdatePolicy"]["AutoScalingRollingUpdate"]["WaitOnResourceSignals"] is True
    assert len(props["VPCZoneIdentifier"]) == 2, "spread over two AZs"
    (template_id,) = sqs_synth.of_type("AWS::EC2::LaunchTemplate")
    assert props["LaunchTemplate"] == {"LaunchTemplateId": {"Ref": template_id},
                                       "Version": {"Fn::GetAtt": [template_id, "LatestVersionNumber"]}}


def test_launch_template_requires_imdsv2_encrypts_the_root_and_has_no_key_pair(sqs_synth):
    data = sqs_synth.one("AWS::EC2::LaunchTemplate")["Properties"]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert "KeyName" not in data
    (root,) = data["BlockDeviceMappings"]
    assert root["DeviceName"] == "/dev/xvda"
    assert root["Ebs"]["Encrypted"] is True and root["Ebs"]["VolumeType"] == "gp3"
    assert data["InstanceType"] == "t3.medium" and data["ImageId"] == TEST_AMI
    assert data["IamInstanceProfile"] and data["Monitoring"] == {"Enabled": True}
    (nic,) = data["NetworkInterfaces"]
    assert nic["AssociatePublicIpAddress"] is True, "no NAT: the public address is the way out"
    sg = next(iter(sqs_synth.of_type("AWS::EC2::SecurityGroup")))
    assert nic["Groups"] == [{"Fn::GetAtt": [sg, "GroupId"]}]
    user_data = as_text(data["UserData"]["Fn::Base64"])
    assert "cfn-init -v" in user_data and f"--resource {GROUP_LOGICAL_ID}" in user_data
    assert "cfn-signal -e $?" in user_data


def test_every_host_of_the_group_gets_the_single_hosts_install(sqs_synth, default_synth):
    group, single = init_config(sqs_synth, GROUP_LOGICAL_ID), init_config(default_synth)
    assert group["sources"].keys() == single["sources"].keys()
    assert group["files"].keys() == single["files"].keys()
    assert group["commands"].keys() == single["commands"].keys()
    assert group["commands"]["10-install-aipm"]["command"] == single["commands"]["10-install-aipm"]["command"]
    # cfn-hup re-runs cfn-init on the group's metadata: a deploy that changes the code updates every host in place.
    hook = as_text(group["files"]["/etc/cfn/hooks.d/aipm-reloader.conf"]["content"])
    assert f"path=Resources.{GROUP_LOGICAL_ID}.Metadata.AWS::CloudFormation::Init" in hook
    assert f"--resource {GROUP_LOGICAL_ID} " in hook
    # The install's environment differs only by the dispatch (and the admin CIDR this variant sets); the single host
    # alone has the data volume and the TLS certificate (nothing calls a group's host, each keeps its own state).
    queued, direct = install_env(sqs_synth, GROUP_LOGICAL_ID), install_env(default_synth)
    changed = {k for k in queued.keys() | direct.keys() if queued.get(k) != direct.get(k)}
    assert changed == {"AIPM_DISPATCH", "AIPM_JOB_QUEUE_URL", "AIPM_SQS_WAIT_S", "AIPM_SQS_VISIBILITY_S",
                       "AIPM_ASG_NAME", "AIPM_PR_PROCESSOR_HOST", "AIPM_WORKER_POOL_HOST", "AIPM_TLS_CERT_PARAMETER",
                       "AIPM_DATA_VOLUME_ID", "AIPM_DATA_MOUNT", "AIPM_DATA_BINDS"}


def test_the_pr_processor_is_told_to_poll_the_queue_and_listens_on_loopback_only(sqs_synth):
    jobs, _ = queues(sqs_synth)
    env = install_env(sqs_synth, GROUP_LOGICAL_ID)
    assert env["AIPM_DISPATCH"] == "sqs"
    assert env["AIPM_JOB_QUEUE_URL"] == {"Ref": jobs}
    assert env["AIPM_SQS_WAIT_S"] == "20"
    assert env["AIPM_SQS_VISIBILITY_S"] == str(sqs_synth.resources[jobs]["Properties"]["VisibilityTimeout"])
    assert env["AIPM_AWS_REGION"] == {"Ref": "AWS::Region"}
    assert env["AIPM_PR_PROCESSOR_HOST"] == "127.0.0.1"
    assert env["AIPM_WORKER_POOL_HOST"] == "0.0.0.0", "adminCidr given: the pool listens for the admin"


GROUP_NAME = {"Fn::Join": ["", [{"Ref": "AWS::StackName"}, "-hosts"]]}


def test_each_host_may_protect_itself_from_scale_in_in_its_own_group_only(sqs_synth):
    group = sqs_synth.resources[GROUP_LOGICAL_ID]["Properties"]
    # Named from the stack, not by CloudFormation: the group's own install metadata and the role's policy name it
    # (a Ref to the group there would be circular).
    assert group["AutoScalingGroupName"] == GROUP_NAME
    assert install_env(sqs_synth, GROUP_LOGICAL_ID)["AIPM_ASG_NAME"] == GROUP_NAME
    statements = [s for s in policy_of_role(sqs_synth, "HostRole")
                  if any(a.startswith("autoscaling:") for a in as_list(s["Action"]))]
    assert len(statements) == 1, statements
    (statement,) = statements
    assert statement["Effect"] == "Allow" and "Condition" not in statement
    assert as_list(statement["Action"]) == ["autoscaling:SetInstanceProtection"]
    # The group's generated id is the only wildcard; its name picks the group.
    assert as_text(statement["Resource"]) == (
        'arn:{"Ref": "AWS::Partition"}:autoscaling:{"Ref": "AWS::Region"}:{"Ref": "AWS::AccountId"}:'
        'autoScalingGroup:*:autoScalingGroupName/{"Ref": "AWS::StackName"}-hosts')
    every_policy = json.dumps([p["Properties"] for p in sqs_synth.of_type("AWS::IAM::Policy").values()])
    assert every_policy.count('"autoscaling:') == 1, "no other Auto Scaling action, for no other role"


def test_sqs_mode_has_no_elastic_ip_and_no_8082_ingress_but_keeps_8081_for_the_admin(sqs_synth):
    assert not sqs_synth.of_type("AWS::EC2::EIP") and not sqs_synth.of_type("AWS::EC2::EIPAssociation")
    sg = sqs_synth.one("AWS::EC2::SecurityGroup")["Properties"]
    ingress = [(r["CidrIp"], r["FromPort"], r["ToPort"]) for r in sg["SecurityGroupIngress"]]
    assert ingress == [(ADMIN_CIDR, 8081, 8081)]
    assert not sqs_synth.of_type("AWS::EC2::SecurityGroupIngress")


def test_group_scales_on_jobs_waiting_or_running_per_in_service_host(sqs_synth):
    jobs, _ = queues(sqs_synth)
    policy = sqs_synth.one("AWS::AutoScaling::ScalingPolicy")["Properties"]
    assert policy["AutoScalingGroupName"] == {"Ref": GROUP_LOGICAL_ID}
    assert policy["PolicyType"] == "TargetTrackingScaling"
    tracking = policy["TargetTrackingConfiguration"]
    assert tracking["TargetValue"] == SQS_JOBS_PER_HOST
    queries = {q["Id"]: q for q in tracking["CustomizedMetricSpecification"]["Metrics"]}
    metrics = {q["MetricStat"]["Metric"]["MetricName"]: q["MetricStat"]["Metric"] for q in queries.values()
               if "MetricStat" in q}
    for name in ("ApproximateNumberOfMessagesVisible", "ApproximateNumberOfMessagesNotVisible"):
        assert metrics[name]["Namespace"] == "AWS/SQS"
        assert metrics[name]["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [jobs, "QueueName"]}}]
    assert metrics["GroupInServiceInstances"]["Dimensions"] == [
        {"Name": "AutoScalingGroupName", "Value": {"Ref": GROUP_LOGICAL_ID}}]
    (result,) = [q for q in queries.values() if q["ReturnData"]]
    ids = {q["MetricStat"]["Metric"]["MetricName"]: i for i, q in queries.items() if "MetricStat" in q}
    assert result["Expression"] == (f"({ids['ApproximateNumberOfMessagesVisible']} + "
                                    f"{ids['ApproximateNumberOfMessagesNotVisible']}) / "
                                    f"{ids['GroupInServiceInstances']}")
    # The denominator exists only if the group publishes it.
    (collection,) = sqs_synth.resources[GROUP_LOGICAL_ID]["Properties"]["MetricsCollection"]
    assert "GroupInServiceInstances" in collection["Metrics"]


# --- Monitoring, outputs, cdk-nag -------------------------------------------------------------------------------------

def test_dashboard_shows_queue_depth_age_dead_letters_and_hosts(sqs_synth):
    jobs, dead = queues(sqs_synth)
    body = as_text(sqs_synth.one("AWS::CloudWatch::Dashboard")["Properties"]["DashboardBody"])
    for metric in (*QUEUE_METRICS, "GroupInServiceInstances", "JobsStarted", "StatusCheckFailed"):
        assert f'"{metric}"' in body, metric
    assert jobs in body and dead in body and GROUP_LOGICAL_ID in body


def test_alarms_on_dead_letters_oldest_job_and_missing_hosts(sqs_synth):
    jobs, dead = queues(sqs_synth)
    alarms = {k: a["Properties"] for k, a in sqs_synth.of_type("AWS::CloudWatch::Alarm").items()}

    def alarm(word: str) -> tuple[dict, dict]:
        """(the alarm, its first metric): a labelled metric is rendered as a one-query "Metrics" list."""
        (found,) = [a for k, a in alarms.items() if word in k]
        assert found["AlarmActions"], word
        stats = [m["MetricStat"]["Metric"] for m in found.get("Metrics", []) if "MetricStat" in m]
        return found, stats[0] if stats else found

    dead_letters, metric = alarm("DeadLetters")
    assert metric["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert metric["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dead, "QueueName"]}}]
    assert (dead_letters["Threshold"], dead_letters["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    oldest, metric = alarm("OldestJob")
    assert metric["MetricName"] == "ApproximateAgeOfOldestMessage"
    assert metric["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [jobs, "QueueName"]}}]
    assert oldest["Threshold"] == 1800
    (missing, _) = alarm("HostsMissing")
    (expression,) = [m for m in missing["Metrics"] if m.get("ReturnData", True)]
    assert expression["Expression"] == "desired - inService"
    _, metric = alarm("InstanceStatus")
    assert metric["Dimensions"] == [{"Name": "AutoScalingGroupName", "Value": {"Ref": GROUP_LOGICAL_ID}}]


def test_outputs_name_the_group_and_the_queues_instead_of_a_host_address(sqs_synth):
    jobs, dead = queues(sqs_synth)
    outputs = sqs_synth.template["Outputs"]
    assert "HostAddress" not in outputs and "HostInstanceId" not in outputs
    assert outputs["HostGroupName"]["Value"] == {"Ref": GROUP_LOGICAL_ID}
    assert outputs["JobQueueUrl"]["Value"] == {"Ref": jobs}
    assert outputs["DeadLetterQueueUrl"]["Value"] == {"Ref": dead}
    assert "describe-auto-scaling-groups" in as_text(outputs["ListHostsCommand"]["Value"])
    assert "kiroApiKeySecretArn" in outputs["KiroLogin"]["Value"], "a device-flow login holds for one host only"


def test_sqs_mode_passes_cdk_nag_with_reasons(sqs_synth):
    (report,) = [r for r in sqs_synth.report["pluginReports"] if r["pluginName"] == "AwsSolutions"]
    assert report["violations"] == [] and report["conclusion"] == "success"
    assert all(len(item["reason"]) > 40 for item in report["suppressedViolations"])
    acknowledged = {item["ruleName"] for item in report["suppressedViolations"]}
    assert "AwsSolutions-AS3" in acknowledged and "AwsSolutions-EC23" not in acknowledged


# --- dispatch=http keeps none of it -----------------------------------------------------------------------------------

def test_http_mode_has_no_queue_no_group_no_scaling(default_synth):
    for type_ in ("AWS::SQS::Queue", "AWS::SQS::QueuePolicy", "AWS::AutoScaling::AutoScalingGroup",
                  "AWS::AutoScaling::ScalingPolicy"):
        assert not default_synth.of_type(type_), type_
    assert INSTANCE_LOGICAL_ID in default_synth.resources and GROUP_LOGICAL_ID not in default_synth.resources
    assert len(default_synth.of_type("AWS::EC2::LaunchTemplate")) == 1, "only the instance's metadata options"
    env = lambda_env(default_synth)
    assert "AIPM_DISPATCH" not in env and "AIPM_JOB_QUEUE_URL" not in env
    assert not {"AIPM_DISPATCH", "AIPM_JOB_QUEUE_URL", "AIPM_ASG_NAME"} & set(install_env(default_synth))
    text = json.dumps(default_synth.template)
    assert '"sqs:' not in text and "AWS/SQS" not in text and "GroupInServiceInstances" not in text
    assert '"autoscaling:' not in text and "autoScalingGroup" not in text
    for name in ("HostGroupName", "JobQueueUrl", "DeadLetterQueueUrl"):
        assert name not in default_synth.template["Outputs"]


def test_sqs_mode_without_a_kiro_api_key_warns_that_new_hosts_cannot_sign_in(sqs_synth, admin_synth):
    def warnings(synth) -> list[str]:
        return [v["ruleName"] for r in synth.report["pluginReports"] if r["pluginName"] == "Construct Annotations"
                for v in r["violations"] if v["severity"] == "warning"]

    assert "Annotation::aipm:kiro-sign-in" in warnings(sqs_synth)
    assert "Annotation::aipm:kiro-sign-in" not in warnings(admin_synth), "http mode: one host, signed in once"
