"""Fixtures for the Lambda API: a GitHub double and a PR processor stand-in on loopback, and the API itself —
called through the real Mangum handler with Lambda Function URL (payload v2) events, or served by uvicorn.
"""

from __future__ import annotations

import base64
import contextlib
import json as jsonlib
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from aipm_common.settings import load_settings
from aipm_common.signing import LAMBDA_API, SIGNATURE_HEADER, TIMESTAMP_HEADER, receiver_key, signature
from lambda_fn.app import build_handler
from lambda_fn.settings import LambdaSettings
from tests.conftest import SECRET
from tests.lambda_fn.fake_processor import FakeProcessor
from tests.lambda_fn.github_double import GitHubDouble
from tests.support.servers import free_port, serve_in_thread
from tests.support.sqs import _moto_sqs, job_queue  # noqa: F401 - fixtures (AIPM_DISPATCH=sqs)

UI_TOKEN = "ui-token-for-tests-0123456789"
FUNCTION_DOMAIN = "abcdefghijklmnop.lambda-url.us-east-1.on.aws"
REPO = "Octo/Hello-World"
UI_ORIGIN = "https://ui.example"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """The API reads only what each test gives it, whatever the outer environment holds."""
    import os

    for name in list(os.environ):
        if name.startswith(("AIPM_", "GITHUB_", "PR_PROCESSOR", "PUBLIC_API", "ALLOWED_ORIGINS", "COGNITO_", "AWS_")):
            monkeypatch.delenv(name)


class LambdaContext:
    """What Lambda passes as ``context``: the deadline is what matters to the API."""

    function_name = "aipm-api"
    memory_limit_in_mb = 512

    def __init__(self, remaining_ms: int = 30_000):
        self._deadline = time.monotonic() + remaining_ms / 1000
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def function_url_event(method: str, path: str, *, body: bytes | None = None, headers: dict | None = None,
                       query: str = "", source_ip: str = "203.0.113.9") -> dict:
    """A Lambda Function URL request (payload format 2.0), as AWS sends it."""
    text_body, is_b64 = None, False
    if body is not None:
        try:
            text_body = body.decode("utf-8")
        except UnicodeDecodeError:
            text_body, is_b64 = base64.b64encode(body).decode(), True
    now = time.time()
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
        "headers": {"host": FUNCTION_DOMAIN, "x-forwarded-proto": "https", "x-forwarded-port": "443",
                    **{k.lower(): v for k, v in (headers or {}).items()}},
        "requestContext": {
            "accountId": "anonymous", "apiId": FUNCTION_DOMAIN.split(".")[0], "domainName": FUNCTION_DOMAIN,
            "domainPrefix": FUNCTION_DOMAIN.split(".")[0], "requestId": str(uuid.uuid4()), "routeKey": "$default",
            "stage": "$default", "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                     "userAgent": "pytest"},
        },
        **({"body": text_body, "isBase64Encoded": is_b64} if text_body is not None else {"isBase64Encoded": False}),
    }


@dataclass
class Resp:
    status_code: int
    headers: dict[str, str]
    text: str

    def json(self):
        return jsonlib.loads(self.text)


class Api:
    """The API under test: ``call`` goes through the Mangum handler; ``serve`` runs the same app under uvicorn."""

    def __init__(self, handler, settings: LambdaSettings):
        self.handler = handler
        self.app = handler.app
        self.settings = settings
        self.runtime = handler.app.state.runtime

    def call(self, method: str, path: str, *, json=None, body: bytes | None = None, headers: dict | None = None,
             token: str | None = UI_TOKEN, query: str = "", remaining_ms: int = 30_000) -> Resp:
        headers = dict(headers or {})
        if json is not None:
            body = jsonlib.dumps(json).encode()
            headers.setdefault("content-type", "application/json")
        if token:
            headers.setdefault("authorization", f"Bearer {token}")
        event = function_url_event(method, path, body=body, headers=headers, query=query)
        out = self.handler(event, LambdaContext(remaining_ms))
        text = out.get("body", "")
        if out.get("isBase64Encoded"):
            text = base64.b64decode(text).decode("utf-8", "replace")
        return Resp(out["statusCode"], {k.lower(): v for k, v in (out.get("headers") or {}).items()}, text)

    def generate(self, **fields) -> Resp:
        body = {"repo": REPO, "title": "Add a greeting", "description": "Say hello.",
                "acceptance_criteria": ["greet('Ann') == 'Hello, Ann!'"], "base_branch": None, "story_id": None}
        headers = fields.pop("headers", None)
        body.update(fields)
        return self.call("POST", "/api/generate-code", json=body, headers=headers)

    @contextlib.contextmanager
    def serve(self):
        with serve_in_thread(self.app) as url:
            yield url


