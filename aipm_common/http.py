"""The HTTP edge shared by the three APIs: body-size limit (413), JSON errors, and the uvicorn runner.

Every error leaves as JSON ``{"detail": ...}`` (docs/contracts.md, "Errors"). Nothing here knows a route; a signed route is
known by its dependency (``verifies_signature``): FastAPI reads and validates a body before it runs a route's
dependencies, so a body that does not fit on a signed route is answered only after the signature is checked — an
unsigned or forged request gets 401 whatever its body, never a 422 that tells it about the schema.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from aipm_common import fastapi_v1

fastapi_v1.install()  # before any route is declared: FastAPI then never imports pydantic.v1 (P5)

MAX_BODY_BYTES = 1024 * 1024

T = TypeVar("T")

log = logging.getLogger(__name__)


class BodyLimitMiddleware:
    """Refuses bodies over ``limit`` bytes with 413, by Content-Length or while streaming."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if _declared_over(scope, self.limit):
            return await _refuse(send, self.limit)
        body = _CountedBody(receive, send, self.limit)
        try:
            await self.app(scope, body.receive, body.send)
        except Exception:
            if not body.refused:
                raise


def _declared_over(scope, limit: int) -> bool:
    """A Content-Length over ``limit`` (one that is not a number is left to the streaming count)."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                if int(value) > limit:
                    return True
            except ValueError:
                pass
    return False


async def _refuse(send, limit: int) -> None:
    await send_json(send, 413, {"detail": f"request body over {limit} bytes"})


class _CountedBody:
    """One request's ``receive`` and ``send`` for the app: the body is counted as it streams in. Past the limit it
    answers 413 itself and tells the app the client went away, so nothing is processed, and drops what the app sends."""

    def __init__(self, receive, send, limit: int):
        self._receive = receive
        self._send = send
        self._limit = limit
        self.received = 0
        self.refused = False

    async def receive(self):
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self._limit:
                self.refused = True
                await _refuse(self._send, self._limit)
                return {"type": "http.disconnect"}
        return message

    async def send(self, message):
        if not self.refused:
            await self._send(message)


async def send_json(send, status: int, body: dict[str, Any]) -> None:
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


def started(part: T | None, what: str) -> T:
    """A part of an app's state that the app's lifespan makes (a pool, a service): 503 until the lifespan has run."""
    if part is None:
        raise StarletteHTTPException(503, f"{what} is starting")
    return part


class AppVerifier:
    """The signed routers' dependency: the app's own ``SignatureVerifier`` (its receiver, its secret), found in the
    app's state on each request, so routers can be module-level and still check the app's signature.
    ``verifier_of(request)`` returns it; ``Depends(AppVerifier(...))`` on a router signs every route of it."""

    verifies_signature = True  # the edge checks it before answering 422 for a body (``_signature_refusal``)

    def __init__(self, verifier_of: Callable[[Request], Callable[[Request], Awaitable[None]]]):
        self._verifier_of = verifier_of

    async def __call__(self, request: Request) -> None:
        await self._verifier_of(request)(request)


def _signature_checks(dependant: Any) -> list[Any]:
    """The route's dependencies (at any depth) that verify a request signature."""
    found, stack = [], [dependant]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        if getattr(node.call, "verifies_signature", False):
            found.append(node.call)
        stack.extend(node.dependencies)
    return found


async def _signature_refusal(request: Request) -> JSONResponse | None:
    """401 for a request to a signed route whose signature does not hold, else None."""
    for check in _signature_checks(getattr(request.scope.get("route"), "dependant", None)):
        try:
            await check(request)  # the body FastAPI read is cached on this request
        except StarletteHTTPException as exc:
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
    return None


def _not_json_hint(request: Request, errors: list[dict]) -> str:
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind and kind != "application/json" and not kind.endswith("+json") and any(
            e["loc"][:1] == ["body"] and e["type"] in ("dict_type", "model_attributes_type") for e in errors):
        return f" (the body was sent as {kind[:80]}: send JSON with Content-Type: application/json)"
    return ""


def install_edge(app: FastAPI, *, max_body: int = MAX_BODY_BYTES) -> None:
    """Body limit and JSON error handlers, the same on every API."""
    app.add_middleware(BodyLimitMiddleware, limit=max_body)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        refused = await _signature_refusal(request)
        if refused is not None:
            return refused
        errors = _jsonable_errors(exc.errors())
        if any(e["type"] == "json_invalid" for e in errors):
            return JSONResponse({"detail": "request body is not valid JSON", "errors": errors}, status_code=422)
        summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors)
        return JSONResponse({"detail": f"request does not fit the schema: {summary}{_not_json_hint(request, errors)}",
                             "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        body = exc.detail if isinstance(exc.detail, dict) and "detail" in exc.detail else {"detail": exc.detail}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the service log"}, status_code=500)


def _header_deadline_protocol(header_timeout: float):
    """uvicorn's h11 protocol with a deadline for each request's headers. uvicorn times out idle keep-alive
    connections only after an answer, so a client that connects and sends its headers a byte at a time (slowloris)
    holds its socket as long as it likes; here a connection that has not sent a whole request line and headers within
    ``header_timeout`` of connecting (or of its previous answer) is closed."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadlineH11(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_header_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_deadline()

        def _arm_header_deadline(self) -> None:
            self.loop.call_later(header_timeout, self._header_deadline, self.cycle)

        def _header_deadline(self, cycle_then) -> None:
            # A new request since the deadline was armed makes a new cycle: only a connection still on the old one
            # (no request, or none after the last answer) is closed.
            if self.cycle is cycle_then and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadlineH11


def serve(app: FastAPI, host: str, port: int, *, graceful_s: float = 10, header_timeout: float = 10,
          max_connections: int = 1000, tls: tuple[str, str] | None = None) -> None:
    """Run ``app`` under uvicorn with our logging (no uvicorn log config of its own).

    On SIGTERM/SIGINT uvicorn stops accepting, waits up to ``graceful_s`` for open requests, and only then runs the
    app's shutdown; a request still open by then gets uvicorn's plain-text 500. An app that holds long requests (the
    worker pool's ``/execute``) sets ``app.state.on_stopping``: it is called on the event loop as soon as the signal
    arrives, so it can answer them in JSON first. ``tls`` = (certificate file, key file) serves https.
    """
    import asyncio
    import contextlib

    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            hook = getattr(app.state, "on_stopping", None)
            if hook is not None and not self.should_exit:
                with contextlib.suppress(RuntimeError):  # no loop running (yet): nothing is open to answer
                    # From a signal handler: never call into the app from here, only schedule it on its loop.
                    asyncio.get_running_loop().call_soon_threadsafe(hook)
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=graceful_s,
        lifespan="on",
        http=_header_deadline_protocol(header_timeout),
        timeout_keep_alive=min(5, header_timeout),
        limit_concurrency=max_connections,
        **({"ssl_certfile": tls[0], "ssl_keyfile": tls[1]} if tls else {}),
    )
    Server(config).run()
