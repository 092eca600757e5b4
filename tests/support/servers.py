"""Real HTTP servers on loopback for tests: an ASGI app under uvicorn in a thread, or a service as a process.

Every server started here is stopped when its fixture ends; processes are killed by pid (their whole group).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[2]


def die_with_parent() -> None:
    """``preexec_fn`` for a test's child: the kernel kills it if the test process dies (even by SIGKILL or a timeout
    that skips fixture teardown), so no service outlives a test run. Linux only; a no-op elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


_PORT_BLOCK = 800  # ports per pytest-xdist worker
_PORT_BASE = 20000
_next_port = itertools.count(random.randrange(_PORT_BLOCK))  # two test runs at once start apart


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (outgoing connections and ``bind(port 0)`` take theirs there)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port on 127.0.0.1 that nothing holds, for a service a test starts a moment later. Taken below the
    ephemeral range, in a block of its own per xdist worker: a port from ``bind(0)`` lies where every outgoing
    connection takes its port and where another worker's ``bind(0)`` can land, so under load one could be taken
    before the service bound it (the service can then fail to start while its health check reaches another test's
    service on that port). Falls back to ``bind(0)`` where the ephemeral range leaves no room below it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    low = _PORT_BASE + (int(worker) if worker.isdigit() else 0) * _PORT_BLOCK
    if low + _PORT_BLOCK <= _ephemeral_low():
        for _ in range(_PORT_BLOCK):
            port = low + next(_next_port) % _PORT_BLOCK
            if _bindable(port):
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_in_thread(app, port: int | None = None, **options) -> Iterator[str]:
    """Run ``app`` on 127.0.0.1 in a background thread; yields its base URL. ``options`` go to uvicorn.Config
    (``ssl_certfile`` / ``ssl_keyfile``: https)."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on",
                            **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"{'https' if options.get('ssl_certfile') else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def wait_http(url: str, timeout: float = 30, proc: subprocess.Popen | None = None) -> httpx.Response:
    """Poll ``url`` until it answers (any status); fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            return httpx.get(url, timeout=2)
        except httpx.HTTPError as exc:
            last = exc
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer in {timeout} s: {last}")


class ServiceProcess:
    """A service started as ``python -m module`` in its own process group, with its output in a file."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path, cwd: Path = ROOT):
        self.module = module
        self.env = env
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServiceProcess:
        env = {**os.environ, **self.env}
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env=env,
            cwd=self.cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            if self.proc.poll() is None:
                self.kill(signal.SIGKILL)
        # Whatever the service left in its group (agent sessions) goes too.
        if self.proc:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if getattr(self, "_log", None):
            self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
