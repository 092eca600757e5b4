"""Real, unmodified open-source ACP agents (``agents/package-lock.json``) driven by the worker pool, their model
calls answered by the scripted model server on loopback (``aipm_local.scripted_model``).

``claude_code_acp`` is the installed ``claude-code-acp`` (``npm ci`` in ``agents/`` when it is missing, one
installer at a time across test workers); the tests skip, saying why, only when node or npm is not installed.
``claude_pool(...)`` runs a real worker pool (``AIPM_AGENT=claude-code``) on loopback against a scripted model.
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

import pytest

from aipm_common.settings import WorkerPoolSettings
from aipm_local.scripted_model import ScriptedModel, scripted_model
from ec2_services.worker_pool.app import create_app
from ec2_services.worker_pool.pool import make_driver
from ec2_services.worker_pool.profiles import resolve_profile
from tests.ec2_services.worker_pool.conftest import PoolServer
from tests.support.servers import ROOT, serve_in_thread

AGENTS_DIR = ROOT / "agents"
CLAUDE_CODE_ACP = AGENTS_DIR / "node_modules" / ".bin" / "claude-code-acp"
# Looks like a key, is not one; the tests check it reaches the model server and never a log.
API_KEY = "sk-ant-test-0123456789abcdefghij"

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="session")
def claude_code_acp() -> Path:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: the real agent (@zed-industries/claude-code-acp, "
                    "`make agents`) cannot be installed or run")
    with open(Path(tempfile.gettempdir()) / "aipm-agents-npm-ci.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one `npm ci` at a time across xdist workers
        if not CLAUDE_CODE_ACP.exists():
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=AGENTS_DIR, check=True,
                           timeout=600, stdin=subprocess.DEVNULL)
    return CLAUDE_CODE_ACP


def agent_env(model: ScriptedModel, home: Path, **extra: str) -> dict[str, str]:
    """The service's environment as the agent would inherit it: the scripted model, a home of its own."""
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "ANTHROPIC_BASE_URL": model.url, "ANTHROPIC_API_KEY": API_KEY, "HOME": str(home), **extra}


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with scripted_model() as running:
        yield running


@pytest.fixture
def claude_pool(claude_code_acp, tmp_path, shared_secret, model) -> Iterator[Callable[..., PoolServer]]:
    """Factory: ``claude_pool(kiro_deny_tools="Write", env={...})`` → a running worker pool whose workers run the
    real claude-code-acp against ``model``."""
    with contextlib.ExitStack() as stack:

        def start(*, env: dict[str, str] | None = None, size: int = 1, **overrides) -> PoolServer:
            root = tmp_path / "workspaces"
            root.mkdir(exist_ok=True)
            settings = WorkerPoolSettings(**{
                "aipm_shared_secret": shared_secret,
                "aipm_agent": "claude-code",
                "kiro_acp_command": str(claude_code_acp),
                "kiro_pool_size": size,
                "kiro_workspace_root": root,
                "aipm_state_dir": tmp_path / "pool-state",
                "kiro_task_timeout": 120,
                **overrides,
            })
            base = agent_env(model, tmp_path / "home", **(env or {}))
            factory = make_driver(settings, resolve_profile(settings), env=base, cancel_grace=3.0)
            app = create_app(settings, secret=shared_secret, driver_factory=factory)
            server = PoolServer(stack.enter_context(serve_in_thread(app)), root, settings, shared_secret, "acp")
            server.wait_all_idle(timeout=60)
            return server

        yield start


def task_workspace(root: Path, name: str, criteria: tuple[str, ...] = ("multiply(4, 5) == 20",
                                                                        "multiply(-2, 3) == -6")) -> Path:
    """A job's work tree as the PR processor leaves it: a TASK.md with acceptance criteria."""
    workspace = root / name
    workspace.mkdir(parents=True)
    items = "\n".join(f"- {c}" for c in criteria)
    (workspace / "TASK.md").write_text(f"# Task: Multiply two numbers\n\n## Acceptance criteria\n\n{items}\n")
    return workspace
