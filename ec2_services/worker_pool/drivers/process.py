"""The agent's process tree, read from /proc: what a process group kill misses.

A real agent starts processes outside its own group: Claude Code runs each shell command in a new session
(``setsid``), so ``killpg`` on the agent's group leaves that shell and its children running after a timeout.
``descendants`` lists every process below a pid (by parent links) while the tree is whole, so the caller can signal
them before the leader's exit orphans them. Linux only (empty elsewhere); it never signals anything itself.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")


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
