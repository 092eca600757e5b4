"""P11: the SQS dispatch mode (AIPM_DISPATCH=sqs, moto's SQS on loopback) against the direct HTTP path.

Two figures. (1) Send → a worker starts: from the Lambda's own send (``JobQueue.submit`` in sqs mode,
``ProcessorClient.submit`` in http mode, both timed in this process) to the moment the worker pool receives the
job's ``/execute`` (the agent starts), with the PR processor's fetch and worktree in between on both paths. One
processor of each mode runs side by side, jobs alternate between them; the sqs one long-polls with the production
wait (20 s), so any polling delay would show. (2) Jobs/s with 1, 2 and 4 PR processors (each with its own worker
pool of 2, an agent double that works ``AGENT_S`` per task) taking ``JOBS`` jobs from one queue: from the first send
to the last message deleted (every job ended and committed). Every processor is a real process; the forge is
``file://``. Run: ``python -m bench p11_dispatch``.
"""

from __future__ import annotations

import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI, Request

from aipm_common.signing import PR_PROCESSOR, SigningAuth
from tests.support.sqs import CREDENTIALS, make_queue, moto_sqs_server

REPO = "bench/app"
LATENCY_JOBS = 9
WARMUP = 2
JOBS = 48
AGENT_S = 0.5
POOL_SIZE = 2
PROCESSORS = (1, 2, 4)
GIT_ENV = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "PATH": "/usr/bin:/bin",
           "GIT_AUTHOR_NAME": "B", "GIT_AUTHOR_EMAIL": "b@example.com", "GIT_COMMITTER_NAME": "B",
           "GIT_COMMITTER_EMAIL": "b@example.com"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TimingPool:
    """A worker pool double that notes when each task reaches it, works ``agent_s`` and writes one file."""

    def __init__(self, agent_s: float, pool_size: int = POOL_SIZE):
        self.agent_s = agent_s
        self.pool_size = pool_size
        self.arrived: dict[str, float] = {}
        self.changed = threading.Condition()

    def app(self) -> FastAPI:
        import asyncio

        app = FastAPI()

        @app.get("/health")
        async def health():
            return {"status": "ok", "pool_size": self.pool_size, "queue_depth": 0, "workers": []}

        @app.post("/execute")
        async def execute(request: Request):
            body = await request.json()
            with self.changed:
                self.arrived.setdefault(body["task_id"], time.perf_counter())
                self.changed.notify_all()
            if self.agent_s:
                await asyncio.sleep(self.agent_s)
            Path(body["cwd"], "bench.txt").write_text(f"{body['task_id']}\n")
            return {"status": "completed", "worker_id": 1, "output": "done", "approvals": 0, "denials": 0,
                    "duration_s": self.agent_s, "credits": None}

        return app

    def wait_arrival(self, task_id: str, timeout: float = 60) -> float:
        with self.changed:
            if not self.changed.wait_for(lambda: task_id in self.arrived, timeout):
                raise RuntimeError(f"task {task_id} never reached the worker pool")
            return self.arrived[task_id]


@contextmanager
def serving(app: FastAPI):
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True


def make_forge(root: Path, branches: list[str]) -> str:
    """A small repository whose branches all hold TASK.md; returns GIT_BASE_URL."""
    bare = root / "forge" / f"{REPO}.git"
    bare.parent.mkdir(parents=True)
    subprocess.run(["git", "init", "--bare", "-q", "-b", "main", str(bare)], check=True, env=GIT_ENV)
    work = root / "seed"
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, env=GIT_ENV, capture_output=True)
    (work / "TASK.md").write_text("# Bench task\n\nWrite bench.txt.\n")
    for args in (["add", "-A"], ["commit", "-q", "-m", "task"],
                 ["push", "-q", "origin", "HEAD:refs/heads/main", *[f"HEAD:refs/heads/{b}" for b in branches]]):
        subprocess.run(["git", *args], cwd=work, check=True, env=GIT_ENV)
    return f"file://{root / 'forge'}"


