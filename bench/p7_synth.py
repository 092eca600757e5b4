"""P7: `cdk synth` wall time of the whole app (goal ≤ 20 s on this machine).

What is timed is what the CDK CLI runs (cdk.json's "app": ``python3 app.py``) in a fresh process, so the jsii
start-up, the construct tree, cdk-nag's AwsSolutions checks and writing the cloud assembly are all in it. Bundling is
skipped (``aws:cdk:bundling-stacks`` = [], as in the tests): the Lambda's pip bundling depends on the network and is
cached by asset hash after the first `make synth`. Median of 3 runs, each into its own temporary CDK_OUTDIR.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = 3
GOAL_S = 20.0


def synth_once(context_overrides: dict[str, object]) -> float:
    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    context.update(context_overrides)
    with tempfile.TemporaryDirectory(prefix="aipm-p7-") as outdir:
        # The CLI hands context and the output directory to the app through these two variables.
        env = {**os.environ, "CDK_OUTDIR": outdir, "CDK_CONTEXT_JSON": json.dumps(context),
               "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            raise RuntimeError(f"synth failed: {result.stderr[-2000:]}")
        if not (Path(outdir) / "manifest.json").exists():
            raise RuntimeError("synth wrote no cloud assembly")
    return elapsed


def main() -> None:
    cases = [
        ("defaults (cloudfront, Cognito)", {}),
        ("-c adminCidr=203.0.113.7/32", {"adminCidr": "203.0.113.7/32"}),
    ]
    print(f"| case | runs | median (s) | min (s) | max (s) | goal ≤ {GOAL_S:.0f} s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, overrides in cases:
        times = [synth_once({**overrides, "aws:cdk:bundling-stacks": []}) for _ in range(RUNS)]
        median = statistics.median(times)
        print(f"| {name} | {RUNS} | {median:.1f} | {min(times):.1f} | {max(times):.1f} | "
              f"{'met' if median <= GOAL_S else 'MISSED'} |", flush=True)
    print(f"\ncommand: CDK_OUTDIR=<tmp> CDK_CONTEXT_JSON=<cdk.json context + bundling skipped> "
          f"{Path(sys.executable).name} app.py  (python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
