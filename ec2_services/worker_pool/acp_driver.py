"""The ACP driver (``KIRO_DRIVER=acp``): the agent as an Agent Client Protocol server (``kiro-cli acp``) on stdio.

Where the PTY driver reads a screen, this one reads structured JSON-RPC messages through the ``agent-client-protocol``
library's client side (``acp.connect_to_agent``): no screen parsing, no prompt patterns. One process per worker,
spawned from ``KIRO_ACP_COMMAND`` (split as a shell splits words, no shell) in its own process group, in
``KIRO_WORKSPACE_ROOT``, with the same secret-free environment as the PTY driver. The protocol, per task:

    session/new {cwd: the task's cwd}        a fresh conversation per task: nothing to /clear, the cwd is native
    session/prompt [text]                    while it runs, the agent sends
        session/update                         agent_message_chunk → the answer and ``[Worker N]`` log lines;
                                               tool_call / tool_call_update → a line each; anything → "alive"
        session/request_permission             answered at once: an allow option (approval), or a reject option
                                               for a tool in ``KIRO_DENY_TOOLS`` (denial)
    ← the prompt's response {stopReason}     the turn's end

How a turn's end maps onto the driver contract (``driver.py``):

    stopReason end_turn                         → TurnResult (``completed``, 200)
    stopReason cancelled                        → TurnCancelled (``cancelled``, 499)
    stopReason max_tokens / max_turn_requests   → AgentTrouble (``agent_error``, 503): the agent stopped before
                                                  finishing the work, which must not pass for a completed task
    stopReason refusal                          → AgentTrouble (``agent_error``, 503), detail says it refused
    an error answering session/prompt           → "having trouble responding" / throttling: waited out and sent
                                                  again (``KIRO_TROUBLE_RETRIES``), then AgentTrouble; any other
                                                  error: AgentTrouble at once
    the process exits / closes stdout           → AgentExited (502), its last stderr lines in ``output``
    no update for ``KIRO_STALL_TIMEOUT``        → TurnTimeout(stalled=True) (504), the process killed
    past the task's timeout                     → TurnTimeout(stalled=False) (504), the process killed
    cancel()                                    → session/cancel; a response within the grace → TurnCancelled;
                                                  none → the process group killed, TurnCancelled (pool respawns)

The tool name matched against ``KIRO_DENY_TOOLS``: ACP has no tool-name field, so it is read from the tool call's
``_meta`` (``toolName`` / ``tool_name`` / ``name``) on the permission request or on the ``tool_call`` update with the
same id; the call's ``kind`` (``execute``, ``edit``, …) and ``title`` are matched as well. With a deny-list set, a
request whose tool name cannot be read is rejected (fail closed), as the PTY driver answers ``n`` to an unnamed
tool. Whether ``kiro-cli acp`` puts the name in ``_meta`` is not verified here (a public probe of kiro-cli 2.17 shows
only ``toolCallId`` and a title such as ``Running: echo …`` on the request): if it does not, a deny-list makes every
tool request rejected under this driver — safe, but then list kinds, or use the PTY driver for deny-lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import re
import shlex
import signal
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import acp
from acp.schema import (
    AgentMessageChunk,
    AgentThoughtChunk,
    AllowedOutcome,
    ClientCapabilities,
    DeniedOutcome,
    FileSystemCapabilities,
    Implementation,
    PermissionOption,
    RequestPermissionResponse,
    TextContentBlock,
    ToolCallProgress,
    ToolCallStart,
    ToolCallUpdate,
)

from ec2_services.worker_pool.agent_log import AgentOutputLog
from ec2_services.worker_pool.driver import (
    AgentDriver,
    AgentExited,
    AgentTrouble,
    DriverState,
    StartError,
    TurnCancelled,
    TurnResult,
    TurnTimeout,
)
from ec2_services.worker_pool.session import (
    agent_environment,
    die_with_parent,
    end_process_group,
    kill_process_group,
)

log = logging.getLogger(__name__)

_ALLOW_KINDS = ("allow_always", "allow_once")  # as the PTY driver trusts a tool (`t`) for the session
_REJECT_KINDS = ("reject_once", "reject_always")
_TROUBLE = re.compile(r"having trouble responding|throttl|too many requests|rate exceeded", re.IGNORECASE)
_STDERR_KEPT = 40
_STREAM_LIMIT = 64 * 1024 * 1024  # one JSON-RPC line (a big tool output) may be large


@dataclass(frozen=True)
class AcpLimits:
    """How long the ACP driver waits for what (the same names as the PTY driver's ``SessionLimits``)."""

    stall_timeout: float = 600  # KIRO_STALL_TIMEOUT: no session/update while busy → timeout, "stalled"
    trouble_retries: int = 3  # KIRO_TROUBLE_RETRIES
    trouble_backoff: float = 5.0
    start_timeout: float = 120  # spawn → initialize answered
    cancel_grace: float = 5.0  # session/cancel → the prompt's response, else the agent is killed
    reset_timeout: float = 20.0  # unused (a new session per task needs no reset); kept for make_driver's options
    output_limit: int = 1_000_000  # characters of answer kept (the last ones)


class _Answer:
    """One turn's answer text, streamed in chunks: complete lines go to the log, memory stays bounded."""

    def __init__(self, agent_log: AgentOutputLog, context: contextvars.Context, limit_chars: int):
        self._log = agent_log
        self._context = context
        self._limit = limit_chars
        self._lines: deque[str] = deque()
        self._chars = 0
        self._dropped = 0
        self._partial = ""

    def text(self, chunk: str) -> None:
        chunk = chunk.replace("\r\n", "\n").replace("\r", "\n")
        *complete, self._partial = (self._partial + chunk).split("\n")
        if complete:
            self._keep(complete)

    def line(self, line: str) -> None:
        """A line of its own (a tool call): the text so far ends first."""
        self.end_line()
        self._keep([line])

    def end_line(self) -> None:
        if self._partial:
            partial, self._partial = self._partial, ""
            self._keep([partial])

    def _keep(self, lines: list[str]) -> None:
        self._context.run(self._log.lines, lines)
        for line in lines:
            self._lines.append(line)
            self._chars += len(line) + 1
        while self._chars > self._limit and len(self._lines) > 1:
            self._chars -= len(self._lines.popleft()) + 1
            self._dropped += 1

    def tail(self, max_lines: int) -> list[str]:
        lines = [line for line in list(self._lines)[-max_lines:] if line.strip()]
        return [*lines, self._partial][-max_lines:] if self._partial.strip() else lines

    def output(self) -> str:
        lines = list(self._lines) + ([self._partial] if self._partial else [])
        if self._dropped:
            lines.insert(0, f"[… {self._dropped} earlier lines omitted: the answer was over {self._limit} characters …]")
        return "\n".join(lines).strip("\n").rstrip()


class _Client:
    """The client side's callbacks (``acp.Client``): the agent calls these while a prompt runs."""

    def __init__(self, driver: AcpDriver):
        self._driver = driver

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        self._driver._on_update(session_id, update)

    async def request_permission(
        self, session_id: str, tool_call: ToolCallUpdate, options: list[PermissionOption], **kwargs: Any
    ) -> RequestPermissionResponse:
        return self._driver._on_permission(session_id, tool_call, options)

    async def ext_notification(self, method: str, params: dict[str, Any]) -> None:
        self._driver._touch()  # Kiro's own extensions (`_kiro.dev/…`): not needed, but the agent is alive

    async def ext_method(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise acp.RequestError.method_not_found(method)


class _Turn:
    def __init__(self, answer: _Answer):
        self.answer = answer
        self.session_id: str | None = None
        self.approvals = 0
        self.denials = 0
        self.retries = 0
        # tool call id → (name from _meta, kind, title) of its tool_call update, for the permission request
        self.tools: dict[str, tuple[str | None, str | None, str | None]] = {}


class AcpDriver(AgentDriver):
    # session/new takes the task's cwd: the pool sends the prompt as is, with no "work in this directory" line.
    honours_cwd = True

    def __init__(
        self,
        worker_id: int,
        command: str,
        *,
        cwd: Path,
        env: Mapping[str, str],
        deny_tools: tuple[str, ...] = (),
        limits: AcpLimits | None = None,
    ):
        self.worker_id = worker_id
        self.argv = shlex.split(command)
        self.deny_tools = tuple(deny_tools)
        self._cwd = cwd
        self._env = agent_environment(env)
        self.limits = limits or AcpLimits()
        self.agent_log = AgentOutputLog(worker_id)
        self.state = DriverState.EXITED
        self.exit_status: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._conn: Any = None
        self._exited = asyncio.Event()
        self._watchers: list[asyncio.Task] = []
        self._stderr: deque[str] = deque(maxlen=_STDERR_KEPT)
        self._turn: _Turn | None = None
        self._last_update = 0.0
        self._cancel = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._exited = asyncio.Event()
        self._stderr.clear()
        self.exit_status = None
        if not self.argv:
            raise StartError("KIRO_ACP_COMMAND is empty")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=str(self._cwd),
                env=self._env,
                start_new_session=True,  # its own process group: a kill takes whatever it started
                preexec_fn=die_with_parent,
                limit=_STREAM_LIMIT,
            )
        except (OSError, ValueError) as exc:
            raise StartError(f"cannot start {self.argv[0]!r}: {exc}") from exc
        self.state = DriverState.STARTING
        self._watchers = [
            asyncio.create_task(self._watch_exit(self._proc), name=f"acp-exit-{self.worker_id}"),
            asyncio.create_task(self._read_stderr(self._proc), name=f"acp-stderr-{self.worker_id}"),
        ]
        self._conn = acp.connect_to_agent(_Client(self), self._proc.stdin, self._proc.stdout)
        log.info("worker %d: started %s (pid %d) in %s", self.worker_id, self.argv[0], self._proc.pid, self._cwd)
        initialize = asyncio.ensure_future(
            self._conn.initialize(
                protocol_version=acp.PROTOCOL_VERSION,
                client_capabilities=ClientCapabilities(
                    fs=FileSystemCapabilities(read_text_file=False, write_text_file=False), terminal=False
                ),
                client_info=Implementation(name="aipm-worker-pool", version="1"),
            )
        )
        exited = asyncio.ensure_future(self._exited.wait())
        try:
            await asyncio.wait({initialize, exited}, timeout=self.limits.start_timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        if not initialize.done():
            initialize.cancel()
            await self.stop()
            if self.exit_status is not None:
                raise StartError(f"the agent exited with status {self.exit_status} before answering initialize"
                                 f"{self._stderr_hint()}")
            raise StartError(f"no answer to initialize within {self.limits.start_timeout:.0f} s (is "
                             f"{self.argv[0]!r} an ACP agent?){self._stderr_hint()}")
        try:
            answer = initialize.result()
        except Exception as exc:  # a JSON-RPC error, or the connection closed as it exited
            await self.stop()
            raise StartError(f"initialize failed: {exc}{self._stderr_hint()}") from None
        info = answer.agent_info
        log.info("worker %d: ACP agent %s %s (protocol %d) ready", self.worker_id, info.name if info else "?",
                 info.version if info else "", answer.protocol_version)
        self.state = DriverState.IDLE

    def _stderr_hint(self) -> str:
        return f"; its stderr ends: {' | '.join(list(self._stderr)[-3:])}" if self._stderr else ""

    async def _watch_exit(self, proc: asyncio.subprocess.Process) -> None:
        status = await proc.wait()
        if proc is not self._proc:
            return
        kill_process_group(proc.pid, signal.SIGKILL)  # whatever it left in its group
        self.exit_status = status
        self.state = DriverState.EXITED
        self.agent_log.flush()
        log.info("worker %d: agent pid %d exited with status %s", self.worker_id, proc.pid, status)
        self._exited.set()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        with contextlib.suppress(Exception):
            while line := await proc.stderr.readline():
                text = line.decode("utf-8", "replace").rstrip()
                if text:
                    self._stderr.append(text)
                    log.debug("worker %d stderr: %s", self.worker_id, text)

    async def stop(self) -> None:
        """Kill the agent's whole process group and wait for the exit to be noticed."""
        if self._proc is None or self.state is DriverState.EXITED:
            return
        if not await end_process_group(self._proc.pid, self._exited):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exited.wait(), 5.0)
        self.state = DriverState.EXITED

    async def wait_exited(self) -> None:
        await self._exited.wait()

    @property
    def pid(self) -> int | None:
        running = self._proc is not None and self.state is not DriverState.EXITED
        return self._proc.pid if running else None

    async def reset(self) -> None:
        """Nothing to clear (every task has its own session); only check the agent is still there."""
        if self.state is DriverState.IDLE and self._proc is not None and self._proc.returncode is not None:
            await self.stop()

    # ---- what the agent sends --------------------------------------------------------------------------------

    def _touch(self) -> None:
        if self._loop is not None:
            self._last_update = self._loop.time()

    def _on_update(self, session_id: str, update: Any) -> None:
        turn = self._turn
        if turn is None or session_id != turn.session_id:
            return  # a late update of an earlier task's session
        self._touch()
        if isinstance(update, AgentMessageChunk):
            if isinstance(update.content, TextContentBlock):
                turn.answer.text(update.content.text)
        elif isinstance(update, ToolCallStart):
            name = _meta_name(update.field_meta)
            turn.tools[update.tool_call_id] = (name, update.kind, update.title)
            turn.answer.line(f"● {update.title}" + (f" ({name})" if name and name not in update.title else ""))
            self._tool_text(turn, update.content)
        elif isinstance(update, ToolCallProgress):
            self._tool_text(turn, update.content)
            if update.status in ("completed", "failed"):
                turn.answer.line(f" - {update.title + ': ' if update.title else ''}{update.status}")
        elif isinstance(update, AgentThoughtChunk):
            pass  # reasoning: progress for the watchdog, not part of the answer

    @staticmethod
    def _tool_text(turn: _Turn, content: list | None) -> None:
        for item in content or []:
            block = getattr(item, "content", None)
            if isinstance(block, TextContentBlock):
                turn.answer.end_line()
                turn.answer.text(block.text + "\n")

    def _on_permission(
        self, session_id: str, tool_call: ToolCallUpdate, options: list[PermissionOption]
    ) -> RequestPermissionResponse:
        turn = self._turn
        if turn is None or session_id != turn.session_id or self._cancel.is_set():
            # Per ACP, a cancelled turn's pending requests are answered "cancelled".
            return RequestPermissionResponse(outcome=DeniedOutcome(outcome="cancelled"))
        self._touch()
        known_name, known_kind, known_title = turn.tools.get(tool_call.tool_call_id, (None, None, None))
        name = _meta_name(tool_call.field_meta) or known_name
        # The kind (`execute`, `edit`…) and title may be listed too; they never stand in for a missing name.
        aliases = (name, tool_call.kind or known_kind, tool_call.title or known_title)
        listed = {n for n in aliases if n} & set(self.deny_tools)
        deny = bool(self.deny_tools) and (name is None or bool(listed))
        choice = _pick(options, _REJECT_KINDS if deny else _ALLOW_KINDS)
        if not deny and choice is None:
            deny = True  # nothing to allow with: it cannot run, count it as a denial
        shown = name or tool_call.title or tool_call.kind or "(name not shown)"
        if deny:
            turn.denials += 1  # a reject option, or "cancelled" when the agent offered none
        else:
            turn.approvals += 1
        log.info("worker %d: %s tool %s", self.worker_id, "denied" if deny else "approved", shown,
                 extra={"fields": {"event": "tool_denied" if deny else "tool_approved", "tool": name or shown}})
        if choice is None:
            return RequestPermissionResponse(outcome=DeniedOutcome(outcome="cancelled"))
        return RequestPermissionResponse(outcome=AllowedOutcome(outcome="selected", option_id=choice.option_id))

    # ---- a turn ----------------------------------------------------------------------------------------------

    async def run(self, prompt: str, *, timeout_s: float, cwd: Path | None = None) -> TurnResult:
        if self.state is not DriverState.IDLE:
            raise RuntimeError(f"worker {self.worker_id} is {self.state.value}, not idle")
        self.state = DriverState.BUSY
        self._cancel = asyncio.Event()
        loop = asyncio.get_running_loop()
        turn = self._turn = _Turn(_Answer(self.agent_log, contextvars.copy_context(), self.limits.output_limit))
        deadline = loop.time() + timeout_s
        self._last_update = loop.time()
        try:
            while True:
                stop_reason = await self._prompt_once(turn, prompt, str(cwd or self._cwd), deadline, timeout_s)
                if stop_reason is not None:
                    return self._finish(turn, stop_reason)
                # "having trouble": wait, then the same prompt again in the same session
                delay = self.limits.trouble_backoff * 2 ** (turn.retries - 1)
                await self._pause(turn, delay, deadline, timeout_s)
        finally:
            turn.answer.end_line()
            self._turn = None
            self.agent_log.flush()
            if self.state is DriverState.BUSY:
                self.state = DriverState.IDLE

    async def _prompt_once(self, turn: _Turn, prompt: str, cwd: str, deadline: float, timeout_s: float) -> str | None:
        """One session/prompt to its response: the stop reason, or None when it should be sent again (trouble)."""
        conn = self._conn
        if conn is None:
            raise AgentExited(f"the agent exited (status {self.exit_status}) before the task", self._result(turn))
        if turn.session_id is None:
            request = asyncio.ensure_future(conn.new_session(cwd=cwd, mcp_servers=[]))
            try:
                session = await self._await(request, turn, deadline, timeout_s)
            except acp.RequestError as exc:
                raise AgentTrouble(f"the agent could not open a session in {cwd}: {exc}", self._result(turn)) from None
            turn.session_id = session.session_id
            log.info("worker %d: ACP session %s in %s", self.worker_id, turn.session_id, cwd)
            if self._cancel.is_set():
                raise TurnCancelled("cancelled", self._result(turn))
        request = asyncio.ensure_future(conn.prompt(session_id=turn.session_id, prompt=[acp.text_block(prompt)]))
        try:
            response = await self._await(request, turn, deadline, timeout_s)
        except acp.RequestError as exc:
            detail = f"{exc}" + (f" ({exc.data})" if exc.data else "")
            if not _TROUBLE.search(detail):
                raise AgentTrouble(f"the agent answered the prompt with an error: {detail}", self._result(turn)) from None
            if turn.retries >= self.limits.trouble_retries:
                turn.answer.line(detail)
                raise AgentTrouble(
                    f"the agent was still having trouble responding after {turn.retries} retries: {detail}",
                    self._result(turn),
                ) from None
            turn.retries += 1
            log.warning("worker %d: agent having trouble responding (%s); retry %d/%d", self.worker_id, detail,
                        turn.retries, self.limits.trouble_retries)
            return None
        return response.stop_reason

    async def _await(
        self, request: asyncio.Future, turn: _Turn, deadline: float, timeout_s: float, *, to_agent: bool = True
    ) -> Any:
        """The request's answer, watching the deadline, the stall watchdog, a cancel and the process's exit."""
        loop = asyncio.get_running_loop()
        cancel = asyncio.ensure_future(self._cancel.wait())
        exited = asyncio.ensure_future(self._exited.wait())
        try:
            while True:
                now = loop.time()
                stall_at = self._last_update + self.limits.stall_timeout
                limit = min(deadline, stall_at)
                if now >= limit:
                    request.cancel()
                    await self._timed_out(turn, stalled=stall_at < deadline, timeout_s=timeout_s)
                waiting = {request, exited} | ({cancel} if not cancel.done() else set())
                done, _ = await asyncio.wait(waiting, timeout=limit - now, return_when=asyncio.FIRST_COMPLETED)
                if request in done:
                    try:
                        return request.result()
                    except ConnectionError:  # stdout closed: the process is exiting (or must)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._exited.wait(), 2.0)
                        await self.stop()  # one that closed its stdout but lives on is no use: it goes
                        self._raise_exited(turn)
                if exited in done:
                    request.cancel()
                    self._raise_exited(turn)
                if cancel in done:
                    if not to_agent:  # a backoff between retries: nothing is running in the agent
                        request.cancel()
                        raise TurnCancelled("cancelled", self._result(turn))
                    await self._interrupt(turn, request)
        finally:
            cancel.cancel()
            exited.cancel()

    def _raise_exited(self, turn: _Turn) -> None:
        if self._stderr:
            turn.answer.line("")
            for line in self._stderr:
                turn.answer.line(line)
        raise AgentExited(
            f"the agent exited (status {self.exit_status}) in the middle of the task", self._result(turn)
        )

    async def _timed_out(self, turn: _Turn, *, stalled: bool, timeout_s: float) -> None:
        await self.stop()
        why = (
            f"stalled (no update from the agent for {self.limits.stall_timeout:g} s)"
            if stalled
            else f"timed out (not done within {timeout_s:g} s)"
        )
        raise TurnTimeout(f"the task {why}; its agent session was killed and is being restarted",
                          self._result(turn), stalled=stalled)

    async def _interrupt(self, turn: _Turn, request: asyncio.Future) -> None:
        """session/cancel, then the prompt's response within the grace time — or the process goes."""
        log.info("worker %d: cancelling the running task (session/cancel)", self.worker_id)
        if turn.session_id is not None and self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.cancel(session_id=turn.session_id)
        done, _ = await asyncio.wait({request}, timeout=self.limits.cancel_grace)
        if not done:
            log.warning("worker %d: no answer %.1f s after session/cancel; killing the agent", self.worker_id,
                        self.limits.cancel_grace)
            request.cancel()
            await self.stop()
        elif not request.cancelled() and request.exception() is None and request.result() is not None:
            log.info("worker %d: the cancelled prompt ended with %s", self.worker_id,
                     getattr(request.result(), "stop_reason", "its session"))
        raise TurnCancelled("cancelled", self._result(turn))

    async def _pause(self, turn: _Turn, delay: float, deadline: float, timeout_s: float) -> None:
        pause = asyncio.ensure_future(asyncio.sleep(max(0.0, min(delay, deadline - asyncio.get_running_loop().time()))))
        self._touch()
        # A cancel or an exit still counts while waiting; the deadline is checked after.
        await self._await(pause, turn, deadline + 1, timeout_s, to_agent=False)
        if asyncio.get_running_loop().time() >= deadline:
            await self._timed_out(turn, stalled=False, timeout_s=timeout_s)
        self._touch()

    def _finish(self, turn: _Turn, stop_reason: str) -> TurnResult:
        if stop_reason == "end_turn":
            return self._result(turn)
        if stop_reason == "cancelled":
            raise TurnCancelled("cancelled (the agent ended the turn as cancelled)", self._result(turn))
        why = {
            "refusal": "the agent refused to continue (stop reason: refusal)",
            "max_tokens": "the agent stopped at its token limit before finishing (stop reason: max_tokens)",
            "max_turn_requests": "the agent stopped at its limit of model requests for one turn "
            "(stop reason: max_turn_requests)",
        }.get(stop_reason, f"the agent ended the turn with stop reason {stop_reason!r}")
        raise AgentTrouble(why, self._result(turn))

    def _result(self, turn: _Turn) -> TurnResult:
        return TurnResult(
            output=turn.answer.output(), approvals=turn.approvals, denials=turn.denials, trouble_retries=turn.retries
        )

    def output_tail(self, max_lines: int = 20) -> list[str]:
        turn = self._turn
        return turn.answer.tail(max_lines) if turn is not None and self.state is DriverState.BUSY else []

    def cancel(self) -> None:
        if self.state is DriverState.BUSY:
            self._cancel.set()


def _meta_name(meta: dict | None) -> str | None:
    for key in ("toolName", "tool_name", "name"):
        value = (meta or {}).get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _pick(options: list[PermissionOption], kinds: tuple[str, ...]) -> PermissionOption | None:
    for kind in kinds:
        for option in options:
            if option.kind == kind:
                return option
    return None
