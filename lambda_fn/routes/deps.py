"""What the API's routers share: the app's state (``runtime``: the ``Runtime`` at ``app.state.runtime``, the one place
a route reads settings, the forge, the PR processor client or the queue from), JSON bodies, and the callback address.
"""

from __future__ import annotations

import re

from fastapi import HTTPException, Request

from lambda_fn.runtime import Runtime

_DOMAIN_RE = re.compile(r"^[A-Za-z0-9.-]{1,253}$")


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def require_json(request: Request) -> None:
    """A JSON body must say so: a ``text/plain`` POST (a cross-site form's way around CORS) is refused."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        raise HTTPException(415, "send the body as JSON with Content-Type: application/json")


def callback_url(request: Request, rt: Runtime) -> str | None:
    """PUBLIC_API_URL, else the Function URL's own domain from the Lambda event — never a Host header."""
    base = rt.settings.public_api_url
    if not base:
        event = request.scope.get("aws.event") or {}
        domain = (event.get("requestContext") or {}).get("domainName")
        base = f"https://{domain}" if isinstance(domain, str) and _DOMAIN_RE.fullmatch(domain) else None
    return f"{base.rstrip('/')}/api/callbacks/job" if base else None
