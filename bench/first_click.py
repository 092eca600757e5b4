"""P5's first click: a cold Lambda container's first ``POST /api/generate-code``, measured in a fresh interpreter
(import + the first event served, wall time), deployed configuration (Cognito ID token checked against the pool's
JWKS, the shared secret and GitHub token read by ARN), against the GitHub double, the PR processor stand-in, a Cognito
double and a Secrets Manager stand-in, all on loopback.

Each run opens a new story's pull request (the full path: 7 GitHub calls, 6 in sequence). The GitHub double
counts the calls and their sequential depth (``GitHubDouble.round_trips``). Loopback answers in about a millisecond,
where api.github.com takes tens: a second pass holds every GitHub answer ``P5_GITHUB_RTT_MS`` (default 50) to show
what the depth costs there.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from tests.lambda_fn.cognito_double import CLIENT_ID, POOL_ID, CognitoDouble
from tests.lambda_fn.conftest import function_url_event
from tests.lambda_fn.fake_processor import FakeProcessor
from tests.lambda_fn.github_double import GitHubDouble
from tests.support.servers import serve_in_thread

RUNS = int(os.environ.get("P5_CLICK_RUNS", "7"))
RTT_MS = float(os.environ.get("P5_GITHUB_RTT_MS", "50"))
REPO = "octo/app"
SHARED = "bench-secret-0123456789-first-click"
_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:"
SHARED_ARN, TOKEN_ARN = f"{_ARN}aipm/shared-AbCdEf", f"{_ARN}aipm/github-token-AbCdEf"

_CHILD = """
import json, sys, time
sys.path.insert(0, {bundle!r})
event = json.loads(sys.stdin.read())
t0, c0 = time.perf_counter(), time.process_time()
import lambda_fn.handler as h
t1 = time.perf_counter()
class Context:
    function_name, memory_limit_in_mb, aws_request_id = "aipm-api", 512, "bench"
    def get_remaining_time_in_millis(self):
        return 30_000
out = h.handler(event, Context())
t2, c2 = time.perf_counter(), time.process_time()
assert out["statusCode"] == 202, out
print(json.dumps([(t1 - t0) * 1000, (t2 - t1) * 1000, (t2 - t0) * 1000, (c2 - c0) * 1000]))
"""


def _env(secrets_url: str, github: GitHubDouble, processor_url: str, cognito: CognitoDouble) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("AIPM_", "GITHUB_", "PR_PROCESSOR", "PUBLIC_API", "ALLOWED_ORIGINS", "PYTHON",
                                 "AWS_", "COGNITO_"))}
    return {**base, "AIPM_AUTH": "cognito", "COGNITO_USER_POOL_ID": POOL_ID, "COGNITO_CLIENT_ID": CLIENT_ID,
            "COGNITO_JWKS_URL": cognito.url + "/.well-known/jwks.json", "AIPM_SHARED_SECRET_ARN": SHARED_ARN,
            "GITHUB_TOKEN_SECRET_ARN": TOKEN_ARN, "GITHUB_API_URL": github.url, "PR_PROCESSOR_URL": processor_url,
            "ALLOWED_ORIGINS": "https://ui.example", "AWS_ACCESS_KEY_ID": "AKIDBENCH", "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_SESSION_TOKEN": "bench-session", "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": secrets_url}


def _click(bundle: Path, env: dict[str, str], token: str, story: str) -> list[float]:
    body = json.dumps({"repo": REPO, "title": f"First click {story}", "description": "Say hello.",
                       "acceptance_criteria": ["greet('Ann') == 'Hello, Ann!'"], "story_id": story}).encode()
    event = function_url_event("POST", "/api/generate-code", body=body,
                               headers={"content-type": "application/json", "authorization": f"Bearer {token}",
                                        "origin": "https://ui.example"})
    proc = subprocess.run([sys.executable, "-S", "-c", _CHILD.format(bundle=str(bundle))], input=json.dumps(event),
                          cwd=bundle, env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"first click failed: {proc.stderr.strip()[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(bundle: Path, secrets_stub) -> list[tuple[str, list[list[float]], tuple[int, int]]]:
    """Per pass (loopback, then GitHub answers held ``RTT_MS``): the runs' [import, first request, both, CPU] ms
    and the GitHub (calls, sequential depth) of the last run."""
    processor = FakeProcessor(SHARED)
    cognito = CognitoDouble()
    with tempfile.TemporaryDirectory(prefix="p5-click-") as tmp, ExitStack() as stack:
        github = GitHubDouble(Path(tmp) / "github")
        github.url = stack.enter_context(serve_in_thread(github.app))
        processor_url = stack.enter_context(serve_in_thread(processor.app))
        cognito.url = stack.enter_context(serve_in_thread(cognito.app))
        secrets = {SHARED_ARN: SHARED, TOKEN_ARN: json.dumps({"token": github.token})}
        env = _env(stack.enter_context(secrets_stub(secrets)), github, processor_url, cognito)
        github.add_repo(REPO)
        passes = []
        for label, rtt in (("loopback", 0.0), (f"GitHub answers held {RTT_MS:.0f} ms", RTT_MS / 1000)):
            if rtt:
                for method in ("GET", "POST", "PUT"):
                    github.delay(method, r"^/repos/", rtt)
            _click(bundle, env, cognito.token("id"), f"warm-{rtt}")  # .pyc files written, as on a warm host
            runs = []
            for n in range(RUNS):
                github.spans.clear()
                runs.append(_click(bundle, env, cognito.token("id"), f"click-{rtt}-{n}"))
                trips = github.round_trips()
            passes.append((label, runs, trips))
        GitHubDouble.drop_templates()
        return passes


def table(passes) -> list[str]:
    med = statistics.median
    lines = [f"| first `POST /api/generate-code` in a fresh interpreter ({RUNS} runs) | GitHub calls / in sequence | "
             "import wall (ms) | first request wall (ms) | import + request wall, min / **median** / max (ms) | "
             "CPU (ms) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, runs, (calls, depth) in passes:
        total = [r[2] for r in runs]
        lines.append(f"| {label} | {calls} / {depth} | {med(r[0] for r in runs):.0f} | {med(r[1] for r in runs):.0f} "
                     f"| {min(total):.0f} / **{med(total):.0f}** / {max(total):.0f} | {med(r[3] for r in runs):.0f} |")
    return lines
