"""The Gemini API as the scripted model speaks it (Google's ``gemini --acp``, pointed here by
``GOOGLE_GEMINI_BASE_URL``): ``POST /v1beta/models/{model}:streamGenerateContent?alt=sse`` (the agent's turns),
``:generateContent`` (its side queries: a JSON answer shaped by the request's schema) and ``:countTokens``.

Reads a request into a ``Conversation`` (the working directory is the session context's "Workspace Directories"
line; a ``functionResponse`` with an ``error`` is a refused or failed tool) and writes a ``Step`` as one SSE chunk:
a ``functionCall`` (no id, as the public API sends it) or text, with ``finishReason`` STOP and token counts."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from aipm_local.scripted_model_script import Conversation, Dialect, Say, Step, ToolResult

DIALECT = Dialect(read="read_file", write="write_file", shell="run_shell_command",
                  cwd=re.compile(r"Workspace Directories:\**\s*\n\s*- (\S+)"))
_ROUTE = re.compile(r"/models/[^/:]+:(streamGenerateContent|generateContent|countTokens)$")
# What the scripted model reports per answer (Gemini CLI sums them into its prompt response's _meta.quota).
USAGE = {"promptTokenCount": 10, "candidatesTokenCount": 20, "totalTokenCount": 30}
Reply = tuple[int, str, bytes]


def route(path: str) -> str | None:
    match = _ROUTE.search(path.split("?", 1)[0])
    return match.group(1) if match else None


def tool_names(body: dict) -> list[str]:
    return [declaration.get("name", "")
            for tool in body.get("tools") or [] if isinstance(tool, dict)
            for declaration in tool.get("functionDeclarations") or [] if isinstance(declaration, dict)]


def _parts(body: dict, role: str) -> list[dict]:
    return [part for content in body.get("contents") or [] if content.get("role") == role
            for part in content.get("parts") or [] if isinstance(part, dict)]


def _result(response: dict) -> ToolResult:
    if "error" in response:
        return ToolResult(str(response["error"]), True)
    output = response.get("output")
    return ToolResult(output if isinstance(output, str) else json.dumps(response), False)


def conversation(body: dict) -> Conversation:
    user = _parts(body, "user")
    prompt = "\n".join(part["text"] for part in user if isinstance(part.get("text"), str))
    system = body.get("systemInstruction") or {}
    system_text = "\n".join(p.get("text", "") for p in system.get("parts") or [] if isinstance(p, dict))
    results = [_result(part["functionResponse"].get("response") or {})
               for part in user if isinstance(part.get("functionResponse"), dict)]
    return Conversation(prompt=prompt, context=system_text + "\n" + prompt, results=results,
                        tools=tool_names(body))


def respond(endpoint: str, body: dict, next_step: Callable[[Conversation, Dialect], Step]) -> Reply:
    model = "scripted"
    if endpoint == "countTokens":
        return _json(200, {"totalTokens": 10})
    if endpoint == "generateContent" and not body.get("tools"):
        return _json(200, chunk(Say(json.dumps(_example(_schema(body)))), model))
    step = next_step(conversation(body), DIALECT) if body.get("tools") else Say("Task")
    if endpoint == "generateContent":
        return _json(200, chunk(step, model))
    return 200, "text/event-stream", f"data: {json.dumps(chunk(step, model))}\r\n\r\n".encode()


def chunk(step: Step, model: str) -> dict:
    """One GenerateContentResponse: the whole answer, finished."""
    part = {"text": step.text} if isinstance(step, Say) else {"functionCall": {"name": step.name, "args": step.input}}
    return {"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": USAGE, "modelVersion": model}


def _schema(body: dict) -> dict:
    config = body.get("generationConfig") or {}
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    return schema if isinstance(schema, dict) else {"type": "string"}


def _example(schema: dict):
    """A value of ``schema``'s shape: an enum's first value, "scripted", 0, [], an object of its required keys."""
    if schema.get("enum"):
        return schema["enum"][0]
    kind = str(schema.get("type", "string")).lower()
    if kind == "object":
        properties = schema.get("properties") or {}
        keys = schema.get("required") or list(properties)
        return {key: _example(properties.get(key) or {}) for key in keys}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return 0
    if kind == "boolean":
        return False
    return "scripted"


def not_found(path: str) -> Reply:
    return _json(404, {"error": {"code": 404, "message": f"{path} is not served", "status": "NOT_FOUND"}})


def _json(status: int, data: dict) -> Reply:
    return status, "application/json", json.dumps(data).encode()
