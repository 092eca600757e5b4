"""``python -m aipm_local.run`` (``make run``): the whole stack on loopback, and the one process that stops it.

Owns the local stack's life: state under ``AIPM_STATE_DIR`` (default ``.aipm/`` in the checkout), the shared secret
(``.aipm/secret``, mode 600, reused), the local forge with ``local/example``, the choice of agent (``kiro-cli`` when it
is on PATH and signed in, else the scripted stand-in, saying why; ``KIRO_COMMAND`` overrides; with
``AIPM_AGENT=claude-code`` / ``gemini`` the real claude-code-acp / Gemini CLI from ``agents/``, against its
provider's API or, with ``AIPM_MODEL=scripted``, the scripted model served from this process), and the three services
as children — worker pool, PR processor, then the API serving the UI — each in its own process group on 127.0.0.1.

Before the services start, one agent session is started and stopped as a worker would
(``ec2_services.worker_pool.preflight``: ACP initialize + session/new, the PTY's idle prompt); "ready" is said only
once the pool's own first worker has started its agent too. If the agent cannot start, the runner says why in one
line, in the agent's own words (e.g. kiro-cli's "agent 'aipm' not found"), and stops.

Once the services answer, ``<state>/run.json`` records the runner's PID and each service's port and PID for ``make
status`` (``run_record``); it is removed when the runner stops.

Ctrl+C or SIGTERM stops all three and every agent session within 15 s (``supervisor.Stack`` does the process side);
a child that dies on its own is named and the rest are stopped. It must not run the services through a shell, nor
leave a process behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from aipm_common.envnames import Agent, LambdaApi, Platform, PrProcessor, Shared, WorkerPool
from aipm_common.settings import SettingsError, load_settings
from aipm_local import run_record
from aipm_local.scripted_model import scripted_model
from aipm_local.supervisor import Stack, become_subreaper
from ec2_services.pr_processor.settings import PrProcessorSettings
from ec2_services.worker_pool.profiles import AGENTS
from ec2_services.worker_pool.settings import WorkerPoolSettings
from lambda_fn.settings import LambdaSettings

ROOT = Path(__file__).resolve().parents[1]
FRONTEND_DIR = ROOT / "frontend"
STANDIN_SCRIPT = ROOT / "aipm_local" / "standin_agent.py"
AGENTS_BIN = ROOT / "agents" / "node_modules" / ".bin"
# Gemini CLI's system settings for local runs: no usage statistics sent to Google.
GEMINI_SETTINGS = ROOT / "agents" / "gemini-settings.json"
SECRET_FILE = "secret"
# How long "ready" waits for a worker's agent: the ACP driver gives initialize 120 s (MCP servers can be slow).
AGENT_START_TIMEOUT_S = 150


class StackError(Exception):
    """Something that stops ``make run`` before the stack is up, said so a person knows what to do."""


@dataclass(frozen=True)
class LocalAgent:
    """How ``make run`` starts a real ACP agent from ``agents/``: its bin, the variables naming its provider's URL
    and key, and what it needs against the scripted model."""

    bin: str
    base_url_var: str
    key_var: str
    api: str
    scripted_env: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()


LOCAL_AGENTS = {
    "claude-code": LocalAgent("claude-code-acp", Agent.ANTHROPIC_BASE_URL, WorkerPool.ANTHROPIC_API_KEY, "the Anthropic API"),
    # A fixed model: with its default ("auto") every turn first asks a second model to route it.
    "gemini": LocalAgent("gemini", Agent.GOOGLE_GEMINI_BASE_URL, WorkerPool.GEMINI_API_KEY, "the Gemini API",
                         scripted_env=((Agent.GEMINI_MODEL, "gemini-2.5-flash"),),
                         env=((Agent.GEMINI_CLI_SYSTEM_SETTINGS_PATH, str(GEMINI_SETTINGS)),)),
}


@dataclass
class StackConfig:
    state_dir: Path
    forge_dir: Path
    api_port: int
    processor_port: int
    pool_port: int
    kiro_command: str | None
    agent: str = "kiro"
    model: str | None = None
    acp_command: str | None = None  # KIRO_ACP_COMMAND when set
    has_agent_key: bool = False  # the ACP agent's own model key (ANTHROPIC_API_KEY, GEMINI_API_KEY) is set

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
        agent=pool.aipm_agent,
        model=pool.aipm_model,
        acp_command=pool.kiro_acp_command if "kiro_acp_command" in pool.model_fields_set else None,
        has_agent_key={"claude-code": pool.anthropic_api_key, "gemini": pool.gemini_api_key}.get(pool.aipm_agent)
        is not None,
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


def choose_acp_agent(config: StackConfig, model_url: str | None) -> tuple[dict[str, str], str]:
    """For ``AIPM_AGENT=claude-code`` / ``gemini``: the variables the pool needs (its command, the scripted model's URL
    when ``model_url`` is given) and a sentence saying what runs."""
    local = LOCAL_AGENTS[config.agent]
    command = config.acp_command
    if command is None:
        binary = AGENTS_BIN / local.bin
        if not binary.exists():
            raise StackError(f"AIPM_AGENT={config.agent}: {binary.relative_to(ROOT)} is missing; run "
                             "`make agents` (npm ci in agents/), or set KIRO_ACP_COMMAND")
        command = shlex.join([str(binary), *shlex.split(AGENTS[config.agent].acp_command)[1:]])
    env = {WorkerPool.KIRO_ACP_COMMAND: command, **dict(local.env)}
    if model_url:
        # A key-shaped placeholder: the agent wants one; the scripted model ignores it.
        env.update({local.base_url_var: model_url, local.key_var: "scripted-model-no-key", **dict(local.scripted_env)})
        return env, (f"agent: the real {config.agent} agent ({command}) with the SCRIPTED model at {model_url}, NOT "
                     "an AI: it reads TASK.md, writes a function and its test for each `f(args) == value` criterion "
                     "and runs them, all through the agent's own tools")
    if not config.has_agent_key:
        raise StackError(f"AIPM_AGENT={config.agent} talks to {local.api}: set {local.key_var}, or "
                         "AIPM_MODEL=scripted to watch it work against the scripted model (no account)")
    return env, f"agent: {config.agent} ({command}) with {local.api} ({local.key_var}; billed per token)"


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
        from aipm_local.forge.gitcmd import GitError
        from aipm_local.forge.local import ensure_example_repo
    except ImportError as exc:
        raise StackError(f"the local forge is not available (aipm_local.forge.local: {exc})") from None
    if shutil.which("git") is None:
        raise StackError("git is not on PATH: the local forge and the PR processor need it (apt-get install git)")
    try:
        return ensure_example_repo(forge_dir)
    except (OSError, subprocess.SubprocessError, GitError) as exc:
        raise StackError(f"could not create the local forge in {forge_dir}: {exc}") from None


def stack_env(config: StackConfig, secret: str, kiro_command: str | None) -> dict[str, str]:
    """Every variable docs/contracts.md's "Local run" fixes, for all three (each service reads only its own)."""
    api_url = config.api_url
    env = {
        Shared.AIPM_SHARED_SECRET: secret,
        Shared.AIPM_STATE_DIR: str(config.state_dir),
        Platform.PYTHONUNBUFFERED: "1",
        WorkerPool.WORKER_POOL_HOST: "127.0.0.1",
        WorkerPool.WORKER_POOL_PORT: str(config.pool_port),
        PrProcessor.PR_PROCESSOR_HOST: "127.0.0.1",
        PrProcessor.PR_PROCESSOR_PORT: str(config.processor_port),
        LambdaApi.AIPM_API_HOST: "127.0.0.1",
        LambdaApi.AIPM_API_PORT: str(config.api_port),
        PrProcessor.WORKER_POOL_URL: f"http://127.0.0.1:{config.pool_port}",
        LambdaApi.PR_PROCESSOR_URL: f"http://127.0.0.1:{config.processor_port}",
        LambdaApi.PUBLIC_API_URL: api_url,
        PrProcessor.AIPM_CALLBACK_ORIGINS: api_url,
        LambdaApi.AIPM_FORGE: "local",
        LambdaApi.AIPM_LOCAL_FORGE_DIR: str(config.forge_dir),
        PrProcessor.GIT_BASE_URL: config.forge_dir.as_uri(),
        LambdaApi.AIPM_AUTH: "none",
        LambdaApi.AIPM_UI_DIR: str(FRONTEND_DIR),
        # `python` for the repositories' test commands (.aipm.toml) is this venv's, which has pytest.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)]),
    }
    if kiro_command:
        env[WorkerPool.KIRO_COMMAND] = kiro_command
    return env