class Processor:
    def __init__(self, root: Path, name: str, secret: str, pool_url: str, git_base: str, extra: dict[str, str]):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "AIPM_SHARED_SECRET": secret, "AIPM_STATE_DIR": str(root / name),
               "PR_PROCESSOR_PORT": str(self.port), "WORKER_POOL_URL": pool_url, "GIT_BASE_URL": git_base,
               "AIPM_LOG_LEVEL": "WARNING", "PR_RETRY_BASE_DELAY": "0.1", **extra}
        self.proc = subprocess.Popen([sys.executable, "-m", "ec2_services.pr_processor"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.client = httpx.Client(base_url=self.url, auth=SigningAuth(secret, PR_PROCESSOR), timeout=30)
        for _ in range(600):
            if self.proc.poll() is not None:
                raise RuntimeError(f"PR processor {name} exited at start")
            try:
                if httpx.get(self.url + "/health", timeout=1).json().get("worker_pool") == "ok":
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"PR processor {name} did not start")

    def wait_ended(self, job_id: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.client.get(f"/api/jobs/{job_id}")
            if response.status_code == 200 and response.json()["status"] not in ("queued", "running", "pushing"):
                if response.json()["status"] != "succeeded":
                    raise RuntimeError(f"bench job {job_id} ended {response.json()['status']}")
                return
            time.sleep(0.01)
        raise RuntimeError(f"bench job {job_id} did not end")

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def payload(n: int, prefix: str) -> dict:
    return {"job_id": f"{prefix}-{n:03d}", "repo": REPO, "branch": f"aipm/{prefix}-{n:03d}", "base_branch": "main",
            "pr_number": n + 1, "task_file": "TASK.md", "callback_url": None, "requested_by": "bench"}


def latency(root: Path, endpoint: str, secret: str, git_base: str) -> dict[str, list[float]]:
    """Send → /execute received, per mode, jobs alternating between an http-mode and an sqs-mode processor."""
    from lambda_fn.processor import ProcessorClient
    from lambda_fn.queue import JobQueue

    queue_url = make_queue(endpoint).url
    times: dict[str, list[float]] = {"http": [], "sqs": []}
    with ExitStack() as stack:
        senders, hosts, pools = {}, {}, {}
        for mode in ("http", "sqs"):
            pools[mode] = TimingPool(agent_s=0.0)
            pool_url = stack.enter_context(serving(pools[mode].app()))
            extra = {"AIPM_DISPATCH": mode}
            if mode == "sqs":
                extra |= {"AIPM_JOB_QUEUE_URL": queue_url, "PR_SQS_WAIT_S": "20"}
            hosts[mode] = Processor(root, f"lat-{mode}", secret, pool_url, git_base, extra)
            stack.callback(hosts[mode].close)
        senders["http"] = ProcessorClient(hosts["http"].url, secret)
        senders["sqs"] = JobQueue(queue_url)
        for n in range(WARMUP + LATENCY_JOBS):
            for mode in ("http", "sqs"):
                job = payload(n, f"lat-{mode}")
                started = time.perf_counter()
                senders[mode].submit(job)
                arrived = pools[mode].wait_arrival(f"{job['job_id']}.1")
                hosts[mode].wait_ended(job["job_id"])
                if n >= WARMUP:
                    times[mode].append(arrived - started)
        senders["http"].close()
        senders["sqs"].close()
    return times


def throughput(root: Path, endpoint: str, secret: str, git_base: str, processors: int) -> float:
    """Seconds from the first send until every one of JOBS messages is deleted (its job ended)."""
    from lambda_fn.queue import JobQueue

    queue = make_queue(endpoint)
    queue_url = queue.url
    with ExitStack() as stack:
        for n in range(processors):
            pool_url = stack.enter_context(serving(TimingPool(agent_s=AGENT_S).app()))
            host = Processor(root, f"tput-{processors}-{n}", secret, pool_url, git_base,
                             {"AIPM_DISPATCH": "sqs", "AIPM_JOB_QUEUE_URL": queue_url, "PR_SQS_WAIT_S": "20"})
            stack.callback(host.close)
        sender = JobQueue(queue_url)
        started = time.perf_counter()
        for n in range(JOBS):
            sender.submit(payload(n, f"tput-{processors}"))
        while queue.counts() != (0, 0):
            if time.perf_counter() - started > 600:
                raise RuntimeError(f"{processors} processors did not finish {JOBS} jobs in 600 s")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        sender.close()
    return elapsed


def run() -> dict:
    secret = secrets.token_hex(16)
    os.environ.update(CREDENTIALS)  # what boto3 reads in this process and in every processor it starts
    branches = [payload(n, f"lat-{mode}")["branch"] for mode in ("http", "sqs") for n in range(WARMUP + LATENCY_JOBS)]
    branches += [payload(n, f"tput-{p}")["branch"] for p in PROCESSORS for n in range(JOBS)]
    with tempfile.TemporaryDirectory(prefix="aipm-p11-") as tmp, moto_sqs_server() as endpoint:
        os.environ["AWS_ENDPOINT_URL_SQS"] = endpoint
        root = Path(tmp)
        git_base = make_forge(root, branches)
        times = latency(root, endpoint, secret, git_base)
        rates = {p: JOBS / throughput(root, endpoint, secret, git_base, p) for p in PROCESSORS}
    return {"latency": times, "rates": rates}


def main() -> None:
    r = run()
    print(f"Send → the worker pool receives the job (median of {LATENCY_JOBS} per mode after {WARMUP} warm-ups, "
          "modes alternating; PR processor fetch + worktree included on both paths; sqs long-polls with a 20 s wait).\n")
    print("| dispatch | median (ms) | min (ms) | max (ms) |")
    print("| --- | ---: | ---: | ---: |")
    for mode, label in (("http", "direct HTTP (`AIPM_DISPATCH=http`)"), ("sqs", "SQS FIFO, moto server (`AIPM_DISPATCH=sqs`)")):
        ms = [t * 1000 for t in r["latency"][mode]]
        print(f"| {label} | {statistics.median(ms):.0f} | {min(ms):.0f} | {max(ms):.0f} |")
    extra = statistics.median(r["latency"]["sqs"]) - statistics.median(r["latency"]["http"])
    print(f"\nMedian difference, sqs − http: {extra * 1000:+.0f} ms (moto on loopback; a real SQS call in the same "
          "region adds its own round trips).\n")
    print(f"{JOBS} jobs on one queue; each processor has its own pool of {POOL_SIZE} workers and an agent double "
          f"working {AGENT_S} s per task (ceiling: processors × {POOL_SIZE} / {AGENT_S} jobs/s).\n")
    print("| PR processors | jobs/s | × one processor | ceiling (jobs/s) |")
    print("| ---: | ---: | ---: | ---: |")
    one = r["rates"][PROCESSORS[0]]
    for p, rate in r["rates"].items():
        print(f"| {p} | {rate:.2f} | {rate / one:.2f} | {p * POOL_SIZE / AGENT_S:.0f} |")


if __name__ == "__main__":
    main()
