"""Context knobs change the template as documented: an admin CIDR, existing secrets, the plain S3 website mode."""

from __future__ import annotations

import json

import pytest

from infra.host import INSTANCE_LOGICAL_ID
from tests.infra.conftest import (
    ADMIN_CIDR,
    ALLOWED_GROUPS,
    GEMINI_KEY_ARN,
    GITHUB_TOKEN_ARN,
    KIRO_KEY_ARN,
    ROOT,
    TEST_AMI,
)
from tests.infra.templates import (
    config_json,
    init_config,
    install_env,
    lambda_env,
    logical,
    policy_of_role,
    secret_reads,
)


def test_admin_cidr_opens_8081_to_that_address_only(admin_synth):
    sg = admin_synth.one("AWS::EC2::SecurityGroup")["Properties"]
    ingress = sorted((r["CidrIp"], r["FromPort"], r["ToPort"]) for r in sg["SecurityGroupIngress"])
    assert ingress == [("0.0.0.0/0", 8082, 8082), (ADMIN_CIDR, 8081, 8081)]


def test_admin_cidr_makes_the_pool_listen_on_all_interfaces(admin_synth):
    assert install_env(admin_synth)["AIPM_WORKER_POOL_HOST"] == "0.0.0.0"


def test_existing_github_token_is_used_not_created(admin_synth):
    secrets = admin_synth.of_type("AWS::SecretsManager::Secret")
    assert len(secrets) == 2, "only the shared secret and the webhook's are created"
    assert logical(admin_synth, "AWS::SecretsManager::Secret", "follow-up webhook")
    assert lambda_env(admin_synth)["GITHUB_TOKEN_SECRET_ARN"] == GITHUB_TOKEN_ARN
    assert install_env(admin_synth)["AIPM_GITHUB_TOKEN_SECRET_ARN"] == GITHUB_TOKEN_ARN


def test_kiro_api_key_secret_reaches_only_the_host(admin_synth):
    assert install_env(admin_synth)["AIPM_KIRO_API_KEY_SECRET_ARN"] == KIRO_KEY_ARN
    host_reads = json.dumps(policy_of_role(admin_synth, "HostRole"))
    api_reads = json.dumps(policy_of_role(admin_synth, "ApiRole"))
    assert KIRO_KEY_ARN in host_reads
    assert KIRO_KEY_ARN not in api_reads
    # A partial ARN (no 6-character suffix) is granted with Secrets Manager's suffix wildcard.
    assert GITHUB_TOKEN_ARN + "-??????" in host_reads and GITHUB_TOKEN_ARN + "-??????" in api_reads
    assert "KiroApiKeySecretArn" in admin_synth.template["Outputs"]


def test_allowed_groups_restrict_sign_in_through_the_lambda_environment(admin_synth):
    assert ALLOWED_GROUPS == "developers, release-managers"
    assert lambda_env(admin_synth)["AIPM_ALLOWED_GROUPS"] == "developers,release-managers"


def test_s3_website_mode_signs_in_with_a_token_and_skips_cognito(s3_website_synth):
    assert not s3_website_synth.of_type("AWS::Cognito::UserPool")
    assert not s3_website_synth.of_type("AWS::CloudFront::Distribution")
    env = lambda_env(s3_website_synth)
    assert env["AIPM_AUTH"] == "token"
    assert "AIPM_UI_TOKEN_SECRET_ARN" in env
    assert env["ALLOWED_ORIGINS"] == {"Fn::GetAtt": [_bucket(s3_website_synth), "WebsiteURL"]}
    assert config_json(s3_website_synth)["authMode"] == "token"
    assert "UiTokenCommand" in s3_website_synth.template["Outputs"]


def _bucket(synth) -> str:
    (name,) = [k for k, b in synth.of_type("AWS::S3::Bucket").items() if "WebsiteConfiguration" in b["Properties"]]
    return name


def test_s3_website_mode_serves_the_bucket_publicly(s3_website_synth):
    bucket = s3_website_synth.resources[_bucket(s3_website_synth)]["Properties"]
    assert bucket["WebsiteConfiguration"]["IndexDocument"] == "index.html"
    assert bucket["PublicAccessBlockConfiguration"]["BlockPublicPolicy"] is False


def test_every_variant_passes_cdk_nag(admin_synth, s3_website_synth):
    for synth in (admin_synth, s3_website_synth):
        (report,) = [r for r in synth.report["pluginReports"] if r["pluginName"] == "AwsSolutions"]
        assert report["violations"] == [] and report["conclusion"] == "success"
        assert all(item["reason"] for item in report["suppressedViolations"])


def test_instance_logical_id_is_stable_across_variants(admin_synth, s3_website_synth):
    for synth in (admin_synth, s3_website_synth):
        assert INSTANCE_LOGICAL_ID in synth.resources


