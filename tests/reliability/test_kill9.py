"""Kill -9: the PR processor SIGKILLed at random moments while N jobs run, restarted each time; then the worker pool
SIGKILLed mid-task. Every accepted job reaches a final state, no branch gets the job's commit twice, and the signed
callbacks (to a loopback receiver that checks the signature) arrive for every finished job and agree with it.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from fastapi import Depends, FastAPI, Request

from aipm_common.signing import LAMBDA_API, SignatureVerifier
from tests.reliability.stack import EXAMPLE, poll, record_figures, size
from tests.support.servers import free_port, serve_in_thread

JOBS = size(4, 20)
KILLS = size(3, 12)


class CallbackReceiver:
    def __init__(self, secret: str):
        self.secret = secret
        self.received: list[dict] = []
        self.refused = 0
        self.lock = threading.Lock()

    def app(self) -> FastAPI:
        app = FastAPI()
        verify = SignatureVerifier(self.secret, LAMBDA_API)

        @app.middleware("http")
        async def count_refusals(request: Request, call_next):
            response = await call_next(request)
            if response.status_code == 401:
                self.refused += 1
            return response

        @app.post("/cb", dependencies=[Depends(verify)])
        async def callback(request: Request):
            with self.lock:
                self.received.append(await request.json())
            return {"ok": True}

        return app

    def for_job(self, job_id: str) -> list[dict]:
        with self.lock:
            return [c for c in self.received if c.get("job_id") == job_id]


def final_commits(stack, branch: str, job_id: str) -> tuple[int, int]:
    """(final commits, wip commits) of ``job_id`` on ``branch`` of the bare remote."""
    out = stack.git("log", "--format=%s%x1f%B%x1e", f"refs/heads/{branch}")
    final = wip = 0
    for record in out.split("\x1e"):
        if f"AIPM-Job: {job_id}" in record:
            if record.strip().startswith("wip:"):
                wip += 1
            else:
                final += 1
    return final, wip


def start_jobs(stack, receiver_url: str, prefix: str, count: int, work: float) -> dict[str, str]:
    client = stack.client("processor")
    jobs = {}
    for n in range(count):
        branch = f"aipm/{prefix}-{n}"
        stack.make_branch(branch, f"# {prefix} {n}\n\n[[sleep {work}]] [[write {prefix}-{n}.txt done]]\n")
        job_id = f"j-{prefix}-{n}"
        response = client.post("/api/process-pr", json={"job_id": job_id, "repo": EXAMPLE, "branch": branch,
                                                        "task_file": "TASK.md", "callback_url": receiver_url})
        assert response.status_code == 202, response.text
        jobs[job_id] = branch
    return jobs


def check_outcome(stack, receiver: CallbackReceiver, jobs: dict[str, str], timeout: float) -> dict:
    finished = stack.wait_final(list(jobs), timeout=timeout)
    duplicates = wips = 0
    for job_id, job in finished.items():
        assert job["status"] in ("succeeded", "failed"), job
        final, wip = final_commits(stack, jobs[job_id], job_id)
        wips += wip
        if job["status"] == "succeeded":
            assert final == 1, f"{job_id}: {final} commits of the job on {jobs[job_id]} (a duplicate)"
            assert stack.git("rev-parse", f"refs/heads/{jobs[job_id]}").strip() == job["commit"]
        else:
            assert job["error"], job
            assert final == 0, job
    # Every finished job's callback arrives (signed, checked by the receiver), and every copy says the same thing.
    client = stack.client("processor")
    poll(lambda: all(client.get(f"/api/jobs/{j}").json()["callback"]["state"] == "delivered" for j in jobs), 120,
         "every callback delivered")
    for job_id, job in finished.items():
        copies = receiver.for_job(job_id)
        assert copies, f"no callback for {job_id}"
        assert {(c["status"], c["commit"]) for c in copies} == {(job["status"], job["commit"])}, copies
        duplicates += len(copies) - 1
    assert receiver.refused == 0
    return {"duplicate_callbacks": duplicates, "wip_commits": wips,
            "succeeded": sum(j["status"] == "succeeded" for j in finished.values()),
            "failed": sum(j["status"] == "failed" for j in finished.values())}


@pytest.fixture
def receiver_stack(make_stack):
    def make(**kwargs):
        stack = make_stack(**kwargs)
        receiver = CallbackReceiver(stack.secret)
        port = free_port()
        stack.callback_origins.append(f"http://127.0.0.1:{port}")
        return stack, receiver, port
    return make


@pytest.mark.timeout(900)
def test_pr_processor_killed_at_random_moments_loses_no_job_and_duplicates_no_commit(receiver_stack):
    stack, receiver, port = receiver_stack(pool_size=2)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"kill -9 seed {seed}")
    with serve_in_thread(receiver.app(), port=port) as url:
        stack.start("pool")
        stack.start("processor")
        jobs = start_jobs(stack, url + "/cb", "k9", JOBS, work=1.0)
        started = time.monotonic()
        kills = 0
        client = stack.client("processor")
        for _ in range(KILLS):
            # A random moment: the chaos interval itself is what is random here, not a wait for a condition.
            time.sleep(rng.uniform(0.2, 2.5))
            states = {j: (stack.processor_job(j, client) or {}).get("status") for j in jobs}
            stack.restart("processor")
            kills += 1
            print(f"kill {kills}: job states before {states}")
            if all(s in ("succeeded", "failed") for s in states.values()):
                break
        outcome = check_outcome(stack, receiver, jobs, timeout=120 + JOBS * 15)
    record_figures("kill9_processor", jobs=JOBS, kills=kills, seed=seed, wall_s=round(time.monotonic() - started, 1),
                   **outcome)
    health = stack.wait_pool_idle()
    assert health["pool_size"] == 2


@pytest.mark.timeout(900)
def test_worker_pool_killed_mid_task_loses_no_job(receiver_stack):
    stack, receiver, port = receiver_stack(pool_size=2)
    with serve_in_thread(receiver.app(), port=port) as url:
        stack.start("pool")
        # An unreachable pool costs an attempt: the backoff (3 s, 6 s; 5 s, 10 s by default) must outlast a restart.
        stack.start("processor", PR_RETRY_BASE_DELAY="3")
        jobs = start_jobs(stack, url + "/cb", "pk9", max(2, JOBS // 2), work=2.0)
        started = time.monotonic()
        kills = 0
        client = stack.client("processor")
        for _ in range(size(2, 5)):
            def busy_or_done():
                if any(w["state"] == "busy" for w in stack.health("pool")["workers"]):
                    return "busy"
                states = [(stack.processor_job(j, client) or {}).get("status") for j in jobs]
                return "done" if all(s in ("succeeded", "failed") for s in states) else None

            if poll(busy_or_done, 60, "a worker busy, or every job ended") == "done":
                break
            stack.restart("pool")  # SIGKILL to the pool's group: the agents die with it, mid-task
            kills += 1
        outcome = check_outcome(stack, receiver, jobs, timeout=180 + JOBS * 15)
    # A kill costs the running jobs an attempt, not the job: only a job that was running at PR_MAX_ATTEMPTS (3) kills
    # may fail, and then with its reason.
    for job in stack.wait_final(list(jobs), timeout=30).values():
        if job["status"] == "failed":
            assert job["attempts"] == 3 and job["error"], job
    if kills < 3:
        assert outcome["succeeded"] == len(jobs), outcome
    record_figures("kill9_pool", jobs=len(jobs), kills=kills, wall_s=round(time.monotonic() - started, 1), **outcome)
    assert stack.wait_pool_idle()["pool_size"] == 2
