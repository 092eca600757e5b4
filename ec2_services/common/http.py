"""The HTTP edge shared by the three APIs: body-size limit (413), JSON errors, and the uvicorn runner.

Every error leaves as JSON ``{"detail": ...}`` (SPEC.md, "Errors"). Nothing here knows a route.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

MAX_BODY_BYTES = 1024 * 1024

log = logging.getLogger(__name__)


class BodyLimitMiddleware:
    """Refuses bodies over ``limit`` bytes with 413, by Content-Length or while streaming."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    return await _send_json(send, 413, {"detail": f"request body over {self.limit} bytes"})
        received = 0
        refused = False

        async def limited_receive():
            # Past the limit: answer 413 ourselves and tell the app the client went away, so nothing is processed.
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    await _send_json(send, 413, {"detail": f"request body over {self.limit} bytes"})
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not refused:
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise


async def _send_json(send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _jsonable_errors(errors: list[dict]) -> list[dict]:
    # Pydantic puts the offending input (maybe 1 MiB, maybe bytes) and exception objects in errors: keep it short.
    clean = []
    for error in errors:
        item = {"loc": list(error.get("loc", ())), "msg": str(error.get("msg", "")), "type": error.get("type", "")}
        clean.append(item)
    return clean


def install_edge(app: FastAPI, *, max_body: int = MAX_BODY_BYTES) -> None:
    """Body limit and JSON error handlers, the same on every API."""
    app.add_middleware(BodyLimitMiddleware, limit=max_body)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = _jsonable_errors(exc.errors())
        if any(e["type"] == "json_invalid" for e in errors):
            return JSONResponse({"detail": "request body is not valid JSON", "errors": errors}, status_code=422)
        summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors)
        return JSONResponse({"detail": f"request does not fit the schema: {summary}", "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        body = exc.detail if isinstance(exc.detail, dict) and "detail" in exc.detail else {"detail": exc.detail}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the service log"}, status_code=500)


def serve(app: FastAPI, host: str, port: int, *, graceful_s: float = 10) -> None:
    """Run ``app`` under uvicorn with our logging (no uvicorn log config of its own)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=graceful_s,
        lifespan="on",
    )
    uvicorn.Server(config).run()
