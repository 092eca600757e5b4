"""Context values are read once and checked: defaults as docs/contracts.md gives them, bad values named with their key."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

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
    ("kiroDriver", "tmux", "kiroDriver: 'tmux' must be one of acp, headless, pty"),
    ("kiroVersion", "latest", "kiroVersion: 'latest' is not a kiro-cli version like 2.19.1"),
])
def test_bad_values_name_their_key(key, value, message):
    if message is None:  # a bare address is a /32, which is valid
        assert config(**{key: value}).admin_cidr == value + "/32"
        return
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("*", r"\*")):
        config(**{key: value})


def test_the_host_runs_kiro_over_acp_pinned_to_the_newest_captured_version():
    cfg = config()
    assert (cfg.kiro_driver, cfg.kiro_version) == ("acp", "2.19.1")
    assert (ROOT / "tests/fixtures/kiro-acp/kas-content-chunk-2.19.1.jsonl").exists(), "the pin has a capture"
    assert "$KIRO_VERSION" in cfg.kiro_install_command, "the default install command downloads the pinned version"
    assert (config(kiroDriver="PTY").kiro_driver, config(kiroVersion="2.18.1").kiro_version) == ("pty", "2.18.1")


@pytest.mark.parametrize(("values", "message"), [
    ({"agent": "gpt"}, "agent: 'gpt' must be one of kiro, claude-code, gemini"),
    ({"agent": "gemini", "kiroDriver": "pty"}, "kiroDriver: agent=gemini speaks ACP only"),
    ({"agent": "gemini", "anthropicApiKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:a-AbCdEf"},
     "anthropicApiKeySecretArn: only agent=claude-code uses it"),
    ({"agent": "claude-code", "geminiApiKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:a-AbCdEf"},
     "geminiApiKeySecretArn: only agent=gemini uses it"),
    ({"agent": "gemini", "geminiApiKeySecretArn": "key"}, "geminiApiKeySecretArn: 'key' is not"),
    ({"agent": "claude-code", "kiroDriver": "headless"}, "kiroDriver: agent=claude-code speaks ACP only"),
    ({"anthropicApiKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:a-AbCdEf"},
     "anthropicApiKeySecretArn: only agent=claude-code uses it"),
    ({"agent": "claude-code", "anthropicApiKeySecretArn": "key"}, "anthropicApiKeySecretArn: 'key' is not"),
])
def test_bad_agent_values_name_their_key(values, message):
    with pytest.raises(ConfigError, match=message):
        config(**values)


def test_the_agent_defaults_to_kiro():
    assert (config().agent, config(agent="Claude-Code").agent) == ("kiro", "claude-code")


def test_the_pty_driver_cannot_be_pinned_to_kiro_3():
    with pytest.raises(ConfigError, match="kiroDriver: pty cannot read kiro-cli 3.0.2"):
        config(kiroDriver="pty", kiroVersion="3.0.2")
    assert config(kiroDriver="acp", kiroVersion="3.0.2").kiro_version == "3.0.2"


def test_every_cloudwatch_retention_is_accepted_by_the_stack():
    from infra.stack import retention_days

    for days in LOG_RETENTION_DAYS:
        assert config(logRetentionDays=str(days)).log_retention_days == days
        assert retention_days(days).name


# --- dispatch (issue 11) --------------------------------------------------------------------------------------------

def test_dispatch_defaults_to_http_and_sqs_sizes_default_to_one_to_four_hosts_of_pool_size_jobs():
    cfg = config()
    assert (cfg.dispatch, cfg.uses_queue) == ("http", False)
    assert (cfg.min_hosts, cfg.max_hosts, cfg.backlog_per_host) == (1, 4, None)
    assert cfg.jobs_per_host == cfg.pool_size == 2, "a host is full when all its workers are busy"
    for key in ("dispatch", "minHosts", "maxHosts", "backlogPerHost"):
        assert key in CDK_CONTEXT, key


def test_sqs_knobs_are_read_from_command_line_strings():
    cfg = config(dispatch="sqs", minHosts="2", maxHosts="8", backlogPerHost="3", poolSize="4")
    assert (cfg.uses_queue, cfg.min_hosts, cfg.max_hosts, cfg.jobs_per_host) == (True, 2, 8, 3)
    assert config(dispatch="sqs", poolSize="4").jobs_per_host == 4


@pytest.mark.parametrize(("values", "message"), [
    ({"dispatch": "kafka"}, "dispatch: 'kafka' must be one of http, sqs"),
    ({"dispatch": "SQS"}, "dispatch: 'SQS' must be one of http, sqs"),
    ({"minHosts": "0"}, "minHosts: 0 must be between 1 and 100"),
    ({"minHosts": "3", "maxHosts": "2"}, r"maxHosts: 2 must be between minHosts \(3\) and 100"),
    ({"maxHosts": "400"}, "maxHosts: 400 must be between"),
    ({"maxHosts": "five"}, "maxHosts: 'five' is not a whole number"),
    ({"backlogPerHost": "0"}, "backlogPerHost: 0 must be between 1 and 1000"),
])
def test_bad_dispatch_values_name_their_key(values, message):
    with pytest.raises(ConfigError, match=message):
        config(**values)


def test_cdk_synth_with_an_unknown_dispatch_stops_with_the_key_and_the_choices(tmp_path):
    """What `cdk synth -c dispatch=kafka` shows: app.py exits before any synthesis, naming the key."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py")], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "CDK_CONTEXT_JSON": json.dumps({**CDK_CONTEXT, "dispatch": "kafka"}),
             "CDK_OUTDIR": str(tmp_path), "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"},
    )
    assert result.returncode == 1
    assert "cdk.json / -c context: dispatch: 'kafka' must be one of http, sqs" in result.stderr
    assert not list(tmp_path.glob("*.template.json"))


@pytest.mark.parametrize("field, key", [("kiro_version", "kiroVersion"), ("stack_name", "stackName"),
                                        ("ami_id", "amiId")])
def test_a_value_with_a_newline_at_its_end_is_refused_though_its_pattern_ends_in_a_dollar(field, key):
    good = config(amiId="ami-0123456789abcdef0")
    good.validate()
    bad = dataclasses.replace(good, **{field: getattr(good, field) + "\n"})
    with pytest.raises(ConfigError, match=key):
        bad.validate()


def test_digits_are_ascii_digits():
    # Python's \d also takes digits of other scripts: "２.19.1" would have passed as a version to pin.
    with pytest.raises(ConfigError, match="kiroVersion"):
        config(kiroVersion="\uff12.19.1").validate()
    with pytest.raises(ConfigError, match="githubTokenSecretArn"):
        config(githubTokenSecretArn="arn:aws:secretsmanager:us-east-1:\u0661" + "1" * 11 + ":secret:gh").validate()
