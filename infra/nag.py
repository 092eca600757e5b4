"""The cdk-nag (AwsSolutions) findings this design accepts, each on the one construct it concerns, with its reason.

Owns nothing but acknowledgements (cdk-nag 3: CDK's ``Validations.of(...).acknowledge``). Every other finding fails
``cdk synth``. A finding is acknowledged here only when fixing it would break the design or cost more than it
protects; the reason says which.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_secretsmanager as sm
from constructs import IConstruct

from infra.host import GROUP_NAME_SUFFIX

PACK = "AwsSolutions::"
# CDK's own asset bucket (bootstrap): the host downloads its install assets from it.
ASSET_OBJECTS = "Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-<AWS::Region>/*"


def ack(construct: IConstruct, rule: str, reason: str) -> None:
    Validations.of(construct).acknowledge(Acknowledgment(id=PACK + rule, reason=reason))


def acknowledge_findings(stack: Stack, *, website, api, host, auth, secrets, monitoring) -> None:
    del monitoring  # nothing to acknowledge: the topic enforces TLS and alarms have actions
    # --- API ---------------------------------------------------------------------------------------------------------
    ack(api.function, "AwsSolutions-L1",
        "docs/contracts.md fixes Python 3.12 and the bundle is built for cp312/manylinux2014_aarch64; a runtime bump is a "
        "deliberate change of both.")

    _acknowledge_host(host)

    # --- Secrets -----------------------------------------------------------------------------------------------------
    if secrets.github_token_created:
        ack(secrets.github_token, "AwsSolutions-SMG4",
            "A GitHub token is issued by GitHub, not by a rotation Lambda: the operator puts a new one with "
            "put-secret-value before it expires.")
    ack(secrets.github_webhook, "AwsSolutions-SMG4",
        "The webhook secret is pasted into GitHub's webhook settings by hand; rotating it is a manual change on both "
        "sides (put-secret-value, then the repository's webhook).")
    ack(secrets.shared_secret, "AwsSolutions-SMG4",
        "Rotating the signing secret needs the Lambda and the host to switch together (restart aipm-secrets, new "
        "Lambda containers); it is rotated by hand with put-secret-value, as the README says.")
    if isinstance(secrets.agent_key, sm.Secret):
        ack(secrets.agent_key, "AwsSolutions-SMG4",
            "A model provider's API key (Anthropic, Gemini) is issued by the provider's console, not by a rotation "
            "Lambda: the operator puts a new one with put-secret-value.")
    if secrets.ui_token is not None:
        ack(secrets.ui_token, "AwsSolutions-SMG4",
            "The UI token is typed by users (s3-website mode); rotating it is a manual put-secret-value.")

    # --- Website -----------------------------------------------------------------------------------------------------
    if website.distribution is not None:
        ack(website.distribution, "AwsSolutions-CFR1",
            "A self-hosted team tool: users are wherever the team is; sign-in (Cognito) restricts who uses it.")
        ack(website.distribution, "AwsSolutions-CFR2",
            "The site is static files; the API behind it authenticates every call. WAF's cost is not justified here.")
        ack(website.distribution, "AwsSolutions-CFR4",
            "Served on the default *.cloudfront.net certificate, which does not allow a minimum TLS version; set a "
            "custom domain and certificate to enforce TLSv1.2_2021.")
    else:
        ack(website.bucket, "AwsSolutions-S2",
            "websiteMode=s3-website was chosen explicitly: the plain S3 website endpoint needs public reads.")
        ack(website.bucket, "AwsSolutions-S5",
            "websiteMode=s3-website serves from the S3 website endpoint, not CloudFront, so there is no OAC.")
        ack(website.bucket, "AwsSolutions-S10",
            "websiteMode=s3-website: the S3 website endpoint is http only, so an SSL-only policy would refuse every read.")
    deployment_handler = next(
        (c for c in stack.node.children if c.node.id.startswith("Custom::CDKBucketDeployment")), None
    )
    if deployment_handler is not None:
        reason = ("CDK's BucketDeployment handler (a CDK-managed Lambda): its runtime, basic execution role and "
                  "S3 wildcards are set by aws-cdk-lib to copy the assets into the website bucket.")
        for rule in (
            "AwsSolutions-L1",
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
            "AwsSolutions-IAM5[Action::s3:GetBucket*]", "AwsSolutions-IAM5[Action::s3:GetObject*]",
            "AwsSolutions-IAM5[Action::s3:List*]", "AwsSolutions-IAM5[Action::s3:Abort*]",
            "AwsSolutions-IAM5[Action::s3:DeleteObject*]", f"AwsSolutions-IAM5[{ASSET_OBJECTS}]",
            "AwsSolutions-IAM5[Resource::*]",
            f"AwsSolutions-IAM5[Resource::<{stack.get_logical_id(website.bucket.node.default_child)}.Arn>/*]",
        ):
            ack(deployment_handler, rule, reason)

    # --- Sign-in -----------------------------------------------------------------------------------------------------
    if auth is not None:
        ack(auth.user_pool, "AwsSolutions-COG2",
            "MFA is optional (TOTP offered to every user); requiring it is one setting away (mfa=REQUIRED) once the "
            "team has authenticators.")
        ack(auth.user_pool, "AwsSolutions-COG8",
            "Cognito's Plus feature plan (threat protection) costs per user; users are created by an administrator "
            "only, with a strong password policy.")


def _acknowledge_host(host) -> None:
    """The host's findings: the open 8082, SSM, the install assets, the group, the pinned image, the data volume."""
    # --- Host --------------------------------------------------------------------------------------------------------
    if host.instance is not None:  # dispatch=sqs opens no 8082: the hosts poll the queue
        ack(host.security_group, "AwsSolutions-EC23",
            "8082 (PR processor) is open to apiCidr, 0.0.0.0/0 by default: the Lambda runs outside a VPC and has no "
            "fixed address, and every request must carry an HMAC signature for the PR processor (300 s window) or gets "
            "401; it serves TLS with a certificate the Lambda pins (SSM fingerprint). Set -c apiCidr to narrow it. 8081 opens only to an explicit adminCidr.")
    ack(host.role, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore]",
        "Session Manager replaces SSH (no key pair, no port 22); this AWS-maintained policy is the documented minimum "
        "for the SSM agent.")
    for rule in ("Action::s3:GetBucket*", "Action::s3:GetObject*", "Action::s3:List*", ASSET_OBJECTS):
        ack(host.role, f"AwsSolutions-IAM5[{rule}]",
            "Granted by CDK for cfn-init to download this stack's install assets (ec2_services, aipm_common, "
            "host_install, requirements) from the bootstrap asset bucket; read-only.")
    if host.group is not None:
        ack(host.role, f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:autoscaling:<AWS::Region>:<AWS::AccountId>:"
                       f"autoScalingGroup:*:autoScalingGroupName/<AWS::StackName>{GROUP_NAME_SUFFIX}]",
            "autoscaling:SetInstanceProtection on this stack's host group only: the * is the group's id, which "
            "AWS generates; the group name after it (the stack's name, unique per region) picks the one group.")
        ack(host.group, "AwsSolutions-AS3",
            "Launches and terminations are routine once the group scales on the queue: a mail for each would be noise. "
            "A failed launch shows as fewer hosts in service than desired (HostsMissing alarm); a host whose install "
            "fails takes no jobs, so they age in the queue (OldestJob alarm); the deploy waits for minHosts installs.")
    if host.instance is not None:
        ack(host.instance, "AwsSolutions-EC29",
            "One host by design (the pool's sessions and the job database live on it); termination protection would "
            "block cdk destroy. Code updates are applied in place by cfn-hup, not by replacement.")

    # The image id is a literal on purpose (context amiId): a parameter re-resolved per deploy replaced the host.
    Validations.of(host).acknowledge(Acknowledgment(
        id="CloudFormation-Validate::W9010",
        reason="The host's image is pinned by context amiId (issue 17): a resolved-per-deploy SSM parameter or a "
               "mapping would let a new Amazon Linux release replace the host and its data on the next deploy."))
    if host.data_volume is not None:
        ack(host.snapshot_role, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                                "AWSDataLifecycleManagerServiceRole]",
            "The AWS-maintained service role policy Data Lifecycle Manager documents for EBS snapshot policies.")
        ack(host.role, "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:instance/*]",
            "A new host takes the data volume over from the instance it replaces, whose id it learns at boot: "
            "Attach/DetachVolume and StopInstances are limited to instances tagged with this stack's name.")
        ack(host.role, "AwsSolutions-IAM5[Resource::*]",
            "ec2:DescribeVolumes and ec2:DescribeInstances support no resource-level permissions (read-only).")
