"""Fixtures for the PR processor: a file:// forge, the scripted worker pool, and the service as a real process."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from aipm_common.signing import PR_PROCESSOR, SigningAuth
from tests.ec2_services.pr_processor.fake_pool import running_fake_pool
from tests.ec2_services.pr_processor.forge import Forge
from tests.support.servers import ServiceProcess, free_port, wait_http
from tests.support.sqs import _moto_sqs, job_queue  # noqa: F401 - fixtures (AIPM_DISPATCH=sqs)

TOKEN = "ghp_" + "T0kenThatMustNeverLeak" + "1234567890abcdef"
REPO = "acme/app"
BRANCH = "aipm/story-1"
FINAL = {"succeeded", "failed", "no_changes", "cancelled"}


@pytest.fixture
def forge(tmp_path) -> Forge:
    forge = Forge(tmp_path / "forge")
    forge.create_repo(REPO, branches=(BRANCH, "aipm/story-2", "aipm/story-3"))
    return forge


@pytest.fixture
def fake_pool(shared_secret):
    with running_fake_pool(shared_secret) as pool:
        yield pool


@dataclass
class Processor:
    proc: ServiceProcess
    url: str
    client: httpx.Client
    state_dir: Path
    env: dict[str, str]

    def submit(self, job_id: str, branch: str = BRANCH, **extra: Any) -> httpx.Response:
        body = {"job_id": job_id, "repo": REPO, "branch": branch, "task_file": "TASK.md", **extra}
        return self.client.post("/api/process-pr", json=body)

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait(self, job_id: str, until: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 30) -> dict:
        until = until or (lambda job: job["status"] in FINAL)
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if until(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} did not get there in {timeout} s: {job}\n{self.proc.output()[-3000:]}")
            time.sleep(0.05)

    def output(self) -> str:
        return self.proc.output()

    def health(self) -> dict[str, Any]:
        return httpx.get(self.url + "/health").json()


@pytest.fixture
def start_processor(tmp_path, forge, fake_pool, shared_secret, service_process):
    """Factory: start ``python -m ec2_services.pr_processor`` against the forge and the scripted pool."""
    state_dir = tmp_path / "state"
    clients: list[httpx.Client] = []

    def start(port: int | None = None, **env_overrides: str) -> Processor:
        port = port or free_port()
        env = {
            "AIPM_SHARED_SECRET": shared_secret,
            "AIPM_STATE_DIR": str(state_dir),
            "PR_PROCESSOR_HOST": "127.0.0.1",
            "PR_PROCESSOR_PORT": str(port),
            "WORKER_POOL_URL": fake_pool.url,
            "GIT_BASE_URL": forge.base_url,
            "GITHUB_TOKEN": TOKEN,
            "PR_RETRY_BASE_DELAY": "0.05",
            "PR_POOL_DOWN_WAIT": "0.3",
            "GIT_AUTHOR_NAME": "Test Bot",
            "GIT_AUTHOR_EMAIL": "test-bot@example.com",
            "AIPM_LOG_LEVEL": "DEBUG",
            **env_overrides,
        }
        proc = service_process("ec2_services.pr_processor", env, name="pr-processor")
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/health", proc=proc.proc)
        client = httpx.Client(base_url=url, auth=SigningAuth(shared_secret, PR_PROCESSOR), timeout=30)
        clients.append(client)
        return Processor(proc, url, client, state_dir, env)

    yield start
    for client in clients:
        client.close()
