"""Cross-site request forgery guard: a state-changing request from a browser must come from the UI's own origin.

Owns one rule for every POST / PUT / PATCH / DELETE of the user-facing API, in every auth mode (with
``AIPM_AUTH=none`` a local user's browser is the only credential, so any page they visit could otherwise act for them):

- an ``Origin`` header (or, without one, ``Sec-Fetch-Site: cross-site``/``same-site``) that is neither the API's own
  origin nor one of ``ALLOWED_ORIGINS`` → 403;
- a body that is not JSON (``Content-Type: application/json`` or ``…+json``) → 415. A plain HTML form can only send
  ``application/x-www-form-urlencoded``, ``multipart/form-data`` or ``text/plain``, and a cross-origin ``fetch`` with
  a JSON type needs a CORS preflight, which only ``ALLOWED_ORIGINS`` pass.

The signed server-to-server callback (``/api/callbacks/``) and GitHub's signed webhook (``/api/github/``) are left to
their signatures. Must not read the body.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aipm_common.http import send_json

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
EXEMPT_PREFIXES = ("/api/callbacks/", "/api/github/")


def _own_origin(scope, host: str) -> str:
    scheme = scope.get("scheme", "http")
    if (scope.get("aws.event") or {}).get("requestContext"):
        scheme = "https"  # a Function URL is served over TLS whatever Mangum's scope says
    return f"{scheme}://{host}".lower()


def _default_port(origin: str) -> str:
    """``https://a:443`` → ``https://a``: browsers leave the default port out of ``Origin``."""
    parts = urlsplit(origin)
    if (parts.scheme, parts.port) in (("https", 443), ("http", 80)):
        return f"{parts.scheme}://{parts.hostname}"
    return origin


def refusal(scope, allowed_origins: list[str]) -> tuple[int, str] | None:
    """(status, reason) when this request may not change state; None when it may."""
    if scope["type"] != "http" or scope["method"] in SAFE_METHODS or scope["path"].startswith(EXEMPT_PREFIXES):
        return None
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}
    origin = headers.get("origin", "").strip().rstrip("/").lower()
    allowed = {o.lower() for o in allowed_origins} | {_default_port(_own_origin(scope, headers.get("host", "")))}
    if origin:
        if _default_port(origin) not in allowed:
            return 403, (f"cross-origin request from {origin[:100]} refused: only the UI's own origin or one of "
                         "ALLOWED_ORIGINS may change state")
    elif headers.get("sec-fetch-site", "").lower() in ("cross-site", "same-site"):
        return 403, "cross-site request refused (Sec-Fetch-Site without an allowed Origin)"
    kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        return 415, "send state-changing requests as JSON with Content-Type: application/json (a form is refused)"
    return None


class SameOriginMiddleware:
    """Answers 403/415 (see the module docstring) before any route, authentication included, runs."""

    def __init__(self, app, allowed_origins: list[str]):
        self.app = app
        self.allowed_origins = allowed_origins

    async def __call__(self, scope, receive, send):
        refused = refusal(scope, self.allowed_origins)
        if refused:
            return await send_json(send, refused[0], {"detail": refused[1]})
        return await self.app(scope, receive, send)
