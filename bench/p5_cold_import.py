"""P5: cold import of lambda_fn.handler vs a bare `import fastapi, mangum` (goal ≤ 1.5×), and the Lambda bundle's size.

Each import runs in a fresh interpreter (no warm module cache; the OS file cache is warm after the first run, as it
is on a warm Lambda host), configured as the Lambda is on AWS with its secrets given as plain values (the ARN path
adds boto3's import, measured on its own row). The bundle is what infra/bundling.py ships: pip for
manylinux2014_aarch64 / CPython 3.12 of requirements/lambda.txt, plus lambda_fn/ and ec2_services/common/;
when that download fails, the current platform's wheels (said in the table).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = int(os.environ.get("P5_RUNS", "15"))
GOAL = 1.5
ENV = {
    "AIPM_SHARED_SECRET": "bench-secret-0123456789", "GITHUB_TOKEN": "ghp_bench0000000000000000000000000000",
    "AIPM_AUTH": "token", "AIPM_UI_TOKEN": "bench-ui-token", "PR_PROCESSOR_URL": "http://127.0.0.1:8082",
    "ALLOWED_ORIGINS": "https://ui.example",
}
_TIMER = (
    "import time, sys; t = time.perf_counter(); {stmt}; dt = time.perf_counter() - t; "
    "sys.stdout.write(repr(dt))"
)
_FIRST_EVENT = (
    "import json, time; t = time.perf_counter(); import lambda_fn.handler as h; "
    "e = {'version': '2.0', 'rawPath': '/health', 'rawQueryString': '', 'headers': {'host': 'x.lambda-url.on.aws'}, "
    "'requestContext': {'domainName': 'x.lambda-url.on.aws', 'http': {'method': 'GET', 'path': '/health', "
    "'sourceIp': '203.0.113.1'}}, 'isBase64Encoded': False}; "
    "r = h.handler(e, None); assert r['statusCode'] == 200, r; import sys; sys.stdout.write(repr(time.perf_counter() - t))"
)


def _env() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("AIPM_", "GITHUB_", "PR_PROCESSOR", "PUBLIC_API", "ALLOWED_ORIGINS"))}
    return {**base, **ENV}


def _time(code: str, runs: int = RUNS) -> list[float]:
    out = []
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                              timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{code[:60]}… failed: {proc.stderr.strip()[-500:]}")
        out.append(float(proc.stdout.strip().splitlines()[-1]) * 1000)  # the service logs to stdout too
    return out


def cold_import() -> list[tuple[str, float, float]]:
    """(what, median ms, p90 ms) rows."""
    rows = []
    for label, code in (
        ("`import fastapi, mangum` (baseline)", _TIMER.format(stmt="import fastapi, mangum")),
        ("`import lambda_fn.handler` (app built, secrets from variables)", _TIMER.format(stmt="import lambda_fn.handler")),
        ("cold import + first Function URL event (`GET /health`)", _FIRST_EVENT),
        ("`import boto3` (added when secrets come by ARN)", _TIMER.format(stmt="import boto3")),
    ):
        _time(code, 2)  # warm the OS file cache and the .pyc files
        samples = sorted(_time(code))
        rows.append((label, statistics.median(samples), samples[int(0.9 * (len(samples) - 1))]))
    return rows


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bundle_size() -> tuple[str, float, float, int, float]:
    """(platform used, unzipped MB, zipped MB, files, our code kB)."""
    with tempfile.TemporaryDirectory(prefix="p5-bundle-") as tmp:
        out = Path(tmp) / "bundle"
        base = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-compile", "--quiet",
                "-r", str(ROOT / "requirements" / "lambda.txt"), "--target", str(out)]
        arm = ["--platform", "manylinux2014_aarch64", "--only-binary=:all:", "--python-version", "3.12",
               "--implementation", "cp"]
        platform = "manylinux2014_aarch64, CPython 3.12 (what Lambda runs)"
        if subprocess.run(base + arm, capture_output=True, text=True, timeout=600).returncode != 0:
            shutil.rmtree(out, ignore_errors=True)
            platform = f"this machine ({sys.platform}, CPython {sys.version_info.major}.{sys.version_info.minor}) — arm64 download failed"
            subprocess.run(base, check=True, capture_output=True, text=True, timeout=600)
        for src in ("lambda_fn", "ec2_services/common"):
            shutil.copytree(ROOT / src, out / src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                            dirs_exist_ok=True)
        shutil.copy2(ROOT / "ec2_services" / "__init__.py", out / "ec2_services" / "__init__.py")
        archive = Path(tmp) / "bundle.zip"
        files = 0
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(out.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(out))
                    files += 1
        ours = _dir_size(out / "lambda_fn") + _dir_size(out / "ec2_services")
        return platform, _dir_size(out) / 1e6, archive.stat().st_size / 1e6, files, ours / 1e3


def main() -> None:
    rows = cold_import()
    base, ours = rows[0][1], rows[1][1]
    ratio = ours / base
    print(f"\nP5 cold import — median and p90 of {RUNS} fresh interpreters each (Python "
          f"{sys.version_info.major}.{sys.version_info.minor}, {os.cpu_count()} CPUs)\n")
    print("| what | median ms | p90 ms |")
    print("| --- | ---: | ---: |")
    for label, median, p90 in rows:
        print(f"| {label} | {median:.0f} | {p90:.0f} |")
    verdict = "meets" if ratio <= GOAL else "MISSES"
    print(f"\nratio lambda_fn.handler / baseline: **{ratio:.2f}×** — {verdict} the goal of ≤ {GOAL}×\n")
    platform, unzipped, zipped, files, ours_kb = bundle_size()
    print("| bundle | value |")
    print("| --- | ---: |")
    print(f"| wheels for | {platform} |")
    print(f"| unzipped | {unzipped:.1f} MB |")
    print(f"| zipped (deflate) | {zipped:.1f} MB |")
    print(f"| files | {files} |")
    print(f"| of which lambda_fn + ec2_services/common | {ours_kb:.0f} kB |")
    print("| Lambda limits | 250 MB unzipped, 50 MB zipped upload |")


if __name__ == "__main__":
    main()
