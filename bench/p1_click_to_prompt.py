"""P1: click (POST /api/generate-code) → the agent receives the prompt, vs a bare clone + push by hand (goal ≤ 1.5×).

Runs the local stack exactly as ``make run`` does (``python -m aipm_local.run``: API with the local forge, PR processor,
worker pool) with an instant stand-in agent that writes the time each prompt arrives (``--record``). Each run posts a
new story and measures until the agent has the whole prompt (the branch, TASK.md, the PR, the job, the fetch and
worktree, the pool typing the prompt all included); the job is let finish before the next run. After two warm-up clicks, clicks and the baseline alternate. The
baseline is what a person would do by hand for the same result on the same repository: ``git clone`` the bare
repository, commit a TASK.md on a new branch, ``git push`` it. The first click is reported on its own (it creates the processor's mirror).
Run: ``python -m bench p1_click_to_prompt`` (or ``python -m bench.p1_click_to_prompt``).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.p4_git_mirror import git as _git  # the same clean git environment as P4
from tests.e2e.local_stack import running_stack

RUNS = 12
WARMUP = 2  # clicks after the first, not counted: the services' first calls import code lazily
GOAL = 1.5


def _received(record: Path) -> list[float]:
    if not record.exists():
        return []
    return [json.loads(line)["received_at"] for line in record.read_text().splitlines() if line.strip()]


def click_to_prompt(stack, record: Path, n: int) -> tuple[float, float]:
    """Seconds from the POST to the agent holding the prompt, and to the API's answer, for one new story."""
    before = len(_received(record))
    with stack.client() as client:
        started = time.time()
        response = client.post("/api/generate-code", json={
            "repo": "local/example", "title": f"Bench story {n}", "description": "P1 benchmark",
            "acceptance_criteria": [f"bench_{n}(1) == {n}"]})
        answered = time.time()
        response.raise_for_status()
    deadline = time.monotonic() + 60
    while len(_received(record)) <= before:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the agent did not receive the prompt of story {n}:\n{stack.output()[-2000:]}")
        time.sleep(0.002)
    received = _received(record)[before]
    stack.wait_job(response.json()["job_id"])
    return received - started, answered - started


def clone_and_push(bare: Path, work: Path, n: int) -> float:
    """Seconds for a person's bare clone + TASK.md commit on a new branch + push, on the same repository."""
    started = time.perf_counter()
    _git("clone", "-q", bare.as_uri(), str(work))
    _git("checkout", "-q", "-b", f"by-hand/story-{n}", cwd=work)
    (work / "TASK.md").write_text(f"# Bench story {n}\n\n## Acceptance criteria\n\n- [ ] bench_{n}(1) == {n}\n")
    _git("add", "TASK.md", cwd=work)
    _git("commit", "-q", "-m", f"Add TASK.md: Bench story {n}", cwd=work)
    _git("push", "-q", "origin", f"by-hand/story-{n}", cwd=work)
    return time.perf_counter() - started


def _row(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"| {name} | {statistics.median(ms):.0f} | {min(ms):.0f} | {max(ms):.0f} | {len(ms)} |"


def main() -> None:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="aipm-p1-") as tmp:
        tmp_path = Path(tmp)
        record = tmp_path / "received.jsonl"
        agent = ("--think", "0", "--no-credits", "--record", str(record))
        # 15 stories in a few seconds: past the API's per-user rate limit (10 a minute), which is not what P1 measures.
        with running_stack(tmp_path / "state", agent_args=agent, pool_size=1, AIPM_RATE_LIMIT_PER_MINUTE="0") as stack:
            first, _ = click_to_prompt(stack, record, 0)
            for n in range(1, WARMUP + 1):
                click_to_prompt(stack, record, n)
            # Pairs, so both sides see the same load on a shared machine; which side goes first alternates.
            clicks, answers, by_hand = [], [], []
            for n in range(WARMUP + 1, WARMUP + 1 + RUNS):
                def click(n=n):
                    total, answer = click_to_prompt(stack, record, n)
                    clicks.append(total)
                    answers.append(answer)

                def hand(n=n):
                    by_hand.append(clone_and_push(stack.forge_repo, tmp_path / f"hand-{n}", n))

                for side in (click, hand) if n % 2 == 0 else (hand, click):
                    side()
    ratios = [c / h for c, h in zip(clicks, by_hand, strict=True)]
    ratio = statistics.median(ratios)
    print("| P1 measure | median (ms) | min (ms) | max (ms) | runs |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(_row("first click → agent has the prompt (cold: mirror created)", [first]))
    print(_row("click → agent has the prompt (instant stand-in, local forge)", clicks))
    print(_row("… of which the API's 202 (branch, TASK.md, PR, job sent)", answers))
    print(_row("by hand: bare clone + TASK.md commit + push", by_hand))
    print(f"| **click ÷ by hand, paired** | **{ratio:.2f}×** | {min(ratios):.2f}× | {max(ratios):.2f}× | goal ≤ {GOAL}× "
          f"(median) {'met' if ratio <= GOAL else '**NOT met**'} |")
    print(f"\n1-min load {load:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs.")


if __name__ == "__main__":
    main()
