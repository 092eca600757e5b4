"""Request signing between the parts (docs/contracts.md, "Authentication between the parts").

Owns the one signing scheme: a key per receiver derived from the shared secret, and an HMAC over
timestamp, method, target and raw body. Gives an httpx ``Auth`` for callers and a FastAPI dependency
for receivers. It must not log or return the secret, a key or a signature.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Generator
from urllib.parse import quote

import httpx
from fastapi import HTTPException, Request

WORKER_POOL = "worker-pool"
PR_PROCESSOR = "pr-processor"
LAMBDA_API = "lambda-api"
RECEIVERS = (WORKER_POOL, PR_PROCESSOR, LAMBDA_API)

TIMESTAMP_HEADER = "X-AIPM-Timestamp"
SIGNATURE_HEADER = "X-AIPM-Signature"
WINDOW_S = 300


def receiver_key(secret: str, receiver: str) -> bytes:
    """The 32-byte key for one receiver: HMAC-SHA256(secret, receiver name)."""
    if receiver not in RECEIVERS:
        raise ValueError(f"unknown receiver {receiver!r}; expected one of {', '.join(RECEIVERS)}")
    return hmac.new(secret.encode("utf-8"), receiver.encode("utf-8"), hashlib.sha256).digest()


def signature(key: bytes, timestamp: int | str, method: str, target: str | bytes, body: bytes) -> str:
    """``sha256=`` + hex HMAC of ``"{timestamp}.{METHOD}.{target}.{body}"``."""
    if isinstance(target, bytes):
        target = target.decode("ascii")
    message = f"{timestamp}.{method.upper()}.{target}.".encode() + body
    return "sha256=" + hmac.new(key, message, hashlib.sha256).hexdigest()


class SigningAuth(httpx.Auth):
    """Signs every outgoing request for one receiver (works with sync and async httpx clients)."""

    requires_request_body = True

    def __init__(self, secret: str | None, receiver: str, *, clock: Callable[[], float] = time.time):
        # With no secret (AIPM_INSECURE_DEV) requests go out unsigned; the receiver decides.
        self._key = receiver_key(secret, receiver) if secret else None
        self._clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._key is not None:
            ts = str(int(self._clock()))
            request.headers[TIMESTAMP_HEADER] = ts
            request.headers[SIGNATURE_HEADER] = signature(
                self._key, ts, request.method, request.url.raw_path, request.content
            )
        yield request


def request_target(scope: dict) -> str:
    """The path and query exactly as the client sent them (what the signature covers)."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else quote(scope.get("path", "/"), safe="/:@!$&'()*+,;=-._~%")
    query = scope.get("query_string") or b""
    return f"{path}?{query.decode('latin-1')}" if query else path


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail)


class SignatureVerifier:
    """FastAPI dependency: ``Depends(SignatureVerifier(secret, "worker-pool"))`` on every signed route.

    With ``secret=None`` (a service started with ``AIPM_INSECURE_DEV=1``) it lets every request through;
    the service has already warned about that at start.
    """

    verifies_signature = True  # the edge checks it before answering 422 for a body (``http._signature_refusal``)

    def __init__(
        self,
        secret: str | None,
        receiver: str,
        *,
        window_s: int = WINDOW_S,
        clock: Callable[[], float] = time.time,
    ):
        self._key = receiver_key(secret, receiver) if secret else None
        self._window_s = window_s
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self._key is not None

    async def __call__(self, request: Request) -> None:
        if self._key is None:
            return
        ts = request.headers.get(TIMESTAMP_HEADER)
        sig = request.headers.get(SIGNATURE_HEADER)
        if not ts or not sig:
            raise _unauthorized(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header: this endpoint is signed")
        if not ts.isascii() or not ts.isdigit() or len(ts) > 12:
            raise _unauthorized(f"{TIMESTAMP_HEADER} must be Unix time in whole seconds")
        if abs(self._clock() - int(ts)) > self._window_s:
            raise _unauthorized(f"{TIMESTAMP_HEADER} is more than {self._window_s} s from this server's clock")
        body = await request.body()
        expected = signature(self._key, ts, request.method, request_target(request.scope), body)
        if not hmac.compare_digest(expected.encode(), sig.strip().encode("utf-8", "replace")):
            raise _unauthorized("signature does not match this request (receiver, method, path, body or secret)")
