"""P5: cold import of lambda_fn.handler vs a bare `import fastapi, mangum` (goal ≤ 1.5×), and the Lambda bundle's size.

Imports are timed in fresh interpreters (median and p90 of N) in two places: inside a bundle built like the Lambda's
(requirements/lambda.txt + lambda_fn/ + ec2_services/common/, wheels for this machine, run with ``-S`` so nothing
else is importable — what the Lambda sees), and in the development venv for reference (there httpx also imports
click/rich/pygments for its CLI, which the bundle does not hold). The app is configured as on AWS with its secrets
as plain values; reading them by ARN adds boto3's import (its own row). The size is of the bundle infra/bundling.py
ships: wheels for manylinux2014_aarch64 / CPython 3.12 (or this machine's when that download fails, said so).
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
_EVENT = (
    "{'version': '2.0', 'rawPath': '/health', 'rawQueryString': '', 'headers': {'host': 'x.lambda-url.on.aws'}, "
    "'requestContext': {'domainName': 'x.lambda-url.on.aws', 'http': {'method': 'GET', 'path': '/health', "
    "'sourceIp': '203.0.113.1'}}, 'isBase64Encoded': False}"
)
CASES = (
    ("`import fastapi, mangum` (baseline)", "import fastapi, mangum"),
    ("`import lambda_fn.handler` (app built, secrets from variables)", "import lambda_fn.handler"),
    ("cold import + first Function URL event (`GET /health`)",
     f"import lambda_fn.handler as h; r = h.handler({_EVENT}, None); assert r['statusCode'] == 200, r"),
    ("`import boto3` (added when secrets come by ARN; dev venv only)", "import boto3"),
)
ARM64 = ["--platform", "manylinux2014_aarch64", "--only-binary=:all:", "--python-version", "3.12",
         "--implementation", "cp"]


def _env() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("AIPM_", "GITHUB_", "PR_PROCESSOR", "PUBLIC_API", "ALLOWED_ORIGINS", "PYTHON"))}
    return {**base, **ENV}


def _once(stmt: str, bundle: Path | None) -> float:
    prefix = f"import sys; sys.path.insert(0, {str(bundle)!r}); " if bundle else ""
    code = f"{prefix}import time; t = time.perf_counter(); {stmt}; print(repr(time.perf_counter() - t))"
    argv = [sys.executable, *(["-S"] if bundle else []), "-c", code]
    proc = subprocess.run(argv, cwd=bundle or ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{stmt[:60]}… failed: {proc.stderr.strip()[-600:]}")
    return float(proc.stdout.strip().splitlines()[-1]) * 1000  # the service logs to stdout too


def measure(cases: list[tuple[str, Path | None]]) -> list[list[float]]:
    """Samples per case, the cases interleaved run by run so a busy machine slows them all alike."""
    for stmt, bundle in cases:  # warm the OS file cache and write the .pyc files, as on a warm Lambda host
        _once(stmt, bundle), _once(stmt, bundle)
    samples: list[list[float]] = [[] for _ in cases]
    for _ in range(RUNS):
        for i, (stmt, bundle) in enumerate(cases):
            samples[i].append(_once(stmt, bundle))
    return [sorted(s) for s in samples]


def build_bundle(out: Path, platform_args: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-compile", "--quiet",
                    "-r", str(ROOT / "requirements" / "lambda.txt"), *platform_args, "--target", str(out)],
                   check=True, capture_output=True, text=True, timeout=600)
    for src in ("lambda_fn", "ec2_services/common"):
        shutil.copytree(ROOT / src, out / src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
    shutil.copy2(ROOT / "ec2_services" / "__init__.py", out / "ec2_services" / "__init__.py")


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


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="p5-") as tmp:
        local = Path(tmp) / "local-bundle"
        build_bundle(local, [])
        plan = [(stmt, where) for _, stmt in CASES for where in (local, None) if not (where and "boto3" in stmt)]
        results = dict(zip(plan, measure(plan), strict=True))
        rows = [(label, results.get((stmt, local)), results[(stmt, None)]) for label, stmt in CASES]

        arm = Path(tmp) / "arm64-bundle"
        platform = "manylinux2014_aarch64, CPython 3.12 (what the Lambda runs)"
        try:
            build_bundle(arm, ARM64)
        except subprocess.CalledProcessError:
            shutil.rmtree(arm, ignore_errors=True)
            arm = local
            platform = f"this machine ({sys.platform}, CPython {sys.version_info[0]}.{sys.version_info[1]}): arm64 download failed"
        zipped, files = _zip_size(arm, Path(tmp) / "bundle.zip")
        unzipped, our_code = _dir_size(arm), _dir_size(arm / "lambda_fn") + _dir_size(arm / "ec2_services")

    print(f"\nP5 cold import — median / min ms of {RUNS} fresh interpreters each, runs interleaved "
          f"(CPython {sys.version_info[0]}.{sys.version_info[1]}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f} at the end)\n")
    print("| what | in the Lambda bundle | in the dev venv |")
    print("| --- | ---: | ---: |")
    for label, in_bundle, in_venv in rows:
        cell = f"{statistics.median(in_bundle):.0f} / {in_bundle[0]:.0f}" if in_bundle else "—"
        print(f"| {label} | {cell} | {statistics.median(in_venv):.0f} / {in_venv[0]:.0f} |")
    print()
    for where, i in (("Lambda bundle", 1), ("dev venv", 2)):
        base, ours = rows[0][i], rows[1][i]
        ratio = statistics.median(ours) / statistics.median(base)
        print(f"- ratio lambda_fn.handler / baseline, {where}: **{ratio:.2f}×** by medians "
              f"({ours[0] / base[0]:.2f}× by minimums) — {'meets' if ratio <= GOAL else 'MISSES'} the goal of ≤ {GOAL}×")
    print("\n| bundle | value |")
    print("| --- | ---: |")
    print(f"| wheels for | {platform} |")
    print(f"| unzipped | {unzipped / 1e6:.1f} MB |")
    print(f"| zipped (deflate) | {zipped / 1e6:.1f} MB |")
    print(f"| files | {files} |")
    print(f"| of which lambda_fn + ec2_services/common | {our_code / 1e3:.0f} kB |")
    print("| Lambda limits | 250 MB unzipped, 50 MB zipped upload |")


if __name__ == "__main__":
    main()
