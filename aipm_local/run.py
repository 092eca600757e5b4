"""``python -m aipm_local.run`` (``make run``): the whole stack on loopback, and the one process that stops it.

Owns the local stack's life: state under ``AIPM_STATE_DIR`` (default ``.aipm/`` in the checkout), the shared secret
(``.aipm/secret``, mode 600, reused), the local forge with ``local/example``, the choice of agent (``kiro-cli`` when it
is on PATH and signed in, else the scripted stand-in, saying why; ``KIRO_COMMAND`` overrides), and the three services
as children — worker pool, PR processor, then the API serving the UI — each in its own process group on 127.0.0.1.

Ctrl+C or SIGTERM stops all three (TERM to each group, KILL after a grace period) and every agent session left over
(this process is a child subreaper, so orphaned agents come back to it) within 15 s. A child that dies on its own
is named and the rest are stopped. It must not run the services through a shell, nor leave a process behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

from ec2_services.common.settings import (
    LambdaSettings,
    PrProcessorSettings,
    SettingsError,
    WorkerPoolSettings,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[1]
FRONTEND_DIR = ROOT / "frontend"
STANDIN_SCRIPT = ROOT / "aipm_local" / "standin_agent.py"
SECRET_FILE = "secret"
HEALTH_TIMEOUT_S = 60
TERM_GRACE_S = 10
STOP_BUDGET_S = 15


class StackError(Exception):
    """Something that stops ``make run`` before the stack is up, said so a person knows what to do."""


@dataclass
class StackConfig:
    state_dir: Path
    forge_dir: Path
    api_port: int
    processor_port: int
    pool_port: int
    kiro_command: str | None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


def read_config() -> StackConfig:
    """Ports, state and forge dirs and KIRO_COMMAND from the services' own settings classes (one reader of env)."""
    pool = load_settings(WorkerPoolSettings)
    state_dir = (pool.aipm_state_dir if "aipm_state_dir" in pool.model_fields_set else ROOT / ".aipm").absolute()
    # With the state dir fixed, the settings' own defaults follow it (the forge in <state>/forge unless
    # AIPM_LOCAL_FORGE_DIR says otherwise), exactly as the services will compute them.
    processor = load_settings(PrProcessorSettings, aipm_state_dir=state_dir)
    api = load_settings(LambdaSettings, aipm_state_dir=state_dir)
    return StackConfig(
        state_dir=state_dir,
        forge_dir=api.aipm_local_forge_dir,
        api_port=api.aipm_api_port,
        processor_port=processor.pr_processor_port,
        pool_port=pool.worker_pool_port,
        kiro_command=pool.kiro_command,
    )


def ensure_secret(state_dir: Path) -> str:
    """The stack's shared secret: generated once into ``<state>/secret`` (mode 600), then reused."""
    path = state_dir / SECRET_FILE
    state_dir.mkdir(parents=True, exist_ok=True)
    if path.exists():
        os.chmod(path, 0o600)
        value = path.read_text(encoding="utf-8").strip()
        if len(value) >= 32:
            return value
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
    os.chmod(path, 0o600)
    return value


def read_secret(state_dir: Path) -> str | None:
    path = state_dir / SECRET_FILE
    return path.read_text(encoding="utf-8").strip() if path.exists() else None


def standin_command(*extra: str) -> str:
    """KIRO_COMMAND for the stand-in agent, run as a script by absolute path so any working directory works."""
    return shlex.join([sys.executable, str(STANDIN_SCRIPT), *extra])


