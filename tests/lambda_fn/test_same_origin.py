"""Cross-site request forgery: a page on another origin cannot change state through the user's browser (issue 17).

In local mode (``AIPM_AUTH=none``, loopback only) the browser is the only credential, and job ids are predictable
from the story, so before this guard a form on any web page the user visited could cancel their jobs.
"""

from __future__ import annotations

import httpx
import pytest

from tests.lambda_fn.conftest import FUNCTION_DOMAIN, UI_ORIGIN

EVIL = "https://evil.example"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
STORY = {"repo": "Octo/Hello-World", "title": "Add a greeting", "story_id": "csrf"}


@pytest.fixture
def local_url(make_api):
    """The API as `make run` serves it: no sign-in, uvicorn on loopback."""
    with make_api(aipm_auth="none", aipm_ui_token=None, allowed_origins="").serve() as url:
        yield url


def _job(url: str) -> str:
    out = httpx.post(f"{url}/api/generate-code", json=STORY, timeout=30)
    assert out.status_code in (200, 202), out.text
    return out.json()["job_id"]


def _status(url: str, job_id: str) -> str:
    return httpx.get(f"{url}/api/jobs/{job_id}", timeout=10).json()["status"]


def test_a_form_from_another_origin_cannot_cancel_a_job(local_url):
    job_id = _job(local_url)
    attack = httpx.post(f"{local_url}/api/jobs/{job_id}/cancel", content=b"x=1", timeout=10,
                        headers={**FORM, "Origin": EVIL, "Sec-Fetch-Site": "cross-site"})
    assert attack.status_code == 403 and "cross-origin" in attack.json()["detail"]
    assert _status(local_url, job_id) != "cancelled"


@pytest.mark.parametrize("headers", [
    {"Origin": EVIL, "Content-Type": "application/json"},             # a cross-origin fetch (its preflight fails too)
    {"Origin": "null", "Content-Type": "application/json"},           # a sandboxed frame or a file:// page
    {"Origin": "http://127.0.0.1:1", "Content-Type": "application/json", "Sec-Fetch-Site": "same-site"},
    {"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"},  # no Origin, but the browser says so
    {"Content-Type": "text/plain"},                                   # what a form with enctype=text/plain sends
    FORM,
    {"Content-Type": "multipart/form-data; boundary=x"},
    {},                                                               # no type at all
])
def test_state_changing_requests_need_json_from_the_same_origin(local_url, headers):
    job_id = _job(local_url)
    for path in (f"/api/jobs/{job_id}/cancel", "/api/generate-code"):
        body = b'{"repo": "Octo/Hello-World", "title": "other", "story_id": "other"}'
        resp = httpx.post(f"{local_url}{path}", content=body, headers=headers, timeout=10)
        assert resp.status_code in (403, 415), (path, headers, resp.status_code, resp.text)
    assert _status(local_url, job_id) != "cancelled"


def test_the_page_served_by_the_api_itself_may_cancel(local_url):
    job_id = _job(local_url)
    own = httpx.post(f"{local_url}/api/jobs/{job_id}/cancel", json={}, timeout=10,
                     headers={"Origin": local_url, "Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 200 and own.json()["status"] == "cancelled", own.text


@pytest.mark.parametrize("origin", [None, f"https://{FUNCTION_DOMAIN}", UI_ORIGIN])
def test_behind_a_function_url_its_own_domain_and_allowed_origins_may_cancel(api, processor, origin):
    job_id = api.generate(story_id="csrf").json()["job_id"]
    headers = {"origin": origin} if origin else {}
    resp = api.call("POST", f"/api/jobs/{job_id}/cancel", json={}, headers=headers)
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled", resp.text


def test_behind_a_function_url_a_foreign_origin_is_refused_even_with_a_token(api, processor):
    job_id = api.generate(story_id="csrf").json()["job_id"]
    resp = api.call("POST", f"/api/jobs/{job_id}/cancel", json={}, headers={"origin": EVIL})
    assert resp.status_code == 403


def test_the_signed_callback_is_left_to_its_signature(local_url):
    resp = httpx.post(f"{local_url}/api/callbacks/job", content=b"{}", headers={**FORM, "Origin": EVIL}, timeout=10)
    assert resp.status_code == 401
