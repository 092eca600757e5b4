"""The synthesized template with the defaults of cdk.json: what `cdk deploy` would create, resource by resource."""

from __future__ import annotations

import json

import aws_cdk as cdk
from aws_cdk.assertions import Match

from infra.config import KIRO_INSTALL_COMMAND
from infra.host import INSTANCE_LOGICAL_ID, code_asset
from tests.infra.conftest import TEST_AMI
from tests.infra.templates import (
    as_list,
    as_text,
    config_json,
    init_config,
    install_env,
    lambda_env,
    logical,
    policy_of_role,
    role_id,
    secret_reads,
    secret_refs,
)

# --- Lambda ---------------------------------------------------------------------------------------------------------

def test_lambda_runs_the_handler_on_python_312_arm64(default_synth):
    default_synth.assertions.has_resource_properties("AWS::Lambda::Function", {
        "Handler": "lambda_fn.handler.handler",
        "Runtime": "python3.12",
        "Architectures": ["arm64"],
        "LoggingConfig": {"LogGroup": Match.any_value()},
    })


def test_lambda_environment_names_every_spec_variable(default_synth):
    env = lambda_env(default_synth)
    assert env["GITHUB_API_URL"] == "https://api.github.com"
    assert env["AIPM_FORGE"] == "github"
    assert env["AIPM_AUTH"] == "cognito"
    assert env["AIPM_ALLOWED_REPOS"] == ""
    assert env["GITHUB_TOKEN_SECRET_ARN"] == {"Ref": logical(default_synth, "AWS::SecretsManager::Secret", "GitHub")}
    assert env["AIPM_SHARED_SECRET_ARN"] == {"Ref": logical(default_synth, "AWS::SecretsManager::Secret", "SIGNING")}
    # The PR processor on the Elastic IP, and CORS for exactly the CloudFront site.
    assert as_text(env["PR_PROCESSOR_URL"]).startswith('https://{"Fn::GetAtt": ["HostEip')
    assert as_text(env["PR_PROCESSOR_URL"]).endswith(":8082")
    assert as_text(env["ALLOWED_ORIGINS"]).startswith('https://{"Fn::GetAtt": ["WebsiteCdn')
    for name in ("COGNITO_USER_POOL_ID", "COGNITO_CLIENT_ID", "COGNITO_REGION", "COGNITO_DOMAIN"):
        assert name in env, name
    assert env["AIPM_GITHUB_WEBHOOK_SECRET_ARN"] == {
        "Ref": logical(default_synth, "AWS::SecretsManager::Secret", "follow-up webhook")}
    assert not any(k in env for k in ("AIPM_SHARED_SECRET", "GITHUB_TOKEN", "AIPM_GITHUB_WEBHOOK_SECRET")), \
        "no secret value in the environment"


def test_the_outputs_say_how_to_register_the_follow_up_webhook(default_synth):
    outputs = default_synth.template["Outputs"]
    url = as_text(outputs["GithubWebhookUrl"]["Value"])
    assert "FunctionUrl" in url and url.endswith("api/github/webhook")
    assert "Issue comments" in outputs["GithubWebhookUrl"]["Description"]
    command = as_text(outputs["GithubWebhookSecretCommand"]["Value"])
    assert "get-secret-value" in command and logical(default_synth, "AWS::SecretsManager::Secret", "follow-up webhook") in command


def test_function_url_has_no_auth_and_no_cors_of_its_own(default_synth):
    url = default_synth.one("AWS::Lambda::Url")["Properties"]
    assert url["AuthType"] == "NONE"
    assert "Cors" not in url, "CORS is answered by the app from ALLOWED_ORIGINS, in one place"


def test_lambda_log_group_has_the_configured_retention(default_synth):
    groups = default_synth.of_type("AWS::Logs::LogGroup")
    named = {as_text(g["Properties"].get("LogGroupName", "")): g["Properties"] for g in groups.values()}
    for suffix in ("/api", "/worker-pool", "/pr-processor"):
        props = named[f"/aipm/AipmKiro{suffix}"]
        assert props["RetentionInDays"] == 30
    assert all(g["Properties"].get("RetentionInDays") == 30 for g in groups.values()), "every log group expires"


