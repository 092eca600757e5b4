"""Git for the local forge: argument-list subprocess calls against bare repositories, never a shell string.

Runs with a clean environment (no inherited ``GIT_*`` variables, no hooks, no system or global config) so the
user's git set-up cannot change what the forge stores.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

IDENTITY = {"name": "AIPM Local Forge", "email": "aipm-forge@localhost"}


class GitError(Exception):
    def __init__(self, args: list[str], returncode: int, stderr: str):
        super().__init__(f"git {' '.join(args[:2])} failed ({returncode}): {stderr.strip()[:500]}")
        self.returncode = returncode
        self.stderr = stderr


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME=IDENTITY["name"],
        GIT_AUTHOR_EMAIL=IDENTITY["email"],
        GIT_COMMITTER_NAME=IDENTITY["name"],
        GIT_COMMITTER_EMAIL=IDENTITY["email"],
    )
    env.update(extra or {})
    return env


def git(cwd: Path, *args: str, input: bytes | None = None, env: dict[str, str] | None = None, ok=(0,)) -> str:
    """Run ``git -C cwd args…``; stdout as text. A return code outside ``ok`` raises ``GitError``."""
    argv = ["git", "-c", "core.hooksPath=/dev/null", "-C", str(cwd), *args]
    proc = subprocess.run(argv, input=input, capture_output=True, env=git_env(env), timeout=60, check=False)
    if proc.returncode not in ok:
        raise GitError(list(args), proc.returncode, proc.stderr.decode("utf-8", "replace"))
    return proc.stdout.decode("utf-8", "replace")


def ref_sha(repo_dir: Path, ref: str) -> str | None:
    out = git(repo_dir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", ok=(0, 1)).strip()
    return out or None


def objects(repo_dir: Path, *names: str) -> list[str | None]:
    """The object id of each name (a ref, or ``ref:path``), None where there is none: one git process for all."""
    out = git(repo_dir, "cat-file", "--batch-check=%(objectname)", input="".join(f"{n}\n" for n in names).encode())
    return [None if line.endswith(" missing") or line.endswith(" ambiguous") else line for line in out.splitlines()]
