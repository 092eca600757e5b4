"""The process side of ``make run``: three services as children, started in order, watched, and stopped together.

Owns each child's process group, its output (teed to ``<state>/logs/<name>.log`` and, as short human lines, to the
terminal), the /health waits, and the stop: TERM to every group, KILL after a grace period, then any agent session
orphaned to this process (it is a child subreaper). It knows nothing of settings, secrets or agents (``run`` does).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
HEALTH_TIMEOUT_S = 60
TERM_GRACE_S = 10
STOP_BUDGET_S = 15


def render_log_line(name: str, line: str) -> str:
    """A service's JSON log line as a short human line (other lines as they are)."""
    try:
        record = json.loads(line)
    except ValueError:
        return f"{name:<13} {line}"
    if not isinstance(record, dict) or "message" not in record:
        return f"{name:<13} {line}"
    when = str(record.get("time", ""))[11:19] or datetime.now().strftime("%H:%M:%S")
    ctx = " ".join(f"{k}={record[k]}" for k in ("job_id", "task_id", "worker") if k in record)
    return f"{when} {name:<13} {record.get('level', ''):<5} {('[' + ctx + '] ') if ctx else ''}{record['message']}"


@dataclass
class Child:
    """One service process: its own process group, output teed to ``<state>/logs/<name>.log`` and the terminal."""

    name: str
    module: str
    port: int
    log_path: Path
    proc: subprocess.Popen | None = None
    tail: deque = field(default_factory=lambda: deque(maxlen=20))
    _reader: threading.Thread | None = None

    def start(self, env: dict[str, str], echo) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module],
            cwd=ROOT,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._pump, args=(echo,), name=f"log-{self.name}", daemon=True)
        self._reader.start()

    def _pump(self, echo) -> None:
        assert self.proc and self.proc.stdout
        with open(self.log_path, "ab") as log:
            for raw in self.proc.stdout:
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.tail.append(line)
                echo(render_log_line(self.name, line))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def health(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def last_lines(self, n: int = 8) -> str:
        return "\n".join(f"    {line}" for line in list(self.tail)[-n:]) or "    (no output)"


def become_subreaper() -> bool:
    """Orphaned agent sessions are re-parented to this process, so a stop can find and end them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def own_children() -> list[int]:
    """Every live process whose parent is this one (from /proc)."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == me:
            found.append(int(entry.name))
    return found


class Stack:
    """The three services: start in order, watch, stop everything."""

    def __init__(self, *, logs_dir: Path, pool_port: int, processor_port: int, api_port: int, env: dict[str, str],
                 out=print):
        logs = logs_dir
        self.env = env
        self.out = out
        self.stop_requested = threading.Event()
        self.children = [
            Child("worker-pool", "ec2_services.worker_pool", pool_port, logs / "worker-pool.log"),
            Child("pr-processor", "ec2_services.pr_processor", processor_port, logs / "pr-processor.log"),
            Child("lambda-api", "aipm_local.api", api_port, logs / "lambda-api.log"),
        ]
        self._print_lock = threading.Lock()

    def say(self, text: str) -> None:
        # A closed or broken terminal must not stop the log pumps: a service blocked on a full pipe would hang.
        with self._print_lock, contextlib.suppress(OSError, ValueError):
            self.out(text)
            sys.stdout.flush()

    def start(self) -> bool:
        """Start each service and wait for its /health; False if stopped or a service failed (said why)."""
        for child in self.children:
            self.say(f"aipm: starting {child.name} on 127.0.0.1:{child.port} (log: {child.log_path})")
            child.start(self.env, self.say)
            deadline = time.monotonic() + HEALTH_TIMEOUT_S
            while not child.health():
                if self.stop_requested.wait(0.1):
                    return False
                if not child.running:
                    self.say(f"aipm: {child.name} exited with status {child.proc.returncode} while starting; its last "
                             f"lines:\n{child.last_lines()}")
                    return False
                if time.monotonic() > deadline:
                    self.say(f"aipm: {child.name} did not answer /health within {HEALTH_TIMEOUT_S} s; its last lines:\n"
                             f"{child.last_lines()}")
                    return False
        return True

    def watch(self) -> int:
        """Until a stop is asked (0) or a service dies on its own (1)."""
        while not self.stop_requested.wait(0.5):
            for child in self.children:
                if not child.running:
                    self.say(f"aipm: {child.name} exited unexpectedly with status {child.proc.returncode}; its last "
                             f"lines:\n{child.last_lines()}\naipm: stopping the other services")
                    return 1
        return 0

    def stop(self) -> None:
        """TERM every group (API first), KILL what is left after the grace period, then any orphaned agent."""
        started = time.monotonic()
        for child in reversed(self.children):
            if child.running:
                child.signal_group(signal.SIGTERM)
        deadline = started + TERM_GRACE_S
        for child in reversed(self.children):
            if child.proc is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            if child.proc.poll() is None:
                self.say(f"aipm: {child.name} did not stop within {TERM_GRACE_S} s: killing it")
            # Whatever is left in its group (a session that ignored TERM) goes now.
            child.signal_group(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=2)
        self._end_orphans(started + STOP_BUDGET_S - 1)
        for child in self.children:
            if child._reader is not None:
                child._reader.join(timeout=1)
        self.say(f"aipm: stopped in {time.monotonic() - started:.1f} s")

    def _end_orphans(self, deadline: float) -> None:
        known = {c.proc.pid for c in self.children if c.proc is not None}
        orphans = [pid for pid in own_children() if pid not in known]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in orphans:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            limit = min(deadline, time.monotonic() + 2)
            while orphans and time.monotonic() < limit:
                orphans = [pid for pid in orphans if not _reaped(pid)]
                if orphans:
                    time.sleep(0.05)
            if not orphans:
                return


def _reaped(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid
