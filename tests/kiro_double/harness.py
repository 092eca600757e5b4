"""The worker pool service as a real process with the Kiro double as its agent (for benchmarks and by-hand runs).

``running_pool(size, double_args)`` starts ``python -m ec2_services.worker_pool`` on a free loopback port with a
generated secret, waits until every worker is idle, yields a ``RunningPool``, and stops it (and its agents) after.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from aipm_common.signing import WORKER_POOL, SigningAuth
from tests.kiro_double import command
from tests.support.servers import ServiceProcess, free_port, wait_http


@dataclass
class RunningPool:
    url: str
    secret: str
    process: ServiceProcess
    workspace_root: Path

    def auth(self) -> SigningAuth:
        return SigningAuth(self.secret, WORKER_POOL)

    def client(self, timeout: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=self.auth(), timeout=timeout)

    def async_client(self, timeout: float = 600) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        return httpx.AsyncClient(base_url=self.url, auth=self.auth(), timeout=timeout, limits=limits)


@contextlib.contextmanager
def running_pool(size: int, double_args: tuple[str, ...] = (), **env: str) -> Iterator[RunningPool]:
    with tempfile.TemporaryDirectory(prefix="aipm-pool-") as tmp:
        state = Path(tmp)
        secret = secrets.token_hex(16)
        port = free_port()
        variables = {
            "AIPM_SHARED_SECRET": secret,
            "AIPM_STATE_DIR": str(state),
            "WORKER_POOL_PORT": str(port),
            "KIRO_POOL_SIZE": str(size),
            "KIRO_COMMAND": command(*double_args),
            "KIRO_QUEUE_LIMIT": "1000",
            **env,
        }
        process = ServiceProcess("ec2_services.worker_pool", variables, state / "service.log").start()
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(url + "/health", proc=process.proc)
            deadline = time.monotonic() + 60
            while httpx.get(url + "/health").json()["status"] != "ok":
                if time.monotonic() > deadline:
                    raise TimeoutError(f"workers never became idle:\n{process.output()[-2000:]}")
                time.sleep(0.05)
            yield RunningPool(url, secret, process, state / "workspaces")
        finally:
            process.stop()