def signed_headers(secret: str, method: str, target: str, body: bytes, receiver: str = LAMBDA_API) -> dict:
    ts = str(int(time.time()))
    return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: signature(receiver_key(secret, receiver), ts, method, target, body),
            "content-type": "application/json"}


def callback(api: Api, secret: str, payload: dict, receiver: str = LAMBDA_API) -> Resp:
    body = jsonlib.dumps(payload).encode()
    return api.call("POST", "/api/callbacks/job", body=body, token=None,
                    headers=signed_headers(secret, "POST", "/api/callbacks/job", body, receiver))


@pytest.fixture(scope="session")
def _github_server(tmp_path_factory):
    double = GitHubDouble(tmp_path_factory.mktemp("github"))
    with serve_in_thread(double.app) as url:
        double.url = url
        yield double
    GitHubDouble.drop_templates()


@pytest.fixture(scope="session")
def _processor_server():
    fake = FakeProcessor(SECRET)
    with serve_in_thread(fake.app) as url:
        fake.url = url
        yield fake


@pytest.fixture
def github(_github_server, tmp_path):
    """The GitHub double (one server for the session, emptied for each test) with the repository ``REPO``."""
    _github_server.reset(tmp_path / "github")
    _github_server.add_repo(REPO)
    return _github_server


@pytest.fixture
def processor(_processor_server, shared_secret):
    """The PR processor stand-in (one server for the session, emptied for each test); it checks our signature."""
    assert shared_secret == SECRET
    _processor_server.reset()
    return _processor_server


@pytest.fixture
def make_api(github, processor, tmp_path, shared_secret):
    def make(**overrides) -> Api:
        values = {
            "aipm_shared_secret": shared_secret, "github_api_url": github.url, "github_token": github.token,
            "pr_processor_url": processor.url, "aipm_auth": "token", "aipm_ui_token": UI_TOKEN,
            "aipm_state_dir": tmp_path / "state", "allowed_origins": UI_ORIGIN,
            "github_rate_limit_max_wait": 5, "aipm_deadline_margin": 1,
        }
        values.update(overrides)
        settings = load_settings(LambdaSettings, **{k: v for k, v in values.items() if v is not None})
        if settings.aipm_forge == "local":  # the local stack's app: the local forge and its pages (aipm_local.api)
            from mangum import Mangum

            from aipm_local.api import create_local_app

            return Api(Mangum(create_local_app(settings), lifespan="off"), settings)
        return Api(build_handler(settings), settings)

    return make


@pytest.fixture
def api(make_api) -> Api:
    return make_api()


@pytest.fixture(scope="session")
def _example_forge(tmp_path_factory) -> Path:
    from aipm_local.forge.local import ensure_example_repo

    forge_dir = tmp_path_factory.mktemp("example-forge")
    ensure_example_repo(forge_dir)
    return forge_dir


@pytest.fixture
def local_api(make_api, tmp_path, _example_forge) -> Api:
    """The API on the local forge holding a fresh copy of the example repository."""
    import shutil

    forge_dir = tmp_path / "forge"
    shutil.copytree(_example_forge, forge_dir)
    return make_api(aipm_forge="local", aipm_local_forge_dir=forge_dir, public_api_url="http://127.0.0.1:8000")


def dead_url() -> str:
    """A loopback URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


__all__ = ["Api", "Path", "callback", "dead_url", "signed_headers"]
