"""P5: cold import of lambda_fn.handler vs a bare `import fastapi, mangum` (goal ≤ 1.3×), as configured when deployed
(Cognito sign-in, secrets by ARN) and with plain variables, and the Lambda bundle's size.

Imports are timed in fresh interpreters (median of N, CPU and wall time) in two places: inside a bundle built like the Lambda's
(requirements/lambda.txt + lambda_fn/ + aipm_common/, wheels for this machine, run with ``-S`` so nothing
else is importable — what the Lambda sees), and in the development venv for reference (there httpx also imports
click/rich/pygments for its CLI, which the bundle does not hold). Two configurations:

- *deployed*: what infra/ deploys — ``AIPM_AUTH=cognito`` and the shared secret and GitHub token by ARN, read at
  cold start from a Secrets Manager stand-in on loopback (a stub answering ``GetSecretValue``; on AWS each call is a
  TLS round trip, made in parallel);
- *plain*: the secrets as plain variables, ``AIPM_AUTH=token``.

Every run starts the baseline and each configuration back to back (order rotating run by run), and the ratio is
taken within the run: the table gives min / median / max over the runs, and the load average.
Then a cold container's first ``POST /api/generate-code`` (``bench.first_click``): import + first request, wall time,
against the GitHub double, with its GitHub calls and how many are in sequence.
The size is of the bundle infra/bundling.py ships: wheels for manylinux2014_aarch64 / CPython 3.12 (or this
machine's when that download fails, said so).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench import first_click

ROOT = Path(__file__).resolve().parents[1]
RUNS = int(os.environ.get("P5_RUNS", "15"))
GOAL = 1.3
PLAIN = {
    "AIPM_SHARED_SECRET": "bench-secret-0123456789", "GITHUB_TOKEN": "ghp_bench0000000000000000000000000000",
    "AIPM_AUTH": "token", "AIPM_UI_TOKEN": "bench-ui-token", "PR_PROCESSOR_URL": "http://127.0.0.1:8082",
    "ALLOWED_ORIGINS": "https://ui.example",
}
_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:"
SECRETS = {f"{_ARN}aipm/shared-AbCdEf": "bench-secret-0123456789",
           f"{_ARN}aipm/github-token-AbCdEf": json.dumps({"token": "ghp_bench0000000000000000000000000000"})}
DEPLOYED = {
    "AIPM_AUTH": "cognito", "COGNITO_USER_POOL_ID": "us-east-1_AbC123", "COGNITO_CLIENT_ID": "a1b2c3d4e5f6g7h8i9j0k1l2m3",
    "AIPM_SHARED_SECRET_ARN": f"{_ARN}aipm/shared-AbCdEf", "GITHUB_TOKEN_SECRET_ARN": f"{_ARN}aipm/github-token-AbCdEf",
    "PR_PROCESSOR_URL": "http://127.0.0.1:8082", "ALLOWED_ORIGINS": "https://ui.example",
    "AWS_ACCESS_KEY_ID": "AKIDBENCH", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_SESSION_TOKEN": "bench-session",
    "AWS_REGION": "us-east-1",
}
_EVENT = (
    "{'version': '2.0', 'rawPath': '/health', 'rawQueryString': '', 'headers': {'host': 'x.lambda-url.on.aws'}, "
    "'requestContext': {'domainName': 'x.lambda-url.on.aws', 'http': {'method': 'GET', 'path': '/health', "
    "'sourceIp': '203.0.113.1'}}, 'isBase64Encoded': False}"
)
_FIRST_EVENT = f"import lambda_fn.handler as h; r = h.handler({_EVENT}, None); assert r['statusCode'] == 200, r"
BASELINE = ("`import fastapi, mangum` (baseline)", "import fastapi, mangum", "plain")
CASES = (
    BASELINE,
    ("deployed: `import lambda_fn.handler` (Cognito, 2 secrets by ARN read in parallel)", "import lambda_fn.handler",
     "deployed"),
    ("deployed: cold import + first Function URL event (`GET /health`)", _FIRST_EVENT, "deployed"),
    ("plain variables: `import lambda_fn.handler`", "import lambda_fn.handler", "plain"),
    ("plain variables: cold import + first event", _FIRST_EVENT, "plain"),
)
ARM64 = ["--platform", "manylinux2014_aarch64", "--only-binary=:all:", "--python-version", "3.12",
         "--implementation", "cp"]


@contextlib.contextmanager
def secrets_manager_stub(secrets: dict[str, str] = SECRETS) -> Iterator[str]:
    """A Secrets Manager stand-in on loopback answering ``GetSecretValue`` for ``secrets``; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            secret_id = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["SecretId"]
            data = json.dumps({"ARN": secret_id, "SecretString": secrets[secret_id]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _env(kind: str, endpoint: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("AIPM_", "GITHUB_", "PR_PROCESSOR", "PUBLIC_API", "ALLOWED_ORIGINS", "PYTHON",
                                 "AWS_", "COGNITO_"))}
    if kind == "deployed":
        return {**base, **DEPLOYED, "AWS_ENDPOINT_URL_SECRETS_MANAGER": endpoint}
    return {**base, **PLAIN}


def _once(stmt: str, kind: str, bundle: Path | None, endpoint: str) -> tuple[float, float]:
    """(wall ms, CPU ms) of ``stmt`` in a fresh interpreter."""
    prefix = f"import sys; sys.path.insert(0, {str(bundle)!r}); " if bundle else ""
    code = (f"{prefix}import time; t = time.perf_counter(); c = time.process_time(); {stmt}; "
            "print(repr(time.perf_counter() - t), repr(time.process_time() - c))")
    argv = [sys.executable, *(["-S"] if bundle else []), "-c", code]
    proc = subprocess.run(argv, cwd=bundle or ROOT, env=_env(kind, endpoint), capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{stmt[:60]}… failed: {proc.stderr.strip()[-600:]}")
    wall, cpu = proc.stdout.strip().splitlines()[-1].split()  # the service logs to stdout too
    return float(wall) * 1000, float(cpu) * 1000


def measure(cases: list[tuple[str, str, Path | None]], endpoint: str) -> list[dict[str, list[float]]]:
    """Wall and CPU samples per case, the cases run back to back in each run (their order rotating run by run), so
    a busy machine slows them all alike and each run gives a ratio of its own."""
    for stmt, kind, bundle in cases:  # warm the OS file cache and write the .pyc files, as on a warm Lambda host
        _once(stmt, kind, bundle, endpoint), _once(stmt, kind, bundle, endpoint)
    samples: list[dict[str, list[float]]] = [{"wall": [], "cpu": []} for _ in cases]
    for run in range(RUNS):
        order = list(range(len(cases)))
        order = order[run % len(order):] + order[: run % len(order)]
        for i in order:
            wall, cpu = _once(*cases[i], endpoint)
            samples[i]["wall"].append(wall)
            samples[i]["cpu"].append(cpu)
    return samples


def build_bundle(out: Path, platform_args: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-compile", "--quiet",
                    "-r", str(ROOT / "requirements" / "lambda.txt"), *platform_args, "--target", str(out)],
                   check=True, capture_output=True, text=True, timeout=600)
    for src in ("lambda_fn", "aipm_common"):
        shutil.copytree(ROOT / src, out / src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _zip_size(folder: Path, archive: Path) -> tuple[int, int]:
    files = 0
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder))
                files += 1
    return archive.stat().st_size, files


