"""A real worker pool on loopback (uvicorn in a thread) and a signed client.

``pool_server`` runs each test that uses it twice: under ``KIRO_DRIVER=pty`` (the Kiro double in real PTYs) and
under ``KIRO_DRIVER=acp`` (the ACP double on stdio) — the pool's behaviour must not depend on the driver.
``headless_pool_server`` runs the headless double (one process per task; drivers/test_headless.py).
``pty_pool_server`` / ``acp_pool_server`` are for what only one driver has (screen parsing; ACP permissions).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from aipm_common.signing import WORKER_POOL, SigningAuth
from ec2_services.worker_pool.app import create_app
from ec2_services.worker_pool.drivers import make_driver
from ec2_services.worker_pool.profiles import resolve_profile
from ec2_services.worker_pool.settings import WorkerPoolSettings
from tests.acp_double import command as acp_command
from tests.kiro_double import command, headless_command
from tests.support.servers import serve_in_thread


@dataclass
class PoolServer:
    url: str
    root: Path
    settings: WorkerPoolSettings
    secret: str
    driver: str = "pty"

    def client(self, timeout: float = 30) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=SigningAuth(self.secret, WORKER_POOL), timeout=timeout)

    def execute(self, prompt: str, task_id: str, **fields) -> httpx.Response:
        with self.client() as client:
            return client.post("/execute", json={"prompt": prompt, "task_id": task_id, **fields})

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=5).json()

    def wait_health(self, predicate: Callable[[dict], bool], timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if predicate(health):
                return health
            if time.monotonic() > deadline:
                raise AssertionError(f"health never matched: {health}")
            time.sleep(0.02)

    def wait_all_idle(self, timeout: float = 10) -> dict:
        return self.wait_health(lambda h: all(w["state"] == "idle" for w in h["workers"]), timeout)

    def in_background(self, prompt: str, task_id: str, **fields):
        executor = ThreadPoolExecutor(max_workers=1)
        future = executor.submit(self.execute, prompt, task_id, **fields)
        executor.shutdown(wait=False)
        return future


DRIVERS = ("pty", "acp")


@pytest.fixture(params=DRIVERS)
def pool_server(request, tmp_path, shared_secret):
    """Factory: ``pool_server(size=2, double_args=("--work-seconds", "1"), kiro_task_timeout=2)`` → a running
    PoolServer, once per driver (the double's options are common to both doubles)."""
    yield from _pool_servers(request.param, tmp_path, shared_secret)


@pytest.fixture
def pty_pool_server(tmp_path, shared_secret):
    yield from _pool_servers("pty", tmp_path, shared_secret)


@pytest.fixture
def headless_pool_server(tmp_path, shared_secret):
    yield from _pool_servers("headless", tmp_path, shared_secret)


@pytest.fixture
def acp_pool_server(tmp_path, shared_secret):
    yield from _pool_servers("acp", tmp_path, shared_secret)


def _pool_servers(driver: str, tmp_path: Path, shared_secret: str):
    started = itertools.count(1)
    with contextlib.ExitStack() as stack:

        def start(
            *, size: int = 1, double_args: tuple[str, ...] = (), wait: bool = True, cancel_grace: float = 1.0, **overrides
        ) -> PoolServer:
            root = tmp_path / "workspaces"
            root.mkdir(exist_ok=True)
            values = {
                "aipm_shared_secret": shared_secret,
                "kiro_pool_size": size,
                "kiro_driver": driver,
                "kiro_command": command(*double_args),
                "kiro_acp_command": acp_command(*double_args),
                "kiro_headless_command": headless_command(*double_args, "--state-dir", str(tmp_path)),
                "kiro_workspace_root": root,
                # Each pool of a test its own task ledger, as if on its own host (test_replay.py restarts one).
                "aipm_state_dir": tmp_path / f"pool-state-{next(started)}",
                "kiro_task_timeout": 10,
                "kiro_trouble_backoff": 0.05,
                "kiro_stall_timeout": 30,
                **overrides,
            }
            settings = WorkerPoolSettings(**values)
            # Short grace times keep the suite fast; the defaults are for real agents.
            # KIRO_API_KEY: the headless double, like kiro-cli, runs only signed in with a key.
            env = {**os.environ, "KIRO_API_KEY": "test-key"}
            factory = make_driver(settings, resolve_profile(settings), env, cancel_grace=cancel_grace,
                                  reset_timeout=5.0)
            app = create_app(settings, secret=shared_secret, driver_factory=factory)
            url = stack.enter_context(serve_in_thread(app))
            server = PoolServer(url, root, settings, shared_secret, driver)
            if wait:
                server.wait_all_idle()
            return server

        yield start
