"""The real entry points: ``lambda_fn.handler`` imported cold with its secrets in Secrets Manager (moto in server mode
on loopback, reached by the signed HTTPS call the Lambda makes), refusing to start without a shared secret; and
``python -m aipm_local.api`` serving the API, the local forge and the UI (``python -m lambda_fn`` refuses the local
forge: it is the local stack's)."""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys

import boto3
import httpx
import pytest

from lambda_fn.secrets import forget_cached, read_secret
from tests.lambda_fn.conftest import REPO, UI_TOKEN, LambdaContext, function_url_event
from tests.support.servers import ROOT, free_port, wait_http
from tests.support.sqs import moto_sqs_server


@pytest.fixture(scope="module")
def _moto():
    with moto_sqs_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws(monkeypatch, _moto):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_SECRETS_MANAGER": _moto}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    forget_cached()  # a new container
    yield boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=_moto)
    forget_cached()


@pytest.fixture
def fresh_handler_module():
    """Import ``lambda_fn.handler`` as a cold start would; put logging back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    sys.modules.pop("lambda_fn.handler", None)
    yield lambda: importlib.import_module("lambda_fn.handler")
    sys.modules.pop("lambda_fn.handler", None)
    root.handlers[:] = handlers
    root.setLevel(level)


def test_cold_start_reads_secrets_from_secrets_manager_and_a_function_url_event_opens_a_pr(
        aws, monkeypatch, fresh_handler_module, github, processor, shared_secret):
    shared_arn = aws.create_secret(Name="aipm/shared", SecretString=shared_secret)["ARN"]
    token_arn = aws.create_secret(Name="aipm/github", SecretString=json.dumps({"token": github.token}))["ARN"]
    for name, value in {"AIPM_SHARED_SECRET_ARN": shared_arn, "GITHUB_TOKEN_SECRET_ARN": token_arn,
                        "GITHUB_API_URL": github.url, "PR_PROCESSOR_URL": processor.url, "AIPM_AUTH": "token",
                        "AIPM_UI_TOKEN": UI_TOKEN}.items():
        monkeypatch.setenv(name, value)
    module = fresh_handler_module()
    body = json.dumps({"repo": REPO, "title": "From a cold start", "story_id": "cold"}).encode()
    event = function_url_event("POST", "/api/generate-code", body=body,
                               headers={"content-type": "application/json", "authorization": f"Bearer {UI_TOKEN}"})
    out = module.handler(event, LambdaContext())
    assert out["statusCode"] == 202, out
    answer = json.loads(out["body"])
    assert answer["branch"] == "aipm/story-cold" and github.pulls(REPO)[0]["title"] == "From a cold start"
    assert list(processor.jobs) == [answer["job_id"]]  # signed with the secret read from Secrets Manager


def test_ui_token_from_secrets_manager_gates_the_user_facing_api(aws, monkeypatch, fresh_handler_module, shared_secret):
    # s3-website mode on AWS: AIPM_AUTH=token with the bearer token in a secret (infra/stack.py wires this).
    token_arn = aws.create_secret(Name="aipm/ui-token", SecretString="ui-token-from-secrets-manager-42")["ARN"]
    for name, value in {"AIPM_SHARED_SECRET": shared_secret, "AIPM_AUTH": "token",
                        "AIPM_UI_TOKEN_SECRET_ARN": token_arn, "GITHUB_TOKEN": "x"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AIPM_UI_TOKEN", raising=False)
    module = fresh_handler_module()

    def call(token: str) -> int:
        event = function_url_event("GET", "/api/jobs/j-000000000000000000000000",
                                   headers={"authorization": f"Bearer {token}"})
        return module.handler(event, LambdaContext())["statusCode"]

    assert call("wrong-token") == 401
    assert call("ui-token-from-secrets-manager-42") != 401
    from aipm_common.logging import redact

    assert "ui-token-from-secrets-manager-42" not in redact("x ui-token-from-secrets-manager-42")


def test_secret_values_are_redacted_from_logs_once_read(aws):
    arn = aws.create_secret(Name="x", SecretString="plain-secret-value-123")["ARN"]
    assert read_secret(arn, "AIPM_SHARED_SECRET_ARN") == "plain-secret-value-123"
    from aipm_common.logging import redact

    assert redact("leaked plain-secret-value-123 here") == "leaked *** here"


def test_unreadable_secret_stops_the_start_naming_the_variable(aws):
    from aipm_common.settings import SettingsError

    with pytest.raises(SettingsError, match="GITHUB_TOKEN_SECRET_ARN"):
        read_secret("arn:aws:secretsmanager:us-east-1:123456789012:secret:missing-AbCdEf", "GITHUB_TOKEN_SECRET_ARN")


def _import_handler(env: dict, argv: tuple[str, ...] = ("-c", "import lambda_fn.handler")) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in __import__("os").environ.items()
             if not k.startswith(("AIPM_", "GITHUB_", "PR_PROCESSOR", "PUBLIC_API", "AWS_"))}
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


def test_without_a_shared_secret_the_lambda_refuses_to_start():
    proc = _import_handler({})
    assert proc.returncode != 0
    assert "AIPM_SHARED_SECRET" in proc.stdout + proc.stderr
    local = _import_handler({"AIPM_API_PORT": str(free_port())}, ("-m", "lambda_fn"))
    assert local.returncode == 2 and "AIPM_SHARED_SECRET is not set" in local.stderr
    bad = _import_handler({"AIPM_INSECURE_DEV": "1", "AIPM_FORGE": "gitlab"}, ("-m", "lambda_fn"))
    assert bad.returncode == 2 and "AIPM_FORGE" in bad.stderr
    local = _import_handler({"AIPM_INSECURE_DEV": "1", "AIPM_FORGE": "local", "AIPM_API_PORT": str(free_port())},
                            ("-m", "lambda_fn"))
    assert local.returncode == 2 and "python -m aipm_local.api" in local.stderr, local.stderr


def test_insecure_dev_starts_without_a_secret_and_says_so():
    proc = _import_handler({"AIPM_INSECURE_DEV": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "WITHOUT AIPM_SHARED_SECRET" in proc.stdout


def test_python_m_aipm_local_api_serves_api_local_forge_and_ui(service_process, tmp_path, shared_secret):
    ui = tmp_path / "ui"
    ui.mkdir()
    (ui / "index.html").write_text("<!doctype html><title>AIPM</title><h1>AIPM UI</h1>")
    port = free_port()
    proc = service_process("aipm_local.api", {
        "AIPM_API_PORT": str(port), "AIPM_SHARED_SECRET": shared_secret, "AIPM_FORGE": "local", "AIPM_AUTH": "none",
        "AIPM_STATE_DIR": str(tmp_path / "state"), "AIPM_UI_DIR": str(ui),
        "PUBLIC_API_URL": f"http://127.0.0.1:{port}", "PR_PROCESSOR_URL": "http://127.0.0.1:1",
    })
    base = f"http://127.0.0.1:{port}"
    assert wait_http(f"{base}/health", proc=proc.proc).json()["forge"] == "local"
    assert "AIPM UI" in httpx.get(f"{base}/").text
    assert httpx.get(f"{base}/config.json").json() == {"apiUrl": ""}
    assert httpx.get(f"{base}/api/forge/repos").json() == {"repos": ["local/example"]}
    assert (tmp_path / "state" / "forge" / "local" / "example.git" / "HEAD").exists()
    assert httpx.get(f"{base}/api/jobs/j-000000000000000000000000").status_code == 502  # processor not running
    assert httpx.get(f"{base}/no-such-page").status_code == 404
    assert "AIPM_AUTH=none" in proc.output()


def test_ui_config_json_from_the_directory_wins(make_api, tmp_path):
    ui = tmp_path / "ui2"
    ui.mkdir()
    (ui / "index.html").write_text("<h1>x</h1>")
    (ui / "config.json").write_text('{"apiUrl": "https://api.example"}')
    api = make_api(aipm_ui_dir=ui)
    assert api.call("GET", "/config.json", token=None).json() == {"apiUrl": "https://api.example"}
    assert api.call("GET", "/health", token=None).status_code == 200  # API routes come before the static mount


def test_cold_import_and_health_leave_the_heavy_libraries_unloaded():
    """P5: httpx, PyJWT/cryptography, boto3, pydantic.v1 and pydantic-settings load on first use, not at cold start
    (Cognito sign-in configured, as deployed)."""
    code = ("import sys, lambda_fn.handler as h; "
            "r = h.handler({'version': '2.0', 'rawPath': '/health', 'rawQueryString': '', 'headers': {}, "
            "'requestContext': {'http': {'method': 'GET', 'path': '/health', 'sourceIp': '203.0.113.1'}}, "
            "'isBase64Encoded': False}, None); assert r['statusCode'] == 200, r; "
            "print(sorted(m for m in ('httpx', 'jwt', 'cryptography', 'boto3', 'botocore', 'pydantic.v1', "
            "'pydantic_settings') if m in sys.modules))")
    proc = _import_handler({"AIPM_SHARED_SECRET": "s" * 24, "AIPM_AUTH": "cognito", "GITHUB_TOKEN": "x",
                            "COGNITO_USER_POOL_ID": "us-east-1_AbC123", "COGNITO_CLIENT_ID": "a1b2c3"}, ("-c", code))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
