"""The three services as separate real processes on loopback, each restartable (SIGKILL and all), sharing one state
directory, a local forge (``file://`` GIT_BASE_URL), one shared secret and one GitHub token — and a record of every
log, API answer and SQLite file they produced, for the secrets check.

Reuses the suite's ``ServiceProcess`` / ``free_port`` / ``wait_http`` and the local forge's example repository.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from aipm_common.signing import LAMBDA_API, PR_PROCESSOR, WORKER_POOL, SigningAuth, receiver_key, signature
from aipm_local.forge.local import ensure_example_repo
from tests.support.servers import ServiceProcess, free_port, wait_http

AGENT = Path(__file__).with_name("agent.py")
FINAL = {"succeeded", "failed", "no_changes", "cancelled"}
TORTURE = os.environ.get("AIPM_TORTURE") == "1"
EXAMPLE = "local/example"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability.json"
_figures_lock = threading.Lock()


def server_failed(response: httpx.Response) -> bool:
    """A 5xx that is a failure of the service. The worker pool's ``POST /execute`` answers a task that ran out of
    the time its caller gave it (a fuzzed ``timeout_s`` of 1e-171 s, or a replay of such a task id) 504 with the
    task's result, as docs/contracts.md says: that answer is the contract, not a failure. Any other 5xx is."""
    if response.status_code < 500:
        return False
    if response.status_code != 504 or response.request.url.path != "/execute":
        return True
    try:
        body = response.json()
    except ValueError:
        return True
    return not (isinstance(body, dict) and body.get("status") == "timeout" and isinstance(body.get("task_id"), str)
                and isinstance(body.get("duration_s"), float | int))


def size(default: int, torture: int) -> int:
    return torture if TORTURE else default


