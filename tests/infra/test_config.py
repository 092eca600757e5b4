"""Context values are read once and checked: defaults as SPEC.md gives them, bad values named with their key."""

from __future__ import annotations

import json

import pytest

from infra.config import LOG_RETENTION_DAYS, AipmConfig, ConfigError
from tests.infra.conftest import ROOT

CDK_CONTEXT = json.loads((ROOT / "cdk.json").read_text())["context"]


def config(**values) -> AipmConfig:
    return AipmConfig.from_context({**CDK_CONTEXT, **values}.get)


def test_cdk_json_defaults_are_the_spec_defaults():
    cfg = config()
    assert (cfg.instance_type, cfg.pool_size, cfg.api_cidr, cfg.admin_cidr) == ("t3.medium", 2, "0.0.0.0/0", None)
    assert (cfg.allowed_repos, cfg.log_retention_days, cfg.website_mode) == ("", 30, "cloudfront")
    assert cfg.github_api_url == "https://api.github.com"
    assert cfg.github_token_secret_arn is None and cfg.kiro_api_key_secret_arn is None
    assert not cfg.worker_pool_open and cfg.uses_cognito


def test_cdk_json_names_every_knob_and_turns_telemetry_and_notices_off():
    data = json.loads((ROOT / "cdk.json").read_text())
    assert data["app"] == ".venv/bin/python app.py", "the venv make creates, whether or not it is activated"
    assert data["notices"] is False
    assert data["context"]["cli-telemetry"] is False
    for key in ("instanceType", "poolSize", "apiCidr", "adminCidr", "allowedRepos", "logRetentionDays",
                "githubApiUrl", "websiteMode", "githubTokenSecretArn", "kiroApiKeySecretArn", "kiroInstallCommand"):
        assert key in data["context"], key
    assert data["context"]["@aws-cdk/aws-lambda:recognizeLayerVersion"] is True, "current feature flags"


def test_command_line_strings_are_converted():
    cfg = config(poolSize="4", logRetentionDays="90", adminCidr="203.0.113.7/32")
    assert (cfg.pool_size, cfg.log_retention_days, cfg.admin_cidr) == (4, 90, "203.0.113.7/32")
    assert cfg.worker_pool_open


def test_an_empty_kiro_install_command_means_do_not_install():
    assert config(kiroInstallCommand="").kiro_install_command == ""


@pytest.mark.parametrize(("key", "value", "message"), [
    ("logRetentionDays", "31", "logRetentionDays: 31 is not a CloudWatch Logs retention"),
    ("poolSize", "0", "poolSize: 0 must be between 1 and 32"),
    ("poolSize", "two", "poolSize: 'two' is not a whole number"),
    ("adminCidr", "203.0.113.7", None),
    ("adminCidr", "203.0.113.7/24", "adminCidr"),
    ("apiCidr", "::/0", "must be an IPv4 CIDR"),
    ("websiteMode", "s3", "websiteMode: 's3' must be one of cloudfront, s3-website"),
    ("allowedRepos", "octo/repo, bad", "allowedRepos: 'bad' is not owner/name or owner/*"),
    ("githubApiUrl", "http://api.github.com", "githubApiUrl"),
    ("githubTokenSecretArn", "my-secret", "githubTokenSecretArn"),
    ("cognitoDomainPrefix", "aws-aipm", "cognitoDomainPrefix"),
    ("allowedGroups", "devs, bad group", "allowedGroups: 'bad group' is not a Cognito group name"),
])
def test_bad_values_name_their_key(key, value, message):
    if message is None:  # a bare address is a /32, which is valid
        assert config(**{key: value}).admin_cidr == value + "/32"
        return
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("*", r"\*")):
        config(**{key: value})


def test_every_cloudwatch_retention_is_accepted_by_the_stack():
    from infra.stack import retention_days

    for days in LOG_RETENTION_DAYS:
        assert config(logRetentionDays=str(days)).log_retention_days == days
        assert retention_days(days).name
