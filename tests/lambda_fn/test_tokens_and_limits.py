"""Time-driven pieces, with a controlled clock: the App installation token's refresh and the per-caller rate limit."""

from __future__ import annotations

import httpx
import pytest
from fastapi import HTTPException

from lambda_fn.forge.base import ForgeError
from lambda_fn.forge.github import AppInstallationToken
from lambda_fn.ratelimit import RateLimiter


@pytest.fixture
def app_key(github):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    github.app_id = "777"
    github.app_key_public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def test_installation_token_is_cached_then_refreshed_near_expiry(github, app_key):
    provider = AppInstallationToken("777", app_key, "9")
    with httpx.Client(base_url=github.url) as client:
        first = provider(client)
        assert provider(client) == first and github.installation_tokens_made == 1
        provider.invalidate()
        github.installation_token_ttl = 200  # inside the last five minutes: used once, then replaced
        second = provider(client)
        third = provider(client)
    assert len({first, second, third}) == 3 and github.installation_tokens_made == 3
    assert third in github.tokens


def test_installation_token_refused_names_the_app_settings(github, app_key):
    provider = AppInstallationToken("999", app_key, "9")  # GitHub knows app 777, not 999
    with httpx.Client(base_url=github.url) as client, pytest.raises(ForgeError, match="GITHUB_APP_ID"):
        provider(client)


def test_rate_limit_window_slides():
    now = [1000.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    limiter.check("a")
    limiter.check("a")
    limiter.check("b")  # per caller
    with pytest.raises(HTTPException) as refused:
        limiter.check("a")
    assert refused.value.status_code == 429 and refused.value.headers["Retry-After"] == "61"
    now[0] += 60
    limiter.check("a")  # the first two calls left the window
    RateLimiter(0).check("a")  # 0 = no limit
