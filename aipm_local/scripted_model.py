"""A scripted model server speaking the Anthropic Messages API (streaming SSE), for driving real, unmodified agents
(tests/real_agents, and ``make run AIPM_AGENT=claude-code AIPM_MODEL=scripted``) with no account and no network.

``ScriptedModel`` serves ``POST /v1/messages`` on loopback in a thread (stdlib only). It is NOT a model: it reads
the conversation the agent sends and answers with the next step of a fixed script, as real tool calls in the
agent's own tool names (Claude Code's ``Read``, ``Write``, ``Bash``):

    1. Read the TASK.md whose absolute path the prompt names
    2. Write the module meeting TASK.md's ``f(args) == value`` criteria (``aipm_local.standin_change`` plans it)
    3. Write its test
    4. Run the tests with the agent's shell tool
    5. A short final answer naming what was written and whether the tests passed

The step is the number of tool results the conversation holds, so the server keeps no state per conversation and a
refused tool (an ``is_error`` result) moves the script on like any other. ``script`` replaces the plan with a fixed
list of steps (tool calls or text) for tests that need a particular tool; ``hang`` holds every answer open until the
server stops (a turn that never ends). A request without tools (a side query: a title, a summary) gets a one-word
text answer. Every request's body and headers are kept in ``requests`` for assertions.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aipm_local.standin_change import plan_change

NOT_A_MODEL = "The AIPM scripted model (not an AI)"
_READ_LINE_NUMBER = re.compile(r"^\s*\d+[→\t]", re.MULTILINE)  # Claude Code's Read shows `     1→text`
_TASK_PATH = re.compile(r"(/\S+?/TASK\.md)")
_CWD = re.compile(r"Working directory: (\S+)")


@dataclass(frozen=True)
class ToolCall:
    name: str
    input: dict


@dataclass(frozen=True)
class Say:
    text: str


Step = ToolCall | Say


@dataclass
class Seen:
    """One request as the server received it."""

    path: str
    headers: dict[str, str]
    body: dict

    @property
    def tool_names(self) -> list[str]:
        return [tool.get("name", "") for tool in self.body.get("tools") or []]


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            parts.append(_text_of(block.get("content")))
    return "\n".join(parts)


def tool_results(messages: list[dict]) -> list[dict]:
    return [
        block
        for message in messages
        if message.get("role") == "user" and isinstance(message.get("content"), list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]


def _system_text(body: dict) -> str:
    system = body.get("system")
    return system if isinstance(system, str) else _text_of(system)


class TaskScript:
    """The default script: read TASK.md, write the function and its test, run the tests, answer."""

    def __init__(self, python: str = sys.executable):
        self.python = python

    def step(self, body: dict) -> Step:
        messages = body.get("messages") or []
        done = tool_results(messages)
        prompt = "\n".join(_text_of(m.get("content")) for m in messages if m.get("role") == "user")
        task_path = _TASK_PATH.search(prompt)
        cwd = _CWD.search(_system_text(body))
        if task_path is None or cwd is None:
            return Say(f"{NOT_A_MODEL}: there is no TASK.md named in the prompt, nothing to do.")
        workspace = Path(cwd.group(1))
        if not done:
            return ToolCall("Read", {"file_path": task_path.group(1)})
        files = self._plan(done[0], workspace)
        writes = [ToolCall("Write", {"file_path": str(workspace / rel), "content": text}) for rel, text in files]
        tests = [rel for rel, _ in files if Path(rel).name.startswith("test_")]
        steps: list[Step] = [*writes]
        if tests:
            steps.append(ToolCall("Bash", {"command": f"{self.python} -m pytest -q {' '.join(tests)}",
                                           "description": "Run the new tests"}))
        if len(done) <= len(steps):
            return steps[len(done) - 1]
        refused = [r for r in done[1:] if r.get("is_error")]
        last = _text_of(done[-1].get("content"))
        verdict = "the tests pass" if re.search(r"\d+ passed", last) and " failed" not in last else "see the test run"
        if refused:
            return Say(f"{NOT_A_MODEL}: I could not finish: {len(refused)} of my tool calls were refused.")
        return Say(f"{NOT_A_MODEL}: done: wrote {', '.join(rel for rel, _ in files)}; {verdict}.")

    @staticmethod
    def _plan(read_result: dict, workspace: Path) -> list[tuple[str, str]]:
        text = _READ_LINE_NUMBER.sub("", _text_of(read_result.get("content")))
        with tempfile.TemporaryDirectory() as tmp:
            task_file = Path(tmp) / "TASK.md"
            task_file.write_text(text, encoding="utf-8")
            _task, plan = plan_change(task_file, workspace)
        return list(plan.files.items())


class FixedScript:
    """The given steps in order, one per model request with tools, then a short final answer."""

    def __init__(self, steps: list[Step]):
        self.steps = steps

    def step(self, body: dict) -> Step:
        done = len(tool_results(body.get("messages") or []))
        return self.steps[done] if done < len(self.steps) else Say(f"{NOT_A_MODEL}: done.")


@dataclass
class ScriptedModel:
    script: TaskScript | FixedScript = field(default_factory=TaskScript)
    hang: bool = False
    requests: list[Seen] = field(default_factory=list)
    url: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def main_requests(self) -> list[Seen]:
        """The agent's own turns (requests offering tools), not its side queries."""
        return [seen for seen in self.requests if seen.tool_names]

    def answer(self, body: dict) -> Step:
        if not body.get("tools"):
            return Say("Task")
        return self.script.step(body)


