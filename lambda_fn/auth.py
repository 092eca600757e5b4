"""Who may call the user-facing endpoints (``AIPM_AUTH``): one dependency that answers the caller's identity.

``token``: ``Authorization: Bearer <AIPM_UI_TOKEN>``, compared in constant time. ``none``: local runs only — every
caller is "local", but a request whose Host or client address is not loopback is refused (a page on another site
cannot reach it through DNS rebinding). ``cognito``: the bearer is a Cognito ID or access token of the configured user
pool and app client, verified with PyJWT against the pool's JWKS (RS256 only; signature, issuer, audience or
``client_id``, expiry, ``token_use``) and, when ``AIPM_ALLOWED_GROUPS`` is set, membership of one of those groups
(``cognito:groups``; 403 otherwise). The keys are cached for the container's life and fetched again only for a key id
not seen yet, at most once per ``REFETCH_FLOOR_S``. Unset: 401 for everyone.

httpx and PyJWT (with cryptography under it) are imported on the first Cognito token, not at import: they cost
about a third of the app's own import, on every cold start (docs/contracts.md, P5).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import HTTPException, Request

if TYPE_CHECKING:
    import jwt

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}
# What the PR processor accepts in ``requested_by`` (and turns into a Co-authored-by trailer when it has an e-mail).
EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
MAX_NAME = 100
MAX_EMAIL = 254
MAX_REQUESTED_BY = 200  # the PR processor's bound


def clean_name(value: Any) -> str:
    """A display name that is safe anywhere it goes (a PR body, a commit trailer): one line, no brackets, bounded."""
    if not isinstance(value, str):
        return ""
    text = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in value)
    return " ".join(text.replace("<", "").replace(">", "").replace("@", " at ").split())[:MAX_NAME].strip()


@dataclass(frozen=True)
class Caller:
    identity: str  # who, for the rate limit and logs (the token's subject, "ui-token", "local")
    method: str
    name: str | None = None
    email: str | None = None

    @property
    def requested_by(self) -> str:
        """What goes into the PR body and the job record: ``Name <email>`` when there is an e-mail, else the name."""
        name = self.name or self.identity
        both = f"{name} <{self.email}>"
        return both if self.email and len(both) <= MAX_REQUESTED_BY else name


class Authenticator(Protocol):
    mode: str

    def authenticate(self, request: Request) -> Caller: ...


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def _bearer(request: Request, what: str) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise _unauthorized(f"sign in: send Authorization: Bearer <{what}>")
    return value.strip()


class TokenAuth:
    mode = "token"

    def __init__(self, token: str):
        self._token = token.encode()

    def authenticate(self, request: Request) -> Caller:
        value = _bearer(request, "the UI token")
        if not hmac.compare_digest(value.encode("utf-8", "replace"), self._token):
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


# --- Cognito -----------------------------------------------------------------------------------------------------

REFETCH_FLOOR_S = 60.0  # an unknown key id fetches the JWKS again at most this often
FAILED_FETCH_RETRY_S = 5.0  # after a failed fetch
LEEWAY_S = 30  # clock skew allowed on exp / iat / nbf
MAX_TOKEN_CHARS = 16_384


class JwksUnavailable(Exception):
    pass


class JwksCache:
    """The pool's signing keys by key id: fetched on first use, kept, fetched again only for an unknown ``kid``."""

    def __init__(self, url: str, *, refetch_floor: float = REFETCH_FLOOR_S, timeout: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.url = url
        self.refetch_floor = refetch_floor
        self.timeout = timeout
        self.clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._next_fetch = float("-inf")
        self._lock = threading.Lock()
        self.fetches = 0

    def key(self, kid: str) -> jwt.PyJWK | None:
        with self._lock:
            if kid in self._keys:
                return self._keys[kid]
            now = self.clock()
            if now >= self._next_fetch:
                self._fetch(now)
            return self._keys.get(kid)

    def _fetch(self, now: float) -> None:
        import httpx  # noqa: PLC0415 - on the first token (see the module's docstring)
        import jwt  # noqa: PLC0415

        self.fetches += 1
        try:
            response = httpx.get(self.url, timeout=self.timeout, follow_redirects=False)
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            # Keep what was known; try again soon (a failure is not held for the whole floor).
            self._next_fetch = now + min(FAILED_FETCH_RETRY_S, self.refetch_floor)
            raise JwksUnavailable(f"the sign-in keys (JWKS) could not be read from {self.url}: {exc}") from exc
        keys: dict[str, jwt.PyJWK] = {}
        for entry in data.get("keys", []) if isinstance(data, dict) else []:
            if not isinstance(entry, dict) or entry.get("kty") != "RSA" or not entry.get("kid"):
                continue
            if entry.get("use", "sig") != "sig" or entry.get("alg", "RS256") != "RS256":
                continue
            try:
                keys[str(entry["kid"])] = jwt.PyJWK(entry, algorithm="RS256")
            except jwt.PyJWTError as exc:
                log.warning("JWKS key %s skipped: %s", entry.get("kid"), exc)
        self._keys = keys
        self._next_fetch = now + self.refetch_floor
        log.info("JWKS read from %s: %d signing keys", self.url, len(keys))


@dataclass(frozen=True)
class CognitoConfig:
    user_pool_id: str
    client_id: str
    region: str
    allowed_groups: tuple[str, ...] = ()
    jwks_url: str | None = None  # override (tests serve one on loopback); default: the pool's own

    @property
    def issuer(self) -> str:
        return f"https://cognito-idp.{self.region}.amazonaws.com/{self.user_pool_id}"

    @property
    def jwks(self) -> str:
        return self.jwks_url or f"{self.issuer}/.well-known/jwks.json"


class CognitoAuth:
    mode = "cognito"

    def __init__(self, config: CognitoConfig, *, jwks: JwksCache | None = None):
        self.config = config
        self.jwks = jwks or JwksCache(config.jwks)

    def authenticate(self, request: Request) -> Caller:
        return self.verify(_bearer(request, "a Cognito ID or access token"))

    def verify(self, token: str) -> Caller:
        claims = self.claims(token)
        groups = claims.get("cognito:groups") or []
        member = isinstance(groups, list) and bool(set(map(str, groups)) & set(self.config.allowed_groups))
        if self.config.allowed_groups and not member:
            raise HTTPException(403, "you are signed in but not in a group allowed to use AIPM "
                                     f"(AIPM_ALLOWED_GROUPS: {', '.join(self.config.allowed_groups)}); "
                                     "ask an administrator to add you")
        return _caller_from(claims)

    def claims(self, token: str) -> dict:
        """The token's claims once every rule holds, checked in this order: its form and header (size, JWT,
        algorithm, key id), its signing key, then its signature and claims (use, expiry, issuer, audience, client)."""
        kid = _signing_key_id(token)
        key = self._signing_key(kid)
        return _verified_claims(token, key.key, self.config)

    def _signing_key(self, kid: str) -> jwt.PyJWK:
        try:
            key = self.jwks.key(kid)
        except JwksUnavailable as exc:
            log.error("%s", exc)
            raise HTTPException(503, "sign-in cannot be checked right now: the user pool's keys could not be read",
                                headers={"Retry-After": "5"}) from exc
        if key is None:
            raise _unauthorized("the token was signed by a key this user pool does not have")
        return key


def _signing_key_id(token: str) -> str:
    """The key id (kid) of a token whose size, form and algorithm are acceptable; nothing is verified yet."""
    import jwt  # noqa: PLC0415 - on the first token (see the module's docstring)

    if len(token) > MAX_TOKEN_CHARS:
        raise _unauthorized("the bearer token is too long to be a Cognito token")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise _unauthorized("the bearer token is not a JWT; sign in again") from None
    if header.get("alg") != "RS256":
        raise _unauthorized(f"token algorithm {str(header.get('alg'))[:20]!r} is not accepted (RS256 only)")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _unauthorized("the token names no signing key (kid)")
    return kid


def _verified_claims(token: str, key: Any, config: CognitoConfig) -> dict:
    """The claims of a token signed with ``key``: its use, signature, expiry, issuer and app client checked."""
    import jwt  # noqa: PLC0415 - on the first token (see the module's docstring)

    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
        use = unverified.get("token_use")
        if use not in ("id", "access"):
            raise _unauthorized(f"token_use {str(use)[:20]!r} is not accepted (an ID or access token is)")
        claims = jwt.decode(
            token, key, algorithms=["RS256"], issuer=config.issuer,
            audience=config.client_id if use == "id" else None, leeway=LEEWAY_S,
            options={"require": ["exp", "iat", "iss", "sub", "token_use"], "verify_aud": use == "id"},
        )
    except jwt.ExpiredSignatureError:
        raise _unauthorized("the sign-in has expired; sign in again") from None
    except jwt.InvalidIssuerError:
        raise _unauthorized("the token was not issued by this API's user pool") from None
    except jwt.InvalidAudienceError:
        raise _unauthorized("the token was issued for another app client") from None
    except jwt.InvalidSignatureError:
        raise _unauthorized("the token's signature does not verify") from None
    except jwt.PyJWTError as exc:
        raise _unauthorized(f"the token was refused: {str(exc)[:200]}") from None
    if use == "access" and claims.get("client_id") != config.client_id:
        raise _unauthorized("the token was issued for another app client")
    return claims


def _caller_from(claims: dict) -> Caller:
    username = claims.get("cognito:username") or claims.get("username")
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    verified = claims.get("email_verified")
    if email and (verified is False or str(verified).lower() == "false"
                  or len(email) > MAX_EMAIL or not EMAIL_RE.fullmatch(email)):
        email = None
    given = " ".join(str(claims.get(k, "")) for k in ("given_name", "family_name") if isinstance(claims.get(k), str))
    name = (clean_name(claims.get("name")) or clean_name(given) or clean_name(claims.get("preferred_username"))
            or (clean_name(email.split("@", 1)[0]) if email else "") or clean_name(username) or None)
    return Caller(identity=f"cognito:{claims['sub']}", method="cognito", name=name, email=email)


def make_authenticator(mode: str | None, ui_token: str | None, *, cognito: CognitoConfig | None = None) -> Authenticator:
    if mode == "token":
        if not ui_token:
            log.error("AIPM_AUTH=token but AIPM_UI_TOKEN is empty: every user-facing request will be refused")
            return Refuse("token", "AIPM_AUTH=token but no AIPM_UI_TOKEN is configured on the API")
        return TokenAuth(ui_token)
    if mode == "none":
        log.warning("AIPM_AUTH=none: no sign-in; only loopback requests are served (local runs only)")
        return NoAuth()
    if mode == "cognito":
        if cognito is None:
            log.error("AIPM_AUTH=cognito needs COGNITO_USER_POOL_ID, COGNITO_CLIENT_ID and COGNITO_REGION: "
                      "every user-facing request will be refused")
            return Refuse("cognito", "AIPM_AUTH=cognito but the user pool is not configured on the API "
                                     "(COGNITO_USER_POOL_ID, COGNITO_CLIENT_ID, COGNITO_REGION)")
        log.info("AIPM_AUTH=cognito: user pool %s, app client %s%s", cognito.user_pool_id, cognito.client_id,
                 f", groups {', '.join(cognito.allowed_groups)}" if cognito.allowed_groups else "")
        return CognitoAuth(cognito)
    return Refuse("unset", "sign-in is not configured on this API (AIPM_AUTH is unset)")


def current_caller(request: Request) -> Caller:
    """The seam: every user-facing route depends on this; the authenticator lives on the app's runtime."""
    return request.app.state.runtime.authenticator.authenticate(request)
