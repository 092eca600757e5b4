"""P9: P2 (completion latency) and P3 (throughput) for both drivers, paired: `KIRO_DRIVER=pty` and `acp`.

Both drivers run in this one process, interleaved so that machine load falls on both alike:
- P2: a one-worker pool per driver, both running at once; task *i* goes to both pools, and which pool gets it first
  alternates. The PTY driver runs against the Kiro double in a terminal, the ACP driver against the ACP double
  (tests/acp_double) on stdio; each double logs the monotonic time just before it shows the answer's prompt.
- P3: ``REPS`` repetitions; each repetition measures 1, 2, 4 and 8 workers for both drivers, the drivers' order
  alternating per repetition, and the 8 ÷ 1 ratio is taken within one repetition (a pair), so min/median/max are
  over paired ratios.
Both doubles answer at once (P2) or after 0.5 s of work (P3), so the figures are the pool's and the driver's own
cost, not an agent's. Run: ``python -m bench p9_drivers [tasks] [reps]``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.p2_completion_latency import TASKS, driver_env, percentile
from bench.p3_throughput import WORK_S
from bench.p3_throughput import measure as measure_throughput
from tests.kiro_double.harness import running_pool

DRIVERS = ("pty", "acp")
WORKERS = (1, 2, 4, 8)
REPS = 5


def paired_latency(tasks: int) -> dict[str, list[float]]:
    """Per driver, ms from the double's prompt to `/execute` answered; the two pools take turns going first."""
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        clients, logs, received = {}, {}, {d: [] for d in DRIVERS}
        for driver in DRIVERS:
            logs[driver] = Path(tmp) / f"{driver}-prompts.txt"
            args = ("--work-seconds", "0", "--prompt-log", str(logs[driver]))
            pool = stack.enter_context(running_pool(1, args, **driver_env(driver, args)))
            clients[driver] = stack.enter_context(pool.client())
        for i in range(tasks):
            for driver in DRIVERS if i % 2 == 0 else DRIVERS[::-1]:
                r = clients[driver].post("/execute", json={"prompt": f"Task {i} [[say answer {i}]]",
                                                          "task_id": f"p9-{driver}-{i}"})
                received[driver].append(time.monotonic())
                if r.status_code != 200:
                    raise RuntimeError(f"{driver} task {i}: {r.status_code} {r.text[:200]}")
        result = {}
        for driver in DRIVERS:
            printed = [float(line) for line in logs[driver].read_text().split()]
            if len(printed) != tasks:
                raise RuntimeError(f"{driver}: {len(printed)} answer prompts logged for {tasks} tasks")
            result[driver] = [(got - shown) * 1000 for got, shown in zip(received[driver], printed, strict=True)]
        return result


def paired_throughput(reps: int) -> dict[str, dict[int, list[float]]]:
    """Per driver and worker count, jobs/s of each repetition; the drivers' order alternates per repetition."""
    rates: dict[str, dict[int, list[float]]] = {d: {w: [] for w in WORKERS} for d in DRIVERS}
    for rep in range(reps):
        for driver in DRIVERS if rep % 2 == 0 else DRIVERS[::-1]:
            for workers in WORKERS:
                jobs, elapsed = measure_throughput(workers, driver)
                rates[driver][workers].append(jobs / elapsed)
    return rates


def _spread(values: list[float], fmt: str = ".2f") -> str:
    return f"{min(values):{fmt}} / {statistics.median(values):{fmt}} / {max(values):{fmt}}"


def main(tasks: int = TASKS, reps: int = REPS) -> None:
    load = os.getloadavg()[0]
    latencies = paired_latency(tasks)
    print(f"P2 — idle prompt (PTY) / prompt response (ACP) → `/execute` answered; {tasks} tasks per driver, the two "
          f"pools taking turns (1-min load {load:.1f} before, {os.getloadavg()[0]:.1f} after, {os.cpu_count()} CPUs)\n")
    print("| driver | tasks | median (ms) | p95 (ms) | max (ms) | goal ≤ 5 ms median, ≤ 10 ms p95 |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for driver in DRIVERS:
        values = latencies[driver]
        median, p95 = statistics.median(values), percentile(values, 0.95)
        met = "met" if median <= 5 and p95 <= 10 else "**NOT met**"
        print(f"| {driver} | {len(values)} | {median:.2f} | {p95:.2f} | {max(values):.2f} | {met} |")
    diffs = [a - p for p, a in zip(latencies["pty"], latencies["acp"], strict=True)]
    print(f"\nPaired per task, acp − pty: median {statistics.median(diffs):+.2f} ms "
          f"(min {min(diffs):+.2f}, max {max(diffs):+.2f})")

    load = os.getloadavg()[0]
    rates = paired_throughput(reps)
    print(f"\nP3 — jobs/s, 4·N tasks sent at once to N workers, {WORK_S} s of work per task (ideal {1 / WORK_S:.0f}/s "
          f"per worker); {reps} repetitions, min / median / max (1-min load {load:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after)\n")
    print("| workers | " + " | ".join(f"{d} jobs/s | {d} × one (paired)" for d in DRIVERS) + " |")
    print("| ---: | " + " | ".join("---: | ---:" for _ in DRIVERS) + " |")
    for workers in WORKERS:
        cells = []
        for driver in DRIVERS:
            ratios = [n / one for n, one in zip(rates[driver][workers], rates[driver][1], strict=True)]
            cells.append(f"{_spread(rates[driver][workers])} | {_spread(ratios)}")
        print(f"| {workers} | " + " | ".join(cells) + " |")
    for driver in DRIVERS:
        ratios = [n / one for n, one in zip(rates[driver][8], rates[driver][1], strict=True)]
        median = statistics.median(ratios)
        print(f"\n{driver}: 8 workers ÷ 1, paired: {_spread(ratios)} (goal ≥ 7× median: "
              f"{'met' if median >= 7 else '**NOT met**'})", end="")
    print()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
