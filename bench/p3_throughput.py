"""P3: jobs per second with 1, 2, 4 and 8 workers on a double that works 0.5 s per task (goal: 8 workers ≥ 7× one).

Each run starts `python -m ec2_services.worker_pool` with N workers (the Kiro double as the agent, 0.5 s of spinner
per answer), sends 4·N tasks at once over signed HTTP, and counts completed tasks over the wall time from the
first request to the last answer. Everything between two tasks (the `/clear` reset, dispatch) is inside that time.
With `driver="acp"` the agent is the ACP double (`KIRO_DRIVER=acp`; a new session per task instead of `/clear`).
"""

from __future__ import annotations

import asyncio
import time

from bench.p2_completion_latency import driver_env
from tests.kiro_double.harness import running_pool

WORK_S = 0.5
ROUNDS = 4


async def _burst(pool, jobs: int) -> float:
    async with pool.async_client() as client:
        started = time.monotonic()
        answers = await asyncio.gather(
            *(client.post("/execute", json={"prompt": f"Job {i} [[say done {i}]]", "task_id": f"p3-{i}"}) for i in range(jobs))
        )
        elapsed = time.monotonic() - started
    failed = [a.status_code for a in answers if a.status_code != 200]
    if failed:
        raise RuntimeError(f"{len(failed)} of {jobs} tasks failed: {failed[:5]}")
    return elapsed


def measure(workers: int, driver: str = "pty") -> tuple[int, float]:
    jobs = ROUNDS * workers
    args = ("--work-seconds", str(WORK_S))
    with running_pool(workers, args, **driver_env(driver, args)) as pool:
        return jobs, asyncio.run(_burst(pool, jobs))


def main() -> None:
    rows = []
    for workers in (1, 2, 4, 8):
        jobs, elapsed = measure(workers)
        rows.append((workers, jobs, elapsed, jobs / elapsed))
    base = rows[0][3]
    print("| workers | jobs | wall time (s) | jobs/s | × one worker |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for workers, jobs, elapsed, rate in rows:
        print(f"| {workers} | {jobs} | {elapsed:.2f} | {rate:.2f} | {rate / base:.2f} |")
    ratio = rows[-1][3] / base
    print(f"\n8 workers / 1 worker = {ratio:.2f}× (goal ≥ 7×: {'met' if ratio >= 7 else 'NOT met'}); "
          f"ideal is {1 / WORK_S:.0f} jobs/s per worker")


if __name__ == "__main__":
    main()