def test_lambda_role_reads_exactly_its_three_secrets(default_synth):
    assert secret_reads(default_synth, "ApiRole") == secret_refs(default_synth, "GitHub", "SIGNING", "follow-up webhook")
    assert not any(s["Resource"] == "*" for s in policy_of_role(default_synth, "ApiRole"))
    managed = default_synth.resources[role_id(default_synth, "ApiRole")]["Properties"].get("ManagedPolicyArns")
    assert not managed, "no AWSLambdaBasicExecutionRole: the role writes its own log group only"


# --- Host -----------------------------------------------------------------------------------------------------------

def test_instance_requires_imdsv2_with_one_hop_and_has_no_key_pair(default_synth):
    instance = default_synth.resources[INSTANCE_LOGICAL_ID]["Properties"]
    assert "KeyName" not in instance
    template = default_synth.one("AWS::EC2::LaunchTemplate")["Properties"]["LaunchTemplateData"]
    assert template["MetadataOptions"]["HttpTokens"] == "required"
    assert template["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert instance["LaunchTemplate"]["LaunchTemplateId"] == {"Ref": next(iter(
        default_synth.of_type("AWS::EC2::LaunchTemplate")))}


def test_instance_is_the_pinned_image_t3_medium_with_an_encrypted_gp3_root(default_synth):
    instance = default_synth.resources[INSTANCE_LOGICAL_ID]["Properties"]
    assert instance["InstanceType"] == "t3.medium"
    assert instance["ImageId"] == TEST_AMI, "a literal from context amiId, not an SSM parameter re-resolved per deploy"
    assert not [p for p in default_synth.template.get("Parameters", {}).values()
                if "SSM" in p["Type"] and "ami" in p.get("Default", "")]
    root = instance["BlockDeviceMappings"][0]
    assert root["DeviceName"] == "/dev/xvda"
    assert root["Ebs"]["Encrypted"] is True and root["Ebs"]["VolumeType"] == "gp3"


def test_instance_waits_for_cfn_init_signal(default_synth):
    resource = default_synth.resources[INSTANCE_LOGICAL_ID]
    assert resource["CreationPolicy"]["ResourceSignal"] == {"Count": 1, "Timeout": "PT30M"}
    user_data = as_text(resource["Properties"]["UserData"]["Fn::Base64"])
    assert "cfn-init -v" in user_data and f"--resource {INSTANCE_LOGICAL_ID}" in user_data
    assert "cfn-signal -e $?" in user_data


def test_cfn_init_ships_the_code_and_runs_the_installer(default_synth):
    config = init_config(default_synth)
    assert set(config["sources"]) == {"/opt/aipm/src/ec2_services", "/opt/aipm/src/aipm_common",
                                      "/opt/aipm/src/infra/host_install"}
    assert "/opt/aipm/src/requirements/host.txt" in config["files"]
    command = config["commands"]["10-install-aipm"]["command"]
    assert command == "bash /opt/aipm/src/infra/host_install/install.sh --source /opt/aipm/src"
    env = install_env(default_synth)
    assert env["AIPM_POOL_SIZE"] == "2"
    assert env["AIPM_WORKER_POOL_HOST"] == "127.0.0.1", "no adminCidr: the pool listens on loopback"
    assert env["AIPM_PR_PROCESSOR_HOST"] == "0.0.0.0"
    assert env["AIPM_KIRO_INSTALL_COMMAND"] == KIRO_INSTALL_COMMAND
    assert (env["AIPM_KIRO_DRIVER"], env["AIPM_KIRO_VERSION"]) == ("acp", "2.19.1")
    assert env["AIPM_KIRO_API_KEY_SECRET_ARN"] == ""


def test_the_host_code_asset_leaves_bytecode_caches_out(default_synth, tmp_path):
    """A stray __pycache__ must not reach the host nor change the asset's hash (which would make cfn-hup reinstall)."""
    staged = [d for d in default_synth.outdir.glob("asset.*") if (d / "pr_processor").is_dir()]
    assert len(staged) == 1, staged
    assert (staged[0] / "pr_processor" / "runner.py").is_file()
    assert not list(staged[0].rglob("*.pyc")) and not list(staged[0].rglob("__pycache__"))
    # The same helper on a directory that surely holds caches.
    source = tmp_path / "code"
    (source / "pkg" / "__pycache__").mkdir(parents=True)
    (source / "pkg" / "mod.py").write_text("X = 1\n")
    (source / "pkg" / "__pycache__" / "mod.cpython-312.pyc").write_bytes(b"\0")
    (source / "stray.pyc").write_bytes(b"\0")
    app = cdk.App(outdir=str(tmp_path / "out"))
    code_asset(cdk.Stack(app, "S"), "Code", source)
    app.synth()
    (asset,) = [d for d in (tmp_path / "out").glob("asset.*") if d.is_dir()]
    assert sorted(p.relative_to(asset).as_posix() for p in asset.rglob("*")) == ["pkg", "pkg/mod.py"]


