"""The EC2 hosts (deploys ``ec2_services/`` and ``aipm_common/``): network, security group, role, the services' log groups, the cfn-init
install that runs ``infra/host_install/install.sh`` and the machines that run it: one instance with an Elastic IP
(``dispatch=http``), or an Auto Scaling group scaled on the SQS job backlog (``dispatch=sqs``, see ``group``).

Owns how a host is built and reached, once for both modes: Amazon Linux 2023, IMDSv2 only (hop limit 1), SSM Session
Manager instead of SSH (no key pair, no port 22), an encrypted gp3 root volume, 8081 only from ``admin_cidr``, and
8082 from ``api_cidr`` only where the Lambda calls the host (http; with sqs the hosts poll the queue and call the
Lambda back, so nothing comes in). The install runs under a CreationPolicy: a failed install (or a service that never
answers /health) fails the deploy (with sqs: any of the first ``min_hosts``). Later deploys that change the code are
applied in place by cfn-hup (the hosts, their jobs and their Kiro login stay).
It grants nothing itself beyond SSM and the install assets; the Stack grants the secrets, the log groups, the queue.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk
import jsii
from aws_cdk import ArnFormat, Aws, CfnTag, Duration, RemovalPolicy, Size, Stack, Tags
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_dlm as dlm
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from aipm_common.envnames import HostInstall

ROOT = Path(__file__).resolve().parents[1]
SRC = "/opt/aipm/src"  # where cfn-init unpacks the assets; install.sh copies from here into /opt/aipm/app
WORKER_POOL_PORT = 8081
PR_PROCESSOR_PORT = 8082
INSTANCE_LOGICAL_ID = "AipmHostInstance"
DATA_VOLUME_LOGICAL_ID = "AipmHostDataVolume"
# The tag the snapshot policy selects the data volume by (value: the stack's name).
DATA_TAG = "aipm:data-volume"
DATA_MOUNT = "/data"
# What lives on the data volume: folder on the volume → the path the services and the agent use (bind mounts).
DATA_BINDS = ("state:/var/lib/aipm", "kiro-config:/home/kiro/.kiro", "kiro-cli-data:/home/kiro/.local/share/kiro-cli")
SNAPSHOTS_KEPT = 7
GROUP_LOGICAL_ID = "AipmHostGroup"
# dispatch=sqs: the group is named <stack name>-hosts, not by CloudFormation. Its name must reach every host's install
# (AIPM_ASG_NAME) and scope the role's scale-in protection; a Ref to the group from its own cfn-init metadata, or from
# the role's policy (which the group waits for), would be a circular dependency.
GROUP_NAME_SUFFIX = "-hosts"
# What a host does to its own group: protect itself from scale-in while it has jobs (the PR processor's scale_in).
SCALE_IN_ACTIONS = ("autoscaling:SetInstanceProtection",)
INSTALL_TIMEOUT = Duration.minutes(30)
# A new host counts in the scaling metric only once installed (dnf, venv, kiro-cli, both services answering).
HOST_WARMUP = Duration.minutes(10)
_ASSET_EXCLUDE = ["**/__pycache__", "**/*.pyc", "**/.pytest_cache"]
# IMDSv2 only, one hop: a request forwarded from a container or another machine cannot reach the role's credentials.
_METADATA_OPTIONS = {
    "require_imdsv2": True,
    "http_tokens": ec2.LaunchTemplateHttpTokens.REQUIRED,
    "http_endpoint": True,
    "http_put_response_hop_limit": 1,
    "instance_metadata_tags": False,
}


@dataclass(frozen=True)
class GroupSize:
    """dispatch=sqs: the Auto Scaling group's bounds (the deploy waits for ``min_hosts`` installs)."""

    min_hosts: int
    max_hosts: int


