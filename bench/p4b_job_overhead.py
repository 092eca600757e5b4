"""P4b: a whole PR-processor job with an instant worker pool vs the same clone/commit/push by hand (goal ≤ 1.5×).

Starts ``python -m ec2_services.pr_processor`` against a file:// forge holding P4's generated 5,000-commit repository
and a worker pool that answers at once (it writes one file into the workspace). A job is timed from the POST of
``/api/process-pr`` to the moment ``GET /api/jobs/{id}`` shows it ended; by hand is clone + write + commit + push +
delete. Also shown: the same git steps through ``git_ops`` without the service, so the service's own share is visible.
Run: ``python -m bench p4b_job_overhead``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI, Request

from aipm_common.signing import PR_PROCESSOR, SigningAuth
from bench.p4_git_mirror import BRANCH, REPO, clone_job, generate_repo, mirror_job
from ec2_services.pr_processor.git_ops import GitOps

JOBS = 7
COMMITS = 5000


def instant_pool() -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health():
        return {"status": "ok", "pool_size": 2, "queue_depth": 0, "workers": []}

    @app.post("/execute")
    async def execute(request: Request):
        body = await request.json()
        Path(body["cwd"], f"{body['task_id']}.txt").write_text("instant agent\n")
        return {"status": "completed", "worker_id": 1, "output": "done", "approvals": 0, "denials": 0,
                "duration_s": 0.0, "credits": None}

    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(app: FastAPI) -> tuple[str, uvicorn.Server]:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}", server


def _wait_up(url: str, proc: subprocess.Popen) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError("the PR processor exited at start")
        try:
            httpx.get(url + "/health", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("the PR processor did not start")


def service_job(client: httpx.Client, job_id: str) -> float:
    started = time.perf_counter()
    response = client.post("/api/process-pr", json={"job_id": job_id, "repo": REPO, "branch": BRANCH,
                                                     "task_file": "README.md"})
    response.raise_for_status()
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running", "pushing"):
            break
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    if job["status"] != "succeeded":
        raise RuntimeError(f"bench job ended {job['status']}: {job['error']}")
    return elapsed


def run(jobs: int = JOBS, commits: int = COMMITS) -> dict[str, float]:
    secret = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="aipm-p4b-") as tmp:
        root = Path(tmp)
        forge = root / "forge"
        bare = forge / f"{REPO}.git"
        bare.parent.mkdir(parents=True)
        generate_repo(bare, commits)
        subprocess.run(["git", "--git-dir", str(bare), "symbolic-ref", "HEAD", f"refs/heads/{BRANCH}"], check=True)
        _add_readme(bare)
        pool_url, pool = _serve(instant_pool())
        port = _free_port()
        env = {**os.environ, "AIPM_SHARED_SECRET": secret, "AIPM_STATE_DIR": str(root / "state"),
               "PR_PROCESSOR_PORT": str(port), "WORKER_POOL_URL": pool_url, "GIT_BASE_URL": f"file://{forge}",
               "AIPM_LOG_LEVEL": "WARNING", "PR_RETRY_BASE_DELAY": "0.1"}
        proc = subprocess.Popen([sys.executable, "-m", "ec2_services.pr_processor"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_up(url, proc)
            ops = GitOps(base_url=f"file://{forge}", token=None, state_dir=root / "direct",
                         workspace_root=root / "direct" / "workspaces", author_name="B", author_email="b@example.com")
            asyncio.run(ops.fetch_branch(REPO, BRANCH))
            with httpx.Client(base_url=url, auth=SigningAuth(secret, PR_PROCESSOR), timeout=60) as client:
                os.sync()
                cold = service_job(client, "bench-cold")
                sides = {
                    "service": lambda n: service_job(client, f"bench-{n}"),
                    "direct": lambda n: asyncio.run(mirror_job(ops, n)),
                    "by_hand": lambda n: clone_job(f"file://{bare}", root, n),
                }
                times = {name: [] for name in sides}
                for n in range(jobs):  # one round = one job of each kind; the order rotates per round
                    names = list(sides)
                    for name in names[n % 3:] + names[: n % 3]:
                        times[name].append(_synced(sides[name], n))
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            pool.should_exit = True
        return {"cold_s": cold, **times, "jobs": jobs, "commits": commits}


def _synced(job, *args):
    """Run one timed job after os.sync(), so it does not pay for writing back the previous job's files."""
    os.sync()
    return job(*args)


def _add_readme(bare: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_CONFIG_GLOBAL": "/dev/null", "PATH": "/usr/bin:/bin", "GIT_AUTHOR_NAME": "B",
               "GIT_AUTHOR_EMAIL": "b@example.com", "GIT_COMMITTER_NAME": "B", "GIT_COMMITTER_EMAIL": "b@example.com"}
        subprocess.run(["git", "clone", "-q", "-b", BRANCH, f"file://{bare}", tmp], check=True, env=env)
        Path(tmp, "README.md").write_text("# bench\n")
        subprocess.run(["git", "add", "-A"], cwd=tmp, check=True, env=env)
        subprocess.run(["git", "commit", "-q", "-m", "readme"], cwd=tmp, check=True, env=env)
        subprocess.run(["git", "push", "-q", "origin", f"HEAD:refs/heads/{BRANCH}"], cwd=tmp, check=True, env=env)


def _spread(values: list[float], fmt: str) -> str:
    return f"{min(values):{fmt}} / {statistics.median(values):{fmt}} / {max(values):{fmt}}"


def main() -> None:
    load = os.getloadavg()[0]
    r = run()
    service, direct, by_hand = r["service"], r["direct"], r["by_hand"]
    ratios = [s / h for s, h in zip(service, by_hand, strict=True)]
    own = [(s - d) * 1000 for s, d in zip(service, direct, strict=True)]
    print(f"Repository: P4's generated {r['commits']:,} commits; {r['jobs']} rounds, each one job of every kind, the "
          f"order rotating per round; instant worker pool (1-min load {load:.1f} before, {os.getloadavg()[0]:.1f} "
          f"after, {os.cpu_count()} CPUs).\n")
    print("| one job | time min / median / max (ms) | ÷ by hand, same round: min / median / max |")
    print("| --- | ---: | ---: |")
    ms = [1000 * t for t in service]
    print(f"| through the PR processor (POST → ended, warm mirror) | {_spread(ms, '.0f')} | {_spread(ratios, '.2f')}× |")
    print(f"| through the PR processor, first job (cold mirror) | {r['cold_s'] * 1000:.0f} | "
          f"{r['cold_s'] / statistics.median(by_hand):.2f}× (of the median) |")
    direct_ratios = [d / h for d, h in zip(direct, by_hand, strict=True)]
    print(f"| the same git_ops steps, no service (fetch/worktree/commit/push) | {_spread([1000 * t for t in direct], '.0f')}"
          f" | {_spread(direct_ratios, '.2f')}× |")
    print(f"| by hand: `git clone` + write + commit + push + delete | {_spread([1000 * t for t in by_hand], '.0f')} | 1 |")
    median = statistics.median(ratios)
    print(f"\nThe service's own share (service − git_ops steps, same round): {_spread(own, '+.0f')} ms per job. "
          f"Goal ≤ 1.5×: {'met' if median <= 1.5 else '**NOT met**'} (median {median:.2f}×)")


if __name__ == "__main__":
    main()
