"""P5: cold import of lambda_fn.handler vs a bare `import fastapi, mangum` (goal ≤ 1.5×), and the Lambda bundle's size.

Imports are timed in fresh interpreters (median of N, CPU and wall time) in two places: inside a bundle built like the Lambda's
(requirements/lambda.txt + lambda_fn/ + aipm_common/, wheels for this machine, run with ``-S`` so nothing
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


def _once(stmt: str, bundle: Path | None) -> tuple[float, float]:
    """(wall ms, CPU ms) of ``stmt`` in a fresh interpreter."""
    prefix = f"import sys; sys.path.insert(0, {str(bundle)!r}); " if bundle else ""
    code = (f"{prefix}import time; t = time.perf_counter(); c = time.process_time(); {stmt}; "
            "print(repr(time.perf_counter() - t), repr(time.process_time() - c))")
    argv = [sys.executable, *(["-S"] if bundle else []), "-c", code]
    proc = subprocess.run(argv, cwd=bundle or ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{stmt[:60]}… failed: {proc.stderr.strip()[-600:]}")
    wall, cpu = proc.stdout.strip().splitlines()[-1].split()  # the service logs to stdout too
    return float(wall) * 1000, float(cpu) * 1000


def measure(cases: list[tuple[str, Path | None]]) -> list[dict[str, list[float]]]:
    """Wall and CPU samples per case, the cases interleaved run by run so a busy machine slows them all alike."""
    for stmt, bundle in cases:  # warm the OS file cache and write the .pyc files, as on a warm Lambda host
        _once(stmt, bundle), _once(stmt, bundle)
    samples: list[dict[str, list[float]]] = [{"wall": [], "cpu": []} for _ in cases]
    for _ in range(RUNS):
        for i, (stmt, bundle) in enumerate(cases):
            wall, cpu = _once(stmt, bundle)
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
        unzipped, our_code = _dir_size(arm), _dir_size(arm / "lambda_fn") + _dir_size(arm / "aipm_common")

    med = statistics.median
    print(f"\nP5 cold import — median ms of {RUNS} fresh interpreters each, runs interleaved; CPU time (what a Lambda's "
          f"own vCPU share would see) and wall time (CPython {sys.version_info[0]}.{sys.version_info[1]}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at the end)\n")
    print("| what | bundle CPU | bundle wall | dev venv CPU | dev venv wall |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, in_bundle, in_venv in rows:
        cells = [f"{med(in_bundle[k]):.0f}" if in_bundle else "—" for k in ("cpu", "wall")]
        cells += [f"{med(in_venv[k]):.0f}" for k in ("cpu", "wall")]
        print(f"| {label} | {' | '.join(cells)} |")
    print()
    for where, i in (("Lambda bundle", 1), ("dev venv", 2)):
        base, ours = rows[0][i], rows[1][i]
        ratio = med(ours["cpu"]) / med(base["cpu"])
        print(f"- ratio lambda_fn.handler / baseline, {where}: **{ratio:.2f}×** CPU "
              f"({med(ours['wall']) / med(base['wall']):.2f}× wall) — "
              f"{'meets' if ratio <= GOAL else 'MISSES'} the goal of ≤ {GOAL}×")
    print("\n| bundle | value |")
    print("| --- | ---: |")
    print(f"| wheels for | {platform} |")
    print(f"| unzipped | {unzipped / 1e6:.1f} MB |")
    print(f"| zipped (deflate) | {zipped / 1e6:.1f} MB |")
    print(f"| files | {files} |")
    print(f"| of which lambda_fn + aipm_common | {our_code / 1e3:.0f} kB |")
    print("| Lambda limits | 250 MB unzipped, 50 MB zipped upload |")


if __name__ == "__main__":
    main()
