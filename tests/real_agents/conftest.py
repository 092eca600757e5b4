"""Real, unmodified open-source ACP agents (``agents/package-lock.json``) driven by the worker pool, their model
calls answered by the scripted model server on loopback (``aipm_local.scripted_model``).

``claude_code_acp`` / ``gemini_cli`` are the installed ``claude-code-acp`` / ``gemini`` (``npm ci`` in ``agents/``
when one is missing, one installer at a time across test workers); the tests skip, saying why, only when node or npm
is not installed. ``claude_pool(...)`` / ``gemini_pool(...)`` run a real worker pool (``AIPM_AGENT=claude-code`` /
``gemini``) on loopback against a scripted model.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from aipm_common.signing import WORKER_POOL, SigningAuth
from aipm_local.scripted_model import ScriptedModel, scripted_model
from ec2_services.pr_processor.runner import build_prompt
from ec2_services.worker_pool.app import create_app
from ec2_services.worker_pool.drivers import make_driver
from ec2_services.worker_pool.profiles import resolve_profile
from ec2_services.worker_pool.settings import WorkerPoolSettings
from tests.ec2_services.worker_pool.conftest import PoolServer
from tests.ec2_services.worker_pool.test_process import start_service
from tests.support.servers import ROOT, free_port, serve_in_thread

AGENTS_DIR = ROOT / "agents"
CLAUDE_CODE_ACP = AGENTS_DIR / "node_modules" / ".bin" / "claude-code-acp"
GEMINI_CLI = AGENTS_DIR / "node_modules" / ".bin" / "gemini"
# Look like keys, are not; the tests check each reaches the model server and never a log.
API_KEY = "sk-ant-test-0123456789abcdefghij"
GEMINI_KEY = "AIzaSyTest-0123456789abcdefghijklmnop"

pytestmark = pytest.mark.timeout(180)


def installed(binary: Path) -> Path:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: the real agents (agents/package.json, `make agents`) "
                    "cannot be installed or run")
    with open(Path(tempfile.gettempdir()) / "aipm-agents-npm-ci.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one `npm ci` at a time across xdist workers
        if not binary.exists():
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=AGENTS_DIR, check=True,
                           timeout=600, stdin=subprocess.DEVNULL)
    return binary


@pytest.fixture(scope="session")
def claude_code_acp() -> Path:
    return installed(CLAUDE_CODE_ACP)


@pytest.fixture(scope="session")
def gemini_cli() -> Path:
    return installed(GEMINI_CLI)


def agent_env(model: ScriptedModel, home: Path, **extra: str) -> dict[str, str]:
    """The service's environment as the agent would inherit it: the scripted model, a home of its own."""
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "ANTHROPIC_BASE_URL": model.url, "ANTHROPIC_API_KEY": API_KEY, "HOME": str(home), **extra}


def gemini_env(model: ScriptedModel, home: Path, **extra: str) -> dict[str, str]:
    """The same for Gemini CLI: its API at the scripted model, one fixed model (no routing side query), no usage
    statistics (agents/gemini-settings.json, as ``make run`` sets it)."""
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "GOOGLE_GEMINI_BASE_URL": model.url, "GEMINI_API_KEY": GEMINI_KEY,
            "GEMINI_MODEL": "gemini-2.5-flash", "GEMINI_CLI_SYSTEM_SETTINGS_PATH": str(AGENTS_DIR / "gemini-settings.json"),
            "HOME": str(home), **extra}


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with scripted_model() as running:
        yield running


def pool_factory(stack: contextlib.ExitStack, tmp_path: Path, shared_secret: str, agent: str, command: str,
                 base_env: Callable[..., dict[str, str]]) -> Callable[..., PoolServer]:
    """``start(kiro_deny_tools="Write", env={...})`` → a running worker pool whose workers run the real ``agent``."""

    def start(*, env: dict[str, str] | None = None, size: int = 1, **overrides) -> PoolServer:
        root = tmp_path / "workspaces"
        root.mkdir(exist_ok=True)
        settings = WorkerPoolSettings(**{
            "aipm_shared_secret": shared_secret,
            "aipm_agent": agent,
            "kiro_acp_command": command,
            "kiro_pool_size": size,
            "kiro_workspace_root": root,
            "aipm_state_dir": tmp_path / "pool-state",
            "kiro_task_timeout": 120,
            **overrides,
        })
        factory = make_driver(settings, resolve_profile(settings), env=base_env(**(env or {})), cancel_grace=3.0)
        app = create_app(settings, secret=shared_secret, driver_factory=factory)
        server = PoolServer(stack.enter_context(serve_in_thread(app)), root, settings, shared_secret, "acp")
        server.wait_all_idle(timeout=60)
        return server

    return start


@pytest.fixture
def claude_pool(claude_code_acp, tmp_path, shared_secret, model) -> Iterator[Callable[..., PoolServer]]:
    """Factory: ``claude_pool(kiro_deny_tools="Write", env={...})`` → a running worker pool whose workers run the
    real claude-code-acp against ``model``."""
    with contextlib.ExitStack() as stack:
        yield pool_factory(stack, tmp_path, shared_secret, "claude-code", str(claude_code_acp),
                           lambda **extra: agent_env(model, tmp_path / "home", **extra))


@pytest.fixture
def gemini_pool(gemini_cli, tmp_path, shared_secret, model) -> Iterator[Callable[..., PoolServer]]:
    """The same with Gemini CLI (``gemini --acp``, AIPM_AGENT=gemini) against ``model``'s Gemini API."""
    with contextlib.ExitStack() as stack:
        yield pool_factory(stack, tmp_path, shared_secret, "gemini", f"{gemini_cli} --acp",
                           lambda **extra: gemini_env(model, tmp_path / "home", **extra))


def execute_in_service(service_process, env: dict[str, str], *, agent: str, command: str, secret: str,
                       state_dir: Path, prompt: str, task_id: str):
    """One task through ``python -m ec2_services.worker_pool`` as deployed (``AIPM_AGENT=agent``, one worker):
    (the service's process, its answer)."""
    env = {**env, "AIPM_STATE_DIR": str(state_dir), "WORKER_POOL_PORT": str(free_port()), "KIRO_POOL_SIZE": "1",
           "AIPM_AGENT": agent, "KIRO_ACP_COMMAND": command}
    proc, url = start_service(service_process, env)
    with httpx.Client(base_url=url, auth=SigningAuth(secret, WORKER_POOL), timeout=120) as client:
        answer = client.post("/execute", json={"prompt": prompt, "task_id": task_id})
    body = answer.json()
    assert "status" in body, (answer.status_code, body, proc.output()[-4000:])  # a task's result, not a refusal
    return proc, body


def prompt_for(workspace: Path) -> str:
    """The prompt the PR processor sends for a job in ``workspace``."""
    return build_prompt(workspace, workspace / "TASK.md", SimpleNamespace(branch="aipm/multiply"))


def task_workspace(root: Path, name: str, criteria: tuple[str, ...] = ("multiply(4, 5) == 20",
                                                                        "multiply(-2, 3) == -6")) -> Path:
    """A job's work tree as the PR processor leaves it: a TASK.md with acceptance criteria."""
    workspace = root / name
    workspace.mkdir(parents=True)
    items = "\n".join(f"- {c}" for c in criteria)
    (workspace / "TASK.md").write_text(f"# Task: Multiply two numbers\n\n## Acceptance criteria\n\n{items}\n")
    return workspace
