"""A scripted model server speaking the provider APIs real, unmodified agents call, for driving them (tests/real_agents,
and ``make run AIPM_AGENT=claude-code|gemini AIPM_MODEL=scripted``) with no account and no network.

``ScriptedModel`` serves on loopback in a thread (stdlib only), one server for every wire, chosen by path:

    POST /v1/messages[/count_tokens]                       Anthropic Messages (claude-code-acp; ANTHROPIC_BASE_URL)
    POST /v1beta/models/{m}:streamGenerateContent|…        Gemini API (gemini --acp; GOOGLE_GEMINI_BASE_URL)

It is NOT a model: it reads the conversation the agent sends and answers with the next step of a fixed script, as
real tool calls in that agent's own tool names (``scripted_model_script``: read TASK.md, write the function and its
test, run the tests with the agent's shell tool, a short final answer). ``script`` replaces the plan with a fixed
list of steps for tests that need a particular tool; ``delay_s`` makes each turn's answer take that long (as a real
model's would, for benchmarks); ``hang`` holds every answer open until the server stops (a
turn that never ends). Every request's body and headers are kept in ``requests`` for assertions.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aipm_local import scripted_model_anthropic as anthropic
from aipm_local import scripted_model_gemini as gemini
from aipm_local.scripted_model_script import (
    NOT_A_MODEL,
    Conversation,
    Dialect,
    FixedScript,
    Say,
    Step,
    TaskScript,
    ToolCall,
)

__all__ = ["NOT_A_MODEL", "FixedScript", "Say", "ScriptedModel", "Seen", "TaskScript", "ToolCall", "scripted_model"]

WIRES = {"anthropic": anthropic, "gemini": gemini}


@dataclass
class Seen:
    """One request as the server received it."""

    path: str
    headers: dict[str, str]
    body: dict
    wire: str = "anthropic"
    at: float = field(default_factory=time.time)  # when it arrived (wall clock)
    answered_at: float | None = None  # time.monotonic() once its answer was written

    @property
    def tool_names(self) -> list[str]:
        return WIRES[self.wire].tool_names(self.body)


@dataclass
class ScriptedModel:
    script: TaskScript | FixedScript = field(default_factory=TaskScript)
    hang: bool = False
    delay_s: float = 0.0  # how long each turn's answer takes, as a real model's would (benchmarks)
    requests: list[Seen] = field(default_factory=list)
    url: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def main_requests(self) -> list[Seen]:
        """The agent's own turns (requests offering tools), not its side queries."""
        return [seen for seen in self.requests if seen.tool_names]

    def next_step(self, conversation: Conversation, dialect: Dialect) -> Step:
        return self.script.step(conversation, dialect)


def _wire_of(path: str):
    for name, wire in WIRES.items():
        endpoint = wire.route(path)
        if endpoint is not None:
            return name, endpoint
    return None, None


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
            name, endpoint = _wire_of(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            seen = Seen(self.path, headers, body, name or "anthropic")
            model.requests.append(seen)
            if name is None:
                self._send(*anthropic.not_found(self.path))
                return
            if model.hang and endpoint in ("messages", "streamGenerateContent", "generateContent"):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                model._stop.wait()
                self.close_connection = True
                return
            if model.delay_s and seen.tool_names:
                time.sleep(model.delay_s)
            self._send(*WIRES[name].respond(endpoint, body, model.next_step))
            seen.answered_at = time.monotonic()

        def _send(self, status: int, content_type: str, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


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