def test_installer_script_renders_both_units_cfn_init_runs(default_synth):
    """The installer cfn-init runs is the one in the repo, and it writes both services' units."""
    from tests.infra.test_installer import INSTALL

    script = INSTALL.read_text()
    for unit in ("worker-pool", "pr-processor"):
        assert f"service_unit {unit} " in script
    assert "ec2_services.worker_pool" in script and "ec2_services.pr_processor" in script


def test_callbacks_are_accepted_only_from_the_function_url_origin(default_synth):
    origins = install_env(default_synth)["AIPM_CALLBACK_ORIGINS"]
    url = next(iter(default_synth.of_type("AWS::Lambda::Url")))
    assert origins == {"Fn::Join": ["", ["https://", {"Fn::Select": [2, {"Fn::Split": [
        "/", {"Fn::GetAtt": [url, "FunctionUrl"]}]}]}]]}


def test_cfn_hup_applies_code_updates_in_place(default_synth):
    files = init_config(default_synth)["files"]
    hook = as_text(files["/etc/cfn/hooks.d/aipm-reloader.conf"]["content"])
    assert f"path=Resources.{INSTANCE_LOGICAL_ID}.Metadata.AWS::CloudFormation::Init" in hook
    assert "cfn-init -v" in hook
    assert "20-enable-cfn-hup" in init_config(default_synth)["commands"]


def test_security_group_opens_only_8082_to_anywhere_by_default(default_synth):
    sg = default_synth.one("AWS::EC2::SecurityGroup")["Properties"]
    ingress = [(r["CidrIp"], r["FromPort"], r["ToPort"]) for r in sg["SecurityGroupIngress"]]
    assert ingress == [("0.0.0.0/0", 8082, 8082)]
    assert not default_synth.of_type("AWS::EC2::SecurityGroupIngress")


def test_host_role_reads_its_secrets_writes_its_logs_and_uses_ssm(default_synth):
    role = default_synth.resources[role_id(default_synth, "HostRole")]["Properties"]
    assert any("AmazonSSMManagedInstanceCore" in as_text(arn) for arn in role["ManagedPolicyArns"])
    policy = policy_of_role(default_synth, "HostRole")
    assert secret_reads(default_synth, "HostRole") == secret_refs(default_synth, "GitHub", "SIGNING")
    log_writes = sorted(json.dumps(r) for s in policy if "logs:PutLogEvents" in as_list(s["Action"])
                        for r in as_list(s["Resource"]))
    assert log_writes == sorted(json.dumps({"Fn::GetAtt": [k, "Arn"]}) for k in default_synth.of_type(
        "AWS::Logs::LogGroup") if k.startswith(("HostWorkerPoolLogs", "HostPrProcessorLogs")))
    # Only the EC2 reads that have no resource-level permissions (the data volume's take-over) are on "*".
    assert [sorted(s["Action"]) for s in policy if s["Resource"] == "*"] == [["ec2:DescribeInstances",
                                                                              "ec2:DescribeVolumes"]]


def test_the_lambda_pins_the_certificate_the_host_publishes(default_synth):
    """8082 over TLS (issue 17): the host writes its certificate's SHA-256 to a parameter only the Lambda reads."""
    (param_id, param), = default_synth.of_type("AWS::SSM::Parameter").items()
    assert param["Properties"]["Type"] == "String"
    assert lambda_env(default_synth)["PR_PROCESSOR_CERT_PARAMETER"] == {"Ref": param_id}
    assert install_env(default_synth)["AIPM_TLS_CERT_PARAMETER"] == {"Ref": param_id}

    def actions_on_param(role_prefix: str) -> set[str]:
        return {a for s in policy_of_role(default_synth, role_prefix) if param_id in json.dumps(s["Resource"])
                for a in as_list(s["Action"])}

    assert {"ssm:GetParameter"} <= actions_on_param("ApiRole") and "ssm:PutParameter" not in actions_on_param("ApiRole")
    assert "ssm:PutParameter" in actions_on_param("HostRole")


