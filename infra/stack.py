"""AipmStack: composes the constructs (secrets, website, sign-in, API, job queue, host, monitoring) and wires them
together.

Every relation between the parts is visible here: which secret each part may read (grants), which address each part
is given (environment), and what the operator needs after a deploy (outputs). The constructs never reach each other.
"""

from __future__ import annotations

from aws_cdk import Annotations, Aws, CfnOutput, Fn, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from aipm_common.envnames import Dispatch, GitHub, LambdaApi
from infra.api import Api
from infra.auth import SCOPES, Auth
from infra.config import AipmConfig
from infra.host import PR_PROCESSOR_PORT, SCALE_IN_ACTIONS, GroupSize, Host
from infra.job_queue import CONSUME_ACTIONS, MAX_RECEIVES, SEND_ACTIONS, JobQueue
from infra.monitoring import Monitoring
from infra.nag import acknowledge_findings
from infra.secrets import Secrets
from infra.website import Website

# The plain S3 website endpoint needs a public bucket policy, which account-level S3 Block Public Access (on by default
# for accounts since April 2023) refuses: the deploy then fails on the bucket policy. Said at every synth of the mode.
S3_WEBSITE_NOTE = (
    "websiteMode=s3-website needs a public bucket policy: the deploy fails in an account with S3 Block Public Access "
    "on (the default since April 2023). Turn BlockPublicPolicy and RestrictPublicBuckets off for the account first "
    "(aws s3control put-public-access-block --account-id <id> --public-access-block-configuration "
    "BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=false,RestrictPublicBuckets=false), or use "
    "websiteMode=cloudfront (the default: private bucket, HTTPS, Cognito sign-in)."
)

_RETENTION = {
    1: "ONE_DAY", 3: "THREE_DAYS", 5: "FIVE_DAYS", 7: "ONE_WEEK", 14: "TWO_WEEKS", 30: "ONE_MONTH", 60: "TWO_MONTHS",
    90: "THREE_MONTHS", 120: "FOUR_MONTHS", 150: "FIVE_MONTHS", 180: "SIX_MONTHS", 365: "ONE_YEAR",
    400: "THIRTEEN_MONTHS", 545: "EIGHTEEN_MONTHS", 731: "TWO_YEARS", 1096: "THREE_YEARS", 1827: "FIVE_YEARS",
    2192: "SIX_YEARS", 2557: "SEVEN_YEARS", 2922: "EIGHT_YEARS", 3288: "NINE_YEARS", 3653: "TEN_YEARS",
}


def retention_days(days: int) -> logs.RetentionDays:
    return logs.RetentionDays[_RETENTION[days]]


class AipmStack(Stack):
    """The whole system of docs/contracts.md ("Infrastructure") in one stack."""

    def __init__(self, scope: Construct, id_: str, *, config: AipmConfig, **kwargs) -> None:
        super().__init__(scope, id_, description="aipm-kiro: Generate Code & PR (Lambda API, EC2 Kiro host, web UI)",
                         **kwargs)
        retention = retention_days(config.log_retention_days)
        log_prefix = f"/aipm/{self.stack_name}"

        secrets = Secrets(
            self, "Secrets",
            github_token_secret_arn=config.github_token_secret_arn,
            kiro_api_key_secret_arn=config.kiro_api_key_secret_arn,
            with_ui_token=not config.uses_cognito,
            agent_key=config.agent_key,
            agent_key_secret_arn=config.agent_key_secret_arn,
        )
        website = Website(self, "Website", mode=config.website_mode, log_retention=retention)
        if config.website_mode == "s3-website":
            Annotations.of(website).add_warning_v2("aipm:s3-website-block-public-access", S3_WEBSITE_NOTE)
        auth = Auth(self, "Auth", site_url=website.site_url, domain_prefix=config.cognito_domain_prefix) \
            if config.uses_cognito else None

        env = {
            LambdaApi.GITHUB_API_URL: config.github_api_url,
            LambdaApi.GITHUB_TOKEN_SECRET_ARN: secrets.github_token.secret_arn,
            LambdaApi.AIPM_SHARED_SECRET_ARN: secrets.shared_secret.secret_arn,
            LambdaApi.AIPM_GITHUB_WEBHOOK_SECRET_ARN: secrets.github_webhook.secret_arn,
            LambdaApi.AIPM_FORGE: "github",
            LambdaApi.AIPM_ALLOWED_REPOS: config.allowed_repos,
            LambdaApi.ALLOWED_ORIGINS: website.site_url,
        }
        if auth:
            env |= {
                LambdaApi.AIPM_AUTH: "cognito",
                LambdaApi.COGNITO_USER_POOL_ID: auth.user_pool.user_pool_id,
                LambdaApi.COGNITO_CLIENT_ID: auth.client.user_pool_client_id,
                LambdaApi.COGNITO_REGION: Aws.REGION,
                LambdaApi.COGNITO_DOMAIN: auth.domain_url,
                LambdaApi.AIPM_ALLOWED_GROUPS: ",".join(g.strip() for g in config.allowed_groups.split(",") if g.strip()),
            }
        else:
            env |= {LambdaApi.AIPM_AUTH: "token", LambdaApi.AIPM_UI_TOKEN_SECRET_ARN: secrets.ui_token.secret_arn}
        # dispatch=sqs: the Lambda sends each job to the queue, and a group of hosts polls it (docs/contracts.md, issue 11).
        job_queue = JobQueue(self, "JobQueue") if config.uses_queue else None
        if job_queue:
            env |= {Dispatch.AIPM_DISPATCH: "sqs", Dispatch.AIPM_JOB_QUEUE_URL: job_queue.queue.queue_url}
        api = Api(self, "Api", environment=env, log_retention=retention, log_group_name=f"{log_prefix}/api")

        host = Host(
            self, "Host",
            instance_type=config.instance_type,
            pool_size=config.pool_size,
            api_cidr=config.api_cidr,
            admin_cidr=config.admin_cidr,
            callback_origins=api.url_origin,
            git_base_url=config.git_base_url,
            shared_secret_arn=secrets.shared_secret.secret_arn,
            github_token_secret_arn=secrets.github_token.secret_arn,
            kiro_api_key_secret_arn=secrets.kiro_api_key.secret_arn if secrets.kiro_api_key else None,
            kiro_install_command=config.kiro_install_command,
            kiro_deny_tools=config.kiro_deny_tools,
            kiro_driver=config.kiro_driver,
            kiro_version=config.kiro_version,
            agent=config.agent,
            agent_key_secret_arn=secrets.agent_key.secret_arn if secrets.agent_key else None,
            log_retention=retention,
            log_group_prefix=log_prefix,
            root_volume_gb=config.root_volume_gb,
            ami_id=config.ami_id,
            data_volume_gb=config.data_volume_gb,
            group=GroupSize(config.min_hosts, config.max_hosts) if job_queue else None,
            dispatch_environment=job_queue.host_environment() if job_queue else None,
        )
        if job_queue is None:
            # The Lambda reaches the PR processor on the Elastic IP (stable across stop/start), over TLS, accepting only
            # the certificate whose fingerprint the host published (lambda_fn.pinning).
            api.function.add_environment(LambdaApi.PR_PROCESSOR_URL, f"https://{host.public_ip}:{PR_PROCESSOR_PORT}")
            api.function.add_environment(LambdaApi.PR_PROCESSOR_CERT_PARAMETER, host.cert_parameter.parameter_name)
            host.cert_parameter.grant_read(api.function)
        else:
            host.scale_on_queue(queue_name=job_queue.queue.queue_name, jobs_per_host=config.jobs_per_host)
            # Least privilege on the queue: the Lambda only sends, the hosts only take, keep and delete.
            job_queue.queue.grant(api.function, *SEND_ACTIONS)
            job_queue.queue.grant(host.role, *CONSUME_ACTIONS)
            # A host protects itself from scale-in while it has jobs: in its own group only.
            host.role.add_to_principal_policy(iam.PolicyStatement(actions=list(SCALE_IN_ACTIONS),
                                                                  resources=[host.group_arn]))
            if not secrets.kiro_api_key and config.agent == "kiro":
                Annotations.of(host).add_warning_v2(
                    "aipm:kiro-sign-in",
                    "dispatch=sqs without kiroApiKeySecretArn: every host the group launches must be signed in to "
                    "Kiro by hand (device flow over SSM) before its jobs can succeed; give a Kiro API key secret.",
                )

        # Least privilege: each part reads exactly its own secrets and writes its own log groups.
        secrets.github_token.grant_read(api.function)
        secrets.shared_secret.grant_read(api.function)
        secrets.github_webhook.grant_read(api.function)
        if secrets.ui_token:
            secrets.ui_token.grant_read(api.function)
        secrets.github_token.grant_read(host.role)
        secrets.shared_secret.grant_read(host.role)
        if secrets.kiro_api_key:
            secrets.kiro_api_key.grant_read(host.role)
        if secrets.agent_key:
            secrets.agent_key.grant_read(host.role)
        for group in (host.pool_log_group, host.processor_log_group):
            group.grant_write(host.role)
            group.grant(host.role, "logs:DescribeLogStreams")

        sign_in = {"authMode": "token"}  # the key frontend/js/main.js reads
        if auth:
            sign_in = {
                "authMode": "cognito",
                "cognito": {
                    "domain": auth.domain_url,
                    "clientId": auth.client.user_pool_client_id,
                    "userPoolId": auth.user_pool.user_pool_id,
                    "region": Aws.REGION,
                    "redirectUri": website.site_url + "/",
                    "scopes": list(SCOPES),
                },
            }
        website.publish(config={"apiUrl": api.url_origin, **sign_in})

        monitoring = Monitoring(
            self, "Monitoring", function=api.function, instance=host.instance, group=host.group, job_queue=job_queue,
            dashboard_name=f"{self.stack_name}-aipm", alarm_email=config.alarm_email,
        )

        self._outputs(config, secrets, website, auth, api, host, monitoring, job_queue)
        acknowledge_findings(self, website=website, api=api, host=host, auth=auth, secrets=secrets,
                             monitoring=monitoring)

    def _outputs(self, config, secrets, website, auth, api, host, monitoring, job_queue) -> None:
        CfnOutput(self, "WebsiteUrl", value=website.site_url + "/", description="The web UI")
        CfnOutput(self, "ApiUrl", value=api.url.url, description="The Lambda API (Function URL)")
        if host.instance is not None:
            CfnOutput(self, "HostAddress", value=host.public_ip,
                      description=f"The host's Elastic IP; the PR processor listens on :{PR_PROCESSOR_PORT}")
            CfnOutput(self, "HostInstanceId", value=host.instance.instance_id,
                      description="For SSM: aws ssm start-session --target <this value>")
        else:
            self._group_outputs(host, job_queue)
        CfnOutput(
            self, "GithubTokenSecretArn", value=secrets.github_token.secret_arn,
            description="Fill it: aws secretsmanager put-secret-value --secret-id <this ARN> "
                        "--secret-string <GitHub token>; then on the host: sudo systemctl restart aipm-secrets",
        )
        CfnOutput(
            self, "PutGithubTokenCommand",
            value=Fn.join("", ["aws secretsmanager put-secret-value --secret-id ", secrets.github_token.secret_arn,
                               f' --secret-string "${GitHub.GITHUB_TOKEN}"']),
            description="The exact command to store the GitHub token (export GITHUB_TOKEN first)",
        )
        CfnOutput(
            self, "GithubWebhookUrl", value=Fn.join("", [api.url.url, "api/github/webhook"]),
            description="Follow-ups from a pull request (/aipm comments): on each repository, Settings > Webhooks > "
                        "Add webhook: this Payload URL, Content type application/json, the secret of "
                        "GithubWebhookSecretCommand, events: Issue comments",
        )
        CfnOutput(
            self, "GithubWebhookSecretCommand",
            value=_read_secret_command(secrets.github_webhook),
            description="The webhook's secret, to paste into the repository's webhook settings",
        )
        CfnOutput(self, "SharedSecretArn", value=secrets.shared_secret.secret_arn,
                  description="AIPM_SHARED_SECRET (generated; rotate with put-secret-value, then restart aipm-secrets "
                              "on the host and redeploy or wait for new Lambda containers)")
        if host.instance is not None:
            CfnOutput(
                self, "KiroLogin",
                value=Fn.join("", ["aws ssm start-session --target ", host.instance.instance_id,
                                   "  # then: sudo -u kiro -H /usr/local/bin/kiro-cli login --use-device-flow"
                                   " && sudo systemctl restart aipm-worker-pool"]),
                description="Sign Kiro in over SSM (device flow), or deploy with -c kiroApiKeySecretArn=<secret with "
                            "KIRO_API_KEY>",
            )
        if secrets.kiro_api_key:
            CfnOutput(self, "KiroApiKeySecretArn", value=secrets.kiro_api_key.secret_arn,
                      description="Fill it: aws secretsmanager put-secret-value --secret-id <this ARN> "
                                  "--secret-string <Kiro API key>")
        if secrets.agent_key and config.agent_key:
            CfnOutput(self, f"{config.agent_key.secret_id}SecretArn", value=secrets.agent_key.secret_arn,
                      description=f"agent={config.agent}: aws secretsmanager put-secret-value --secret-id <this ARN> "
                                  f"--secret-string <{config.agent_key.variable}>; then on the host: sudo systemctl "
                                  "restart aipm-secrets")
        if secrets.ui_token:
            CfnOutput(
                self, "UiTokenCommand",
                value=_read_secret_command(secrets.ui_token),
                description="The bearer token the web UI asks for (AIPM_AUTH=token, s3-website mode)",
            )
        if auth:
            CfnOutput(self, "UserPoolId", value=auth.user_pool.user_pool_id, description="Cognito user pool")
            CfnOutput(
                self, "CreateUserCommand",
                value=Fn.join("", ["aws cognito-idp admin-create-user --user-pool-id ", auth.user_pool.user_pool_id,
                                   " --username you@example.com --user-attributes Name=email,Value=you@example.com"
                                   " Name=email_verified,Value=true Name=name,Value=\"Your Name\""]),
                description="Users are created by an administrator (no self sign-up); Cognito mails a temporary password. "
                            "Their name and e-mail go on the pull requests they start (Co-authored-by)",
            )
        CfnOutput(self, "DashboardUrl",
                  value=Fn.join("", ["https://", Aws.REGION, ".console.aws.amazon.com/cloudwatch/home?region=",
                                     Aws.REGION, "#dashboards:name=", monitoring.dashboard.dashboard_name]),
                  description="CloudWatch dashboard")

    def _group_outputs(self, host: Host, job_queue: JobQueue) -> None:
        group_name = host.group.auto_scaling_group_name
        CfnOutput(self, "HostGroupName", value=group_name,
                  description="The hosts' Auto Scaling group (dispatch=sqs); they poll the job queue, nothing calls them")
        CfnOutput(
            self, "ListHostsCommand",
            value=Fn.join("", ["aws autoscaling describe-auto-scaling-groups --auto-scaling-group-names ", group_name,
                               " --query 'AutoScalingGroups[0].Instances[].InstanceId' --output text"]),
            description="The hosts' instance IDs, for SSM: aws ssm start-session --target <id>",
        )
        CfnOutput(self, "JobQueueUrl", value=job_queue.queue.queue_url,
                  description="The FIFO job queue the Lambda sends to and the hosts poll")
        CfnOutput(self, "DeadLetterQueueUrl", value=job_queue.dead_letter_queue.queue_url,
                  description=f"Jobs received {MAX_RECEIVES} times without finishing land here (alarmed)")
        CfnOutput(
            self, "KiroLogin",
            value="Deploy with -c kiroApiKeySecretArn=<secret with KIRO_API_KEY>: every host the group launches "
                  "signs in from it",
            description="With dispatch=sqs a device-flow login (kiro-cli login --use-device-flow over SSM) holds for "
                        "one host only and is lost when the group replaces it",
        )


def _read_secret_command(secret) -> str:
    """The CLI command that prints a secret's value (for an output the operator copies)."""
    return Fn.join("", ["aws secretsmanager get-secret-value --secret-id ", secret.secret_arn,
                        " --query SecretString --output text"])