class Host(Construct):
    """``role``, ``security_group``, ``pool_log_group``, ``processor_log_group``, ``resource_logical_id``, and either
    ``instance`` + ``eip`` (``public_ip``) with http dispatch, or ``group`` (the Auto Scaling group, ``group_name``,
    ``group_arn``) with sqs."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        instance_type: str,
        pool_size: int,
        api_cidr: str,
        admin_cidr: str | None,
        callback_origins: str,
        git_base_url: str,
        shared_secret_arn: str,
        github_token_secret_arn: str,
        kiro_api_key_secret_arn: str | None,
        kiro_install_command: str,
        kiro_deny_tools: str,
        kiro_driver: str,
        kiro_version: str,
        agent: str,
        agent_key_secret_arn: str | None,
        log_retention: logs.RetentionDays,
        log_group_prefix: str,
        root_volume_gb: int,
        ami_id: str | None,
        data_volume_gb: int = 50,
        group: GroupSize | None = None,
        dispatch_environment: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(scope, id_)
        self.instance: ec2.Instance | None = None
        self.group: autoscaling.AutoScalingGroup | None = None
        self.group_name: str | None = None if group is None else f"{Aws.STACK_NAME}{GROUP_NAME_SUFFIX}"
        self.public_ip: str | None = None
        # One public subnet per AZ, no NAT: a host needs outbound internet (GitHub, Kiro, AWS APIs) and a public
        # address. The group spreads over two AZs, so one zone's outage leaves hosts polling the queue.
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=1 if group is None else 2,
            nat_gateways=0,
            subnet_configuration=[ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC)],
            restrict_default_security_group=False,  # nothing is placed in the default group; saves a custom resource
        )
        flow_logs = logs.LogGroup(
            self, "FlowLogs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY,
        )
        self.vpc.add_flow_log("FlowLog", destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))

        self.security_group = ec2.SecurityGroup(
            self, "Sg", vpc=self.vpc, allow_all_outbound=True,
            description="aipm-kiro host: PR processor 8082 from apiCidr; worker pool 8081 only from adminCidr"
            if group is None else "aipm-kiro hosts: jobs come from SQS (no 8082); worker pool 8081 only from adminCidr",
        )
        if group is None:
            self.security_group.add_ingress_rule(
                ec2.Peer.ipv4(api_cidr), ec2.Port.tcp(PR_PROCESSOR_PORT),
                "PR processor (every request is HMAC-signed; the Lambda has no fixed address)",
            )
        if admin_cidr:
            self.security_group.add_ingress_rule(
                ec2.Peer.ipv4(admin_cidr), ec2.Port.tcp(WORKER_POOL_PORT), "worker pool, admin access (signed requests)"
            )

        log_removal = RemovalPolicy.DESTROY
        self.pool_log_group = logs.LogGroup(
            self, "WorkerPoolLogs", log_group_name=f"{log_group_prefix}/worker-pool",
            retention=log_retention, removal_policy=log_removal,
        )
        self.processor_log_group = logs.LogGroup(
            self, "PrProcessorLogs", log_group_name=f"{log_group_prefix}/pr-processor",
            retention=log_retention, removal_policy=log_removal,
        )

        self.role = iam.Role(
            self, "Role", assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="aipm-kiro host: SSM sessions, its install assets, and what the stack grants (secrets, logs)",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name("AmazonSSMManagedInstanceCore")],
        )

        env = {
            HostInstall.AIPM_POOL_SIZE: str(pool_size),
            HostInstall.AIPM_WORKER_POOL_HOST: "0.0.0.0" if admin_cidr else "127.0.0.1",
            HostInstall.AIPM_WORKER_POOL_PORT: str(WORKER_POOL_PORT),
            # With sqs nothing calls the PR processor from outside: it listens on loopback (install.sh's /health).
            HostInstall.AIPM_PR_PROCESSOR_HOST: "0.0.0.0" if group is None else "127.0.0.1",
            HostInstall.AIPM_PR_PROCESSOR_PORT: str(PR_PROCESSOR_PORT),
            HostInstall.AIPM_CALLBACK_ORIGINS: callback_origins,
            HostInstall.AIPM_GIT_BASE_URL: git_base_url,
            HostInstall.AIPM_KIRO_DENY_TOOLS: kiro_deny_tools,
            HostInstall.AIPM_KIRO_INSTALL_COMMAND: kiro_install_command,
            HostInstall.AIPM_KIRO_DRIVER: kiro_driver,
            HostInstall.AIPM_KIRO_VERSION: kiro_version,
            HostInstall.AIPM_AGENT: agent,
            HostInstall.AIPM_AGENT_KEY_SECRET_ARN: agent_key_secret_arn or "",
            HostInstall.AIPM_SHARED_SECRET_ARN: shared_secret_arn,
            HostInstall.AIPM_GITHUB_TOKEN_SECRET_ARN: github_token_secret_arn,
            HostInstall.AIPM_KIRO_API_KEY_SECRET_ARN: kiro_api_key_secret_arn or "",
            HostInstall.AIPM_AWS_REGION: Aws.REGION,
            HostInstall.AIPM_LOG_GROUP_WORKER_POOL: self.pool_log_group.log_group_name,
            HostInstall.AIPM_LOG_GROUP_PR_PROCESSOR: self.processor_log_group.log_group_name,
            **(dispatch_environment or {}),
            # The group this host is in: its PR processor protects it from scale-in there while it has jobs.
            **({HostInstall.AIPM_ASG_NAME: self.group_name} if self.group_name else {}),
        }
        self.data_volume: ec2.Volume | None = None
        self.cert_parameter: ssm.StringParameter | None = None
        if group is None:
            env |= self._data_volume(data_volume_gb)
            env |= self._certificate_pin()
        # One definition of a host, whichever machine runs it: the same image, size, disk, role, group and install.
        itype = ec2.InstanceType(instance_type)
        machine = {
            "instance_type": itype,
            # Pinned (context amiId): a new AL2023 release must not replace the host on the next deploy (issue 17).
            "machine_image": PinnedImage(ami_id) if ami_id else self._latest_image(itype),
            "security_group": self.security_group,
            "role": self.role,
            # No key pair and no port 22: shell access is SSM Session Manager (aws ssm start-session).
            "block_devices": [
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        root_volume_gb, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3,
                        delete_on_termination=True,
                    ),
                )
            ],
            "detailed_monitoring": True,
        }
        self.resource_logical_id = INSTANCE_LOGICAL_ID if group is None else GROUP_LOGICAL_ID
        init = self._init(env=env, resource_logical_id=self.resource_logical_id)
        if group is None:
            self._single_instance(machine, init)
        else:
            self._auto_scaling_group(machine, init, group)

    def _latest_image(self, itype: ec2.InstanceType) -> ec2.IMachineImage:
        """No amiId: the latest AL2023 image (an SSM parameter resolved per deploy), with a warning at synth."""
        cdk.Annotations.of(self).add_warning_v2("aipm:unpinned-image", UNPINNED_WARNING)
        print(f"[Warning] {UNPINNED_WARNING}", file=sys.stderr)
        cpu = ec2.AmazonLinuxCpuType.ARM_64 if itype.architecture == ec2.InstanceArchitecture.ARM_64 \
            else ec2.AmazonLinuxCpuType.X86_64
        return ec2.MachineImage.latest_amazon_linux2023(cpu_type=cpu)

    def _data_volume(self, size_gb: int) -> dict[str, str]:
        """dispatch=http: the state and the agent's sign-in on their own EBS volume, which outlives the instance.

        A separate resource with RemovalPolicy.RETAIN (kept even by ``cdk destroy``) and a daily snapshot (Data
        Lifecycle Manager, the last ``SNAPSHOTS_KEPT``). No CloudFormation attachment: a replacement instance is
        created before the old one is deleted, so an attachment could never move; the new host takes the volume over
        at boot (``aipm-data-volume``: stop the old instance, detach, attach, format only if empty, mount).
        """
        stack = Stack.of(self)
        subnet = self.vpc.public_subnets[0]  # the instance's subnet, so the volume is in its zone
        self.data_volume = ec2.Volume(
            self, "DataVolume", availability_zone=subnet.availability_zone, size=Size.gibibytes(size_gb),
            volume_type=ec2.EbsDeviceVolumeType.GP3, encrypted=True, removal_policy=RemovalPolicy.RETAIN,
            volume_name="aipm-kiro host data (job database, workspaces, Kiro sign-in)",
        )
        self.data_volume.node.default_child.override_logical_id(DATA_VOLUME_LOGICAL_ID)
        Tags.of(self.data_volume).add(DATA_TAG, stack.stack_name)
        snapshot_role = iam.Role(
            self, "SnapshotRole", assumed_by=iam.ServicePrincipal("dlm.amazonaws.com"),
            description="aipm-kiro: Data Lifecycle Manager snapshots the host's data volume",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(
                "service-role/AWSDataLifecycleManagerServiceRole")],
        )
        self.snapshot_role = snapshot_role
        dlm.CfnLifecyclePolicy(
            self, "DataSnapshots",
            description="aipm-kiro daily snapshots of the host data volume",
            state="ENABLED",
            execution_role_arn=snapshot_role.role_arn,
            policy_details=dlm.CfnLifecyclePolicy.PolicyDetailsProperty(
                resource_types=["VOLUME"],
                target_tags=[CfnTag(key=DATA_TAG, value=stack.stack_name)],
                schedules=[dlm.CfnLifecyclePolicy.ScheduleProperty(
                    name="daily",
                    create_rule=dlm.CfnLifecyclePolicy.CreateRuleProperty(interval=24, interval_unit="HOURS",
                                                                          times=["03:00"]),
                    retain_rule=dlm.CfnLifecyclePolicy.RetainRuleProperty(count=SNAPSHOTS_KEPT),
                    copy_tags=True,
                )],
            ),
        )
        volume_arn = stack.format_arn(service="ec2", resource="volume", resource_name=self.data_volume.volume_id)
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["ec2:AttachVolume", "ec2:DetachVolume"], resources=[volume_arn]))
        # The instances it attaches to, or takes the volume from (stopped first): this stack's only.
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["ec2:AttachVolume", "ec2:DetachVolume", "ec2:StopInstances"],
            resources=[stack.format_arn(service="ec2", resource="instance", resource_name="*")],
            conditions={"StringEquals": {"aws:ResourceTag/aws:cloudformation:stack-name": stack.stack_name}}))
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["ec2:DescribeVolumes", "ec2:DescribeInstances"], resources=["*"]))
        return {HostInstall.AIPM_DATA_VOLUME_ID: self.data_volume.volume_id, HostInstall.AIPM_DATA_MOUNT: DATA_MOUNT,
                HostInstall.AIPM_DATA_BINDS: " ".join(DATA_BINDS)}

    def _certificate_pin(self) -> dict[str, str]:
        """dispatch=http: 8082 serves TLS with the host's own self-signed certificate; the host publishes its SHA-256
        here at install (the Stack lets the Lambda read it: the pin it checks every connection against)."""
        self.cert_parameter = ssm.StringParameter(
            self, "CertFingerprint",
            description="aipm-kiro: SHA-256 of the PR processor's TLS certificate (written by the host at install)",
            string_value="unset: the host publishes its certificate's SHA-256 when its install runs",
        )
        self.cert_parameter.grant_write(self.role)
        return {HostInstall.AIPM_TLS_CERT_PARAMETER: self.cert_parameter.parameter_name}

    def _single_instance(self, machine: dict, init: ec2.CloudFormationInit) -> None:
        """dispatch=http: one instance the Lambda calls on its Elastic IP (stable across stop/start)."""
        self.instance = ec2.Instance(
            self,
            "Instance",
            vpc=self.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            **machine,
            init=init,
            init_options=ec2.ApplyCloudFormationInitOptions(
                timeout=INSTALL_TIMEOUT,
                # cfn-hup applies code changes in place; a fingerprint in the user data would replace the instance
                # (and lose its job database and Kiro login) on every deploy.
                embed_fingerprint=False,
                print_log=True,
            ),
        )
        # A fixed logical ID: cfn-hup's hook and cfn-init name the resource whose metadata they read.
        self.instance.instance.override_logical_id(INSTANCE_LOGICAL_ID)
        self._require_imdsv2()

        self.eip = ec2.CfnEIP(self, "Eip", domain="vpc", tags=[{"key": "Name", "value": "aipm-kiro host"}])
        ec2.CfnEIPAssociation(self, "EipAssociation", allocation_id=self.eip.attr_allocation_id,
                              instance_id=self.instance.instance_id)
        self.public_ip = self.eip.attr_public_ip

    def _auto_scaling_group(self, machine: dict, init: ec2.CloudFormationInit, size: GroupSize) -> None:
        """dispatch=sqs: hosts from a launch template, each installed by cfn-init from the group's metadata.

        Code changes reach every host in place through cfn-hup, as on the single host. A launch template change
        (instance type, a newer AMI) replaces the hosts one at a time, each new one's install signalled before the
        next; a job cut short there returns to the queue after its visibility timeout and runs on another host.
        """
        template = ec2.LaunchTemplate(
            self, "LaunchTemplate",
            **machine,
            user_data=ec2.UserData.for_linux(),  # the group adds cfn-init and cfn-signal to it
            associate_public_ip_address=True,  # no NAT: the public address is the way out
            **_METADATA_OPTIONS,
        )
        self.group = autoscaling.AutoScalingGroup(
            self, "Group",
            vpc=self.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            launch_template=template,
            auto_scaling_group_name=self.group_name,
            min_capacity=size.min_hosts,
            max_capacity=size.max_hosts,
            init=init,
            init_options=autoscaling.ApplyCloudFormationInitOptions(embed_fingerprint=False, print_log=True),
            # The deploy waits for the first min_hosts installs: one failing fails (and rolls back) the deploy.
            signals=autoscaling.Signals.wait_for_min_capacity(timeout=INSTALL_TIMEOUT),
            # GroupInServiceInstances is the scaling metric's denominator and a dashboard line: it must be collected.
            group_metrics=[autoscaling.GroupMetrics(
                autoscaling.GroupMetric.IN_SERVICE_INSTANCES, autoscaling.GroupMetric.DESIRED_CAPACITY,
                autoscaling.GroupMetric.PENDING_INSTANCES, autoscaling.GroupMetric.TERMINATING_INSTANCES,
            )],
            default_instance_warmup=HOST_WARMUP,
            update_policy=autoscaling.UpdatePolicy.rolling_update(max_batch_size=1, pause_time=INSTALL_TIMEOUT,
                                                                   wait_on_resource_signals=True),
        )
        self.group.node.default_child.override_logical_id(GROUP_LOGICAL_ID)

    @property
    def group_arn(self) -> str:
        """The group's ARN with its generated id as ``*``: the name alone picks the group (unique per region)."""
        if self.group_name is None:
            raise ValueError("only dispatch=sqs has an Auto Scaling group")
        return Stack.of(self).format_arn(service="autoscaling", resource="autoScalingGroup",
                                         resource_name=f"*:autoScalingGroupName/{self.group_name}",
                                         arn_format=ArnFormat.COLON_RESOURCE_NAME)

    def scale_on_queue(self, *, queue_name: str, jobs_per_host: int) -> autoscaling.CfnScalingPolicy:
        """Target tracking on the jobs waiting or running (visible + in flight) per in-service host.

        In flight counts too: a host's running jobs are its load, so the group keeps hosts while they work and adds
        one when the jobs exceed ``jobs_per_host`` per host. CDK's L2 target tracking takes only a single metric, so
        this is the CloudFormation policy with a metric-math query (EC2 Auto Scaling's documented SQS pattern).
        """
        if self.group is None:
            raise ValueError("only the Auto Scaling group of dispatch=sqs scales on the queue")

        def stat(id_: str, namespace: str, name: str, dimension: tuple[str, str], statistic: str):
            metric = autoscaling.CfnScalingPolicy.MetricProperty(
                namespace=namespace, metric_name=name,
                dimensions=[autoscaling.CfnScalingPolicy.MetricDimensionProperty(name=dimension[0],
                                                                                  value=dimension[1])],
            )
            return autoscaling.CfnScalingPolicy.TargetTrackingMetricDataQueryProperty(
                id=id_, metric_stat=autoscaling.CfnScalingPolicy.TargetTrackingMetricStatProperty(
                    metric=metric, stat=statistic),
                return_data=False,
            )

        return autoscaling.CfnScalingPolicy(
            self, "BacklogScaling",
            auto_scaling_group_name=self.group.auto_scaling_group_name,
            policy_type="TargetTrackingScaling",
            target_tracking_configuration=autoscaling.CfnScalingPolicy.TargetTrackingConfigurationProperty(
                target_value=float(jobs_per_host),
                customized_metric_specification=autoscaling.CfnScalingPolicy.CustomizedMetricSpecificationProperty(
                    metrics=[
                        stat("waiting", "AWS/SQS", "ApproximateNumberOfMessagesVisible", ("QueueName", queue_name),
                             "Sum"),
                        stat("running", "AWS/SQS", "ApproximateNumberOfMessagesNotVisible",
                             ("QueueName", queue_name), "Sum"),
                        stat("hosts", "AWS/AutoScaling", "GroupInServiceInstances",
                             ("AutoScalingGroupName", self.group.auto_scaling_group_name), "Average"),
                        autoscaling.CfnScalingPolicy.TargetTrackingMetricDataQueryProperty(
                            id="jobsPerHost", expression="(waiting + running) / hosts",
                            label="Jobs waiting or running per in-service host", return_data=True,
                        ),
                    ],
                ),
            ),
        )

    def _init(self, *, env: dict[str, str], resource_logical_id: str) -> ec2.CloudFormationInit:
        install = f"bash {SRC}/infra/host_install/install.sh --source {SRC}"
        return ec2.CloudFormationInit.from_elements(
            # Assets made here, not by InitSource.from_asset, which drops `exclude`: a stray __pycache__ must not
            # change the asset's hash (and make cfn-hup reinstall a host whose code did not change).
            ec2.InitSource.from_existing_asset(f"{SRC}/ec2_services",
                                               code_asset(self, "CodeAsset", ROOT / "ec2_services")),
            ec2.InitSource.from_existing_asset(f"{SRC}/aipm_common",
                                               code_asset(self, "CommonAsset", ROOT / "aipm_common")),
            ec2.InitSource.from_existing_asset(f"{SRC}/infra/host_install",
                                               code_asset(self, "InstallAsset", ROOT / "infra" / "host_install")),
            ec2.InitFile.from_asset(f"{SRC}/requirements/host.txt", str(ROOT / "requirements" / "host.txt")),
            # The open-source agents' pinned npm packages (agent=claude-code / gemini install from the lock file).
            ec2.InitFile.from_asset(f"{SRC}/agents/package.json", str(ROOT / "agents" / "package.json")),
            ec2.InitFile.from_asset(f"{SRC}/agents/package-lock.json", str(ROOT / "agents" / "package-lock.json")),
            ec2.InitFile.from_asset(f"{SRC}/agents/gemini-settings.json", str(ROOT / "agents" / "gemini-settings.json")),
            ec2.InitCommand.shell_command(install, key="10-install-aipm", env=env),
            *self._cfn_hup(resource_logical_id),
        )

    def _require_imdsv2(self) -> None:
        """IMDSv2 only, one hop: a launch template the instance starts from (CfnInstance has no metadata options)."""
        template = ec2.LaunchTemplate(self, "Metadata", **_METADATA_OPTIONS)
        cfn = self.instance.node.default_child
        cfn.launch_template = ec2.CfnInstance.LaunchTemplateSpecificationProperty(
            launch_template_id=template.launch_template_id, version=template.latest_version_number,
        )

    @staticmethod
    def _cfn_hup(resource_logical_id: str) -> list[ec2.InitElement]:
        """cfn-hup re-runs cfn-init (and so install.sh) when a deploy changes the host resource's init metadata."""
        cfn_init = (f"/opt/aws/bin/cfn-init -v --stack {Aws.STACK_NAME} --resource {resource_logical_id} "
                    f"--region {Aws.REGION} -c default")
        return [
            ec2.InitFile.from_string(
                "/etc/cfn/cfn-hup.conf",
                f"[main]\nstack={Aws.STACK_ID}\nregion={Aws.REGION}\ninterval=5\nverbose=false\n",
                mode="000400", owner="root", group="root",
            ),
            ec2.InitFile.from_string(
                "/etc/cfn/hooks.d/aipm-reloader.conf",
                "[aipm-reloader]\ntriggers=post.update\n"
                f"path=Resources.{resource_logical_id}.Metadata.AWS::CloudFormation::Init\n"
                f"action={cfn_init}\nrunas=root\n",
                mode="000400", owner="root", group="root",
            ),
            ec2.InitFile.from_string(
                "/etc/systemd/system/cfn-hup.service",
                "[Unit]\nDescription=cfn-hup: apply aipm-kiro stack updates in place\nAfter=network-online.target\n\n"
                "[Service]\nType=simple\nExecStart=/opt/aws/bin/cfn-hup\nRestart=always\nRestartSec=30\n\n"
                "[Install]\nWantedBy=multi-user.target\n",
            ),
            ec2.InitCommand.shell_command("systemctl daemon-reload && systemctl enable --now cfn-hup.service",
                                          key="20-enable-cfn-hup"),
        ]


UNPINNED_WARNING = (
    "amiId is not set: the host runs the latest Amazon Linux 2023 image, re-read from SSM on every deploy, so the "
    "first deploy after Amazon publishes a new image replaces the host (its root disk and anything not on the data "
    "volume go with it). Pin it: -c amiId=$(aws ssm get-parameter --name "
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64 --query Parameter.Value --output text) "
    "(arm64 instance types: …-arm64), and change it deliberately to move the host to a newer image"
)


@jsii.implements(ec2.IMachineImage)
class PinnedImage:
    """An image named by its id (context amiId): a literal in the template, never an SSM parameter."""

    def __init__(self, ami_id: str) -> None:
        self.ami_id = ami_id

    def get_image(self, scope: Construct) -> ec2.MachineImageConfig:
        del scope
        return ec2.MachineImageConfig(image_id=self.ami_id, os_type=ec2.OperatingSystemType.LINUX,
                                      user_data=ec2.UserData.for_linux())


def code_asset(scope: Construct, id_: str, path: Path) -> s3_assets.Asset:
    """A directory of the host's code as an asset, without bytecode caches or test caches."""
    return s3_assets.Asset(scope, id_, path=str(path), exclude=_ASSET_EXCLUDE)
