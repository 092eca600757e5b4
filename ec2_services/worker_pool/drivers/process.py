"""The agent's process, as every driver owns it: its environment, its process group, its tree, and its end.

Owns what must hold whatever the driver: the agent's environment never holds the services' secrets
(``agent_environment``), it dies with the service (``die_with_parent``), and ending it ends everything it started
(``end_process_group``). A real agent starts processes outside its own group: Claude Code runs each shell command
in a new session (``setsid``), so ``killpg`` on the agent's group leaves that shell and its children running after
a timeout. ``descendants`` lists every process below a pid (by parent links, from /proc) while the tree is whole, so
they can be signalled before the leader's exit orphans them (Linux only: empty elsewhere).
Must not: spawn anything, read the agent's output, or know about turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from collections.abc import Mapping
from pathlib import Path

from ec2_services.worker_pool.drivers.pty.screen import COLUMNS, ROWS

_PROC = Path("/proc")

# Variables that must never reach the agent (docs/contracts.md: none of the services' secrets in its environment).
_SECRET_VARS = {
    "AIPM_SHARED_SECRET",
    "AIPM_SHARED_SECRET_ARN",
    "AIPM_UI_TOKEN",
    "GITHUB_TOKEN",
    "GITHUB_TOKEN_SECRET_ARN",
    "GH_TOKEN",
}
_AWS_KEPT = {"AWS_REGION", "AWS_DEFAULT_REGION"}


def agent_environment(base: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment: the service's, without its secrets or AWS credentials, with a known terminal."""
    env = {
        key: value
        for key, value in base.items()
        if key not in _SECRET_VARS and not (key.startswith("AWS_") and key not in _AWS_KEPT)
    }
    env.update({"TERM": "xterm-256color", "COLUMNS": str(COLUMNS), "LINES": str(ROWS)})
    return env


def die_with_parent() -> None:
    # Runs in the child before exec: the agent gets SIGKILL if the service dies without stopping it.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def kill_process_group(pid: int, sig: int) -> None:
    """Signal the agent's whole process group (it leads its own), if it is still there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def end_process_group(pid: int, exited: asyncio.Event, grace: float = 1.0) -> bool:
    """SIGTERM to the group, SIGKILL if its leader's exit is not seen within ``grace``; True if it was seen.
    Whatever the agent started outside its group (a shell in a session of its own) is found while the tree is
    whole and gets the same signals, and SIGKILL after the grace in any case: nothing of the agent outlives it."""
    tree = descendants(pid)
    kill_process_group(pid, signal.SIGTERM)
    _signal_each(tree, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(exited.wait(), grace)
    _signal_each(tree, signal.SIGKILL)
    if exited.is_set():
        return True
    kill_process_group(pid, signal.SIGKILL)
    return False


def _signal_each(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    try:
        entries = list(os.scandir(_PROC))
    except OSError:
        return parents
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            stat = (_PROC / entry.name / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # `pid (comm) state ppid …`; comm may hold spaces and parentheses: split after the last ')'.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children first, then theirs), not ``pid`` itself."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    frontier = [pid]
    while frontier:
        below = [c for p in frontier for c in children.get(p, []) if c not in found and c != pid]
        found.extend(below)
        frontier = below
    return found
