"""The Anthropic Messages API as the scripted model speaks it (Claude Code's ``claude-code-acp``): ``POST
/v1/messages`` (streaming SSE or not) and ``/v1/messages/count_tokens``. Reads a request into a ``Conversation``
and writes a ``Step`` as the API's events; what to say is the script's (``scripted_model_script``)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator

from aipm_local.scripted_model_script import Conversation, Dialect, Say, Step, ToolResult

DIALECT = Dialect(read="Read", write="Write", shell="Bash", cwd=re.compile(r"Working directory: (\S+)"))
Reply = tuple[int, str, bytes]


def route(path: str) -> str | None:
    path = path.split("?", 1)[0]
    if path.endswith("/messages/count_tokens"):
        return "count_tokens"
    return "messages" if path.endswith("/messages") else None


def tool_names(body: dict) -> list[str]:
    return [tool.get("name", "") for tool in body.get("tools") or [] if isinstance(tool, dict)]


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


def conversation(body: dict) -> Conversation:
    messages = body.get("messages") or []
    prompt = "\n".join(_text_of(m.get("content")) for m in messages if m.get("role") == "user")
    system = body.get("system")
    results = [
        ToolResult(_text_of(block.get("content")), bool(block.get("is_error")))
        for message in messages
        if message.get("role") == "user" and isinstance(message.get("content"), list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]
    context = (system if isinstance(system, str) else _text_of(system)) + "\n" + prompt
    return Conversation(prompt=prompt, context=context, results=results, tools=tool_names(body))


def respond(endpoint: str, body: dict, next_step: Callable[[Conversation, Dialect], Step]) -> Reply:
    if endpoint == "count_tokens":
        return _json(200, {"input_tokens": 10})
    # A request without tools is a side query (a title, a summary): one word.
    step = next_step(conversation(body), DIALECT) if body.get("tools") else Say("Task")
    events = list(sse_events(step, body.get("model", "scripted")))
    if not body.get("stream"):
        return _json(200, _as_message(events))
    payload = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()
    return 200, "text/event-stream", payload


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


def not_found(path: str) -> Reply:
    return _json(404, {"type": "error", "error": {"type": "not_found_error", "message": path}})


def _json(status: int, data: dict) -> Reply:
    return status, "application/json", json.dumps(data).encode()
