"""The PTY driver: one agent CLI in a pseudo-terminal, driven like a person at the keyboard (docs/contracts.md, "Kiro facts").

Owns one process: spawned with ptyprocess in a fixed 200×50 terminal (``TERM=xterm-256color``) in its own process
group, read continuously on the event loop (``add_reader``; no thread, no polling), written without ever blocking.
The protocol, as ``run`` reads:

    type the prompt (inner newlines as Ctrl+J, submit with ``\\r``)
    loop: read → update the screen → asking for a tool? approve (or ``n`` for a denied tool)
                                    → idle prompt after the answer? done
    "having trouble responding"? wait (backoff), type it again — up to the retry limit

Each chunk goes through the cheap line stream (log and answer); the pyte screen is consulted only when the line
being drawn looks like a prompt, so the turn ends within a millisecond of the prompt and floods stay cheap.
A prompt is only believed once something new has printed since the last keystrokes sent (``_guard``), so the idle
prompt under an answered question, or the screen as it was before typing, is never taken for the end.

Process exit is watched with a pidfd, so a session whose process is gone is never idle, whatever its screen shows.
It must not decide anything about queues, task ids or HTTP: that is the pool's.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import contextvars
import enum
import logging
import os
import re
import signal
from collections.abc import Mapping
from pathlib import Path

from ptyprocess import PtyProcess

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
    UnsupportedAgent,
)
from ec2_services.worker_pool.drivers.kiro_version import (
    installed_version,
    kiro_cli_prefix,
    named_engine,
    pty_argv,
    shown,
)
from ec2_services.worker_pool.drivers.process import (
    agent_environment,
    die_with_parent,
    end_process_group,
    kill_process_group,
)
from ec2_services.worker_pool.drivers.pty.screen import (
    COLUMNS,
    ROWS,
    LineAssembler,
    Patterns,
    RecentScreen,
    ScreenState,
    classify_screen,
    last_nonblank_line,
    strip_ansi,
)
from ec2_services.worker_pool.drivers.pty.transcript import Transcript
from ec2_services.worker_pool.profiles import AgentProfile

log = logging.getLogger(__name__)

CTRL_C = "\x03"
# A terminal read gives at most 4 KB: up to 256 KB in one block when a flood fills the terminal faster than it is read
# (the per-block steps then cost per byte what they cost per line).
_READS_PER_WAKEUP = 64
class _Event(enum.Enum):
    IDLE = "idle"
    APPROVAL = "approval"
    CONFIRM = "confirm"
    EXITED = "exited"
    CANCEL = "cancel"
    UNREADABLE = "unreadable"


_FROM_SCREEN = {
    ScreenState.IDLE: _Event.IDLE,
    ScreenState.APPROVAL: _Event.APPROVAL,
    ScreenState.CONFIRM: _Event.CONFIRM,
}


class PtySession(AgentDriver):
    def __init__(
        self,
        worker_id: int,
        profile: AgentProfile,
        *,
        cwd: Path,
        env: Mapping[str, str],
        limits: Limits | None = None,
        adapt_command: bool = False,
    ):
        self.worker_id = worker_id
        self.profile = profile
        self.patterns = Patterns(profile)
        # KIRO_COMMAND unset: the profile's command may be fitted to the installed kiro-cli (drivers/kiro_version.py).
        self._adapt_command = adapt_command
        self._argv: list[str] | None = None
        self._unreadable = re.compile(profile.unreadable_screen_pattern)
        self._cwd = cwd
        self._env = agent_environment(env)
        self.limits = limits or Limits()
        self.agent_log = AgentOutputLog(worker_id)
        self.state = DriverState.EXITED
        self.exit_status: int | None = None
        self._proc: PtyProcess | None = None
        self._fd = -1
        self._pidfd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exited = asyncio.Event()
        self._events: asyncio.Queue[_Event] = asyncio.Queue()
        self._outbox = bytearray()
        self._turn: Transcript | None = None
        self._guard = -1
        self._data_seq = 0
        self._last_output = 0.0
        # The last non-blank finished line: a prompt followed by a newline leaves the cursor's line blank, and the
        # prompt must still be read from the last non-blank line (docs/contracts.md, KIRO_PROMPT_PATTERN).
        self._last_line = ""
        # This process has shown a prompt with more than a bare `>` (`[aipm] 20% λ > `): from then on a bare `> `
        # is the answer's, never the idle prompt (docs/contracts.md: the `[aipm]` prompt tells them apart).
        self._tagged_prompt = False
        self._cancel_requested = False
        self._log_context: contextvars.Context | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self.state is not DriverState.EXITED else None

    async def _command(self) -> list[str]:
        """The argv to start, checked once per session against the installed kiro-cli's version."""
        if self._argv is None:
            argv = self.profile.argv
            prefix = kiro_cli_prefix(argv)
            version = await installed_version(prefix, self._env) if prefix else None
            argv, problem = pty_argv(argv, version, adapt=self._adapt_command)
            self.agent_version, self.agent_engine = shown(version), named_engine(argv) if prefix else None
            if problem:
                raise UnsupportedAgent(problem)
            self._argv = argv
        return self._argv

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        argv = await self._command()
        self._reset_stream()
        try:
            self._proc = PtyProcess.spawn(
                argv,
                cwd=str(self._cwd),
                env=self._env,
                dimensions=(ROWS, COLUMNS),
                preexec_fn=die_with_parent,
            )
        except (OSError, ValueError) as exc:
            raise StartError(f"cannot start {argv[0]!r}: {exc}") from exc
        self._fd = self._proc.fd
        os.set_blocking(self._fd, False)
        self._loop.add_reader(self._fd, self._on_readable)
        with contextlib.suppress(OSError, AttributeError):
            self._pidfd = os.pidfd_open(self._proc.pid)
            self._loop.add_reader(self._pidfd, self._on_process_exit)
        self.state = DriverState.STARTING
        self._last_output = self._loop.time()
        log.info("worker %d: started %s (pid %d) in %s", self.worker_id, argv[0], self._proc.pid, self._cwd)
        try:
            event = await self._next_event(self._loop.time() + self.limits.start_timeout, stall=False)
        except TurnTimeout:
            await self.stop()
            raise StartError(
                f"no idle prompt within {self.limits.start_timeout:.0f} s (is the command interactive and the prompt "
                f"pattern right? last screen line: {self._last_screen_line()!r})"
            ) from None
        if event is _Event.EXITED:
            for _ in range(20):  # the terminal may close a moment before the status can be collected
                if self.exit_status is not None:
                    break
                await asyncio.sleep(0.05)
            said = self._last_screen_line()  # where the agent wrote why (a terminal is its stderr too)
            raise StartError(f"the agent exited with status {self.exit_status} before its first prompt"
                             + (f"; its last line: {said}" if said else ""))
        if event is _Event.UNREADABLE:
            await self.stop()
            raise UnsupportedAgent(
                "the agent opened a full-screen interface the PTY driver cannot read (kiro-cli's TUI): start its "
                "classic chat (kiro-cli 2.x: `kiro-cli chat --legacy-ui`), or set KIRO_DRIVER=acp (or headless)"
            )
        if event is not _Event.IDLE:
            await self.stop()
            raise StartError(f"the agent asked a question ({event.value}) before its first prompt")
        self.state = DriverState.IDLE

    def _reset_stream(self) -> None:
        self._exited = asyncio.Event()
        self._events = asyncio.Queue()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._lines = LineAssembler(self.profile)
        self._screen = RecentScreen()
        self._outbox.clear()
        self._guard = -1
        self._last_line = ""
        self._tagged_prompt = False
        self.exit_status = None

    async def stop(self) -> None:
        """Kill the agent's whole process group (a session's conversation is not worth a graceful goodbye)."""
        if self._proc is None or self.state is DriverState.EXITED:
            return
        if not await end_process_group(self._proc.pid, self._exited):
            self._on_process_exit()

    async def wait_exited(self) -> None:
        await self._exited.wait()

    def _kill_group(self, sig: int) -> None:
        if self._proc is not None:
            kill_process_group(self._proc.pid, sig)

    def _on_process_exit(self) -> None:
        """The process ended (pidfd readable, or the terminal closed): reap it and everything it left in its group."""
        if self.state is DriverState.EXITED or self._proc is None:
            return
        loop = self._loop
        pid = self._proc.pid
        self._drain_output()
        self._kill_group(signal.SIGKILL)
        self._reap(pid)
        for fd in (self._fd, self._pidfd):
            if fd >= 0 and loop is not None:
                loop.remove_reader(fd)
                loop.remove_writer(fd)
        if self._pidfd >= 0:
            os.close(self._pidfd)
        self._proc.fileobj.close()
        self._proc.closed = True
        self._proc.terminated = True
        self._fd = self._pidfd = -1
        self.state = DriverState.EXITED
        self.agent_log.flush()
        log.info("worker %d: agent pid %d exited with status %s", self.worker_id, pid, self.exit_status)
        self._exited.set()
        self._events.put_nowait(_Event.EXITED)

    def _drain_output(self) -> None:
        # Its last words (a crash message) may still be in the terminal when the exit is noticed.
        for _ in range(64):
            try:
                data = os.read(self._fd, 65536) if self._fd >= 0 else b""
            except OSError:
                return
            if not data:
                return
            self._on_output(data)

    def _reap(self, pid: int, attempt: int = 0) -> None:
        """Collect the exit status without blocking the loop (a process in the kernel may take a moment to go)."""
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            self.exit_status = os.waitstatus_to_exitcode(status)
        elif attempt < 200 and self._loop is not None:
            self._loop.call_later(0.05, self._reap, pid, attempt + 1)

    # ---- reading ---------------------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        # Take what the terminal holds now (up to a bound) in one go: fewer, larger blocks keep floods cheap.
        chunks: list[bytes] = []
        closed = False
        for _ in range(_READS_PER_WAKEUP):
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                closed = True
                break
            chunks.append(data)
        if chunks:
            self._on_output(b"".join(chunks) if len(chunks) > 1 else chunks[0])
        if closed:  # the terminal closed: the process is gone or going
            self._on_process_exit()

    def _on_output(self, data: bytes) -> None:
        self._data_seq += 1
        self._last_output = self._loop.time()
        text = self._decoder.decode(data)
        if self.state is DriverState.STARTING and self._unreadable.search(strip_ansi(text)):
            self._events.put_nowait(_Event.UNREADABLE)
        self._screen.feed(text)
        block = self._lines.feed(text)
        if block.count:
            last = last_nonblank_line(block)
            if last is not None:
                self._last_line = last
            if self._log_context is not None:  # the running task's ids go on its agent's lines too
                self._log_context.run(self.agent_log.block, block)
            else:
                self.agent_log.block(block)
            if self._turn is not None:
                self._turn.add(block)
        self._check_screen()

    def _check_screen(self) -> None:
        if self._lines.lines_completed <= self._guard or self._outbox:
            return  # still typing, or nothing new since our last keystrokes: what shows is what we answered
        plain = self._lines.partial_plain()
        if plain.strip():
            if not self.patterns.prompt_at_end(plain):
                return
            if self._lines.partial_is_answer_start():
                # The answer's coloured `> ` — or the yellow one a `[y/n]:` question reads its answer at.
                if self._lines.partial_is_confirm_prompt() and self.patterns.confirm.search(self._last_line):
                    self._events.put_nowait(_Event.CONFIRM)
                return
        elif not self.patterns.prompt_at_end(self._last_line):
            return  # nothing drawn on the cursor's line, and no prompt on the last line above it
        reading = classify_screen(self._screen.bottom_lines(), self.patterns)
        if reading.state is ScreenState.BUSY:
            return
        if reading.bare:
            if not self._tagged_prompt:
                self._loop.call_later(self.profile.bare_prompt_quiet_s, self._quiet_check, self._data_seq)
            return
        if reading.state is ScreenState.IDLE:
            self._tagged_prompt = True
        self._events.put_nowait(_FROM_SCREEN[reading.state])

    def _quiet_check(self, seq: int) -> None:
        if seq != self._data_seq or self.state is DriverState.EXITED or self._lines.lines_completed <= self._guard:
            return
        reading = classify_screen(self._screen.bottom_lines(), self.patterns)
        if reading.state is not ScreenState.BUSY and not (reading.bare and self._tagged_prompt):
            self._events.put_nowait(_FROM_SCREEN[reading.state])

    def _last_screen_line(self) -> str:
        lines = [line for line in self._screen.lines() if line.strip()]
        return lines[-1][-120:] if lines else ""

    # ---- writing ---------------------------------------------------------------------------------------------

    def _type(self, text: str) -> None:
        """Send keystrokes; what the terminal cannot take now is sent when it can (the loop never blocks)."""
        if self.state is DriverState.EXITED:
            return
        self._guard = self._lines.lines_completed
        self._drain_events()
        self._outbox += text.encode("utf-8")
        self._flush_outbox()

    def _flush_outbox(self) -> None:
        if self._fd < 0:
            return
        try:
            while self._outbox:
                written = os.write(self._fd, self._outbox)
                del self._outbox[:written]
        except BlockingIOError:
            self._loop.add_writer(self._fd, self._flush_outbox)
            return
        except OSError:
            self._outbox.clear()
        if self._fd >= 0:
            self._loop.remove_writer(self._fd)

    def _drain_events(self) -> None:
        kept = []
        while not self._events.empty():
            event = self._events.get_nowait()
            if event in (_Event.EXITED, _Event.CANCEL):
                kept.append(event)
        for event in kept:
            self._events.put_nowait(event)

    # ---- the protocol ----------------------------------------------------------------------------------------

    async def _next_event(self, deadline: float, *, stall: bool = True) -> _Event:
        """The next thing the agent shows; ``TurnTimeout`` past the deadline or after a silence of the stall time."""
        while True:
            now = self._loop.time()
            limit, stalled = self.limits.watchdog(deadline, self._last_output) if stall else (deadline, False)
            if now >= limit:
                raise TurnTimeout("stalled" if stalled else "timed out", TurnResult(""), stalled=stalled)
            try:
                return await asyncio.wait_for(self._events.get(), limit - now)
            except TimeoutError:
                continue

    async def run(self, prompt: str, *, timeout_s: float, cwd: Path | None = None) -> TurnResult:
        if self.state is not DriverState.IDLE:
            raise RuntimeError(f"worker {self.worker_id} is {self.state.value}, not idle")
        self.state = DriverState.BUSY
        self._cancel_requested = False
        self._log_context = contextvars.copy_context()
        turn = self._turn = Transcript(self.patterns, limit_chars=self.limits.output_limit)
        started = self._loop.time()
        deadline = started + timeout_s
        self._last_output = started
        counts = {"approvals": 0, "denials": 0, "retries": 0}
        try:
            while True:
                turn.begin(prompt)
                self._type(prompt.replace("\r", "") + "\r")
                await self._until_idle(turn, deadline, counts)
                if not turn.trouble:
                    return self._result(turn, counts)
                if counts["retries"] >= self.limits.trouble_retries:
                    raise AgentTrouble(
                        f"the agent was still having trouble responding after {counts['retries']} retries",
                        self._result(turn, counts),
                    )
                delay = self.limits.backoff(counts["retries"])
                counts["retries"] += 1
                log.warning(
                    "worker %d: agent having trouble responding; retry %d/%d in %.1f s",
                    self.worker_id,
                    counts["retries"],
                    self.limits.trouble_retries,
                    delay,
                )
                await self._pause(delay, deadline, turn, counts)
        except TurnTimeout as exc:
            await self.stop()
            why = self.limits.why_ended(stalled=exc.stalled, timeout_s=timeout_s)
            raise TurnTimeout(
                f"the task {why}; its agent session was killed and is being restarted",
                self._result(turn, counts),
                stalled=exc.stalled,
            ) from None
        finally:
            self._turn = None
            self._log_context = None
            self.agent_log.flush()
            if self.state is DriverState.BUSY:
                self.state = DriverState.IDLE

    def output_tail(self, max_lines: int = 20) -> list[str]:
        turn = self._turn
        return turn.tail(max_lines) if turn is not None and self.state is DriverState.BUSY else []

    def _result(self, turn: Transcript, counts: dict[str, int]) -> TurnResult:
        return TurnResult(
            output=turn.output(),
            approvals=counts["approvals"],
            denials=counts["denials"],
            credits=turn.credits,
            trouble_retries=counts["retries"],
        )

    async def _until_idle(self, turn: Transcript, deadline: float, counts: dict[str, int]) -> None:
        unconfirmed: int | None = None  # output count when a prompt showed without Kiro's end-of-turn evidence
        while True:
            if unconfirmed is None:
                event = await self._next_event(deadline)
            else:
                try:
                    quiet = min(self.profile.unconfirmed_prompt_quiet_s, max(0.0, deadline - self._loop.time()))
                    event = await asyncio.wait_for(self._events.get(), quiet)
                except TimeoutError:
                    if self._data_seq == unconfirmed:
                        log.info("worker %d: the prompt stayed %.1f s without a Credits line; the turn ended",
                                 self.worker_id, self.profile.unconfirmed_prompt_quiet_s)
                        return
                    unconfirmed = None  # more output came: that prompt was the answer's
                    continue
            unconfirmed = None
            if event is _Event.IDLE:
                if not self.profile.credits_end_turn or turn.ended_on_credits or turn.trouble:
                    return
                unconfirmed = self._data_seq
            if event is _Event.APPROVAL:
                self._answer_tool_request(turn, counts)
            elif event is _Event.CONFIRM:
                log.info("worker %d: agent asked a [y/n] question during a task; answering n", self.worker_id)
                turn.replied("n")
                self._type(self.profile.deny_reply)
            elif event is _Event.EXITED:
                raise AgentExited(
                    f"the agent exited (status {self.exit_status}) in the middle of the task", self._result(turn, counts)
                )
            elif event is _Event.CANCEL:
                await self._interrupt(turn, counts)

    def _answer_tool_request(self, turn: Transcript, counts: dict[str, int]) -> None:
        tool = turn.last_tool
        deny = bool(self.profile.deny_tools) and (tool is None or tool in self.profile.deny_tools)
        reply = self.profile.deny_reply if deny else self.profile.approval_reply
        counts["denials" if deny else "approvals"] += 1
        log.info(
            "worker %d: %s tool %s",
            self.worker_id,
            "denied" if deny else "approved",
            tool or "(name not shown)",
            extra={"fields": {"event": "tool_denied" if deny else "tool_approved", "tool": tool}},
        )
        turn.replied(reply)
        self._type(reply)

    async def _pause(self, delay: float, deadline: float, turn: Transcript, counts: dict[str, int]) -> None:
        """Wait out a backoff, still noticing an exit, a cancel or the deadline."""
        end = min(self._loop.time() + delay, deadline)
        while self._loop.time() < end:
            try:
                event = await asyncio.wait_for(self._events.get(), end - self._loop.time())
            except TimeoutError:
                break
            if event is _Event.EXITED:
                raise AgentExited("the agent exited while waiting to retry", self._result(turn, counts))
            if event is _Event.CANCEL:
                raise TurnCancelled("cancelled", self._result(turn, counts))
        if self._loop.time() >= deadline:
            raise TurnTimeout("timed out", self._result(turn, counts), stalled=False)
        self._last_output = self._loop.time()

    def cancel(self) -> None:
        if self.state is DriverState.BUSY and not self._cancel_requested:
            self._cancel_requested = True
            self._events.put_nowait(_Event.CANCEL)

    async def _interrupt(self, turn: Transcript, counts: dict[str, int]) -> None:
        """Ctrl+C, then the prompt back within the grace time — or the process goes (the pool respawns it)."""
        log.info("worker %d: cancelling the running task (Ctrl+C)", self.worker_id)
        self._type(CTRL_C)
        deadline = self._loop.time() + self.limits.cancel_grace
        try:
            while True:
                event = await self._next_event(deadline, stall=False)
                if event in (_Event.IDLE, _Event.EXITED):
                    break
        except TurnTimeout:
            log.warning("worker %d: no prompt %.0f s after Ctrl+C; killing the agent", self.worker_id, self.limits.cancel_grace)
            await self.stop()
        raise TurnCancelled("cancelled", self._result(turn, counts))

    async def reset(self) -> None:
        """``/clear`` answered ``y``: the next task starts with no memory of this one. Kills the agent if that fails."""
        if self.state is not DriverState.IDLE:
            return
        self.state = DriverState.BUSY
        deadline = self._loop.time() + self.limits.reset_timeout
        try:
            self._type(self.profile.clear_command + "\r")
            while True:
                event = await self._next_event(deadline, stall=False)
                if event is _Event.CONFIRM:
                    self._type(self.profile.clear_reply)
                elif event is _Event.IDLE:
                    break
                elif event is _Event.EXITED:
                    return
                else:
                    self._type(self.profile.deny_reply)
        except TurnTimeout:
            log.warning("worker %d: %s did not return to the prompt; restarting the agent", self.worker_id,
                        self.profile.clear_command)
            await self.stop()
            return
        finally:
            if self.state is DriverState.BUSY:
                self.state = DriverState.IDLE
        self.agent_log.flush()
