"""A repository's own test command, run where the agent runs and as the agent (``POST /run``, docs/contracts.md).

The PR processor asks for it after the agent's turn, to put "Tests: 12 passed / 1 failed" in the result comment. The
command is the repository's code (and the agent's changes to it), so it gets exactly the agent's confinement: the
``KIRO_RUN_AS`` prefix (on a host, the same ``setpriv`` to the agent's user the agent commands start with), the
agent's environment without the services' secrets and without the agent's own API keys, the job's worktree as its
directory, its own process group (killed as a whole at the time limit, or when the pool stops), no terminal and no
stdin. No shell: the command is split as a shell splits words.

Owns: running one command and summarising its output. Must not: touch an agent session, or keep anything on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import time
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from ec2_services.worker_pool.drivers.process import agent_environment, die_with_parent, kill_process_group
from ec2_services.worker_pool.drivers.pty.screen import strip_ansi
from ec2_services.worker_pool.profiles import PROVIDER_KEY_VARS

OUTPUT_TAIL_CHARS = 4000
# pytest's closing line (`== 12 passed, 1 failed, 2 skipped in 0.51s ==`), unittest's (`Ran 3 tests` … `FAILED
# (failures=1)`), and the common `N passed` / `N failed` counts of other runners.
_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)\b")
_PYTEST_END = re.compile(r"^=*\s*((?:\d+ \w+|no tests ran)(?:, \d+ \w+)*) in [\d.]+s\b.*$")
_UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in ")
_UNITTEST_FAILED = re.compile(r"^FAILED \((.*)\)$")


class CommandResult(BaseModel):
    """What ``POST /run`` answers (with the task id): docs/contracts.md."""

    model_config = ConfigDict(frozen=True)

    exit_code: int | None
    passed: int | None
    failed: int | None
    summary: str
    output: str
    duration_s: float
    timed_out: bool


def test_environment(base: Mapping[str, str]) -> dict[str, str]:
    """The repository's tests get the agent's environment without any model key (an agent may have its own)."""
    env = agent_environment(base)
    for key in PROVIDER_KEY_VARS:
        env.pop(key, None)
    env.update({"CI": "1", "PYTHONDONTWRITEBYTECODE": "1", "NO_COLOR": "1"})
    return env


def summarise(output: str, exit_code: int | None, timed_out: bool) -> tuple[int | None, int | None, str]:
    """(passed, failed, "12 passed / 1 failed") from what the runner printed; the exit code when it says nothing."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    passed = failed = None
    for index in range(len(lines) - 1, -1, -1):
        end = _PYTEST_END.fullmatch(lines[index])
        if end:
            counts = {kind.rstrip("s"): int(n) for n, kind in _COUNT.findall(end.group(1))}
            passed = counts.get("passed", 0)
            failed = counts.get("failed", 0) + counts.get("error", 0)
            break
        ran = _UNITTEST_RAN.match(lines[index])
        if ran:
            verdicts = [m.group(1) for m in map(_UNITTEST_FAILED.match, lines[index + 1:]) if m]
            failed = sum(int(n) for n in re.findall(r"(?:failures|errors)=(\d+)", verdicts[0] if verdicts else ""))
            passed = int(ran.group(1)) - failed
            break
    if timed_out:
        verdict = "timed out"
    elif exit_code is None:
        verdict = "did not run"
    elif passed is None:
        verdict = "passed (exit code 0)" if exit_code == 0 else f"failed (exit code {exit_code})"
    else:
        verdict = f"{passed} passed / {failed} failed" + ("" if exit_code == 0 or failed else f" (exit code {exit_code})")
    return passed, failed, verdict


async def run_command(command: str, *, cwd: Path, timeout_s: float, run_as: list[str],
                      base_env: Mapping[str, str] | None = None) -> CommandResult:
    """Run ``command`` in ``cwd`` as the agent; never raises for what the command does (a missing program included)."""
    argv = [*run_as, *shlex.split(command)]
    started = time.monotonic()
    env = test_environment(os.environ if base_env is None else base_env)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=str(cwd), env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent,
        )
    except OSError as exc:
        message = f"could not start {argv[len(run_as)]!r}: {exc.strerror or exc}"
        return CommandResult(exit_code=None, passed=None, failed=None, summary="did not run", output=message,
                             duration_s=round(time.monotonic() - started, 3), timed_out=False)
    chunks: list[bytes] = []
    kept = 0

    async def read() -> None:
        nonlocal kept
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            chunks.append(chunk)
            kept += len(chunk)
            while kept > 4 * OUTPUT_TAIL_CHARS * 4 and len(chunks) > 1:  # keep a bounded tail, whatever it prints
                kept -= len(chunks.pop(0))

    timed_out = False
    reader = asyncio.create_task(read())
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), timeout_s)
    except TimeoutError:
        timed_out = True
    finally:
        # The whole group goes, also when this coroutine is cancelled (the pool stopping): nothing outlives the run.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill_process_group(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            await proc.wait()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(reader, 5)
        reader.cancel()
    output = strip_ansi(b"".join(chunks).decode("utf-8", "replace")).replace("\r\n", "\n")
    exit_code = None if timed_out else proc.returncode
    passed, failed, summary = summarise(output, exit_code, timed_out)
    return CommandResult(exit_code=exit_code, passed=passed, failed=failed, summary=summary,
                         output=output[-OUTPUT_TAIL_CHARS:], duration_s=round(time.monotonic() - started, 3),
                         timed_out=timed_out)


class CommandRunner:
    """At most ``limit`` runs at once; a run's result is kept ``ttl_s`` by its task id, so a replay runs nothing."""

    def __init__(self, run_as: list[str], *, limit: int, ttl_s: float):
        self.run_as = run_as
        self.ttl_s = ttl_s
        self._slots = asyncio.Semaphore(limit)
        self._runs: dict[str, tuple[float, str, asyncio.Task[CommandResult]]] = {}

    async def run(self, task_id: str, command: str, *, cwd: Path, timeout_s: float) -> CommandResult:
        now = time.monotonic()
        for key, (created, _, task) in list(self._runs.items()):
            if task.done() and now - created > self.ttl_s:
                del self._runs[key]
        known = self._runs.get(task_id)
        if known is not None:
            if known[1] != command:
                raise ValueError(f"task {task_id!r} already ran another command")
            return await asyncio.shield(known[2])
        try:
            words = shlex.split(command)
        except ValueError as exc:
            raise ValueError(f"command cannot be split into words: {exc}") from None
        if not words:
            raise ValueError("command is empty")
        task = asyncio.create_task(self._run(command, cwd, timeout_s))
        self._runs[task_id] = (now, command, task)
        return await asyncio.shield(task)

    async def _run(self, command: str, cwd: Path, timeout_s: float) -> CommandResult:
        async with self._slots:
            return await run_command(command, cwd=cwd, timeout_s=timeout_s, run_as=self.run_as)

    async def close(self) -> None:
        for _, _, task in self._runs.values():
            task.cancel()
        for _, _, task in self._runs.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