def preflight(env: dict[str, str], timeout: float = AGENT_START_TIMEOUT_S + 30) -> tuple[bool, str]:
    """(started?, one line): one agent session started and stopped as a worker would, in its own process."""
    try:
        done = subprocess.run([sys.executable, "-m", "ec2_services.worker_pool.preflight"], cwd=ROOT,
                              env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, f"no agent session started within {timeout:.0f} s"
    said = (done.stdout if done.returncode == 0 else done.stderr).strip().splitlines()
    return done.returncode == 0, said[-1] if said else f"the preflight exited with status {done.returncode}"


def started_workers(pool_port: int) -> int | None:
    """How many of the pool's workers have an agent running (idle or busy), or None if /health did not answer."""
    try:
        health = httpx.get(f"http://127.0.0.1:{pool_port}/health", timeout=2, trust_env=False).json()
    except (httpx.HTTPError, ValueError):
        return None
    return sum(1 for worker in health.get("workers", []) if worker.get("state") in ("idle", "busy"))


def start_error(pool_log: Path, offset: int) -> str | None:
    """The first agent start failure the pool logged after ``offset`` (its ``start_error`` field), or None."""
    try:
        with pool_log.open("rb") as log:
            log.seek(offset)
            lines = log.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in lines:
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and isinstance(record.get("start_error"), str):
                return record["start_error"]
    return None


def wait_for_agent(stack: Stack, pool_port: int, pool_log: Path, offset: int,
                   timeout: float = AGENT_START_TIMEOUT_S) -> str | None:
    """None once one worker has really started its agent; else why not (the pool's words, which carry the agent's
    own error line). Returns None at once when a stop is asked (the caller checks ``stop_requested``)."""
    deadline = time.monotonic() + timeout
    pool = stack.children[0]
    while not stack.stop_requested.wait(0.1):
        if started_workers(pool_port):
            return None
        why = start_error(pool_log, offset)
        if why:
            return why
        if not pool.running:
            return f"the worker pool exited (status {pool.proc.returncode if pool.proc else '?'})"
        if time.monotonic() > deadline:
            return f"no worker's agent reached its idle state within {timeout:.0f} s (see {pool_log})"
    return None


def main() -> int:
    # What lives as long as the runner in its own process: the scripted model, when AIPM_MODEL=scripted.
    with contextlib.ExitStack() as running:
        return _run(running)


@dataclass(frozen=True)
class _Prepared:
    """What the start-up has settled before any service runs."""

    config: StackConfig
    secret: str
    example: Path
    kiro_command: str | None
    agent_env: dict[str, str]
    agent_note: str


def _run(running: contextlib.ExitStack) -> int:
    try:
        ready = _prepare(running)
    except SettingsError as exc:
        print(f"aipm: {exc.message}", file=sys.stderr)
        return 2
    except StackError as exc:
        print(f"aipm: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"aipm: cannot prepare the state directory (AIPM_STATE_DIR): {exc}", file=sys.stderr)
        return 1

    config = ready.config
    print(f"aipm: state in {config.state_dir}; local forge {config.forge_dir} (example: {ready.example})")
    print(f"aipm: {ready.agent_note}")
    env = {**stack_env(config, ready.secret, ready.kiro_command), **ready.agent_env}
    print("aipm: starting one agent session to check it (no task is sent)", flush=True)
    started, said = preflight(env)
    if not started:
        print(f"aipm: NOT ready: the agent did not start: {said}", file=sys.stderr)
        return 1
    print(f"aipm: {said}")
    stack = Stack(logs_dir=config.state_dir / "logs", pool_port=config.pool_port, processor_port=config.processor_port,
                  api_port=config.api_port, env=env)
    _stop_on_signals(stack)
    become_subreaper()
    return _serve(stack, config)


def _prepare(running: contextlib.ExitStack) -> _Prepared:
    """Settings, free ports, the secret, the local forge and the agent: SettingsError, StackError or OSError if not."""
    config = read_config()
    _check_ports(config)
    secret = ensure_secret(config.state_dir)
    example = prepare_forge(config.forge_dir)
    if config.agent == "kiro":
        kiro_command, agent_note = choose_agent(config.kiro_command)
        return _Prepared(config, secret, example, kiro_command, {}, agent_note)
    model_url = running.enter_context(scripted_model()).url if config.model == "scripted" else None
    agent_env, agent_note = choose_acp_agent(config, model_url)
    return _Prepared(config, secret, example, None, agent_env, agent_note)


def _check_ports(config: StackConfig) -> None:
    for port, service, variable in (
        (config.pool_port, "worker pool", WorkerPool.WORKER_POOL_PORT),
        (config.processor_port, "PR processor", PrProcessor.PR_PROCESSOR_PORT),
        (config.api_port, "API and UI", LambdaApi.AIPM_API_PORT),
    ):
        check_port_free(port, service, variable)
    if len({config.pool_port, config.processor_port, config.api_port}) < 3:
        raise StackError("WORKER_POOL_PORT, PR_PROCESSOR_PORT and AIPM_API_PORT must be three different ports")


def _stop_on_signals(stack: Stack) -> None:
    def request_stop(signum, _frame):
        if not stack.stop_requested.is_set():
            stack.say(f"\naipm: {signal.Signals(signum).name} received: stopping the services")
        stack.stop_requested.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, request_stop)


def _serve(stack: Stack, config: StackConfig) -> int:
    """Start the three services, record them, say ready once an agent has started, and watch until the stop; the
    services are stopped and the record removed however this ends."""
    pool_log = stack.children[0].log_path
    offset = pool_log.stat().st_size if pool_log.exists() else 0  # the log is appended to across runs
    try:
        if not stack.start():
            return 0 if stack.stop_requested.is_set() else 1
        run_record.write(config.state_dir, run_record.RunRecord(
            runner_pid=os.getpid(), started_at=run_record.now(), api_url=config.api_url,
            services=[run_record.Service(c.name, c.port, c.proc.pid if c.proc else None) for c in stack.children]))
        stack.say("aipm: services up; waiting for the first agent session to start")
        why = wait_for_agent(stack, config.pool_port, pool_log, offset)
        if stack.stop_requested.is_set():
            return 0
        if why:
            stack.say(f"aipm: NOT ready: the agent did not start: {why}")
            return 1
        stack.say(f"\naipm: ready — open {config.api_url}/\n"
                  f"aipm: Ctrl+C stops all three; `make status` shows their health and the queue.\n")
        return stack.watch()
    finally:
        stack.stop()
        run_record.remove(config.state_dir, os.getpid())


if __name__ == "__main__":
    sys.exit(main())
