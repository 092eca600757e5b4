#!/usr/bin/env python3
"""Replays a real ``kiro-cli acp`` wire capture (``tests/fixtures/kiro-acp/``) as an ACP agent on stdio.

    replay.py CAPTURE [--log PATH]

The capture is read into a script (``script()``): the agent→client frames in their order, and the points where the
captured client sent ``initialize``, ``session/new``, ``session/prompt`` or ``session/cancel``. The replay waits at
each such point for the client to send the same method, answers it with the captured answer (its id made the
client's), and plays on. So nothing is sent early: a prompt's frames go out only after the client's prompt, and the
frames a capture has after ``session/cancel`` only after the client's cancel. Where a capture was trimmed or only
has the agent's side, the client's request is placed just after the previous answer.

An agent→client request of the capture (``session/request_permission``, ``_kiro/auth/getAccessToken``,
``fs/read_text_file``, ``terminal/create``…) is sent with its captured id, and the replay waits for the client's
answer before playing on, as the agent does. The captured client's own answers are not replayed: the client under
test gives its own. A second ``session/new`` (the worker pool opens one per task) is answered with the captured one.

``--log`` gets one JSON line per event: ``{"event": "request", "method", "params"}`` for each client request or
notification, ``{"event": "answer", "method", "id", "answer"}`` for the client's answer to each agent request,
``{"event": "waiting", "method"}`` when the replay waits for a client request, ``{"event": "end"}`` when the
script is played out. A client request the script cannot answer gets a JSON-RPC error. It lives under tests/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXPECTED = ("initialize", "session/new", "session/prompt", "session/cancel")


@dataclass
class Step:
    kind: str  # "expect" (wait for the client's METHOD), "send" (a notification), "ask" (a request), "answer"
    method: str = ""
    message: dict[str, Any] = field(default_factory=dict)


def frames(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(direction ``a2c``/``c2a``, JSON-RPC message) for each frame, whatever the capture's line format."""
    out: list[tuple[str, dict[str, Any]]] = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        if line.startswith(("C->S ", "S->C ")):  # cs
            out.append(("c2a" if line.startswith("C") else "a2c", json.loads(line[5:])))
            continue
        record = json.loads(line)
        if "jsonrpc" in record:  # raw: the agent's side only
            out.append(("a2c", record))
        elif "direction" in record:  # dp
            out.append(("c2a" if record["direction"].startswith("client") else "a2c", record["parsed"]))
        else:  # tdm
            out.append(("c2a" if record["dir"] in ("out", "client->agent") else "a2c", record["msg"]))
    return out


def _answered_method(result: Any) -> str:
    """Which request an agent's answer with an unknown id answered (a raw or trimmed capture)."""
    if isinstance(result, dict) and "protocolVersion" in result:
        return "initialize"
    if isinstance(result, dict) and "sessionId" in result:
        return "session/new"
    return "session/prompt"  # {stopReason} or an error: what a turn ends with


def script(path: Path) -> list[Step]:
    steps: list[Step] = []
    asked: dict[Any, str] = {}  # the captured client's request ids → method
    after_answer = 0  # where a request missing from the capture is placed: after the previous answer
    session_id = None
    for direction, message in frames(path):
        method = message.get("method")
        if direction == "c2a":
            if method in EXPECTED:
                steps.append(Step("expect", method))
            if method is not None and "id" in message:
                asked[message["id"]] = method
            continue  # the captured client's other requests, notifications and answers are not replayed
        if method is not None:
            session_id = session_id or (message.get("params") or {}).get("sessionId")
            steps.append(Step("ask" if "id" in message else "send", method, message))
            continue
        answered = asked.pop(message.get("id"), None)
        if answered is None:
            answered = _answered_method(message.get("result"))
            steps.insert(after_answer, Step("expect", answered))
        elif answered not in EXPECTED:
            continue  # the answer to a captured client request the replay does not expect
        steps.append(Step("answer", answered, message))
        after_answer = len(steps)
    have = {step.method for step in steps if step.kind == "answer"}
    # A capture that starts mid-turn: a handshake and a prompt in front of it (the prompt gets no answer).
    if "session/prompt" not in {step.method for step in steps if step.kind == "expect"}:
        steps.insert(0, Step("expect", "session/prompt"))
    if "session/new" not in have:
        steps[0:0] = [Step("expect", "session/new"), Step("answer", "session/new", {"result": {"sessionId": session_id}})]
    if "initialize" not in have:
        result = {"protocolVersion": 1, "agentCapabilities": {}, "authMethods": []}
        steps[0:0] = [Step("expect", "initialize"), Step("answer", "initialize", {"result": result})]
    return steps


class Replay:
    def __init__(self, steps: list[Step], log_path: str | None):
        self.steps = steps
        self.log_file = open(log_path, "a") if log_path else None  # noqa: SIM115 (open for the whole run)
        self.requests: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.answers: dict[Any, asyncio.Future] = {}
        self.last_id: dict[str, Any] = {}
        self.new_session = next((s.message for s in steps if s.kind == "answer" and s.method == "session/new"), None)
        self.out = sys.stdout.buffer

    def log(self, **event: Any) -> None:
        if self.log_file:
            self.log_file.write(json.dumps(event) + "\n")
            self.log_file.flush()

    def write(self, message: dict[str, Any]) -> None:
        self.out.write(json.dumps(message).encode() + b"\n")
        self.out.flush()

    async def read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            message = json.loads(line)
            if "method" in message:
                self.log(event="request", method=message["method"], params=message.get("params"))
                await self.requests.put(message)
            else:
                future = self.answers.get(message.get("id"))
                if future is not None and not future.done():
                    future.set_result(message)
        await self.requests.put({"method": None})  # stdin closed

    async def expect(self, method: str) -> dict[str, Any]:
        self.log(event="waiting", method=method)
        while True:
            message = await self.requests.get()
            if message["method"] is None:
                raise SystemExit(0)
            if message["method"] == method:
                return message
            if message["method"] == "session/new" and self.new_session is not None:
                self.write({**self.new_session, "jsonrpc": "2.0", "id": message["id"]})  # a session per task
            elif "id" in message:
                error = {"code": -32601, "message": f"replay: {message['method']} is not in this capture here"}
                self.write({"jsonrpc": "2.0", "id": message["id"], "error": error})

    async def play(self) -> None:
        for step in self.steps:
            if step.kind == "expect":
                message = await self.expect(step.method)
                self.last_id[step.method] = message.get("id")
            elif step.kind == "send":
                self.write(step.message)
            elif step.kind == "ask":
                future = self.answers[step.message["id"]] = asyncio.get_running_loop().create_future()
                self.write(step.message)
                answer = await future
                del self.answers[step.message["id"]]
                reply = {key: answer[key] for key in ("result", "error") if key in answer}
                self.log(event="answer", method=step.method, id=step.message["id"], answer=reply)
            else:  # answer: the captured answer to the client's request of that method
                self.write({**step.message, "jsonrpc": "2.0", "id": self.last_id.get(step.method)})
        self.log(event="end")
        while True:  # played out: answer what still comes, until stdin closes
            await self.expect("")


async def main_async(args: argparse.Namespace) -> None:
    replay = Replay(script(Path(args.capture)), args.log)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    reading = asyncio.ensure_future(replay.read(reader))
    try:
        await replay.play()
    finally:
        reading.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture")
    parser.add_argument("--log", default=None)
    args, _ = parser.parse_known_args(argv)
    try:
        asyncio.run(main_async(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
