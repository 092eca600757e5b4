#!/usr/bin/env python3
"""A test double of ``kiro-cli acp``: an Agent Client Protocol agent on stdio, scripted, no AI.

Built on the agent side of the same ``agent-client-protocol`` library the worker pool's ACP driver uses as a client
(``acp.run_agent``). It answers ``initialize``, opens a session per ``session/new`` (remembering its ``cwd``), and
answers ``session/prompt`` by streaming ``session/update`` notifications, then the prompt's response with a stop
reason. ``session/cancel`` stops the running prompt (stop reason ``cancelled``).

What it does is told in the message, with the PTY double's directives (several allowed, run in order):

    [[tool NAME]]          a ``tool_call`` (``_meta.toolName`` = NAME; `-`: no name, empty title), then
                           ``session/request_permission``; runs it only if an allow option was selected
    [[write PATH TEXT]]    write a file relative to the session's cwd (asks permission for `write`)
    [[sleep S]]            work for S seconds (a thought chunk every 0.5 s)   [[silent S]]  no update for S seconds
    [[crash]]              a panic line on stderr, exit with status 3         [[hang]]      no update, ignore cancel
    [[flood N]]            N lines of answer                                  [[quote T]]   a line `> T`
    [[trouble N]]          the first N sends of this message answer a JSON-RPC error "Kiro is having trouble…"
    [[throttle N WHAT]]    the first N sends fail as Kiro fails when throttled: WHAT ``ThrottlingException`` or
                           ``TooManyRequestsException`` in the error's data, or ``rate_limit`` / ``retry_warning``
                           (Kiro's V2 frame, then an error that does not say why)
    [[fail TEXT]]          the prompt answers JSON-RPC error -32603 "Internal error" with TEXT as its data
    [[subagent NAME]]      a V2 subagent: its session listed in ``_kiro.dev/subagent/list_update``, then in that
                           session a tool_call (``_meta.kiro.toolName`` NAME) and its permission request; says the
                           option it got. ``[[unlisted NAME]]``: the same, its session never listed
    [[linger NAME]]        a subagent that asks for NAME only once the *next* prompt has arrived (a subagent the
                           turn left running); ``[[lingered]]`` in that next prompt says the option it got
    [[say TEXT]]           a line of text          [[recall]]  what the session remembers of its conversation
    [[env NAME]]           whether NAME is in its environment                 [[pwd]]       the session's cwd
    [[refuse]] / [[maxtokens]]   end the turn with stop reason ``refusal`` / ``max_tokens``
    [[options K1,K2]]      a permission request whose options are only of these kinds (an unknown shape); says
                           which option it got        [[request M]]  the client request ``_M``; says the answer

The answer starts ``Working on your message (N lines).`` and ends ``Done.``, as the PTY double's. Options as the
PTY double's: ``--work-seconds`` (before each answer), ``--startup-seconds`` (before reading stdin),
``--prompt-log`` (appends ``time.monotonic()`` just before a prompt's response is written), ``--session-error TEXT``
(every ``session/new`` fails with TEXT as the error's data, as kiro-cli does for an agent config it cannot load). It lives under tests/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import acp
from acp.schema import (
    AgentCapabilities,
    Implementation,
    InitializeResponse,
    NewSessionResponse,
    PermissionOption,
    PromptResponse,
    ToolCallUpdate,
)

DIRECTIVE = re.compile(r"\[\[(\w+)(?:[ \t]+([^\]\n]*))?\]\]")
TROUBLE = "Kiro is having trouble responding right now. Please try again later."
THROTTLED = {  # Kiro's words for its service's throttling, in the prompt error's data
    "ThrottlingException": "Encountered an error in the response stream: ThrottlingException: Rate exceeded",
    "TooManyRequestsException": "Encountered an error in the response stream: TooManyRequestsException: "
    "Too many requests, please wait before trying again.",
}


class _Session:
    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.memory: list[str] = []
        self.work: asyncio.Task | None = None
        self.hanging = False


class DoubleAgent:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.sessions: dict[str, _Session] = {}
        self.sent: dict[str, int] = {}
        self.conn: Any = None
        self._tool_ids = 0
        self._subagents = 0
        self.next_prompt = asyncio.Event()
        self.lingering: asyncio.Future | None = None

    def on_connect(self, conn: Any) -> None:
        self.conn = conn

    async def initialize(self, protocol_version: int, client_capabilities=None, client_info=None, **kwargs):
        return InitializeResponse(
            protocol_version=acp.PROTOCOL_VERSION,
            agent_capabilities=AgentCapabilities(load_session=False),
            agent_info=Implementation(name="acp-double", title="Kiro ACP double (not an AI)", version="1"),
        )

    async def new_session(self, cwd: str, mcp_servers=None, **kwargs) -> NewSessionResponse:
        if self.args.session_error:
            raise acp.RequestError(-32603, "Internal error", self.args.session_error)
        session_id = f"s{len(self.sessions) + 1}"
        self.sessions[session_id] = _Session(Path(cwd))
        return NewSessionResponse(session_id=session_id)

    async def cancel(self, session_id: str, **kwargs) -> None:
        session = self.sessions.get(session_id)
        if session and session.work and not session.hanging:
            session.work.cancel()

    async def prompt(self, prompt: list, session_id: str, **kwargs) -> PromptResponse:
        session = self.sessions[session_id]
        message = "".join(getattr(block, "text", "") for block in prompt)
        self.sent[message] = self.sent.get(message, 0) + 1
        self.next_prompt.set()
        directives = DIRECTIVE.findall(message)
        trouble = next((int(arg or 1) for name, arg in directives if name == "trouble"), 0)
        if self.sent[message] <= trouble:
            await asyncio.sleep(self.args.work_seconds)
            raise acp.RequestError(-32603, TROUBLE)
        for name, arg in directives:
            if name == "throttle" and self.sent[message] <= int(arg.split()[0]):
                await self.throttled(session_id, arg.split()[1])
            elif name == "fail":
                await asyncio.sleep(self.args.work_seconds)
                raise acp.RequestError(-32603, "Internal error", arg.strip())
        session.work = asyncio.ensure_future(self.answer(session_id, session, message))
        try:
            stop_reason = await session.work
        except asyncio.CancelledError:
            if not session.work.cancelled():
                raise
            stop_reason = "cancelled"
        session.memory.append(message)
        if self.args.prompt_log:
            with open(self.args.prompt_log, "a") as log:
                log.write(f"{time.monotonic():.6f}\n")
        return PromptResponse(stop_reason=stop_reason)

    async def throttled(self, session_id: str, what: str) -> None:
        await asyncio.sleep(self.args.work_seconds)
        if what in THROTTLED:
            raise acp.RequestError(-32603, "Internal error", THROTTLED[what])
        if what == "rate_limit":
            await self.conn.ext_notification("kiro.dev/error/rate_limit", {
                "sessionId": session_id, "message": "Rate limit exceeded. Please wait a moment before trying again."})
        elif what == "retry_warning":
            update = {"sessionUpdate": "retry_warning", "attempt": 3, "maxAttempts": 3, "delaySecs": 10,
                      "message": "Retrying in 10s (attempt 3/3)"}
            await self.conn.ext_notification("kiro.dev/session/update", {"sessionId": session_id, "update": update})
        raise acp.RequestError(-32603, "Internal error", "Encountered an error in the response stream: no answer")

    async def start_subagent(self, parent: str, *, listed: bool = True) -> str:
        self._subagents += 1
        session_id = f"{parent}-sub{self._subagents}"
        if listed:
            entry = {"sessionId": session_id, "sessionName": "Lancelot", "agentName": "kiro_default",
                     "initialQuery": "Review the file", "status": {"type": "working"}, "group": "default",
                     "role": None, "dependsOn": []}
            await self.conn.ext_notification("kiro.dev/subagent/list_update", {"subagents": [entry],
                                                                               "pendingStages": []})
        return session_id

    async def linger(self, session_id: str, name: str) -> str:
        await self.next_prompt.wait()
        return await self.use_tool(session_id, name, f"Running {name}", "execute", kiro_meta=True)

    async def say(self, session_id: str, text: str) -> None:
        await self.conn.session_update(session_id=session_id, update=acp.update_agent_message_text(text))

    async def answer(self, session_id: str, session: _Session, message: str) -> str:
        await asyncio.sleep(self.args.work_seconds)
        await self.say(session_id, f"Working on your message ({len(message.splitlines())} lines).\n")
        for name, arg in DIRECTIVE.findall(message):
            stop = await self.directive(session_id, session, name, arg.strip())
            if stop:
                return stop
        await self.say(session_id, "\nDone.\n")
        return "end_turn"

    async def use_tool(self, session_id: str, name: str, title: str, kind: str, *, kiro_meta: bool = False) -> str:
        """A tool call and its permission request; the option chosen (``cancelled`` for none)."""
        self._tool_ids += 1
        tool_id = f"tool-{self._tool_ids}"
        meta = ({"kiro": {"toolName": name}} if kiro_meta else {"toolName": name}) if name != "-" else None
        start = acp.start_tool_call(tool_id, title if name != "-" else "", kind=kind, status="pending")
        start.field_meta = meta
        await self.conn.session_update(session_id=session_id, update=start)
        options = [
            PermissionOption(option_id="allow_once", name="Yes", kind="allow_once"),
            PermissionOption(option_id="allow_always", name="Always", kind="allow_always"),
            PermissionOption(option_id="reject_once", name="No", kind="reject_once"),
        ]
        answer = await self.conn.request_permission(
            session_id=session_id, tool_call=ToolCallUpdate(tool_call_id=tool_id, title=start.title), options=options
        )
        chosen = answer.outcome.option_id if answer.outcome.outcome == "selected" else "cancelled"
        allowed = chosen.startswith("allow")
        await self.conn.session_update(
            session_id=session_id, update=acp.update_tool_call(tool_id, status="completed" if allowed else "failed")
        )
        if not allowed:
            await self.say(session_id, f"Tool use was rejected: {name} ({chosen})\n")
        return chosen

    async def directive(self, session_id: str, session: _Session, name: str, arg: str) -> str | None:  # noqa: C901 - a test double: one branch per scripted directive
        if name == "tool":
            if (await self.use_tool(session_id, arg, f"Running {arg}", "execute")).startswith("allow"):
                await self.say(session_id, f"Tool {arg} finished.\n")
        elif name in ("subagent", "unlisted"):
            sub = await self.start_subagent(session_id, listed=name == "subagent")
            chosen = await self.use_tool(sub, arg, f"Running {arg}", "execute", kiro_meta=True)
            await self.say(session_id, f"The subagent's {arg} got {chosen}.\n")
        elif name == "linger":
            sub = await self.start_subagent(session_id)
            self.next_prompt = asyncio.Event()
            self.lingering = asyncio.ensure_future(self.linger(sub, arg))
        elif name == "lingered":
            chosen = await self.lingering if self.lingering else "nothing"
            await self.say(session_id, f"The earlier subagent's tool got {chosen}.\n")
        elif name == "write":
            path, _, text = arg.partition(" ")
            target = session.cwd / path
            if (await self.use_tool(session_id, "write", f"Creating {target}", "edit")).startswith("allow"):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text + "\n")
                await self.say(session_id, f"Created {target}\n")
        elif name == "sleep":
            end = time.monotonic() + float(arg or 1)
            while (left := end - time.monotonic()) > 0:
                await self.conn.session_update(session_id=session_id, update=acp.update_agent_thought_text("…"))
                await asyncio.sleep(min(0.5, left))
        elif name == "silent":
            await asyncio.sleep(float(arg or 1))
        elif name == "crash":
            sys.stderr.write("thread 'main' panicked at 'the double was told to crash'\n")
            sys.stderr.flush()
            os._exit(3)
        elif name == "hang":
            session.hanging = True
            await asyncio.Event().wait()
        elif name == "flood":
            lines = int(arg or 1000)
            for start in range(0, lines, 1000):
                block = "".join(f"flood line {i}\n" for i in range(start, min(lines, start + 1000)))
                await self.say(session_id, block)
        elif name == "quote":
            await self.say(session_id, f"> {arg}\n")
        elif name == "say":
            await self.say(session_id, f"{arg}\n")
        elif name == "recall":
            last = session.memory[-1].splitlines()[0] if session.memory else ""
            await self.say(
                session_id,
                f"I remember {len(session.memory)} earlier message(s) in this conversation{': ' + last if last else ''}\n",
            )
        elif name == "env":
            await self.say(session_id, f"{arg} is {'set' if arg in os.environ else 'not set'}\n")
        elif name == "pwd":
            await self.say(session_id, f"pwd: {session.cwd}\n")
        elif name == "options":
            tool_id = f"tool-{self._tool_ids}"
            self._tool_ids += 1
            options = [PermissionOption(option_id=f"opt-{k}", name=k, kind=k) for k in arg.split(",") if k]
            answer = await self.conn.request_permission(
                session_id=session_id, tool_call=ToolCallUpdate(tool_call_id=tool_id, title="odd", kind="execute"),
                options=options,
            )
            chosen = answer.outcome.option_id if answer.outcome.outcome == "selected" else "cancelled"
            await self.say(session_id, f"The client chose {chosen}.\n")
        elif name == "request":
            try:
                result = await self.conn.ext_method(arg, {})
                await self.say(session_id, f"The client answered {arg}: {result}\n")
            except acp.RequestError as exc:
                await self.say(session_id, f"The client refused {arg}: {exc} ({(exc.data or {}).get('reason')})\n")
        elif name == "refuse":
            return "refusal"
        elif name == "maxtokens":
            return "max_tokens"
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-seconds", type=float, default=0.05, help="time before every answer")
    parser.add_argument("--startup-seconds", type=float, default=0.0)
    parser.add_argument("--prompt-log", default=None, help="append time.monotonic() before each prompt's response")
    parser.add_argument("--session-error", default=None, help="answer every session/new with this error data")
    args, _ = parser.parse_known_args(argv)  # accepts the real CLI's `acp --agent aipm` and the PTY double's options
    if args.startup_seconds:
        time.sleep(args.startup_seconds)
    asyncio.run(acp.run_agent(DoubleAgent(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