def record_figures(test: str, **figures: Any) -> None:
    """Merge one test's figures into test-artifacts/reliability.json (under its name, then ``default`` or
    ``torture``) and print them."""
    print(f"\n[reliability] {test}: {json.dumps(figures, sort_keys=True)}")
    ARTIFACTS.parent.mkdir(parents=True, exist_ok=True)
    # Test files run in parallel processes (pytest-xdist): the read-merge-write holds a file lock, and the new
    # file replaces the old one whole, so no run's figures overwrite another's.
    with _figures_lock, open(ARTIFACTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = json.loads(ARTIFACTS.read_text())
        except (OSError, ValueError):
            data = {}
        mode = "torture" if TORTURE else "default"
        data.setdefault(test, {})[mode] = {**figures, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        tmp = ARTIFACTS.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(ARTIFACTS)


def job_id_for(repo: str, branch: str) -> str:
    return "j-" + hashlib.sha256(f"{repo.lower()}:{branch}".encode()).hexdigest()[:24]


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` and its descendants (agent sessions), in KiB."""
    total = 0
    pids = [pid]
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    while pids:
        current = pids.pop()
        pids.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def poll(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Call ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not true after {timeout} s (last: {str(last)[:2000]})")


@dataclass
class Stack:
    root: Path
    secret: str = field(default_factory=lambda: "rel-secret-" + secrets.token_hex(20))
    token: str = field(default_factory=lambda: "ghp_" + secrets.token_hex(18))
    pool_size: int = 2
    agent_args: tuple[str, ...] = ("--work-seconds", "0.05")
    ports: dict[str, int] = field(default_factory=lambda: {"pool": free_port(), "processor": free_port(),
                                                            "api": free_port()})
    procs: dict[str, ServiceProcess] = field(default_factory=dict)
    envs: dict[str, dict[str, str]] = field(default_factory=dict)
    answers: list[str] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    clients: list[httpx.Client] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state_dir = self.root / "state"
        self.forge_dir = self.root / "forge"
        self.workspace_root = self.state_dir / "workspaces"
        self.agent_state = self.root / "agent-state"
        for path in (self.state_dir, self.workspace_root, self.agent_state):
            path.mkdir(parents=True, exist_ok=True)
        ensure_example_repo(self.forge_dir)
        self.callback_origins: list[str] = [self.url("api")]

    # --- processes -------------------------------------------------------------------------------------------

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def common_env(self) -> dict[str, str]:
        return {"AIPM_SHARED_SECRET": self.secret, "AIPM_STATE_DIR": str(self.state_dir), "PYTHONUNBUFFERED": "1",
                "KIRO_WORKSPACE_ROOT": str(self.workspace_root)}

    def agent_command(self, *extra: str) -> str:
        return shlex.join([sys.executable, str(AGENT), "--state-dir", str(self.agent_state), *self.agent_args, *extra])

    def env_for(self, name: str, overrides: dict[str, str]) -> dict[str, str]:
        env = self.common_env()
        if name == "pool":
            env.update({"WORKER_POOL_PORT": str(self.ports["pool"]), "KIRO_POOL_SIZE": str(self.pool_size),
                        "KIRO_COMMAND": self.agent_command(), "KIRO_TROUBLE_BACKOFF": "0.1"})
        elif name == "processor":
            env.update({"PR_PROCESSOR_PORT": str(self.ports["processor"]), "WORKER_POOL_URL": self.url("pool"),
                        "GIT_BASE_URL": self.forge_dir.as_uri(), "GITHUB_TOKEN": self.token,
                        "PR_RETRY_BASE_DELAY": "0.1", "AIPM_CALLBACK_ORIGINS": ",".join(self.callback_origins),
                        "AIPM_LOG_LEVEL": "DEBUG"})
        else:
            env.update({"AIPM_API_PORT": str(self.ports["api"]), "PR_PROCESSOR_URL": self.url("processor"),
                        "PUBLIC_API_URL": self.url("api"), "AIPM_FORGE": "local",
                        "AIPM_LOCAL_FORGE_DIR": str(self.forge_dir), "AIPM_AUTH": "none",
                        "GITHUB_TOKEN": self.token, "AIPM_RATE_LIMIT_PER_MINUTE": "0", "AIPM_LOG_LEVEL": "DEBUG"})
        env.update(self.envs.get(name, {}))
        env.update(overrides)
        self.envs[name] = {k: v for k, v in env.items() if k not in self.common_env() or k == "KIRO_WORKSPACE_ROOT"}
        return env

    MODULES = {"pool": "ec2_services.worker_pool", "processor": "ec2_services.pr_processor", "api": "aipm_local.api"}

    def start(self, name: str, wait: bool = True, **overrides: str) -> ServiceProcess:
        env = self.env_for(name, overrides)
        log = self.root / f"{name}-{len(self.logs)}.log"
        self.logs.append(log)
        proc = ServiceProcess(self.MODULES[name], env, log).start()
        self.procs[name] = proc
        if wait:
            wait_http(self.url(name) + "/health", timeout=90, proc=proc.proc)
            if name == "pool":
                self.wait_pool_idle()
        return proc

    def start_all(self, **pool_env: str) -> Stack:
        self.start("pool", **pool_env)
        self.start("processor")
        self.start("api")
        return self

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.procs[name].kill(sig)

    def restart(self, name: str, sig: int = signal.SIGKILL, **overrides: str) -> ServiceProcess:
        self.procs[name].kill(sig)
        self.procs[name].stop()
        return self.start(name, **overrides)

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        for proc in self.procs.values():
            proc.stop()

    # --- clients ---------------------------------------------------------------------------------------------

    def _record(self, response: httpx.Response) -> None:
        response.read()
        self.answers.append(f"{response.request.method} {response.request.url} {response.status_code} "
                            f"{dict(response.headers)} {response.text}")

    def client(self, name: str, signed: bool = True, timeout: float = 60) -> httpx.Client:
        receiver = {"pool": WORKER_POOL, "processor": PR_PROCESSOR, "api": LAMBDA_API}[name]
        auth = SigningAuth(self.secret, receiver) if signed and name != "api" else None
        client = httpx.Client(base_url=self.url(name), auth=auth, timeout=timeout,
                              event_hooks={"response": [self._record]})
        self.clients.append(client)
        return client

    def sign(self, receiver: str, method: str, target: str, body: bytes, ts: int | None = None) -> dict[str, str]:
        ts = int(time.time()) if ts is None else ts
        return {"X-AIPM-Timestamp": str(ts),
                "X-AIPM-Signature": signature(receiver_key(self.secret, receiver), ts, method, target, body),
                "Content-Type": "application/json"}

    def health(self, name: str) -> dict:
        response = httpx.get(self.url(name) + "/health", timeout=30)
        self._record(response)
        return response.json()

    def wait_pool_idle(self, timeout: float = 90) -> dict:
        def idle():
            try:
                health = self.health("pool")
            except httpx.HTTPError:
                return None
            ok = health["status"] == "ok" and all(w["state"] == "idle" for w in health["workers"])
            return health if ok and len(health["workers"]) == health["pool_size"] else None
        return poll(idle, timeout, "every worker idle")

    # --- jobs through the processor ----------------------------------------------------------------------------

    def processor_job(self, job_id: str, client: httpx.Client | None = None) -> dict | None:
        client = client or self.client("processor")
        try:
            response = client.get(f"/api/jobs/{job_id}")
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        return response.json()

    def wait_final(self, job_ids: list[str], timeout: float) -> dict[str, dict]:
        client = self.client("processor")
        done: dict[str, dict] = {}

        def all_final():
            for job_id in job_ids:
                if job_id not in done:
                    job = self.processor_job(job_id, client)
                    if job and job["status"] in FINAL:
                        done[job_id] = job
            return len(done) == len(job_ids)

        try:
            poll(all_final, timeout, "every job final", interval=0.25)
        except AssertionError:
            missing = {j: self.processor_job(j, client) for j in job_ids if j not in done}
            raise AssertionError(f"{len(missing)} job(s) not final after {timeout} s: {missing}\n"
                                 f"{self.procs['processor'].output()[-3000:]}") from None
        return done

    # --- the forge -----------------------------------------------------------------------------------------------

    def bare(self, repo: str = EXAMPLE) -> Path:
        return self.forge_dir / f"{repo}.git"

    def git(self, *args: str, repo: str = EXAMPLE) -> str:
        return subprocess.run(["git", "--git-dir", str(self.bare(repo)), *args], check=True, capture_output=True,
                              text=True, env={"PATH": os.environ["PATH"], "GIT_CONFIG_NOSYSTEM": "1",
                                              "GIT_CONFIG_GLOBAL": "/dev/null"}).stdout

    def make_branch(self, branch: str, task: str, repo: str = EXAMPLE) -> None:
        """A branch off main with TASK.md = ``task``, made with plumbing on the bare repository."""
        blob = _git_input(self.bare(repo), ["hash-object", "-w", "--stdin"], task)
        main_tree = self.git("rev-parse", "main^{tree}", repo=repo).strip()
        entries = self.git("ls-tree", main_tree, repo=repo)
        lines = [line for line in entries.splitlines() if not line.endswith("\tTASK.md")]
        lines.append(f"100644 blob {blob}\tTASK.md")
        tree = _git_input(self.bare(repo), ["mktree"], "\n".join(lines) + "\n")
        parent = self.git("rev-parse", "main", repo=repo).strip()
        commit = _git_input(self.bare(repo), ["commit-tree", tree, "-p", parent, "-m", f"TASK.md for {branch}"], "",
                            ident=True)
        self.git("update-ref", f"refs/heads/{branch}", commit, repo=repo)

    def job_commits(self, branch: str, repo: str = EXAMPLE) -> list[str]:
        """The AIPM-Job trailer of each commit on ``branch`` (one entry per commit that has one)."""
        out = self.git("log", "--format=%H%x1f%B%x1e", f"refs/heads/{branch}", repo=repo)
        trailers = []
        for record in out.split("\x1e"):
            for line in record.splitlines():
                if line.startswith("AIPM-Job:"):
                    trailers.append(line.split(":", 1)[1].strip())
        return trailers

    # --- what the services left behind -----------------------------------------------------------------------------

    def sqlite_dump(self) -> str:
        texts = []
        for path in list(self.state_dir.rglob("*.sqlite*")) + list(self.forge_dir.rglob("*.sqlite*")) + \
                list(self.state_dir.rglob("*.db")):
            texts.append(path.read_bytes().decode("latin-1"))
            if path.suffix in (".sqlite", ".db"):
                try:
                    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
                    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
                        texts.extend(repr(row) for row in conn.execute(f'SELECT * FROM "{table}"'))
                    conn.close()
                except sqlite3.Error:
                    pass
        return "\n".join(texts)

    def leaked(self) -> list[str]:
        """Where the token, the shared secret or a receiver key appear: logs, API answers, SQLite files."""
        needles = {"GITHUB_TOKEN": self.token, "AIPM_SHARED_SECRET": self.secret}
        for receiver in (WORKER_POOL, PR_PROCESSOR, LAMBDA_API):
            needles[f"{receiver} key"] = receiver_key(self.secret, receiver).hex()
        places = {f"log {p.name}": p.read_text(errors="replace") for p in self.logs if p.exists()}
        places["API answers"] = "\n".join(self.answers)
        places["SQLite files"] = self.sqlite_dump()
        return [f"{what} in {where}" for where, text in places.items() for what, needle in needles.items()
                if needle in text]


def _git_input(git_dir: Path, args: list[str], data: str, ident: bool = False) -> str:
    env = {"PATH": os.environ["PATH"], "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}
    if ident:
        env.update({"GIT_AUTHOR_NAME": "Human", "GIT_AUTHOR_EMAIL": "h@example.com", "GIT_COMMITTER_NAME": "Human",
                    "GIT_COMMITTER_EMAIL": "h@example.com"})
    return subprocess.run(["git", "--git-dir", str(git_dir), *args], input=data, check=True, capture_output=True,
                          text=True, env=env).stdout.strip()
