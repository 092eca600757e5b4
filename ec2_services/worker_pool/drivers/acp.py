"""The ACP driver (``KIRO_DRIVER=acp``): the agent as an Agent Client Protocol server (``kiro-cli acp``) on stdio.

Where the PTY driver reads a screen, this one reads JSON-RPC frames through the ``agent-client-protocol`` library's
client side (``acp.connect_to_agent``). One process per worker, spawned from ``KIRO_ACP_COMMAND`` (split as a shell
splits words, no shell; default ``kiro-cli acp --agent-engine v2 --agent aipm``) in its own process group, in
``KIRO_WORKSPACE_ROOT``, with the same secret-free environment as the PTY driver. Per task:

    session/new {cwd: the task's cwd}        a fresh conversation per task: nothing to /clear, the cwd is native
    session/prompt [text]                    while it runs, the agent sends
        session/update                         agent_message_chunk → the answer and ``[Worker N]`` log lines;
                                               tool_call / tool_call_update → a line each
        session/request_permission             answered at once: the allow-ONCE option (never "always": Kiro V3
                                               saves that as a lasting rule), or reject-once for a denied tool —
                                               for the task's session and for its subagents' sessions alike
        any other request                      refused (JSON-RPC -32601, with the reason in ``data``); the task then
                                               fails, naming it, with the agent's own words kept in the output
    ← the prompt's response {stopReason}     the turn's end

Every frame is read by ``_observe`` (a stream observer) in the order the agent sent it, before the library acts on
it: a turn counts the frames from its ``session/prompt`` to that prompt's response, and nothing after it. A frame
that follows the response (V2's ``turnDurationMs`` metadata, V3's ``context_usage``) belongs to the turn that ended
and counts for no task; a cancelled turn's credits are what was metered before its response.

Subagents: V2 runs each in a session of its own (named in ``_kiro.dev/subagent/list_update``; V3 keeps them in the
task's session). A session first seen while a turn is open is that turn's: its permission requests get the same
policy, its tool calls and throttling notices count for the turn, but its prose, credits and turn end do not (its
answer goes to its parent). A subagent session first seen between turns, or one an ended turn had, counts for no
task: its requests are answered "cancelled".

Kiro, as its wire captures show it (``tests/fixtures/kiro-acp/README.md``):

    tool name (deny-list)   V3: the request's ``_meta.kiro.toolId``; V2: ``_meta.kiro.toolName`` of the tool_call
                            with the same toolCallId, or the title of its ``_kiro.dev/session/update`` tool_call_chunk.
                            Any agent's ``_meta.<vendor>.toolName``/``toolId`` is read the same way (Claude Code's
                            ``_meta.claudeCode.toolName``); an agent whose profile says so names it in the toolCallId
                            (Gemini CLI: ``write_file__…``, ``call_id_name``). The ACP ``kind`` is matched too (and shown when there is
                            no name), but never stands in for a name: under a deny-list a nameless tool is rejected
                            (fail closed), as the PTY driver answers ``n`` to an unnamed tool.
    credits                 V2: the sum of ``_kiro.dev/metadata`` ``meteringUsage[].value``; V3: the
                            ``turn_completion`` ``promptTurnSummaries[].usage``
    tokens (other agents)   the prompt response's ACP ``usage``, or Gemini CLI's ``_meta.quota.token_count``
    throttling              ``ThrottlingException`` / ``TooManyRequestsException`` / "is having trouble responding"
                            in the prompt's error, or a ``retry_warning`` / ``rate_limit`` frame in the failed
                            attempt: waited out and sent again (``KIRO_TROUBLE_RETRIES``); any other error fails the
                            task with Kiro's message and ``data``
    V3 failed turn          ``display_error`` then ``turn_end`` stopReason ``error``, maybe with no response: the
                            turn ends there, with the error's words

How a turn's end maps onto the driver contract (``base.py``):

    stopReason end_turn                         → TurnResult (``completed``, 200); AgentTrouble if a request was refused
    stopReason cancelled                        → TurnCancelled (``cancelled``, 499)
    stopReason max_tokens / max_turn_requests   → AgentTrouble (``agent_error``, 503): the agent stopped before
                                                  finishing the work, which must not pass for a completed task
    stopReason refusal                          → AgentTrouble (``agent_error``, 503), detail says it refused
    an error answering session/prompt           → throttling: retried, then AgentTrouble; else AgentTrouble at once
    the process exits / closes stdout           → AgentExited (502), its last stderr lines in ``output``
    no frame for ``KIRO_STALL_TIMEOUT``         → TurnTimeout(stalled=True) (504), the process killed
    past the task's timeout                     → TurnTimeout(stalled=False) (504), the process killed
    cancel()                                    → session/cancel; a response within the grace → TurnCancelled;
                                                  none → the process group killed, TurnCancelled (pool respawns)

``agent_version`` / ``agent_engine`` (for /health) come from the initialize answer: V2 sends ``agentInfo.version``;
V3 sends none but is known by its ``agentCapabilities._meta.kiro`` and sign-in methods; else ``--agent-engine``.

Owns one ``kiro-cli acp`` process per worker and the JSON-RPC connection to it: which frames count for which turn,
the permission policy, the mapping of stop reasons onto the driver contract. Must not offer the agent a file
system or terminal, answer a permission with a lasting rule, or decide anything about queues, task ids or HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import re
import shlex
import signal
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import acp
from acp.connection import StreamDirection
from acp.schema import (
    AllowedOutcome,
    ClientCapabilities,
    DeniedOutcome,
    FileSystemCapabilities,
    Implementation,
    PermissionOption,
    RequestPermissionResponse,
    ToolCallUpdate,
)

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
from ec2_services.worker_pool.drivers.kiro_version import named_engine
from ec2_services.worker_pool.drivers.process import (
    agent_environment,
    die_with_parent,
    end_process_group,
    kill_process_group,
)

log = logging.getLogger(__name__)

# Throttling in Kiro's own words: its service's exception names, and its "having trouble responding" error. (Its
# `rate_limit` / `retry_warning` frames mark a turn as throttled too.) Anything else is an error, not retried.
_THROTTLING = re.compile(r"ThrottlingException|TooManyRequestsException|is having trouble responding")
_STDERR_KEPT = 40
_STREAM_LIMIT = 64 * 1024 * 1024  # one JSON-RPC line (a big tool output) may be large


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


def _refuser(method: str) -> Any:
    async def refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise _refusal(method)

    return refuse


class _Client:
    """The client side's callbacks (``acp.Client``). What the agent *tells* is read by ``AcpDriver._observe`` in the
    order it arrives; these only answer what it *asks*: a permission, or anything else (refused)."""

    def __init__(self, driver: AcpDriver):
        self._driver = driver

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        return None  # read in wire order by the observer

    async def request_permission(
        self, session_id: str, tool_call: ToolCallUpdate, options: list[PermissionOption], **kwargs: Any
    ) -> RequestPermissionResponse:
        return self._driver._on_permission(session_id, tool_call, options)

    async def ext_notification(self, method: str, params: dict[str, Any]) -> None:
        return None  # read in wire order by the observer

    async def ext_method(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise _refusal(f"_{method}")

    # The client methods ACP defines besides a permission: refused (the pool offers no file system or terminal).
    read_text_file = _refuser("fs/read_text_file")
    write_text_file = _refuser("fs/write_text_file")
    create_terminal = _refuser("terminal/create")
    terminal_output = _refuser("terminal/output")
    release_terminal = _refuser("terminal/release")
    wait_for_terminal_exit = _refuser("terminal/wait_for_exit")
    kill_terminal = _refuser("terminal/kill")


def _refusal(method: str) -> acp.RequestError:
    """The JSON-RPC error every request but a permission gets: the method, and why, in words."""
    return acp.RequestError(-32601, f"Method not found: {method}", {"method": method, "reason": refusal_reason(method)})


def refusal_reason(method: str) -> str:
    if method.startswith("_kiro/auth/"):
        return ("the aipm worker pool hands out no access tokens (this is the V3 engine's host-mediated sign-in); "
                "run `kiro-cli acp --agent-engine v2`, which uses kiro-cli's own sign-in")
    if method.startswith(("fs/", "terminal/", "_kiro/fs/", "_kiro/terminal/")):
        return "the aipm worker pool offers no file system or terminal to the agent (clientCapabilities say so)"
    return "the aipm worker pool does not implement this client method"


class _Turn:
    def __init__(self, answer: _Answer):
        self.answer = answer
        self.session_id: str | None = None
        self.approvals = 0
        self.denials = 0
        self.retries = 0
        self.credits: float | None = None
        self.tokens: dict[str, int] | None = None
        # Frames count for this turn from its session/prompt until that prompt's response (``open``).
        self.open = False
        self.outcome: asyncio.Future | None = None  # set by a V3 turn_end(error) that no response follows
        self.throttled = False  # a rate_limit / retry_warning frame, or a throttling error, in this attempt
        self.error: str | None = None  # the agent's own error words (V3 display_error)
        self.refused: list[str] = []  # what the agent asked for and was refused, in words
        self.tools: dict[str, _Tool] = {}  # tool call id → what the agent said of it
        self.subagents: set[str] = set()  # the sessions of the subagents this turn started (V2 runs each in its own)

    def owns(self, session_id: str | None) -> bool:
        return session_id is not None and (session_id == self.session_id or session_id in self.subagents)


@dataclass
class _Tool:
    name: str | None = None
    kind: str | None = None
    title: str | None = None
    permission_meta: dict | None = None  # the permission request's own params._meta


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
        limits: Limits | None = None,
        call_id_name: re.Pattern | None = None,
    ):
        self.worker_id = worker_id
        self.call_id_name = call_id_name  # the agent names its tool in the toolCallId: group 1 of this
        self.argv = shlex.split(command)
        self.deny_tools = tuple(deny_tools)
        self._cwd = cwd
        self._env = agent_environment(env)
        self.limits = limits or Limits()
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
        self._agent: dict | None = None  # the initialize response, as the agent sent it
        # Subagent sessions of turns that ended: their late frames and requests count for no task (bounded).
        self._past_subagents: dict[str, None] = {}

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
        self._agent = None
        self._conn = acp.connect_to_agent(
            _Client(self), self._proc.stdin, self._proc.stdout, observers=[self._observe]
        )
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
            with contextlib.suppress(TimeoutError):  # its last stderr lines say why: read them to the end
                await asyncio.wait_for(asyncio.shield(self._watchers[1]), 2.0)
            if self.exit_status is not None:
                raise StartError(f"the agent exited with status {self.exit_status} before answering initialize"
                                 f"{self._stderr_hint()}")
            raise StartError(f"no answer to initialize within {self.limits.start_timeout:.0f} s (is "
                             f"{self.argv[0]!r} an ACP agent?){self._stderr_hint()}")
        try:
            answer = initialize.result()
        except Exception as exc:  # a JSON-RPC error, or the connection closed as it exited
            await self.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._watchers[1]), 2.0)
            if isinstance(exc, acp.RequestError):
                raise StartError(f"initialize failed: {_error_text(exc)}{self._stderr_hint()}") from None
            raise StartError(f"the agent exited with status {self.exit_status} before answering initialize"
                             f"{self._stderr_hint()}") from None
        self.agent_version, self.agent_engine = _identify(self._agent or {}, self.argv)
        info = answer.agent_info
        log.info("worker %d: ACP agent %s %s (engine %s, protocol %d) ready", self.worker_id,
                 info.name if info else "?", self.agent_version or "", self.agent_engine or "?",
                 answer.protocol_version)
        self.state = DriverState.IDLE

    async def check_session(self) -> None:
        """session/new in the workspace root, as a task's would be opened (``make run``'s preflight: an agent can
        answer initialize and still fail here, e.g. kiro-cli naming an agent config that does not exist)."""
        if self._conn is None or self.state is not DriverState.IDLE:
            raise StartError(f"the agent is {self.state.value}, not idle{self._stderr_hint()}")
        request = asyncio.ensure_future(self._conn.new_session(cwd=str(self._cwd), mcp_servers=[]))
        exited = asyncio.ensure_future(self._exited.wait())
        try:
            await asyncio.wait({request, exited}, timeout=self.limits.start_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        if not request.done():
            request.cancel()
            raise StartError(f"no answer to session/new within {self.limits.start_timeout:.0f} s"
                             f"{self._stderr_hint()}")
        try:
            request.result()
        except acp.RequestError as exc:
            raise StartError(f"the agent could not open a session: {_error_text(exc)}{self._stderr_hint()}") from None
        except Exception as exc:  # the connection closed: it exited
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._watchers[1]), 2.0)
            raise StartError(f"the agent exited while opening a session ({exc}){self._stderr_hint()}") from None

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

    def _observe(self, event: Any) -> None:
        """Every frame the agent sends, in the order it sent them, before the library acts on it: so a prompt's
        response is seen after every update that came before it, and a frame after it counts for no turn."""
        if event.direction is not StreamDirection.INCOMING:
            return
        self._touch()
        message = event.message
        method = message.get("method")
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        turn = self._turn if self._turn is not None and self._turn.open else None
        if method is None:  # a response: while a turn is open, only its prompt is waiting for one
            self._on_response(turn, message.get("result"))
        elif "id" in message and method != "session/request_permission":
            self._on_refused_request(turn, method)
        elif method == "_kiro.dev/subagent/list_update":  # V2 names each subagent's session as it starts
            for session in [s.get("sessionId") for s in params.get("subagents") or [] if isinstance(s, dict)]:
                if isinstance(session, str):
                    self._claim(turn, session)
        elif turn is not None:  # else between turns, or after a turn's response: it counts for no task
            session = params.get("sessionId")
            subagent = session is not None and session != turn.session_id
            if subagent and not self._claim(turn, session):
                return  # a subagent of a turn that ended: it counts for no task
            handler = self._NOTIFICATIONS.get(method)
            if handler is not None:
                handler(self, turn, params, subagent)

    def _on_response(self, turn: _Turn | None, result: Any) -> None:
        if isinstance(result, dict) and "protocolVersion" in result and self._agent is None:
            self._agent = result
        if turn is not None:
            turn.open = False
            _add_tokens(turn, result)

    def _on_refused_request(self, turn: _Turn | None, method: str) -> None:
        why = f"{method}: {refusal_reason(method)}"
        log.warning("worker %d: refused the agent's request %s", self.worker_id, why)
        if turn is not None:
            turn.refused.append(why)
            turn.answer.line(f"[aipm] refused the agent's request {why}")

    # One handler per notification the agent sends during a turn (its own session's or a subagent's):
    # (self, the open turn, the frame's params, whether a subagent sent it).

    def _on_session_update(self, turn: _Turn, params: dict, subagent: bool) -> None:
        update = params.get("update") or {}
        handler = self._UPDATES.get(update.get("sessionUpdate"))
        if handler is not None:
            handler(self, turn, update, subagent)

    def _on_permission_asked(self, turn: _Turn, params: dict, subagent: bool) -> None:
        call = params.get("toolCall") or {}
        tool = turn.tools.setdefault(str(call.get("toolCallId")), _Tool())
        tool.permission_meta = params.get("_meta") if isinstance(params.get("_meta"), dict) else {}

    def _on_metadata(self, turn: _Turn, params: dict, subagent: bool) -> None:
        if not subagent:  # V2's credits: a subagent's are its parent's to report
            self._add_credits(turn, [u.get("value") for u in params.get("meteringUsage") or [] if isinstance(u, dict)])

    def _on_kiro_update(self, turn: _Turn, params: dict, subagent: bool) -> None:
        update = params.get("update") or {}
        kind = update.get("sessionUpdate")
        if kind == "tool_call_chunk" and update.get("toolCallId"):
            tool = turn.tools.setdefault(str(update["toolCallId"]), _Tool())
            tool.name = tool.name or update.get("title")  # V2: the tool's own name (`shell`, `write`…)
            tool.kind = tool.kind or update.get("kind")
        elif kind == "retry_warning":
            turn.throttled = True
            turn.answer.line(f"[kiro] {update.get('message') or 'retrying'}")

    def _on_rate_limit(self, turn: _Turn, params: dict, subagent: bool) -> None:
        turn.throttled = True
        turn.answer.line(f"[kiro] {params.get('message') or 'rate limited'}")

    def _claim(self, turn: _Turn | None, session: str) -> bool:
        """Whether SESSION is (now) one of TURN's subagents: a session first seen while a turn is open is one it
        started, as the worker runs one turn at a time; one first seen between turns, or that a past turn had, is not."""
        if turn is not None and turn.owns(session):
            return True
        if turn is None:  # listed between turns: a subagent of the turn that ended, or of an earlier one
            self._past_subagents[session] = None
            return False
        if session in self._past_subagents:
            return False
        turn.subagents.add(session)
        log.info("worker %d: subagent session %s (of session %s)", self.worker_id, session, turn.session_id)
        return True

    def _end_subagents(self, turn: _Turn) -> None:
        for session in turn.subagents:
            self._past_subagents[session] = None
        while len(self._past_subagents) > 1000:
            del self._past_subagents[next(iter(self._past_subagents))]

    # One handler per session/update kind: (self, the open turn, the update, whether a subagent sent it).

    def _on_message_chunk(self, turn: _Turn, update: dict, subagent: bool) -> None:
        content = update.get("content") or {}
        if content.get("type") == "text" and not subagent:  # a subagent answers its parent, not the task
            turn.answer.text(str(content.get("text", "")))

    def _on_tool_call(self, turn: _Turn, update: dict, subagent: bool) -> None:
        call_id = str(update.get("toolCallId"))
        tool = turn.tools.setdefault(call_id, _Tool())
        tool.name = tool_name(update.get("_meta")) or tool.name or self._named_in_id(call_id)
        tool.kind, tool.title = update.get("kind") or tool.kind, update.get("title") or tool.title
        title = tool.title or tool.name or "tool"
        name = tool.name
        mark = "[subagent] " if subagent else ""
        turn.answer.line(f"{mark}● {title}" + (f" ({name})" if name and name not in title else ""))
        self._tool_text(turn, update.get("content"))

    def _on_tool_call_update(self, turn: _Turn, update: dict, subagent: bool) -> None:
        if not subagent:
            self._tool_text(turn, update.get("content"))
        status = update.get("status")
        if status in ("completed", "failed"):
            title = update.get("title")
            mark = "[subagent] " if subagent else ""
            turn.answer.line(f"{mark} - {title + ': ' if title else ''}{status}")

    def _on_session_info(self, turn: _Turn, update: dict, subagent: bool) -> None:
        if subagent:
            return  # a subagent's own turn end, errors and credits are not the task's turn
        kiro = _vendor(update.get("_meta"), "kiro")
        info = kiro.get("kind")
        if info == "turn_completion":  # V3: the turn's credits
            self._add_credits(turn, [s.get("usage") for s in kiro.get("promptTurnSummaries") or []
                                     if isinstance(s, dict)])
        elif info == "display_error":
            turn.error = ": ".join(str(p) for p in (kiro.get("errorType"), kiro.get("message")) if p)
            turn.answer.line(f"[kiro] {turn.error}")
            if _THROTTLING.search(turn.error):
                turn.throttled = True
        elif info == "turn_end" and kiro.get("stopReason") == "error" and _pending(turn.outcome):
            # V3 ends a failed turn here, and may send no response to the prompt at all.
            turn.outcome.set_result(turn.error or "the agent ended the turn with an error")

    _NOTIFICATIONS: ClassVar[dict[str, Callable[[AcpDriver, _Turn, dict, bool], None]]] = {
        "session/update": _on_session_update,
        "session/request_permission": _on_permission_asked,
        "_kiro.dev/metadata": _on_metadata,
        "_kiro.dev/session/update": _on_kiro_update,
        "_kiro.dev/error/rate_limit": _on_rate_limit,
    }
    _UPDATES: ClassVar[dict[str, Callable[[AcpDriver, _Turn, dict, bool], None]]] = {
        "agent_message_chunk": _on_message_chunk,
        "tool_call": _on_tool_call,
        "tool_call_update": _on_tool_call_update,
        "session_info_update": _on_session_info,
    }

    def _add_credits(self, turn: _Turn, values: list) -> None:
        numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numbers:
            turn.credits = (turn.credits or 0.0) + sum(numbers)

    @staticmethod
    def _tool_text(turn: _Turn, content: Any) -> None:
        for item in content if isinstance(content, list) else []:
            block = item.get("content") if isinstance(item, dict) else None
            if isinstance(block, dict) and block.get("type") == "text":
                turn.answer.end_line()
                turn.answer.text(str(block.get("text", "")) + "\n")

    def _on_permission(
        self, session_id: str, tool_call: ToolCallUpdate, options: list[PermissionOption]
    ) -> RequestPermissionResponse:
        turn = self._turn
        if turn is None or not turn.open or not turn.owns(session_id) or self._cancel.is_set():
            # Per ACP, a cancelled turn's pending requests are answered "cancelled"; so are those of a turn that
            # ended (a subagent it left running) or of no turn at all. A subagent of this turn gets the policy.
            return RequestPermissionResponse(outcome=DeniedOutcome(outcome="cancelled"))
        known = turn.tools.get(tool_call.tool_call_id, _Tool())
        # Who the tool is: V3 names it on the request (`_meta.kiro.toolId`), V2 on its tool_call update
        # (`_meta.kiro.toolName`) or its tool_call_chunk; another agent under its own `_meta` key. Else its ACP kind.
        name = (tool_name(known.permission_meta) or tool_name(tool_call.field_meta) or known.name
                or self._named_in_id(tool_call.tool_call_id))
        kind = tool_call.kind or known.kind
        shown = name or kind or tool_call.title or known.title or "(name not shown)"
        listed = {n for n in (name, kind) if n} & set(self.deny_tools)
        # The kind may be listed too, but never stands in for a missing name: nameless is denied (fail closed).
        deny = bool(self.deny_tools) and (bool(listed) or name is None)
        choice = _pick(options, ("reject_once",) if deny else ("allow_once",))
        if choice is None and not deny:
            kinds = ", ".join(f"{o.option_id}={o.kind}" for o in options) or "none"
            why = (f"session/request_permission for {shown}: no allow-once option among its options ({kinds}); "
                   "the worker pool never answers with a lasting rule")
            turn.refused.append(why)
            turn.answer.line(f"[aipm] refused the agent's request {why}")
            deny = True
        if deny:
            turn.denials += 1  # a reject option, or "cancelled" when the agent offered none
        else:
            turn.approvals += 1
        log.info("worker %d: %s tool %s", self.worker_id, "denied" if deny else "approved", shown,
                 extra={"fields": {"event": "tool_denied" if deny else "tool_approved", "tool": shown}})
        if choice is None:
            return RequestPermissionResponse(outcome=DeniedOutcome(outcome="cancelled"))
        return RequestPermissionResponse(outcome=AllowedOutcome(outcome="selected", option_id=choice.option_id))

    def _named_in_id(self, call_id: str | None) -> str | None:
        match = self.call_id_name.match(call_id or "") if self.call_id_name is not None else None
        return match.group(1) if match else None

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
                delay = self.limits.backoff(turn.retries - 1)
                await self._pause(turn, delay, deadline, timeout_s)
        finally:
            turn.answer.end_line()
            self._end_subagents(turn)
            self._turn = None
            self.agent_log.flush()
            if self.state is DriverState.BUSY:
                self.state = DriverState.IDLE

    async def _prompt_once(self, turn: _Turn, prompt: str, cwd: str, deadline: float, timeout_s: float) -> str | None:
        """One session/prompt to its response: the stop reason, or None when it should be sent again (throttled)."""
        conn = self._conn
        if conn is None:
            raise AgentExited(f"the agent exited (status {self.exit_status}) before the task", self._result(turn))
        if turn.session_id is None:
            request = asyncio.ensure_future(conn.new_session(cwd=cwd, mcp_servers=[]))
            try:
                session = await self._await(request, turn, deadline, timeout_s)
            except acp.RequestError as exc:
                raise AgentTrouble(f"the agent could not open a session in {cwd}: {_error_text(exc)}",
                                   self._result(turn)) from None
            turn.session_id = session.session_id
            log.info("worker %d: ACP session %s in %s", self.worker_id, turn.session_id, cwd)
            if self._cancel.is_set():
                raise TurnCancelled("cancelled", self._result(turn))
        turn.open, turn.throttled, turn.error = True, False, None
        turn.outcome = asyncio.get_running_loop().create_future()
        request = asyncio.ensure_future(conn.prompt(session_id=turn.session_id, prompt=[acp.text_block(prompt)]))
        try:
            response = await self._await(asyncio.ensure_future(_first_of(request, turn.outcome)), turn, deadline,
                                         timeout_s)
        except (acp.RequestError, _TurnEndedInError) as exc:
            turn.open = False
            detail = _error_text(exc) if isinstance(exc, acp.RequestError) else str(exc)
            throttled = turn.throttled or _THROTTLING.search(detail)
            if not throttled or turn.retries >= self.limits.trouble_retries:
                turn.answer.line(f"[kiro] {detail}")  # a retried attempt's error stays out of the answer
            if not throttled:
                raise AgentTrouble(f"the agent answered the prompt with an error: {detail}", self._result(turn)) from None
            if turn.retries >= self.limits.trouble_retries:
                raise AgentTrouble(
                    f"the agent was still throttled after {turn.retries} retries: {detail}", self._result(turn)
                ) from None
            turn.retries += 1
            log.warning("worker %d: agent throttled (%s); retry %d/%d", self.worker_id, detail, turn.retries,
                        self.limits.trouble_retries)
            return None
        finally:
            turn.outcome = None
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
                limit, stalled = self.limits.watchdog(deadline, self._last_update)
                if now >= limit:
                    request.cancel()
                    await self._timed_out(turn, stalled=stalled, timeout_s=timeout_s)
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
        why = self.limits.why_ended(stalled=stalled, timeout_s=timeout_s, silence="update from the agent")
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
        if stop_reason == "cancelled":
            raise TurnCancelled("cancelled (the agent ended the turn as cancelled)", self._result(turn))
        why = {
            "end_turn": "",
            "refusal": "the agent refused to continue (stop reason: refusal)",
            "max_tokens": "the agent stopped at its token limit before finishing (stop reason: max_tokens)",
            "max_turn_requests": "the agent stopped at its limit of model requests for one turn "
            "(stop reason: max_turn_requests)",
        }.get(stop_reason, f"the agent ended the turn with stop reason {stop_reason!r}")
        if turn.refused:  # the agent's answer is in the output; what it was refused is said here
            refused = "the agent asked for what the worker pool refuses: " + "; ".join(turn.refused)
            why = f"{why}; {refused}" if why else refused
        if why:
            raise AgentTrouble(why, self._result(turn))
        return self._result(turn)

    def _result(self, turn: _Turn) -> TurnResult:
        return TurnResult(
            output=turn.answer.output(),
            approvals=turn.approvals,
            denials=turn.denials,
            credits=turn.credits,
            tokens=turn.tokens,
            trouble_retries=turn.retries,
        )

    def output_tail(self, max_lines: int = 20) -> list[str]:
        turn = self._turn
        return turn.answer.tail(max_lines) if turn is not None and self.state is DriverState.BUSY else []

    def cancel(self) -> None:
        if self.state is DriverState.BUSY:
            self._cancel.set()


class _TurnEndedInError(Exception):
    """V3 ended the turn with ``turn_end`` stopReason ``error`` (its words in the message) and no response."""


async def _first_of(request: asyncio.Future, ended: asyncio.Future) -> Any:
    """The prompt's response, or ``_TurnEndedInError`` when the agent ended the turn in error without one."""
    try:
        await asyncio.wait({request, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not request.done():
            request.cancel()
    if request.done() and not request.cancelled():
        return request.result()
    raise _TurnEndedInError(ended.result())


def _error_text(exc: acp.RequestError) -> str:
    """A JSON-RPC error as Kiro wrote it: its message and its ``data`` (where Kiro puts the cause)."""
    data = exc.data
    if isinstance(data, dict):
        data = data.get("details") or data.get("message") or json.dumps(data)
    return f"{exc}: {data}" if data else str(exc)


_NAME_KEYS = ("toolName", "toolId", "tool_name")


def tool_name(meta: Any) -> str | None:
    """A tool's own name from an ACP ``_meta``: at its top, or under a vendor's key (Kiro's ``_meta.kiro.toolName``
    / ``toolId``, Claude Code's ``_meta.claudeCode.toolName``, …)."""
    if not isinstance(meta, dict):
        return None
    for scope in (meta, *(v for v in meta.values() if isinstance(v, dict))):
        for key in (*_NAME_KEYS, "name") if scope is meta else _NAME_KEYS:
            value = scope.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def _add_tokens(turn: _Turn, result: Any) -> None:
    """The model tokens a prompt's response reports: ACP's ``usage`` {inputTokens, outputTokens}, or Gemini CLI's
    ``_meta.quota.token_count`` {input_tokens, output_tokens}; summed over a turn's attempts."""
    if not isinstance(result, dict):
        return
    usage = result.get("usage") if isinstance(result.get("usage"), dict) else {}
    quota = _vendor(_vendor(result.get("_meta"), "quota"), "token_count")
    counts = {"input": usage.get("inputTokens", quota.get("input_tokens")),
              "output": usage.get("outputTokens", quota.get("output_tokens"))}
    counts = {k: v for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool)}
    if counts:
        turn.tokens = {k: (turn.tokens or {}).get(k, 0) + counts.get(k, 0) for k in ("input", "output")}


def _pending(future: asyncio.Future | None) -> bool:
    return future is not None and not future.done()


def _vendor(meta: Any, key: str) -> dict:
    value = meta.get(key) if isinstance(meta, dict) else None
    return value if isinstance(value, dict) else {}


def _identify(init: dict, argv: list[str]) -> tuple[str | None, str | None]:
    """(version, engine) of a Kiro agent: the version from ``agentInfo`` (V2 sends it, V3 does not); the engine from
    the answer's shape (V3 alone sends ``_meta.kiro`` and sign-in methods), else from ``--agent-engine`` / ``--v3``."""
    info = init.get("agentInfo") if isinstance(init.get("agentInfo"), dict) else {}
    version = info.get("version") if isinstance(info.get("version"), str) else None
    named = named_engine(argv)
    capabilities = init.get("agentCapabilities") if isinstance(init.get("agentCapabilities"), dict) else {}
    if _vendor(capabilities.get("_meta"), "kiro") or init.get("authMethods"):
        return version, "v3"
    if info.get("name") == "Kiro CLI Agent":
        return version, named if named in ("v1", "v2") else "v2"
    return version, named


def _pick(options: list[PermissionOption], kinds: tuple[str, ...]) -> PermissionOption | None:
    for kind in kinds:
        for option in options:
            if option.kind == kind:
                return option
    return None