def test_cdk_nag_fails_synthesis_on_a_finding_nobody_acknowledged(tmp_path):
    """The check is live: one more security group open to the world, without a reason, stops `cdk synth`."""
    import aws_cdk as cdk
    from aws_cdk import aws_ec2 as ec2

    from app import build
    from tests.infra.conftest import ROOT

    context = {**json.loads((ROOT / "cdk.json").read_text())["context"], "aws:cdk:bundling-stacks": [],
               "amiId": TEST_AMI}
    app = cdk.App(context=context, outdir=str(tmp_path))
    stack = build(app)
    wide = ec2.SecurityGroup(stack, "Wide", vpc=stack.node.find_child("Host").vpc, description="too wide")
    wide.add_ingress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(22))
    with pytest.raises(Exception, match="ValidationFailed: ERROR The Security Group allows for 0.0.0.0/0"):
        app.synth()
    reports = json.loads((tmp_path / "validation-report.json").read_text())["pluginReports"]
    (report,) = [r for r in reports if r["pluginName"] == "AwsSolutions"]
    flagged = {(v["ruleName"], c["constructPath"]) for v in report["violations"] for c in v["violatingConstructs"]}
    assert flagged == {("AwsSolutions-EC23", "AipmKiro/Wide/Resource")}


# --- agent (issue 16) -----------------------------------------------------------------------------------------------

def test_the_default_agent_is_kiro_without_a_model_key_secret(default_synth):
    env = install_env(default_synth)
    assert (env["AIPM_AGENT"], env["AIPM_AGENT_KEY_SECRET_ARN"]) == ("kiro", "")
    assert not [s for s in default_synth.of_type("AWS::SecretsManager::Secret").values()
                if "API_KEY" in s["Properties"]["Description"]]


def test_claude_code_agent_gets_its_key_from_a_secret_only_the_host_reads(claude_code_synth):
    env = install_env(claude_code_synth)
    secret = logical(claude_code_synth, "AWS::SecretsManager::Secret", "ANTHROPIC_API_KEY")
    assert env["AIPM_AGENT"] == "claude-code"
    assert env["AIPM_AGENT_KEY_SECRET_ARN"] == {"Ref": secret}
    assert "GenerateSecretString" in claude_code_synth.resources[secret]["Properties"], "no value in the template"
    assert json.dumps({"Ref": secret}) in secret_reads(claude_code_synth, "HostRole")
    assert json.dumps({"Ref": secret}) not in secret_reads(claude_code_synth, "ApiRole")
    assert "AnthropicApiKeySecretArn" in claude_code_synth.template["Outputs"]
    files = init_config(claude_code_synth)["files"]
    assert {"/opt/aipm/src/agents/package.json", "/opt/aipm/src/agents/package-lock.json"} <= set(files)


def test_gemini_agent_reads_an_existing_secret_only_the_host_reads(gemini_synth):
    """agent=gemini with geminiApiKeySecretArn: that secret is the one the host reads and the output names."""
    env = install_env(gemini_synth)
    assert (env["AIPM_AGENT"], env["AIPM_AGENT_KEY_SECRET_ARN"]) == ("gemini", GEMINI_KEY_ARN)
    assert not [s for s in gemini_synth.of_type("AWS::SecretsManager::Secret").values()
                if "API_KEY" in s["Properties"]["Description"]], "an existing secret: none created"
    assert json.dumps(GEMINI_KEY_ARN) in secret_reads(gemini_synth, "HostRole")
    assert GEMINI_KEY_ARN not in json.dumps(policy_of_role(gemini_synth, "ApiRole"))
    assert gemini_synth.template["Outputs"]["GeminiApiKeySecretArn"]["Value"] == GEMINI_KEY_ARN
    files = init_config(gemini_synth)["files"]
    assert "/opt/aipm/src/agents/gemini-settings.json" in files


# --- s3-website and S3 Block Public Access (issue 17) ---------------------------------------------------------------

def _warnings(synth) -> dict[str, str]:
    """The synth's warnings (rule → message), as `cdk synth` prints them (the Construct Annotations report)."""
    return {v["ruleName"]: v["description"] for r in synth.report["pluginReports"]
            if r["pluginName"] == "Construct Annotations" for v in r["violations"] if v["severity"] == "warning"}


def test_s3_website_mode_says_at_synth_that_it_needs_block_public_access_off(s3_website_synth, default_synth):
    note = _warnings(s3_website_synth)["Annotation::aipm:s3-website-block-public-access"]
    assert "S3 Block Public Access" in note and "BlockPublicPolicy=false" in note and "websiteMode=cloudfront" in note
    assert "Annotation::aipm:s3-website-block-public-access" not in _warnings(default_synth)
    assert "put-public-access-block" in (ROOT / "docs/deploy.md").read_text(), "documented for the operator"
