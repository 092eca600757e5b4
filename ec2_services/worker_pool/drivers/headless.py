"""The headless driver (``KIRO_DRIVER=headless``): one ``kiro-cli chat --no-interactive`` process per task.

Kiro's documented automation path (its "Headless mode" page): signed in with ``KIRO_API_KEY`` (inherited from the
service's environment, which the agent environment keeps), the prompt as the last argument, no terminal, no user to
approve tools. So each task runs, in the task's cwd (``honours_cwd``)::

    KIRO_HEADLESS_COMMAND --no-interactive --trust-tools=<KIRO_TRUST_TOOLS without KIRO_DENY_TOOLS> <prompt>

A tool left out of the trust list is refused by Kiro itself (nobody can approve it): that is the deny-list. The
answer is stdout (the coloured ``> `` marker and escape sequences removed); Kiro writes its own messages to stderr:
``▸ Credits: N • Time: Ns`` after the answer, and its errors. Outcomes:

    exit 0                          → TurnResult (``completed``), credits from stderr
    exit 1, Kiro's throttling error → waited out (backoff) and run again, ``KIRO_TROUBLE_RETRIES`` times, then
      on stderr                       AgentTrouble (``agent_error``, 503)
    exit 1 otherwise                → AgentTrouble with Kiro's error line (auth error, invalid args, failed)
    exit 3 / 4                      → AgentTrouble: an MCP server did not start / the agent was not found
    any other end (a signal, panic) → AgentExited (502): a crash mid-turn, its stderr tail in ``output``
    no output for the stall time    → TurnTimeout(stalled=True) (504), the process group killed
    past the task's timeout         → TurnTimeout (504), the process group killed
    cancel()                        → SIGINT to the group, SIGKILL after the grace → TurnCancelled (499)

There is no session between tasks: ``reset`` has nothing to do. After a crash or a timeout the driver reports
itself exited, so the pool counts and logs the restart as with the other drivers; ``start`` only checks that the
command can be found. Throttling is read only from stderr (Kiro's channel), never from the answer's prose.

Owns one process per task, from spawn to reaped group, and what its exit code means. Must not keep anything
between tasks (no session, no conversation), nor decide anything about queues, task ids or HTTP.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import contextvars
import logging
import re
import shlex
import shutil
import signal
from collections import deque
from collections.abc import Mapping
from pathlib import Path

from ec2_services.worker_pool.drivers.agent_log import AgentOutputLog
from ec2_services.worker_pool.drivers.base import (
    AgentDriver,
    AgentExited,
    AgentTrouble,
    DriverState,
    Limits,
    StartError,
    TurnCancelled,
    TurnResult,
    TurnTimeout,
)
from ec2_services.worker_pool.drivers.kiro_version import installed_version, kiro_cli_prefix, named_engine, shown
from ec2_services.worker_pool.drivers.process import agent_environment, die_with_parent, kill_process_group
from ec2_services.worker_pool.drivers.pty.screen import LineAssembler, strip_ansi
from ec2_services.worker_pool.profiles import AgentProfile

log = logging.getLogger(__name__)

# Kiro's own throttling / overload errors, as its stderr names them.
_THROTTLED = re.compile(
    r"ThrottlingException|TooManyRequestsException|ServiceUnavailableException|having trouble responding right now"
    r"|rate[ _-]?limit|experiencing high traffic",
    re.IGNORECASE,
)
_DOCUMENTED_EXITS = {
    3: "an MCP server the agent requires did not start (exit 3)",
    4: "the agent named in KIRO_HEADLESS_COMMAND was not found (exit 4): check ~/.kiro/agents/",
}
_STDERR_KEPT = 40  # lines of Kiro's stderr kept for an error's detail


class _Answer:
    """stdout as plain lines, the last ``limit`` characters kept."""

    def __init__(self, profile: AgentProfile, limit: int):
        self._lines = LineAssembler(profile)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._kept: deque[str] = deque()
        self._chars = 0
        self._limit = limit
        self.dropped = 0

    def feed(self, data: bytes) -> list[str]:
        block = self._lines.feed(self._decoder.decode(data))
        lines = block.plain_lines() if block.count else []
        for line in lines:
            self._keep(line.rstrip())
        return lines

    def _keep(self, line: str) -> None:
        self._kept.append(line)
        self._chars += len(line) + 1
        while self._chars > self._limit and self._kept:
            self._chars -= len(self._kept.popleft()) + 1
            self.dropped += 1

    def close(self) -> None:
        rest = self._lines.partial_plain() if self._lines.partial else ""
        if rest.strip():
            self._keep(rest.rstrip())

    def text(self) -> str:
        lines = list(self._kept)
        while lines and not lines[0].strip():
            lines.pop(0)
        while lines and not lines[-1].strip():
            lines.pop()
        if self.dropped:
            lines.insert(0, f"[… {self.dropped} earlier lines omitted: the answer was over {self._limit} characters …]")
        return "\n".join(lines)

    def tail(self, count: int) -> list[str]:
        return [line for line in self._kept if line.strip()][-count:]


class HeadlessDriver(AgentDriver):
    honours_cwd = True

    def __init__(
        self,
        worker_id: int,
        command: str,
        profile: AgentProfile,
        *,
        cwd: Path,
        env: Mapping[str, str],
        trust_tools: list[str],
        limits: Limits | None = None,
    ):
        self.worker_id = worker_id
        self._argv = shlex.split(command)
        if not self._argv:
            raise ValueError("KIRO_HEADLESS_COMMAND is empty after splitting into words")
        self.profile = profile
        self.patterns_credits = re.compile(profile.credits_pattern)
        self._cwd = cwd
        self._env = agent_environment(env)
        self._trust = list(trust_tools)
        self.limits = limits or Limits()
        self.agent_log = AgentOutputLog(worker_id)
        self.state = DriverState.EXITED
        self._proc: asyncio.subprocess.Process | None = None
        self._exited = asyncio.Event()
        self._answer: _Answer | None = None
        self._cancel = asyncio.Event()
        self._last_output = 0.0
        self._identified = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    def argv(self, prompt: str) -> list[str]:
        """The command one task runs: the trust list names exactly the tools not denied."""
        return [*self._argv, "--no-interactive", f"--trust-tools={','.join(self._trust)}", prompt]

    async def start(self) -> None:
        if shutil.which(self._argv[0], path=self._env.get("PATH")) is None:
            raise StartError(f"cannot start {self._argv[0]!r}: not found (KIRO_HEADLESS_COMMAND)")
        prefix = kiro_cli_prefix(self._argv)
        if prefix and not self._identified:  # for /health: `kiro-cli --version`, once per worker
            self.agent_version = shown(await installed_version(prefix, self._env))
            self.agent_engine = named_engine(self._argv)
            self._identified = True
        self._exited = asyncio.Event()
        self.state = DriverState.IDLE

    async def run(self, prompt: str, *, timeout_s: float, cwd: Path | None = None) -> TurnResult:
        if self.state is not DriverState.IDLE:
            raise RuntimeError(f"worker {self.worker_id} is {self.state.value}, not idle")
        self.state = DriverState.BUSY
        self._cancel = asyncio.Event()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        retries = 0
        try:
            while True:
                answer = self._answer = _Answer(self.profile, self.limits.output_limit)
                code, stderr, credits = await self._one_run(prompt, cwd or self._cwd, deadline, answer)
                result = TurnResult(answer.text(), credits=credits, trouble_retries=retries)
                if code == 0:
                    return result
                detail = _error_line(stderr)
                if code == 1 and any(_THROTTLED.search(line) for line in stderr):
                    if retries >= self.limits.trouble_retries:
                        raise AgentTrouble(f"Kiro was still throttled after {retries} retries: {detail}", result)
                    delay = self.limits.backoff(retries)
                    retries += 1
                    log.warning("worker %d: Kiro throttled (%s); retry %d/%d in %.1f s", self.worker_id, detail,
                                retries, self.limits.trouble_retries, delay)
                    await self._backoff(delay, deadline, result)
                    continue
                if code == 1:
                    raise AgentTrouble(f"kiro-cli failed (exit 1): {detail}", result)
                if code in _DOCUMENTED_EXITS:
                    raise AgentTrouble(f"{_DOCUMENTED_EXITS[code]}: {detail}", result)
                tail = "\n".join(stderr[-10:])
                crashed = TurnResult("\n".join(part for part in (answer.text(), tail) if part), credits=credits,
                                     trouble_retries=retries)
                self._mark_exited()
                raise AgentExited(f"the agent exited (status {code}) in the middle of the task", crashed)
        finally:
            self._answer = None
            self.agent_log.flush()
            if self.state is DriverState.BUSY:
                self.state = DriverState.IDLE

    async def _one_run(
        self, prompt: str, cwd: Path, deadline: float, answer: _Answer
    ) -> tuple[int, list[str], float | None]:
        loop = asyncio.get_running_loop()
        try:
            proc = self._proc = await asyncio.create_subprocess_exec(
                *self.argv(prompt), cwd=str(cwd), env=self._env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True, preexec_fn=die_with_parent,
            )
        except OSError as exc:
            raise AgentTrouble(f"cannot start {self._argv[0]!r}: {exc}", TurnResult("")) from exc
        log.info("worker %d: started %s (pid %d) in %s", self.worker_id, self._argv[0], proc.pid, cwd)
        self._last_output = loop.time()
        stderr: deque[str] = deque(maxlen=_STDERR_KEPT)
        credits: list[float] = []
        context = contextvars.copy_context()

        async def pump_stdout() -> None:
            assert proc.stdout is not None
            while data := await proc.stdout.read(65536):
                self._last_output = loop.time()
                lines = answer.feed(data)
                if lines:
                    context.run(self.agent_log.lines, lines)
            answer.close()

        async def pump_stderr() -> None:
            assert proc.stderr is not None
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            partial = ""
            while data := await proc.stderr.read(65536):
                self._last_output = loop.time()
                partial += decoder.decode(data)
                *done, partial = partial.split("\n")
                for raw in done:
                    self._stderr_line(strip_ansi(raw).strip(), stderr, credits, context)
            self._stderr_line(strip_ansi(partial).strip(), stderr, credits, context)

        pumps = asyncio.gather(pump_stdout(), pump_stderr())
        waiter = asyncio.ensure_future(proc.wait())
        cancel = asyncio.ensure_future(self._cancel.wait())
        try:
            while not waiter.done():
                limit, stalled = self.limits.watchdog(deadline, self._last_output)
                now = loop.time()
                if now >= limit:
                    await self._kill(proc)
                    self._mark_exited()
                    why = (f"stalled (no agent output for {self.limits.stall_timeout:g} s)" if stalled
                           else "timed out")
                    raise TurnTimeout(f"the task {why}; its agent process was killed", TurnResult(answer.text()),
                                      stalled=stalled)
                await asyncio.wait({waiter, cancel}, timeout=limit - now, return_when=asyncio.FIRST_COMPLETED)
                if cancel.done() and not waiter.done():
                    await self._interrupt(proc)
                    raise TurnCancelled("cancelled", TurnResult(answer.text()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(pumps), 5.0)  # what is left in the pipes after the exit
        finally:
            cancel.cancel()
            if not waiter.done():
                await self._kill(proc)
            kill_process_group(proc.pid, signal.SIGKILL)  # whatever it left behind in its group
            pumps.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pumps
            self._proc = None
        code = proc.returncode if proc.returncode is not None else -1
        log.info("worker %d: agent pid %d exited with status %s", self.worker_id, proc.pid, code)
        return code, list(stderr), (sum(credits) if credits else None)

    def _stderr_line(self, line: str, kept: deque[str], credits: list[float], context: contextvars.Context) -> None:
        if not line:
            return
        match = self.patterns_credits.search(line)
        if match:
            credits.append(float(match.group(1)))
        kept.append(line)
        context.run(self.agent_log.lines, [line])

    async def _backoff(self, delay: float, deadline: float, partial: TurnResult) -> None:
        loop = asyncio.get_running_loop()
        end = min(loop.time() + delay, deadline)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._cancel.wait(), max(0.0, end - loop.time()))
        if self._cancel.is_set():
            raise TurnCancelled("cancelled", partial)
        if loop.time() >= deadline:
            raise TurnTimeout("the task timed out while waiting to retry", partial, stalled=False)

    async def _interrupt(self, proc: asyncio.subprocess.Process) -> None:
        log.info("worker %d: cancelling the running task (SIGINT)", self.worker_id)
        kill_process_group(proc.pid, signal.SIGINT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), self.limits.cancel_grace)
        if proc.returncode is None:
            await self._kill(proc)

    @staticmethod
    async def _kill(proc: asyncio.subprocess.Process) -> None:
        kill_process_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 5.0)

    def _mark_exited(self) -> None:
        self.state = DriverState.EXITED
        self._exited.set()

    def output_tail(self, max_lines: int = 20) -> list[str]:
        answer = self._answer
        return answer.tail(max_lines) if answer is not None and self.state is DriverState.BUSY else []

    def cancel(self) -> None:
        if self.state is DriverState.BUSY:
            self._cancel.set()

    async def reset(self) -> None:
        """Nothing to reset: the next task runs a new process."""

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            await self._kill(self._proc)
        self._mark_exited()

    async def wait_exited(self) -> None:
        await self._exited.wait()


def _error_line(stderr: list[str]) -> str:
    """Kiro's error as it said it: its last line naming an error, else its last line."""
    for line in reversed(stderr):
        if re.search(r"error|fail|denied|invalid|not found|throttl|exception", line, re.IGNORECASE):
            return line[:500]
    return stderr[-1][:500] if stderr else "(nothing on stderr)"
