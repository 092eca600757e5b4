"""P2: time from the agent printing its idle prompt to `/execute` returning (goal ≤ 5 ms median, ≤ 10 ms p95).

The Kiro double appends `time.monotonic()` (one clock for every process on the host) to a file just before it
prints the prompt that ends an answer; the client notes the same clock when `/execute`'s response has arrived.
200 tasks, one after another, on a one-worker pool run as `python -m ec2_services.worker_pool`. With
`driver="acp"` the agent is the ACP double (`KIRO_DRIVER=acp`), which logs the time just before it writes the
prompt's response (bench/p9_drivers.py prints both).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from tests.acp_double import command as acp_command
from tests.kiro_double.harness import running_pool

TASKS = 200


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def driver_env(driver: str, double_args: tuple[str, ...]) -> dict[str, str]:
    """The variables that make `running_pool` use ``driver`` (its double gets the same options)."""
    if driver == "pty":
        return {}
    return {"KIRO_DRIVER": driver, "KIRO_ACP_COMMAND": acp_command(*double_args)}


def measure(tasks: int = TASKS, driver: str = "pty") -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        prompt_log = Path(tmp) / "prompts.txt"
        args = ("--work-seconds", "0", "--prompt-log", str(prompt_log))
        with running_pool(1, args, **driver_env(driver, args)) as pool, pool.client() as client:
            received = []
            for i in range(tasks):
                r = client.post("/execute", json={"prompt": f"Task {i} [[say answer {i}]]", "task_id": f"p2-{i}"})
                received.append(time.monotonic())
                if r.status_code != 200:
                    raise RuntimeError(f"task {i}: {r.status_code} {r.text[:200]}")
        printed = [float(line) for line in prompt_log.read_text().split()]
    if len(printed) != tasks:
        raise RuntimeError(f"{len(printed)} answer prompts logged for {tasks} tasks")
    return [(got - shown) * 1000 for got, shown in zip(received, printed, strict=True)]


def main() -> None:
    latencies = measure()
    median, p95 = statistics.median(latencies), percentile(latencies, 0.95)
    print("| tasks | median (ms) | p95 (ms) | max (ms) | goal |")
    print("| ---: | ---: | ---: | ---: | --- |")
    print(
        f"| {len(latencies)} | {median:.2f} | {p95:.2f} | {max(latencies):.2f} | ≤ 5 ms median, ≤ 10 ms p95: "
        f"{'met' if median <= 5 and p95 <= 10 else 'NOT met'} |"
    )


if __name__ == "__main__":
    main()
