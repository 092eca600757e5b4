"""Who may call the user-facing endpoints (``AIPM_AUTH``): one dependency that answers the caller's identity.

``token``: ``Authorization: Bearer <AIPM_UI_TOKEN>``, compared in constant time. ``none``: local runs only — every
caller is "local", but a request whose Host or client address is not loopback is refused (a page on another site
cannot reach it through DNS rebinding). Unset: 401 for everyone. ``cognito`` plugs in here, as another
``Authenticator``, with the sign-in issue; until then it refuses with a message that says so.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from dataclasses import dataclass
from typing import Protocol

from fastapi import HTTPException, Request

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


@dataclass(frozen=True)
class Caller:
    identity: str  # goes into the PR body and the job's requested_by
    method: str


class Authenticator(Protocol):
    mode: str

    def authenticate(self, request: Request) -> Caller: ...


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


class TokenAuth:
    mode = "token"

    def __init__(self, token: str):
        self._token = token.encode()

    def authenticate(self, request: Request) -> Caller:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _unauthorized("sign in: send Authorization: Bearer <the UI token>")
        if not hmac.compare_digest(value.strip().encode("utf-8", "replace"), self._token):
            raise _unauthorized("the bearer token is not the UI token")
        return Caller(identity="ui-token", method="token")


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _loopback_ip(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class NoAuth:
    mode = "none"

    def authenticate(self, request: Request) -> Caller:
        host = _host_name(request.headers.get("host", ""))
        client = request.client.host if request.client else None
        if host not in LOOPBACK_HOSTS or not _loopback_ip(client):
            raise _unauthorized(
                "AIPM_AUTH=none serves loopback only (Host 127.0.0.1, ::1 or localhost, from this machine); "
                "use AIPM_AUTH=token anywhere else")
        return Caller(identity="local", method="none")


class Refuse:
    """No usable sign-in configured: every user-facing call is 401, with the reason."""

    def __init__(self, mode: str, reason: str):
        self.mode = mode
        self._reason = reason

    def authenticate(self, request: Request) -> Caller:
        raise _unauthorized(self._reason)


def make_authenticator(mode: str | None, ui_token: str | None) -> Authenticator:
    if mode == "token":
        if not ui_token:
            log.error("AIPM_AUTH=token but AIPM_UI_TOKEN is empty: every user-facing request will be refused")
            return Refuse("token", "AIPM_AUTH=token but no AIPM_UI_TOKEN is configured on the API")
        return TokenAuth(ui_token)
    if mode == "none":
        log.warning("AIPM_AUTH=none: no sign-in; only loopback requests are served (local runs only)")
        return NoAuth()
    if mode == "cognito":
        log.error("AIPM_AUTH=cognito is not available in this build yet: user-facing requests will be refused")
        return Refuse("cognito", "AIPM_AUTH=cognito: Cognito sign-in is not available in this build yet")
    return Refuse("unset", "sign-in is not configured on this API (AIPM_AUTH is unset)")


def current_caller(request: Request) -> Caller:
    """The seam: every user-facing route depends on this; the authenticator lives on the app's runtime."""
    return request.app.state.runtime.authenticator.authenticate(request)
