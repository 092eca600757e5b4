"""P9: P2 (completion latency) and P3 (throughput) for both drivers side by side: `KIRO_DRIVER=pty` and `acp`.

The measuring is P2's and P3's own (`bench.p2_completion_latency.measure`, `bench.p3_throughput.measure`), run once
per driver in this one process: the PTY driver against the Kiro double in a terminal, the ACP driver against the ACP
double (tests/acp_double) on stdio. Both doubles answer at once (P2) or after 0.5 s of work (P3), so the figures
are the pool's and the driver's own cost, not an agent's.
"""

from __future__ import annotations

import statistics
import sys

from bench.p2_completion_latency import TASKS, percentile
from bench.p2_completion_latency import measure as measure_latency
from bench.p3_throughput import WORK_S
from bench.p3_throughput import measure as measure_throughput

DRIVERS = ("pty", "acp")
WORKERS = (1, 2, 4, 8)


def main(tasks: int = TASKS) -> None:
    print(f"P2 — idle prompt (PTY) / prompt response (ACP) → `/execute` answered, {tasks} tasks one after another\n")
    print("| driver | tasks | median (ms) | p95 (ms) | max (ms) | goal ≤ 5 ms median, ≤ 10 ms p95 |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for driver in DRIVERS:
        latencies = measure_latency(tasks, driver)
        median, p95 = statistics.median(latencies), percentile(latencies, 0.95)
        met = "met" if median <= 5 and p95 <= 10 else "NOT met"
        print(f"| {driver} | {len(latencies)} | {median:.2f} | {p95:.2f} | {max(latencies):.2f} | {met} |", flush=True)

    print(f"\nP3 — jobs/s, 4·N tasks sent at once to N workers, {WORK_S} s of work per task (ideal {1 / WORK_S:.0f}/s "
          "per worker)\n")
    rates: dict[str, dict[int, tuple[int, float]]] = {driver: {} for driver in DRIVERS}
    for driver in DRIVERS:
        for workers in WORKERS:
            rates[driver][workers] = measure_throughput(workers, driver)
    header = " | ".join(f"{d} jobs/s | {d} × one" for d in DRIVERS)
    print(f"| workers | jobs | {header} |")
    print("| ---: | ---: | " + " | ".join("---: | ---:" for _ in DRIVERS) + " |")
    for workers in WORKERS:
        cells = []
        for driver in DRIVERS:
            jobs, elapsed = rates[driver][workers]
            base_jobs, base_elapsed = rates[driver][1]
            rate = jobs / elapsed
            cells.append(f"{rate:.2f} | {rate / (base_jobs / base_elapsed):.2f}")
        print(f"| {workers} | {rates[DRIVERS[0]][workers][0]} | " + " | ".join(cells) + " |")
    for driver in DRIVERS:
        jobs1, t1 = rates[driver][1]
        jobs8, t8 = rates[driver][8]
        ratio = (jobs8 / t8) / (jobs1 / t1)
        print(f"\n{driver}: 8 workers / 1 worker = {ratio:.2f}× (goal ≥ 7×: {'met' if ratio >= 7 else 'NOT met'})", end="")
    print()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else TASKS)
