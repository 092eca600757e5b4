"""The whole local stack as ``make run`` starts it, for end-to-end and browser tests.

``running_stack(state_dir, ...)`` runs ``python -m aipm_local.run`` as a real process on free loopback ports, waits
for its "ready" line, yields a ``RunningStack``, and stops it after with SIGTERM. Whatever survives (it should not) is
killed: the runner's services are found by the state directory in their environment, the agents by a unique tag on
their command line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from aipm_local.run import standin_command
from tests.support.servers import ROOT, die_with_parent, free_port

TERMINAL = {"succeeded", "failed", "no_changes", "cancelled"}


@dataclass
class RunningStack:
    proc: subprocess.Popen
    state_dir: Path
    log_path: Path
    api_port: int
    processor_port: int
    pool_port: int
    tag: str
    stopped_in: float | None = field(default=None)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def ports(self) -> tuple[int, int, int]:
        return self.api_port, self.processor_port, self.pool_port

    @property
    def forge_repo(self) -> Path:
        return self.state_dir / "forge" / "local" / "example.git"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30)

    def wait_job(self, job_id: str, *, until=TERMINAL, timeout: float = 60) -> dict:
        """Poll the API's GET /api/jobs/{id} until the job's status is in ``until``."""
        deadline = time.monotonic() + timeout
        job: dict = {}
        with self.client() as client:
            while time.monotonic() < deadline:
                response = client.get(f"/api/jobs/{job_id}")
                assert response.status_code == 200, response.text
                job = response.json()
                if job["status"] in until:
                    return job
                time.sleep(0.2)
        raise AssertionError(f"job {job_id} still {job.get('status')} after {timeout} s: {job}\n{self.output()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> float:
        """Signal the runner alone (as `kill PID` would) and return how long it took to exit."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        self.stopped_in = time.monotonic() - started
        return self.stopped_in

    def leftovers(self) -> list[str]:
        """Processes of this stack still alive: services (by state dir in their env) and agents (by tag)."""
        marker = f"AIPM_STATE_DIR={self.state_dir}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                if not cmdline or (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
                    continue
                environ = (entry / "environ").read_bytes() if self.tag.encode() not in cmdline else b""
            except OSError:
                continue
            if self.tag.encode() in cmdline or marker in environ.split(b"\0"):
                shown = cmdline.replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name}: {shown}")
        return found

    def kill_leftovers(self) -> None:
        for line in self.leftovers():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)


def wait_ready(stack: RunningStack, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.proc.poll() is not None:
            raise RuntimeError(f"aipm_local.run exited with {stack.proc.returncode}:\n{stack.output()[-4000:]}")
        if "aipm: ready" in stack.output():
            return
        time.sleep(0.1)
    raise TimeoutError(f"the stack was not ready in {timeout} s:\n{stack.output()[-4000:]}")


@contextlib.contextmanager
def running_stack(state_dir: Path, *, agent_args: tuple[str, ...] = (), kiro_command: str | None = None,
                  pool_size: int = 2, ready_timeout: float = 90, **env: str) -> Iterator[RunningStack]:
    """The runner with the stand-in agent (``agent_args`` passed to it) unless ``kiro_command`` is given;
    ``kiro_command=""`` leaves the choice to the runner (no KIRO_COMMAND, and a PATH without kiro-cli)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tag = f"aipm-test-{uuid.uuid4().hex[:12]}"
    ports = free_port(), free_port(), free_port()
    variables = {
        "AIPM_STATE_DIR": str(state_dir),
        "AIPM_API_PORT": str(ports[0]),
        "PR_PROCESSOR_PORT": str(ports[1]),
        "WORKER_POOL_PORT": str(ports[2]),
        "KIRO_POOL_SIZE": str(pool_size),
        "KIRO_COMMAND": kiro_command if kiro_command is not None else standin_command(
            "--think", "0.05", "--tag", tag, *agent_args),
        "PR_RETRY_BASE_DELAY": "0.2",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    full_env = {**os.environ, **variables}
    if kiro_command == "":
        del full_env["KIRO_COMMAND"]
        full_env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    log_path = state_dir / "runner.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aipm_local.run"],
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    stack = RunningStack(proc, state_dir, log_path, *ports, tag=tag)
    try:
        wait_ready(stack, ready_timeout)
        yield stack
    finally:
        stack.stop()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        stack.kill_leftovers()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout
