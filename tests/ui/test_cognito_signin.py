"""Cognito sign-in in headless Chromium: the page signs in against a loopback stand-in of the hosted UI
(authorization code + PKCE S256, the code exchanged at /oauth2/token, which checks the verifier against the
challenge), calls the API (AIPM_AUTH=cognito, keys from the stand-in's JWKS) with the ID token, renews it with the
refresh token, and signs out (revoke + /logout). Without signing in the API answers 401 and the page shows Sign in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from aipm_common.settings import load_settings
from aipm_local.api import create_local_app
from lambda_fn.settings import LambdaSettings
from tests.conftest import SECRET
from tests.lambda_fn.cognito_double import CLIENT_ID, POOL_ID, REGION, CognitoDouble
from tests.lambda_fn.fake_processor import FakeProcessor
from tests.support.servers import ROOT, free_port, serve_in_thread
from tests.ui.conftest import browser_marks

ARTIFACTS = ROOT / "test-artifacts"

pytestmark = browser_marks(120)

ANN = "Ann Example <ann@example.com>"


@pytest.fixture(scope="module")
def hosted_ui():
    double = CognitoDouble(token_ttl=62)  # the page renews a minute before expiry: here after ~2 s
    with serve_in_thread(double.app) as url:
        double.url = url
        yield double


@pytest.fixture(scope="module")
def processor():
    fake = FakeProcessor(SECRET)
    with serve_in_thread(fake.app) as url:
        fake.url = url
        yield fake


@pytest.fixture(scope="module")
def cognito_site(tmp_path_factory, hosted_ui, processor):
    """The API in cognito mode on the local forge, serving the UI with a config.json naming the hosted UI."""
    from aipm_local.forge.local import ensure_example_repo

    state = tmp_path_factory.mktemp("cognito-ui")
    ensure_example_repo(state / "forge")
    site = state / "site"
    shutil.copytree(ROOT / "frontend", site)
    (site / "config.json").write_text(json.dumps({
        "apiUrl": "", "authMode": "cognito",
        "cognito": {"domain": hosted_ui.url, "clientId": CLIENT_ID, "userPoolId": POOL_ID, "region": REGION,
                    "scopes": ["openid", "email", "profile"]},
    }))
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    settings = load_settings(
        LambdaSettings, aipm_shared_secret=SECRET, aipm_state_dir=state, aipm_forge="local",
        aipm_local_forge_dir=state / "forge", aipm_auth="cognito", cognito_user_pool_id=POOL_ID,
        cognito_client_id=CLIENT_ID, cognito_region=REGION,
        cognito_jwks_url=hosted_ui.url + "/.well-known/jwks.json", pr_processor_url=processor.url,
        public_api_url=api_url, aipm_ui_dir=site)
    app = create_local_app(settings)
    hosted_ui.redirect_uris = {api_url + "/"}  # the app client's callback: the page itself
    with serve_in_thread(app, port=port) as url:
        yield url, app.state.runtime


@pytest.fixture(scope="module")
def page(browser_context):
    page = browser_context.new_page()
    yield page
    page.close()


def storage_text(page) -> str:
    return page.evaluate("JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])")


def test_the_hosted_ui_stand_in_checks_the_pkce_verifier(hosted_ui, cognito_site):
    api_url, _ = cognito_site
    verifier = "v" * 64
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": api_url + "/", "state": "s",
              "scope": "openid", "code_challenge": challenge, "code_challenge_method": "S256"}
    with httpx.Client(base_url=hosted_ui.url) as client:
        assert client.get("/oauth2/authorize", params={**params, "code_challenge_method": "plain"}).status_code == 400
        code = parse_qs(urlsplit(client.get("/oauth2/authorize", params=params).headers["location"]).query)["code"][0]
        exchange = {"grant_type": "authorization_code", "client_id": CLIENT_ID, "code": code,
                    "redirect_uri": api_url + "/", "code_verifier": "w" * 64}
        assert client.post("/oauth2/token", data=exchange).json() == {"error": "invalid_grant"}  # wrong verifier
        code = parse_qs(urlsplit(client.get("/oauth2/authorize", params=params).headers["location"]).query)["code"][0]
        assert "id_token" in client.post("/oauth2/token", data={**exchange, "code": code,
                                                                "code_verifier": verifier}).json()


def test_sign_in_with_pkce_generate_in_my_name_renew_and_sign_out(page, cognito_site, hosted_ui, processor):
    from playwright.sync_api import expect

    api_url, runtime = cognito_site
    hosted_ui.reset()
    page.goto(api_url + "/")
    page.wait_for_selector("body[data-ready=true]")

    # Not signed in: the page offers Sign in (no token field), and the API itself refuses.
    expect(page.locator("#auth-badge")).to_have_text("signed out")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    expect(page.get_by_label("Bearer token")).to_be_hidden()
    assert httpx.get(api_url + "/api/jobs").status_code == 401
    page.get_by_label("Title").fill("Signed-in story")
    page.get_by_label("Acceptance criteria").fill("square(3) == 9")
    page.get_by_role("button", name="Generate Code & PR").click()
    expect(page.locator("#form-error")).to_have_text("Sign in first: use the Sign in button above.")
    assert processor.submissions == []

    # A forged return from the hosted UI (no matching state in this tab) signs nobody in.
    page.goto(api_url + "/?code=forged&state=forged")
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#sign-in-error")).to_contain_text("does not match this tab's request")
    expect(page.locator("#auth-badge")).to_have_text("signed out")
    assert hosted_ui.token_requests == []

    # Sign in: to the hosted UI with an S256 challenge, back with a code, exchanged with the verifier.
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(api_url + "/")  # the code and state are gone from the address bar
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#auth-badge")).to_have_text("signed in")
    expect(page.locator("#who")).to_have_text("Ann Example (ann@example.com)")
    expect(page.get_by_role("button", name="Sign in")).to_be_hidden()
    [exchange] = hosted_ui.token_requests
    assert exchange["grant_type"] == "authorization_code" and 43 <= len(exchange["code_verifier"]) <= 128
    assert exchange["redirect_uri"] == api_url + "/"
    assert "eyJ" not in storage_text(page) and "pkce" not in storage_text(page), "tokens are kept in memory only"

    # Generate Code & PR with the ID token: the pull request and the job say who asked.
    page.fill("#title", "Signed-in story")
    with page.expect_request(lambda r: r.url.endswith("/api/generate-code")) as sent:
        page.get_by_role("button", name="Generate Code & PR").click()
    first_token = sent.value.headers["authorization"]
    assert first_token.startswith("Bearer eyJ")
    answer = sent.value.response()
    assert answer.status == 202, answer.text()
    expect(page.locator("li.job").first).to_have_attribute("data-job-id", answer.json()["job_id"])
    expect(page.locator("#form-error")).to_be_hidden()
    [submitted] = processor.submissions
    assert submitted["requested_by"] == ANN
    assert f"Requested by: `{ANN}`" in runtime.forge.pull_body("local/example", answer.json()["pr_number"])
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-cognito-signed-in.png"))

    # The ID token lives 62 s: the page renews it with the refresh token a minute early, and keeps calling.
    deadline = time.monotonic() + 15
    while not any(r.get("grant_type") == "refresh_token" for r in hosted_ui.token_requests):
        assert time.monotonic() < deadline, hosted_ui.token_requests
        time.sleep(0.2)
    refresh = next(r for r in hosted_ui.token_requests if r["grant_type"] == "refresh_token")
    assert refresh["client_id"] == CLIENT_ID and refresh["refresh_token"] in hosted_ui.refresh_tokens
    # The queued job keeps polling by itself: its next reads carry the renewed token, and the API takes it. (Its
    # event stream is not one: this PR processor stand-in has none, so the API answers it 404.)
    with page.expect_response(lambda r: "/api/jobs/" in r.url and not r.url.endswith("/events")
                              and r.request.headers.get("authorization") not in (None, first_token)) as polled:
        pass
    assert polled.value.status == 200
    expect(page.locator("#auth-badge")).to_have_text("signed in")

    # Sign out: the refresh token is revoked and the hosted UI's logout sends the user back, signed out.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(api_url + "/")
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#auth-badge")).to_have_text("signed out")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert hosted_ui.revoked == [refresh["refresh_token"]] and hosted_ui.refresh_tokens == {}
    assert hosted_ui.logouts == [{"client_id": CLIENT_ID, "logout_uri": api_url + "/"}]
    page.fill("#title", "After sign-out")
    page.get_by_role("button", name="Generate Code & PR").click()
    expect(page.locator("#form-error")).to_have_text("Sign in first: use the Sign in button above.")
    assert len(processor.submissions) == 1
