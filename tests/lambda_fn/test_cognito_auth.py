"""AIPM_AUTH=cognito through the real app (Mangum, Function URL events): Cognito ID and access tokens signed with a
locally generated RSA key, the pool's JWKS served on loopback. What is accepted, what is refused and why, groups, the
key cache (and its refetch on an unknown kid), and who the pull request says asked for it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from cryptography.hazmat.primitives import serialization

from lambda_fn.auth import Caller, CognitoConfig, JwksCache, _caller_from
from tests.lambda_fn.cognito_double import CLIENT_ID, ISSUER, POOL_ID, REGION, CognitoDouble, User, new_key
from tests.lambda_fn.conftest import REPO
from tests.support.servers import serve_in_thread

ANN = "Ann Example <ann@example.com>"


@pytest.fixture(scope="module")
def _cognito_server():
    double = CognitoDouble()
    with serve_in_thread(double.app) as url:
        double.url = url
        yield double


@pytest.fixture
def cognito(_cognito_server) -> CognitoDouble:
    _cognito_server.reset()
    _cognito_server.user = User()
    return _cognito_server


@pytest.fixture
def cognito_api(make_api, cognito):
    def make(**overrides):
        return make_api(aipm_auth="cognito", aipm_ui_token=None, cognito_user_pool_id=POOL_ID,
                        cognito_client_id=CLIENT_ID, cognito_region=REGION,
                        cognito_jwks_url=cognito.url + "/.well-known/jwks.json", **overrides)
    return make


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict, claims: dict, signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


def generate(api, token, story_id="s-1"):
    return api.call("POST", "/api/generate-code", token=token,
                    json={"repo": REPO, "title": "Add a greeting", "description": "Say hello.",
                          "acceptance_criteria": ["greet('Ann') == 'Hello, Ann!'"], "story_id": story_id})


def test_a_signed_in_users_id_token_opens_the_pr_in_their_name(cognito_api, cognito, github, processor):
    api = cognito_api()
    assert api.call("GET", "/health", token=None).json()["auth"] == "cognito"
    resp = generate(api, cognito.token("id"))
    assert resp.status_code == 202, resp.text
    [pr] = github.pulls(REPO)
    assert f"Requested by: `{ANN}`" in pr["body"]
    [job] = processor.submissions
    assert job["requested_by"] == ANN  # the form the PR processor turns into a Co-authored-by trailer
    # The jobs endpoints take the same tokens; an access token (no e-mail in it) works too.
    listed = api.call("GET", "/api/jobs", token=cognito.token("access"))
    assert listed.status_code == 200 and [j["job_id"] for j in listed.json()["jobs"]] == [job["job_id"]]
    assert api.call("GET", f"/api/jobs/{job['job_id']}", token=cognito.token("id")).status_code == 200
    assert cognito.jwks_fetches == 1, "the keys are read once and kept across invocations"


def test_an_access_token_is_accepted_and_names_the_user_without_an_email(cognito_api, cognito, processor):
    resp = generate(cognito_api(), cognito.token("access"))
    assert resp.status_code == 202, resp.text
    assert processor.submissions[0]["requested_by"] == "ann"


def _hs256_with_public_key(cognito: CognitoDouble) -> str:
    pem = cognito.keys[cognito.kid].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header, claims = {"alg": "HS256", "typ": "JWT", "kid": cognito.kid}, cognito.claims("id")
    unsigned = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{unsigned}.{b64(hmac.new(pem, unsigned.encode(), hashlib.sha256).digest())}"


def test_every_bad_token_is_refused_401_and_nothing_is_opened(cognito_api, cognito, github, processor):
    api = cognito_api()
    now = int(time.time())
    cases = {
        "expired": (cognito.token("id", exp=now - 120, iat=now - 4000), "expired"),
        "expired access": (cognito.token("access", exp=now - 120, iat=now - 4000), "expired"),
        "wrong issuer": (cognito.token("id", iss="https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Other"),
                         "not issued by this API's user pool"),
        "wrong audience": (cognito.token("id", aud="another-client"), "another app client"),
        "access for another client": (cognito.token("access", client_id="another-client"), "another app client"),
        "other key, same kid": (cognito.token("id", key=new_key()), "signature does not verify"),
        "alg none": (forged({"alg": "none", "typ": "JWT", "kid": cognito.kid}, cognito.claims("id")), "RS256 only"),
        "HS256 keyed with the public key": (_hs256_with_public_key(cognito), "RS256 only"),
        "refresh token_use": (cognito.token("id", token_use="refresh"), "token_use"),
        "no token_use": (cognito.token("id", token_use=None), "token_use"),
        "no exp": (cognito.token("id", exp=None), "exp"),
        "unknown key": (cognito.token("id", key=new_key(), kid="kid-nobody-has"), "key this user pool does not have"),
        "no kid": (forged({"alg": "RS256", "typ": "JWT"}, cognito.claims("id")), "names no signing key (kid)"),
        "alg none, no kid": (forged({"alg": "none", "typ": "JWT"}, cognito.claims("id")), "RS256 only"),  # alg first
        "not a JWT": ("not.a.jwt", "not a JWT"),
        "UI token style": ("ui-token-for-tests-0123456789", "not a JWT"),
    }
    for name, (token, reason) in cases.items():
        resp = generate(api, token)
        assert resp.status_code == 401, (name, resp.text)
        assert reason in resp.json()["detail"], (name, resp.json())
        assert resp.headers["www-authenticate"] == "Bearer"
    missing = generate(api, None)
    assert missing.status_code == 401 and "Cognito ID or access token" in missing.json()["detail"]
    assert api.call("GET", "/api/jobs", token=cases["alg none"][0]).status_code == 401
    assert github.pulls(REPO) == [] and processor.submissions == []
    # Inside the small leeway a just-expired token still passes (clock skew), and the same key works.
    assert generate(api, cognito.token("id", exp=now - 5)).status_code == 202


def test_allowed_groups_answers_403_with_a_clear_detail_outside_them(cognito_api, cognito, github):
    api = cognito_api(aipm_allowed_groups="release, admins")
    refused = generate(api, cognito.token("id"))  # Ann is in "developers" only
    assert refused.status_code == 403
    assert "not in a group allowed" in refused.json()["detail"] and "release, admins" in refused.json()["detail"]
    assert generate(api, cognito.token("access", **{"cognito:groups": None})).status_code == 403
    assert github.pulls(REPO) == []
    assert generate(api, cognito.token("id", **{"cognito:groups": ["admins"]})).status_code == 202
    # Without AIPM_ALLOWED_GROUPS every user of the pool may call.
    assert generate(cognito_api(), cognito.token("id", **{"cognito:groups": None}), story_id="s-2").status_code == 202


def test_a_new_signing_key_is_fetched_once_and_unknown_kids_do_not_hammer_the_jwks(cognito_api, cognito):
    api = cognito_api()
    now = [1000.0]
    api.runtime.authenticator.jwks.clock = lambda: now[0]
    assert generate(api, cognito.token("id"), "k-1").status_code == 202
    assert cognito.jwks_fetches == 1
    now[0] += 61  # later, the pool rotates its key: the API has not seen this kid yet
    cognito.rotate()
    assert generate(api, cognito.token("id"), "k-2").status_code == 202
    assert cognito.jwks_fetches == 2
    assert generate(api, cognito.token("id"), "k-3").status_code == 202
    for _ in range(5):  # forged kids inside the refetch floor: refused without a fetch each
        now[0] += 5
        assert generate(api, cognito.token("id", key=new_key(), kid="kid-forged"), "k-4").status_code == 401
    assert cognito.jwks_fetches == 2
    now[0] += 60
    assert generate(api, cognito.token("id", key=new_key(), kid="kid-forged"), "k-4").status_code == 401
    assert cognito.jwks_fetches == 3


def test_jwks_cache_refetches_an_unknown_kid_only_after_the_floor(cognito):
    now = [0.0]
    cache = JwksCache(cognito.url + "/.well-known/jwks.json", refetch_floor=60, clock=lambda: now[0])
    assert cache.key(cognito.kid) is not None and cache.fetches == 1
    assert cache.key("kid-unknown") is None and cache.fetches == 1  # within the floor
    now[0] = 61
    new_kid = cognito.rotate()
    assert cache.key(new_kid) is not None and cache.fetches == 2
    assert cache.key(cognito.kid) is not None and cache.fetches == 2


def test_unreadable_jwks_is_503_then_recovers(cognito_api, cognito):
    cognito.jwks_status = 500
    api = cognito_api()
    resp = generate(api, cognito.token("id"))
    assert resp.status_code == 503 and resp.headers["retry-after"] and "keys could not be read" in resp.json()["detail"]
    cognito.jwks_status = 200
    api.runtime.authenticator.jwks._next_fetch = 0.0  # the short wait after a failure has passed
    assert generate(api, cognito.token("id")).status_code == 202


def test_cognito_mode_without_the_pool_configured_refuses_naming_the_settings(make_api, cognito):
    api = make_api(aipm_auth="cognito", aipm_ui_token=None)
    resp = generate(api, cognito.token("id"))
    assert resp.status_code == 401 and "COGNITO_USER_POOL_ID" in resp.json()["detail"]
    # A pool id that is not Cognito's shape never becomes part of a JWKS URL.
    api = make_api(aipm_auth="cognito", aipm_ui_token=None, cognito_user_pool_id="us-east-1_x/../../evil",
                   cognito_client_id=CLIENT_ID, cognito_region=REGION)
    assert generate(api, cognito.token("id")).status_code == 401 and cognito.jwks_fetches == 0


def test_rate_limit_is_per_signed_in_user_with_retry_after(cognito_api, cognito):
    api = cognito_api(aipm_rate_limit_per_minute=2)
    ann = cognito.token("id")
    assert [generate(api, ann, f"r-{i}").status_code for i in range(2)] == [202, 202]
    limited = generate(api, ann, "r-3")
    assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 61
    bob = cognito.token("id", user=User(sub="bob-sub", username="bob", name="Bob", email="bob@example.com"))
    assert generate(api, bob, "r-4").status_code == 202


def test_the_caller_from_hostile_or_partial_claims_is_one_safe_line():
    base = {"sub": "s-1", "token_use": "id", "iss": ISSUER}
    evil = _caller_from({**base, "name": "Eve\nCo-authored-by: Mallory <m@evil.example>", "email": "eve@example.com"})
    assert evil.requested_by == "Eve Co-authored-by: Mallory m at evil.example <eve@example.com>"
    assert "\n" not in evil.requested_by and evil.requested_by.count("<") == 1
    assert _caller_from({**base, "email": "not-an-email", "cognito:username": "eve"}).requested_by == "eve"
    unverified = _caller_from({**base, "email": "eve@example.com", "email_verified": "false", "cognito:username": "e"})
    assert unverified.email is None
    assert _caller_from({**base, "email": "eve@example.com"}).requested_by == "eve <eve@example.com>"
    assert _caller_from(base).requested_by == "cognito:s-1"
    long_email = "a" * 60 + "@" + "b" * 60 + "." + "c" * 60 + ".example"
    assert Caller("x", "cognito", name="N" * 100, email=long_email).requested_by == "N" * 100  # bounded: name only
    assert CognitoConfig("us-east-1_X", "c", "us-east-1").jwks == \
        "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_X/.well-known/jwks.json"


def test_the_ui_served_by_the_api_is_told_to_sign_in_with_the_hosted_ui(cognito_api, make_api, cognito, tmp_path):
    ui = tmp_path / "ui"
    ui.mkdir()
    (ui / "index.html").write_text("<!doctype html>")
    api = cognito_api(aipm_ui_dir=ui, cognito_domain="aipm-123.auth.us-east-1.amazoncognito.com")
    config = api.call("GET", "/config.json", token=None).json()
    assert config == {"apiUrl": "", "authMode": "cognito", "cognito": {
        "domain": "https://aipm-123.auth.us-east-1.amazoncognito.com", "clientId": CLIENT_ID, "userPoolId": POOL_ID,
        "region": REGION, "scopes": ["openid", "email", "profile"]}}
    assert make_api(aipm_ui_dir=ui).call("GET", "/config.json", token=None).json() == {"apiUrl": ""}
