"""A loopback stand-in for a Cognito user pool: its JWKS, tokens signed with locally generated RSA keys, and the
hosted UI's OAuth endpoints (``/oauth2/authorize``, ``/oauth2/token`` with a real PKCE S256 check,
``/oauth2/revoke``, ``/logout``) — enough for the API's token checks and for the browser's sign-in.

Key rotation: ``rotate()`` adds a key and makes it the signing one; ``jwks_fetches`` counts reads of the JWKS.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, RedirectResponse

REGION = "us-east-1"
POOL_ID = "us-east-1_TestPool1"
CLIENT_ID = "testclient1234567890abcdef"
ISSUER = f"https://cognito-idp.{REGION}.amazonaws.com/{POOL_ID}"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict:
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


@dataclass
class User:
    sub: str = "0a1b2c3d-1111-2222-3333-444455556666"
    username: str = "ann"
    name: str = "Ann Example"
    email: str = "ann@example.com"
    groups: list[str] = field(default_factory=lambda: ["developers"])


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (without python-multipart)."""
    return dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))


class CognitoDouble:
    def __init__(self, *, token_ttl: int = 3600):
        self.lock = threading.Lock()
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.kid = ""
        self.rotate()
        self.user = User()
        self.token_ttl = token_ttl
        self.url = ""  # set when served
        self.redirect_uris: set[str] = set()  # empty: any (the test names the page's URL)
        self.reset()
        self.app = self._build()

    def reset(self) -> None:
        with self.lock:
            self.jwks_fetches = 0
            self.codes: dict[str, dict] = {}
            self.refresh_tokens: dict[str, User] = {}
            self.token_requests: list[dict] = []
            self.revoked: list[str] = []
            self.logouts: list[dict] = []
            self.jwks_status = 200

    def rotate(self) -> str:
        """A new signing key (the old ones stay published); returns its kid."""
        self.kid = f"kid-{len(self.keys) + 1}-{secrets.token_hex(4)}"
        self.keys[self.kid] = new_key()
        return self.kid

    def jwks(self) -> dict:
        return {"keys": [public_jwk(k, kid) for kid, k in self.keys.items()]}

    # --- tokens --------------------------------------------------------------------------------------------------

    def claims(self, use: str = "id", user: User | None = None, **overrides) -> dict:
        user = user or self.user
        now = int(time.time())
        base = {"sub": user.sub, "iss": ISSUER, "iat": now, "exp": now + self.token_ttl, "auth_time": now,
                "token_use": use, "cognito:groups": list(user.groups), "jti": secrets.token_hex(8)}
        if use == "id":
            base |= {"aud": CLIENT_ID, "cognito:username": user.username, "name": user.name, "email": user.email,
                     "email_verified": True}
        else:
            base |= {"client_id": CLIENT_ID, "username": user.username, "scope": "openid email profile"}
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    def token(self, use: str = "id", *, key: rsa.RSAPrivateKey | None = None, kid: str | None = None,
              algorithm: str = "RS256", headers: dict | None = None, **claims) -> str:
        kid = kid or self.kid
        return jwt.encode(self.claims(use, **claims), key or self.keys.get(kid) or self.keys[self.kid],
                          algorithm=algorithm, headers={"kid": kid, **(headers or {})})

    # --- the hosted UI ---------------------------------------------------------------------------------------------

    def _tokens_for(self, user: User) -> dict:
        refresh = secrets.token_urlsafe(32)
        self.refresh_tokens[refresh] = user
        return {"id_token": self.token("id", user=user), "access_token": self.token("access", user=user),
                "refresh_token": refresh, "token_type": "Bearer", "expires_in": self.token_ttl}

    def _build(self) -> FastAPI:  # noqa: C901 - a test double: its route closures count into the builder
        app = FastAPI()
        double = self
        # The token endpoint is called by the page itself (another origin), as Cognito allows.
        app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "Authorization"])

        def oauth_error(error: str, status: int = 400) -> JSONResponse:
            return JSONResponse({"error": error}, status_code=status)

        @app.get("/.well-known/jwks.json")
        def jwks():
            with double.lock:
                double.jwks_fetches += 1
            if double.jwks_status != 200:
                return JSONResponse({"message": "unavailable"}, status_code=double.jwks_status)
            return double.jwks()

        @app.get("/oauth2/authorize")
        def authorize(response_type: str, client_id: str, redirect_uri: str, state: str = "",
                      code_challenge: str = "", code_challenge_method: str = "", scope: str = ""):
            if response_type != "code" or client_id != CLIENT_ID:
                return oauth_error("unauthorized_client")
            if double.redirect_uris and redirect_uri not in double.redirect_uris:
                return oauth_error("redirect_mismatch")
            if code_challenge_method != "S256" or len(code_challenge) < 43:
                return oauth_error("invalid_request: PKCE S256 required")
            if "openid" not in scope.split():
                return oauth_error("invalid_scope")
            code = secrets.token_urlsafe(24)
            with double.lock:
                double.codes[code] = {"challenge": code_challenge, "redirect_uri": redirect_uri, "user": double.user}
            return RedirectResponse(f"{redirect_uri}?{urlencode({'code': code, 'state': state})}", status_code=302)

        @app.post("/oauth2/token")
        async def token(request: Request):
            form = await read_form(request)
            with double.lock:
                double.token_requests.append(form)
            if request.headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
                return oauth_error("invalid_request")
            if form.get("client_id") != CLIENT_ID:
                return oauth_error("invalid_client", 401)
            grant = form.get("grant_type")
            with double.lock:
                if grant == "authorization_code":
                    issued = double.codes.pop(str(form.get("code")), None)  # a code is good once
                    if issued is None or issued["redirect_uri"] != form.get("redirect_uri"):
                        return oauth_error("invalid_grant")
                    verifier = str(form.get("code_verifier", ""))
                    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                    if not 43 <= len(verifier) <= 128 or digest != issued["challenge"]:
                        return oauth_error("invalid_grant")  # the PKCE check
                    return double._tokens_for(issued["user"])
                if grant == "refresh_token":
                    user = double.refresh_tokens.get(str(form.get("refresh_token")))
                    if user is None:
                        return oauth_error("invalid_grant")
                    out = double._tokens_for(user)
                    del double.refresh_tokens[out.pop("refresh_token")]  # Cognito keeps the refresh token
                    return out
            return oauth_error("unsupported_grant_type")

        @app.post("/oauth2/revoke")
        async def revoke(request: Request):
            form = await read_form(request)
            token, client_id = form.get("token", ""), form.get("client_id")
            if client_id != CLIENT_ID:
                return oauth_error("invalid_client", 401)
            with double.lock:
                double.revoked.append(token)
                double.refresh_tokens.pop(token, None)
            return JSONResponse({})

        @app.get("/logout")
        def logout(client_id: str, logout_uri: str):
            with double.lock:
                double.logouts.append({"client_id": client_id, "logout_uri": logout_uri})
            if client_id != CLIENT_ID:
                return oauth_error("invalid_client")
            return RedirectResponse(logout_uri, status_code=302)

        return app