def _ratios(ours: dict[str, list[float]], base: dict[str, list[float]], key: str) -> list[float]:
    return [a / b for a, b in zip(ours[key], base[key], strict=True)]


def main() -> None:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="p5-") as tmp, secrets_manager_stub() as endpoint:
        local = Path(tmp) / "local-bundle"
        build_bundle(local, [])
        plan = [(stmt, kind, where) for _, stmt, kind in CASES for where in (local, None)]
        results = dict(zip(plan, measure(plan, endpoint), strict=True))
        rows = [(label, results[(stmt, kind, local)], results[(stmt, kind, None)]) for label, stmt, kind in CASES]
        clicks = first_click.measure(local, secrets_manager_stub)

        arm = Path(tmp) / "arm64-bundle"
        platform = "manylinux2014_aarch64, CPython 3.12 (what the Lambda runs)"
        try:
            build_bundle(arm, ARM64)
        except subprocess.CalledProcessError:
            shutil.rmtree(arm, ignore_errors=True)
            arm = local
            platform = f"this machine ({sys.platform}, CPython {sys.version_info[0]}.{sys.version_info[1]}): arm64 download failed"
        zipped, files = _zip_size(arm, Path(tmp) / "bundle.zip")
        unzipped, our_code = _dir_size(arm), _dir_size(arm / "lambda_fn") + _dir_size(arm / "aipm_common")

    med = statistics.median
    print(f"\nP5 cold import — median ms of {RUNS} fresh interpreters each, runs interleaved; CPU time (what a Lambda's "
          f"own vCPU share would see) and wall time (CPython {sys.version_info[0]}.{sys.version_info[1]}, "
          f"{os.cpu_count()} CPUs, 1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)\n")
    print("| what | bundle CPU | bundle wall | dev venv CPU | dev venv wall |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, in_bundle, in_venv in rows:
        cells = [f"{med(in_bundle[k]):.0f}" for k in ("cpu", "wall")] + [f"{med(in_venv[k]):.0f}" for k in ("cpu", "wall")]
        print(f"| {label} | {' | '.join(cells)} |")
    print()
    print("| ratio to the baseline, paired within each run (Lambda bundle) | CPU min / median / max | wall median | goal |")
    print("| --- | ---: | ---: | --- |")
    base = rows[0][1]
    for label, in_bundle, _ in rows[1:]:
        cpu, wall = _ratios(in_bundle, base, "cpu"), _ratios(in_bundle, base, "wall")
        verdict = "met" if med(cpu) <= GOAL else "**NOT met**"
        goal = f"≤ {GOAL}×: {verdict}" if "import lambda_fn.handler`" in label and "first" not in label else "—"
        print(f"| {label} | {min(cpu):.2f}× / **{med(cpu):.2f}×** / {max(cpu):.2f}× | {med(wall):.2f}× | {goal} |")
    print(f"\n({RUNS} runs; the secrets come from a loopback stand-in: on AWS add one Secrets Manager round trip, the "
          "two calls being made in parallel)")
    print("\n| bundle | value |")
    print("| --- | ---: |")
    print(f"| wheels for | {platform} |")
    print(f"| unzipped | {unzipped / 1e6:.1f} MB |")
    print(f"| zipped (deflate) | {zipped / 1e6:.1f} MB |")
    print(f"| files | {files} |")
    print(f"| of which lambda_fn + aipm_common | {our_code / 1e3:.0f} kB |")
    print("| Lambda limits | 250 MB unzipped, 50 MB zipped upload |")
    print(f"\nFirst click, deployed configuration, Lambda bundle (1-min load average {os.getloadavg()[0]:.1f}):\n")
    print("\n".join(first_click.table(clicks)))


if __name__ == "__main__":
    main()
