"""P13: P2, P3 and click → first model request with the real agents (claude-code-acp, Gemini CLI), beside the ACP double.

Every real agent runs unmodified from ``agents/`` (``make agents``), its model calls answered by the scripted model
(``aipm_local.scripted_model``) served from this process, so the model's side of each figure is known exactly:

    P2      one worker, tasks one after another; the model answers each at once with a final text. Figure: from the
            scripted model's final answer written to ``/execute``'s response received (the agent turning that answer
            into its ACP response, then the pool) — the real-agent analogue of the double's "prompt printed →
            answered". Also the whole ``/execute`` round trip (a new ACP session per task included).
    P3      1 and 8 workers, 4·N tasks sent at once; each task is one model answer that takes ``WORK_S`` (a model's
            latency, which parallel workers hide). Figure: jobs/s and 8 workers ÷ 1.
    click   the local stack as ``make run AIPM_AGENT=<agent>`` runs it (pointed at this process's scripted model):
            from ``POST /api/generate-code`` to the agent's first model request for that job, and to the job's end.

Prints the 1-minute load average beside each table: on a shared machine the figures move with it.
Run: ``python -m bench p13_real_agents`` (``AIPM_BENCH_AGENTS=gemini`` for one agent).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from aipm_local.scripted_model import FixedScript, ScriptedModel, scripted_model
from bench.p2_completion_latency import measure as double_p2
from bench.p2_completion_latency import percentile
from bench.p3_throughput import measure as double_p3
from tests.e2e.local_stack import running_stack
from tests.kiro_double.harness import running_pool
from tests.real_agents.conftest import CLAUDE_CODE_ACP, GEMINI_CLI, agent_env, gemini_env

P2_TASKS = 20
DOUBLE_P2_TASKS = 50
WORK_S = 0.5
ROUNDS = 4
CLICKS = 5

# agent → (its ACP command, the environment pointing it at a scripted model with a home of its own)
AGENTS: dict[str, tuple[str, Callable[..., dict[str, str]]]] = {
    "claude-code": (str(CLAUDE_CODE_ACP), agent_env),
    "gemini": (f"{GEMINI_CLI} --acp", gemini_env),
}


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


@contextlib.contextmanager
def agent_pool(agent: str, model: ScriptedModel, workers: int) -> Iterator:
    command, env_for = AGENTS[agent]
    with tempfile.TemporaryDirectory(prefix="aipm-bench-home-") as home:
        env = {k: v for k, v in env_for(model, Path(home)).items() if k not in os.environ or os.environ[k] != v}
        with running_pool(workers, (), AIPM_AGENT=agent, KIRO_ACP_COMMAND=command, **env) as pool:
            yield pool


def p2(agent: str, tasks: int = P2_TASKS) -> tuple[list[float], list[float]]:
    """(final model answer → /execute answered, /execute round trip), in ms, per task."""
    after_model, round_trip = [], []
    with scripted_model(ScriptedModel(script=FixedScript([]))) as model, agent_pool(agent, model, 1) as pool, \
            pool.client() as client:
        for i in range(tasks):
            sent = time.monotonic()
            response = client.post("/execute", json={"prompt": "Say that you are done.", "task_id": f"p13-{i}"})
            received = time.monotonic()
            if response.status_code != 200:
                raise RuntimeError(f"{agent} task {i}: {response.status_code} {response.text[:300]}")
            answered = [s.answered_at for s in model.main_requests if s.answered_at and s.answered_at >= sent]
            if not answered:
                raise RuntimeError(f"{agent} task {i}: no model request seen")
            after_model.append((received - max(answered)) * 1000)
            round_trip.append((received - sent) * 1000)
    return after_model, round_trip


async def _burst(pool, jobs: int) -> float:
    async with pool.async_client() as client:
        started = time.monotonic()
        answers = await asyncio.gather(*(client.post("/execute", json={"prompt": "Say that you are done.",
                                                                         "task_id": f"p13-burst-{i}"})
                                         for i in range(jobs)))
        elapsed = time.monotonic() - started
    failed = [a.status_code for a in answers if a.status_code != 200]
    if failed:
        raise RuntimeError(f"{len(failed)} of {jobs} tasks failed: {failed[:5]}")
    return elapsed


def p3(agent: str, workers: int) -> tuple[int, float]:
    jobs = ROUNDS * workers
    with scripted_model(ScriptedModel(script=FixedScript([]), delay_s=WORK_S)) as model, \
            agent_pool(agent, model, workers) as pool:
        return jobs, asyncio.run(_burst(pool, jobs))


def clicks(agent: str, runs: int = CLICKS) -> list[tuple[float, float]]:
    """(click → first model request, click → job ended), in s, per story; the first click (warm-up) not counted."""
    command, env_for = AGENTS[agent]
    found = []
    with tempfile.TemporaryDirectory(prefix="aipm-bench-click-") as tmp, scripted_model() as model:
        env = env_for(model, Path(tmp) / "home")
        variables = {k: v for k, v in env.items() if k not in os.environ or os.environ[k] != v}
        with running_stack(Path(tmp) / "state", pool_size=1, AIPM_AGENT=agent, KIRO_ACP_COMMAND=command,
                           **variables) as stack:
            for n in range(runs + 1):
                seen_before = len(model.requests)
                with stack.client() as client:
                    started = time.time()
                    response = client.post("/api/generate-code", json={
                        "repo": "local/example", "title": f"Bench story {n}", "description": "P13 benchmark",
                        "acceptance_criteria": [f"bench_{n}(1) == {n}"]})
                response.raise_for_status()
                job = stack.wait_job(response.json()["job_id"], timeout=180)
                ended = time.time()
                if job["status"] != "succeeded":
                    raise RuntimeError(f"{agent} story {n}: {job['status']}: {job.get('error')}")
                first = min(s.at for s in model.requests[seen_before:] if s.tool_names)
                if n:
                    found.append((first - started, ended - started))
    return found


def _agents() -> list[str]:
    chosen = [a.strip() for a in os.environ.get("AIPM_BENCH_AGENTS", ",".join(AGENTS)).split(",") if a.strip()]
    return [a for a in chosen if a in AGENTS and Path(AGENTS[a][0].split()[0]).exists()]


def main() -> None:
    agents = _agents()
    if not agents:
        print("skipped: no real agent installed in agents/node_modules (run `make agents`)")
        return
    print(f"\nP2 — one worker, the model answering at once (load {load()} at start)")
    print("| agent | tasks | answer → /execute median (ms) | p95 (ms) | /execute round trip median (ms) | p95 (ms) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    latencies = double_p2(DOUBLE_P2_TASKS, driver="acp")
    print(f"| ACP double | {len(latencies)} | {statistics.median(latencies):.1f} | {percentile(latencies, 0.95):.1f}"
          " | — | — |")
    for agent in agents:
        after, trip = p2(agent)
        print(f"| {agent} | {len(after)} | {statistics.median(after):.1f} | {percentile(after, 0.95):.1f} | "
              f"{statistics.median(trip):.0f} | {percentile(trip, 0.95):.0f} |")

    print(f"\nP3 — {ROUNDS}·N tasks at once, each one model answer of {WORK_S} s (load {load()} at start)")
    print("| agent | workers | jobs | wall time (s) | jobs/s | 8 ÷ 1 | load after |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for agent in ["ACP double", *agents]:
        rates = {}
        for workers in (1, 8):
            jobs, elapsed = double_p3(workers, driver="acp") if agent == "ACP double" else p3(agent, workers)
            rates[workers] = jobs / elapsed
            ratio = f"{rates[8] / rates[1]:.2f}×" if workers == 8 else ""
            print(f"| {agent} | {workers} | {jobs} | {elapsed:.2f} | {rates[workers]:.2f} | {ratio} | {load()} |")

    print(f"\nClick → first model request, local stack, scripted model (load {load()} at start)")
    print("| agent | stories | click → first model request median (s) | max (s) | click → job ended median (s) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for agent in agents:
        found = clicks(agent)
        first = [f for f, _ in found]
        print(f"| {agent} | {len(found)} | {statistics.median(first):.2f} | {max(first):.2f} | "
              f"{statistics.median(e for _, e in found):.1f} |")
    print(f"\n(load {load()} at the end)")


if __name__ == "__main__":
    main()