def sse_events(step: Step, model: str) -> Iterator[tuple[str, dict]]:
    """The Messages API's stream for one answer: a text block, or one tool_use block."""
    message_id = f"msg_{uuid.uuid4().hex[:24]}"
    yield "message_start", {"type": "message_start", "message": {
        "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 1}}}
    if isinstance(step, Say):
        yield "content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "text", "text": ""}}
        yield "content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "text_delta", "text": step.text}}
        stop_reason = "end_turn"
    else:
        yield "content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": step.name, "input": {}}}
        yield "content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "input_json_delta", "partial_json": json.dumps(step.input)}}
        stop_reason = "tool_use"
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    yield "message_delta", {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                            "usage": {"output_tokens": 20}}
    yield "message_stop", {"type": "message_stop"}


def _handler(model: ScriptedModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            pass

        def do_HEAD(self):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b"{}"
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            model.requests.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if not self.path.split("?", 1)[0].endswith("/messages"):
                self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}})
                return
            if self.path.split("?", 1)[0].endswith("/count_tokens"):
                self._json(200, {"input_tokens": 10})
                return
            if model.hang:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                model._stop.wait()
                self.close_connection = True
                return
            step = model.answer(body)
            events = list(sse_events(step, body.get("model", "scripted")))
            if not body.get("stream"):
                self._json(200, _as_message(events))
                return
            payload = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _json(self, status: int, data: dict) -> None:
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def _as_message(events: list[tuple[str, dict]]) -> dict:
    """The non-streaming form of the same answer."""
    message = dict(events[0][1]["message"])
    block = dict(events[1][1]["content_block"])
    delta = events[2][1]["delta"]
    if block["type"] == "text":
        block["text"] = delta["text"]
    else:
        block["input"] = json.loads(delta["partial_json"])
    message.update(content=[block], stop_reason=events[4][1]["delta"]["stop_reason"])
    return message


@contextlib.contextmanager
def scripted_model(model: ScriptedModel | None = None) -> Iterator[ScriptedModel]:
    """Serve ``model`` on 127.0.0.1 (a free port) for the block; ``model.url`` is the base URL for the agent."""
    model = model or ScriptedModel()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(model))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="scripted-model", daemon=True)
    thread.start()
    model.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield model
    finally:
        model._stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
