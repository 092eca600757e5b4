"""Which kiro-cli a command runs, and whether the PTY driver can read that version's chat (docs/contracts.md, "Kiro facts").

kiro-cli 1.x has one chat interface, the classic line-by-line one the PTY driver reads. 2.x added a full-screen
TUI and keeps the classic one behind ``--legacy-ui``. 3.0 retired the classic interface (a launch that asks for it
gets the V3 TUI), so no 3.x chat is readable by the PTY driver: it refuses to start there, naming the fix, rather
than restart an agent that can never reach a prompt it knows. ``kiro-cli --version`` prints ``kiro-cli 2.19.1``.

Only commands that run ``kiro-cli`` (a word whose file name is ``kiro-cli``, possibly behind a wrapper such as
``setpriv … --``) are asked; any other command (a test double, ``q chat``) is taken as it is.
Owns reading versions and fitting the PTY argv to one; must not start an agent (only ``kiro-cli --version``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Mapping

_VERSION = re.compile(r"\b(\d+)\.(\d+)\.(\d+)\b")
_ENGINE_FLAG = re.compile(r"^--agent-engine(?:=(\S+))?$")
LEGACY_UI = "--legacy-ui"
# What to set instead, said in every refusal.
_FIX = (
    "set KIRO_DRIVER=acp (or headless), or pin kiro-cli 2.19.x for KIRO_DRIVER=pty "
    "(CDK context kiroVersion=2.19.1 on a host)"
)

Version = tuple[int, int, int]


def kiro_cli_prefix(argv: list[str]) -> list[str] | None:
    """The words of ``argv`` up to and including the ``kiro-cli`` executable, or None when it runs something else."""
    for index, word in enumerate(argv):
        if os.path.basename(word) == "kiro-cli":
            return argv[: index + 1]
    return None


def parse_version(text: str) -> Version | None:
    match = _VERSION.search(text)
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


def shown(version: Version | None) -> str | None:
    """``2.19.1``, as /health shows a worker's ``agent_version``."""
    return ".".join(map(str, version)) if version is not None else None


def named_engine(argv: list[str]) -> str | None:
    """The agent engine a kiro-cli command names (``--agent-engine v2``, ``--agent-engine=v3``, ``--v3``), or None."""
    named = None
    for i, word in enumerate(argv):
        match = _ENGINE_FLAG.fullmatch(word)
        if match:
            named = match.group(1) or (argv[i + 1] if i + 1 < len(argv) else None)
        elif word == "--v3":
            named = "v3"
    return named


async def installed_version(prefix: list[str], env: Mapping[str, str], timeout: float = 15.0) -> Version | None:
    """``kiro-cli --version`` run as the command would run it; None if it cannot be told (it then starts as set)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *prefix, "--version", env=dict(env), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
    except OSError:
        return None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return None
    return parse_version(out.decode("utf-8", "replace"))


def pty_argv(argv: list[str], version: Version | None, *, adapt: bool) -> tuple[list[str], str | None]:
    """The argv to start for the PTY driver on ``version``, and why it cannot start (None when it can).

    ``adapt``: the command is the profile's default (``KIRO_COMMAND`` unset), so it may be changed to fit the
    version (1.x has no ``--legacy-ui``); a command set by hand is only checked."""
    if version is None:
        return argv, None
    shown = ".".join(map(str, version))
    if version >= (3, 0, 0):
        return argv, (
            f"kiro-cli {shown} has no classic chat interface (Kiro 3.0 retired --legacy-ui; its TUI is not readable "
            f"by the PTY driver): {_FIX}"
        )
    if version < (2, 0, 0) and LEGACY_UI in argv:
        if adapt:
            return [word for word in argv if word != LEGACY_UI], None
        return argv, f"kiro-cli {shown} has no {LEGACY_UI} option: remove it from KIRO_COMMAND"
    if version >= (2, 0, 0) and LEGACY_UI not in argv:
        if adapt:
            prefix = kiro_cli_prefix(argv) or []
            rest = argv[len(prefix):]
            at = rest.index("chat") + 1 if "chat" in rest else 0
            return prefix + rest[:at] + [LEGACY_UI] + rest[at:], None
        return argv, (
            f"kiro-cli {shown} opens its full-screen TUI without {LEGACY_UI}, which the PTY driver cannot read: "
            f"add {LEGACY_UI} to KIRO_COMMAND, or {_FIX.split(', or ')[0]}"
        )
    return argv, None