def choose_agent(override: str | None) -> tuple[str | None, str]:
    """(KIRO_COMMAND to set or None for the pool's default, a sentence saying which agent and why)."""
    if override:
        return override, f"agent: KIRO_COMMAND={override}"
    kiro = shutil.which("kiro-cli")
    if kiro is None:
        reason = "kiro-cli is not on PATH"
    else:
        try:
            done = subprocess.run([kiro, "whoami"], capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = f"`kiro-cli whoami` could not run ({exc})"
        else:
            if done.returncode == 0:
                who = (done.stdout.strip().splitlines() or ["signed in"])[0]
                note = f"agent: kiro-cli ({who})"
                if not (Path.home() / ".kiro" / "agents" / "aipm.json").exists():
                    # The pool's default command names the agent `aipm`, which the EC2 installer writes on the host.
                    note += ("; note: its default command uses `--agent aipm` and ~/.kiro/agents/aipm.json does not "
                             "exist here — create that agent or set KIRO_COMMAND='kiro-cli chat --legacy-ui'")
                return None, note
            said = (done.stderr.strip() or done.stdout.strip()).splitlines()
            reason = f"`kiro-cli whoami` failed (exit {done.returncode}{': ' + said[0] if said else ''}); sign in with `kiro-cli login`"
    return standin_command(), (
        f"agent: the scripted STAND-IN agent, NOT an AI, because {reason}. It makes a small real change from TASK.md "
        "(a function and a test for each `f(args) == value` criterion, else AIPM_NOTES.md). "
        "Install and sign in to kiro-cli, or set KIRO_COMMAND, for real AI work."
    )


def check_port_free(port: int, service: str, variable: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise StackError(
                f"port {port} for the {service} is busy on 127.0.0.1 ({exc.strerror}). Is another `make run` still "
                f"running? Stop it, or choose another port: {variable}=<port> make run"
            ) from None


def prepare_forge(forge_dir: Path) -> Path:
    try:
        from lambda_fn.forge.local import ensure_example_repo
    except ImportError as exc:
        raise StackError(f"the local forge is not available (lambda_fn.forge.local: {exc})") from None
    return ensure_example_repo(forge_dir)


def stack_env(config: StackConfig, secret: str, kiro_command: str | None) -> dict[str, str]:
    """Every variable SPEC.md's "Local run" fixes, for all three (each service reads only its own)."""
    api_url = config.api_url
    env = {
        "AIPM_SHARED_SECRET": secret,
        "AIPM_STATE_DIR": str(config.state_dir),
        "PYTHONUNBUFFERED": "1",
        "WORKER_POOL_HOST": "127.0.0.1",
        "WORKER_POOL_PORT": str(config.pool_port),
        "PR_PROCESSOR_HOST": "127.0.0.1",
        "PR_PROCESSOR_PORT": str(config.processor_port),
        "AIPM_API_HOST": "127.0.0.1",
        "AIPM_API_PORT": str(config.api_port),
        "WORKER_POOL_URL": f"http://127.0.0.1:{config.pool_port}",
        "PR_PROCESSOR_URL": f"http://127.0.0.1:{config.processor_port}",
        "PUBLIC_API_URL": api_url,
        "AIPM_CALLBACK_ORIGINS": api_url,
        "AIPM_FORGE": "local",
        "AIPM_LOCAL_FORGE_DIR": str(config.forge_dir),
        "GIT_BASE_URL": config.forge_dir.as_uri(),
        "AIPM_AUTH": "none",
        "AIPM_UI_DIR": str(FRONTEND_DIR),
    }
    if kiro_command:
        env["KIRO_COMMAND"] = kiro_command
    return env


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
            return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200
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

    def __init__(self, config: StackConfig, env: dict[str, str], out=print):
        logs = config.state_dir / "logs"
        self.config = config
        self.env = env
        self.out = out
        self.stop_requested = threading.Event()
        self.children = [
            Child("worker-pool", "ec2_services.worker_pool", config.pool_port, logs / "worker-pool.log"),
            Child("pr-processor", "ec2_services.pr_processor", config.processor_port, logs / "pr-processor.log"),
            Child("lambda-api", "lambda_fn", config.api_port, logs / "lambda-api.log"),
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


def main() -> int:
    try:
        config = read_config()
        for port, service, variable in (
            (config.pool_port, "worker pool", "WORKER_POOL_PORT"),
            (config.processor_port, "PR processor", "PR_PROCESSOR_PORT"),
            (config.api_port, "API and UI", "AIPM_API_PORT"),
        ):
            check_port_free(port, service, variable)
        if len({config.pool_port, config.processor_port, config.api_port}) < 3:
            raise StackError("WORKER_POOL_PORT, PR_PROCESSOR_PORT and AIPM_API_PORT must be three different ports")
        secret = ensure_secret(config.state_dir)
        example = prepare_forge(config.forge_dir)
        kiro_command, agent_note = choose_agent(config.kiro_command)
    except SettingsError as exc:
        print(f"aipm: {exc.message}", file=sys.stderr)
        return 2
    except StackError as exc:
        print(f"aipm: {exc}", file=sys.stderr)
        return 1

    print(f"aipm: state in {config.state_dir}; local forge {config.forge_dir} (example: {example})")
    print(f"aipm: {agent_note}")
    stack = Stack(config, stack_env(config, secret, kiro_command))

    def request_stop(signum, _frame):
        if not stack.stop_requested.is_set():
            stack.say(f"\naipm: {signal.Signals(signum).name} received: stopping the services")
        stack.stop_requested.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, request_stop)
    become_subreaper()
    status = 0
    try:
        if stack.start():
            stack.say(f"\naipm: ready — open {config.api_url}/\n"
                      f"aipm: Ctrl+C stops all three; `make status` shows their health and the queue.\n")
            status = stack.watch()
        else:
            status = 0 if stack.stop_requested.is_set() else 1
    finally:
        stack.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