def test_host_has_an_elastic_ip(default_synth):
    default_synth.assertions.resource_count_is("AWS::EC2::EIP", 1)
    assoc = default_synth.one("AWS::EC2::EIPAssociation")["Properties"]
    assert assoc["InstanceId"] == {"Ref": INSTANCE_LOGICAL_ID}


# --- Website and sign-in ----------------------------------------------------------------------------------------------

def test_website_bucket_is_private_behind_cloudfront_with_oac(default_synth):
    default_synth.assertions.has_resource_properties("AWS::S3::Bucket", {
        "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                           "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
        "LoggingConfiguration": Match.any_value(),
    })
    dist = default_synth.one("AWS::CloudFront::Distribution")["Properties"]["DistributionConfig"]
    assert dist["DefaultRootObject"] == "index.html"
    assert dist["DefaultCacheBehavior"]["ViewerProtocolPolicy"] == "redirect-to-https"
    assert dist["Origins"][0]["OriginAccessControlId"]
    default_synth.assertions.resource_count_is("AWS::CloudFront::OriginAccessControl", 1)


def test_deployment_publishes_frontend_and_a_config_json_with_the_api_url(default_synth):
    deployment = default_synth.one("Custom::CDKBucketDeployment")["Properties"]
    assert len(deployment["SourceObjectKeys"]) == 2, "frontend/ and config.json"
    assert deployment["DistributionPaths"] == ["/*"]
    url = next(iter(default_synth.of_type("AWS::Lambda::Url")))
    config = config_json(default_synth)
    assert config["apiUrl"].startswith("https://") and url in config["apiUrl"], "apiUrl is the Function URL's origin"
    assert set(config) == {"apiUrl", "authMode", "cognito"}
    assert config["authMode"] == "cognito"
    assert set(config["cognito"]) == {"domain", "clientId", "userPoolId", "region", "redirectUri", "scopes"}


def test_cognito_admin_only_pool_with_pkce_public_client_and_site_callback(default_synth):
    [(pool_id, pool)] = default_synth.of_type("AWS::Cognito::UserPool").items()
    pool = pool["Properties"]
    assert pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    policy = pool["Policies"]["PasswordPolicy"]
    assert policy["MinimumLength"] >= 12 and all(policy[k] for k in (
        "RequireLowercase", "RequireUppercase", "RequireNumbers", "RequireSymbols"))
    assert pool["MfaConfiguration"] == "OPTIONAL" and pool["EnabledMfas"] == ["SOFTWARE_TOKEN_MFA"]
    [(client_id, client)] = default_synth.of_type("AWS::Cognito::UserPoolClient").items()
    client = client["Properties"]
    assert client["UserPoolId"] == {"Ref": pool_id}
    # A public client (no secret: a browser cannot keep one) that may only use the authorization-code flow, which the
    # page runs with PKCE (S256); no implicit flow, no client credentials.
    assert client["GenerateSecret"] is False
    assert client["AllowedOAuthFlows"] == ["code"]
    assert client["AllowedOAuthFlowsUserPoolClient"] is True
    assert set(client["AllowedOAuthScopes"]) == {"openid", "email", "profile"}
    assert client["SupportedIdentityProviders"] == ["COGNITO"]
    assert client["EnableTokenRevocation"] is True and client["PreventUserExistenceErrors"] == "ENABLED"
    site = '{"Fn::GetAtt": ["WebsiteCdn'
    for key in ("CallbackURLs", "LogoutURLs"):
        urls = [as_text(u) for u in client[key]]
        assert urls and all(u.startswith("https://" + site) for u in urls), key
        assert any(u.endswith("/") for u in urls), f"{key}: the site's own page (the UI redirects to itself)"
    [(domain_id, domain)] = default_synth.of_type("AWS::Cognito::UserPoolDomain").items()
    assert domain["Properties"]["UserPoolId"] == {"Ref": pool_id} and domain["Properties"]["Domain"]


