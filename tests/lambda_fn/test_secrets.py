"""Secrets Manager as the Lambda reads it: one signed HTTPS call per secret, signed exactly as botocore signs it, every
secret of a cold start read in parallel and at most once per container; and the deployed configuration (Cognito,
secrets by ARN) starts without importing boto3, httpx or PyJWT."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from aipm_common.settings import SettingsError
from lambda_fn import secrets
from tests.support.servers import ROOT

REGION = "eu-west-1"
ARN = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:aipm/shared-AbCdEf"


@pytest.mark.parametrize("token", [None, "session-token-xyz"])
def test_the_signature_is_the_one_botocore_computes(monkeypatch, token):
    now = datetime.datetime(2026, 12, 6, 19, 30, 5, tzinfo=datetime.UTC)
    body = json.dumps({"SecretId": ARN}).encode()
    url = f"https://secretsmanager.{REGION}.amazonaws.com/"
    ours = secrets.sigv4_headers(url=url, host=f"secretsmanager.{REGION}.amazonaws.com", region=REGION,
                                 target="secretsmanager.GetSecretValue", body=body, access_key="AKIDEXAMPLE",
                                 secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", session_token=token, now=now)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: now.replace(tzinfo=None))
    theirs = AWSRequest(method="POST", url=url, data=body, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "secretsmanager.GetSecretValue"})
    SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token), "secretsmanager",
              REGION).add_auth(theirs)
    assert ours["authorization"] == theirs.headers["Authorization"]
    assert ours["x-amz-date"] == theirs.headers["X-Amz-Date"]


class _SecretsManager:
    """A Secrets Manager double on loopback that answers GetSecretValue only once ``together`` calls are in flight
    (so calls made one after the other fail), and counts the calls."""

    def __init__(self, values: dict[str, str], *, together: int):
        self.values = values
        self.calls: list[str] = []
        self.barrier = threading.Barrier(together, timeout=20)
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                double.calls.append(body["SecretId"])
                assert self.headers["X-Amz-Target"] == "secretsmanager.GetSecretValue"
                assert self.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
                try:
                    double.barrier.wait()
                    if body["SecretId"] in double.values:
                        status, answer = 200, {"ARN": body["SecretId"], "SecretString": double.values[body["SecretId"]]}
                    else:
                        status, answer = 400, {"__type": "ResourceNotFoundException",
                                               "message": "Secrets Manager can't find the specified secret."}
                except threading.BrokenBarrierError:
                    status, answer = 400, {"__type": "InvalidRequestException", "message": "calls not in parallel"}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def env(monkeypatch):
    secrets.forget_cached()
    values = {"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_REGION": REGION}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    yield monkeypatch
    secrets.forget_cached()


def test_a_cold_start_reads_its_secrets_in_parallel_and_each_once_per_container(env):
    arns = {f"{name}_ARN": f"arn:aws:secretsmanager:{REGION}:123456789012:secret:{name.lower()}-AbCdEf"
            for name in ("AIPM_SHARED_SECRET", "GITHUB_TOKEN")}
    double = _SecretsManager({arns["AIPM_SHARED_SECRET_ARN"]: "shared-secret-value-1234",
                              arns["GITHUB_TOKEN_ARN"]: json.dumps({"token": "ghp_from_secrets_manager"})}, together=2)
    env.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", double.url)
    try:
        values = secrets.read_secrets({"AIPM_SHARED_SECRET_ARN": arns["AIPM_SHARED_SECRET_ARN"],
                                       "GITHUB_TOKEN_SECRET_ARN": arns["GITHUB_TOKEN_ARN"]})
        assert values == {"AIPM_SHARED_SECRET_ARN": "shared-secret-value-1234",
                          "GITHUB_TOKEN_SECRET_ARN": "ghp_from_secrets_manager"}
        # Asked again (the runtime's own reads after the parallel one): answered from memory.
        assert secrets.read_secret(arns["GITHUB_TOKEN_ARN"], "GITHUB_TOKEN_SECRET_ARN") == "ghp_from_secrets_manager"
        assert sorted(double.calls) == sorted(arns.values())
    finally:
        double.close()


def test_an_error_from_secrets_manager_stops_the_start_naming_the_variable_and_the_error(env):
    double = _SecretsManager({}, together=1)
    env.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", double.url)
    try:
        with pytest.raises(SettingsError, match=r"GITHUB_TOKEN_SECRET_ARN: could not read the secret "
                                                r"\(RuntimeError: ResourceNotFoundException: Secrets Manager can't"):
            secrets.read_secret(ARN, "GITHUB_TOKEN_SECRET_ARN")
    finally:
        double.close()


def test_the_deployed_configuration_starts_without_boto3_httpx_or_pyjwt(env):
    """AIPM_AUTH=cognito with every secret by ARN, as infra/ deploys it: the cold start reads the secrets and builds
    the app, and none of the heavy clients is imported until a request needs it."""
    arns = {name: f"arn:aws:secretsmanager:{REGION}:123456789012:secret:{name.lower()}-AbCdEf"
            for name in ("AIPM_SHARED_SECRET_ARN", "GITHUB_TOKEN_SECRET_ARN")}
    double = _SecretsManager({arns["AIPM_SHARED_SECRET_ARN"]: "shared-secret-value-1234",
                              arns["GITHUB_TOKEN_SECRET_ARN"]: "ghp_from_secrets_manager"}, together=2)
    clean = {k: v for k, v in __import__("os").environ.items()
             if not k.startswith(("AIPM_", "GITHUB_", "PR_PROCESSOR", "PUBLIC_API", "COGNITO_"))}
    variables = {**clean, **arns, "AWS_ENDPOINT_URL_SECRETS_MANAGER": double.url, "AIPM_AUTH": "cognito",
                 "COGNITO_USER_POOL_ID": f"{REGION}_AbC123", "COGNITO_CLIENT_ID": "a1b2c3d4e5f6g7h8i9j0k1l2m3",
                 "PR_PROCESSOR_URL": "http://127.0.0.1:9", "ALLOWED_ORIGINS": "https://ui.example"}
    code = ("import sys, lambda_fn.handler; "
            "print(sorted(m for m in ('boto3', 'botocore', 'httpx', 'jwt', 'cryptography') if m in sys.modules))")
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=variables, capture_output=True, text=True,
                              timeout=120)
    finally:
        double.close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert sorted(double.calls) == sorted(arns.values())