def test_the_pool_client_and_domain_reach_the_lambda_and_config_json(default_synth):
    pool_id = next(iter(default_synth.of_type("AWS::Cognito::UserPool")))
    client_id = next(iter(default_synth.of_type("AWS::Cognito::UserPoolClient")))
    domain_id = next(iter(default_synth.of_type("AWS::Cognito::UserPoolDomain")))
    env = lambda_env(default_synth)
    assert env["AIPM_AUTH"] == "cognito"
    assert env["COGNITO_USER_POOL_ID"] == {"Ref": pool_id} and env["COGNITO_CLIENT_ID"] == {"Ref": client_id}
    assert env["COGNITO_REGION"] == {"Ref": "AWS::Region"}
    assert domain_id in as_text(env["COGNITO_DOMAIN"]) and as_text(env["COGNITO_DOMAIN"]).startswith("https://")
    assert env["AIPM_ALLOWED_GROUPS"] == "", "no group restriction unless allowedGroups is given"
    config = config_json(default_synth)["cognito"]
    assert pool_id in config["userPoolId"] and client_id in config["clientId"]
    assert config["domain"].startswith("https://") and domain_id in config["domain"]
    assert config["scopes"] == ["openid", "email", "profile"]
    outputs = default_synth.template["Outputs"]
    assert "admin-create-user" in as_text(outputs["CreateUserCommand"]["Value"])


# --- Secrets, monitoring, outputs -----------------------------------------------------------------------------------

def test_secrets_are_generated_never_written_in_the_template(default_synth):
    secrets = default_synth.of_type("AWS::SecretsManager::Secret")
    assert len(secrets) == 3  # the GitHub token (a placeholder to fill), the signing secret, the webhook's secret
    for secret in secrets.values():
        assert "SecretString" not in secret["Properties"]
        assert secret["Properties"]["GenerateSecretString"]["ExcludePunctuation"] is True


def test_dashboard_shows_job_queue_worker_and_lambda_metrics(default_synth):
    body = as_text(default_synth.one("AWS::CloudWatch::Dashboard")["Properties"]["DashboardBody"])
    for metric in ("JobsStarted", "JobsSucceeded", "JobsFailed", "JobDuration", "QueueDepth", "WorkerRestarts",
                   "Errors", "Duration", "StatusCheckFailed"):
        assert f'"{metric}"' in body, metric
    assert '"AIPM"' in body and '"pr-processor"' in body and '"worker-pool"' in body


def test_alarms_on_failed_jobs_restarts_lambda_errors_and_status_checks(default_synth):
    alarms = {}
    for alarm in default_synth.of_type("AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        # A labelled metric is rendered as a one-metric "Metrics" list instead of MetricName/Namespace.
        metric = props["Metrics"][0]["MetricStat"]["Metric"] if "Metrics" in props else props
        alarms[metric["MetricName"]] = (metric, props)
    assert set(alarms) == {"JobsFailed", "WorkerRestarts", "Errors", "StatusCheckFailed"}
    assert alarms["JobsFailed"][0]["Namespace"] == "AIPM"
    assert alarms["JobsFailed"][0]["Dimensions"] == [{"Name": "Service", "Value": "pr-processor"}]
    assert alarms["WorkerRestarts"][0]["Dimensions"] == [{"Name": "Service", "Value": "worker-pool"}]
    assert all(props["AlarmActions"] for _, props in alarms.values())


def test_outputs_name_the_urls_the_host_and_the_secret_commands(default_synth):
    outputs = default_synth.template["Outputs"]
    for name in ("WebsiteUrl", "ApiUrl", "HostAddress", "HostInstanceId", "GithubTokenSecretArn",
                 "PutGithubTokenCommand", "KiroLogin", "CreateUserCommand"):
        assert name in outputs, name
    assert "aws secretsmanager put-secret-value --secret-id" in outputs["GithubTokenSecretArn"]["Description"]
    assert as_text(outputs["PutGithubTokenCommand"]["Value"]).startswith(
        "aws secretsmanager put-secret-value --secret-id ")
    assert "kiro-cli login --use-device-flow" in as_text(outputs["KiroLogin"]["Value"])


# --- cdk-nag ----------------------------------------------------------------------------------------------------------

def test_cdk_nag_reports_nothing_unacknowledged(default_synth):
    (report,) = [r for r in default_synth.report["pluginReports"] if r["pluginName"] == "AwsSolutions"]
    assert report["pluginName"] == "AwsSolutions"
    assert report["conclusion"] == "success"
    assert report["violations"] == []


def test_every_acknowledged_nag_finding_has_a_reason(default_synth):
    (report,) = [r for r in default_synth.report["pluginReports"] if r["pluginName"] == "AwsSolutions"]
    suppressed = report["suppressedViolations"]
    assert suppressed, "the report lists what was acknowledged"
    for item in suppressed:
        assert len(item["reason"]) > 40, item["ruleName"]
