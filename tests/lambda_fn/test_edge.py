"""What reaches the API before any work: CORS, sign-in, and bad input — each a 4xx with a JSON detail."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.lambda_fn.conftest import REPO, UI_ORIGIN


def test_health_needs_no_sign_in_and_reveals_no_secret(api, shared_secret):
    resp = api.call("GET", "/health", token=None)
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "service": "lambda-api", "forge": "github", "auth": "token"}
    assert shared_secret not in resp.text


def test_cors_preflight_allows_the_ui_origin_only(api):
    headers = {"Origin": UI_ORIGIN, "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "authorization,content-type,idempotency-key"}
    ok = api.call("OPTIONS", "/api/generate-code", headers=headers, token=None)
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == UI_ORIGIN
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert "idempotency-key" in ok.headers["access-control-allow-headers"].lower()
    evil = api.call("OPTIONS", "/api/generate-code", headers={**headers, "Origin": "https://evil.example"}, token=None)
    assert evil.status_code == 400 and "access-control-allow-origin" not in evil.headers
    # Errors carry the CORS header too, so the UI can read their detail.
    denied = api.call("GET", "/api/jobs", headers={"Origin": UI_ORIGIN}, token=None)
    assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == UI_ORIGIN


@pytest.mark.parametrize("repo", ["octo", "octo/", "/hello", "octo/hello/extra", "octo/../etc", "octo/hel lo",
                                  "-octo/hello", "octo/hello.git", "https://github.com/octo/hello", ""])
def test_repo_not_of_the_form_owner_name_is_a_400(api, github, repo):
    resp = api.generate(repo=repo, story_id="s")
    assert resp.status_code in (400, 422) and "detail" in resp.json()
    if resp.status_code == 400:
        assert "owner/name" in resp.json()["detail"]
    assert github.pulls(REPO) == []


def test_allow_list_takes_owner_wildcards_and_ignores_case(make_api, github):
    github.add_repo("Other/Thing")
    api = make_api(aipm_allowed_repos="OCTO/*, someone/else")
    assert api.generate(repo="octo/hello-world", story_id="a").status_code == 202
    denied = api.generate(repo="other/thing", story_id="a")
    assert denied.status_code == 403 and "AIPM_ALLOWED_REPOS" in denied.json()["detail"]
    assert github.pulls("Other/Thing") == []
    assert api.call("GET", "/api/jobs", query="repo=other/thing").status_code == 403


@pytest.mark.parametrize("change,where", [
    ({"title": ""}, "title"), ({"title": "   "}, "title"), ({"title": "x" * 201}, "title"),
    ({"acceptance_criteria": "not a list"}, "acceptance_criteria"), ({"description": "x" * 70_000}, "description"),
    ({"story_id": ""}, "story_id"), ({"repo": None}, "repo"),
])
def test_body_outside_the_schema_is_a_422_naming_the_field(api, github, change, where):
    resp = api.generate(**change)
    assert resp.status_code == 422
    assert where in resp.json()["detail"]


def test_bad_base_branch_is_a_400(api, github):
    for name in ("-x", "a..b", "a b", "x.lock", "/abs"):
        resp = api.generate(story_id="s", base_branch=name)
        assert resp.status_code == 400 and "base_branch" in resp.json()["detail"]


def test_non_json_and_huge_bodies_are_refused(api, github):
    bad = api.call("POST", "/api/generate-code", body=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 422 and "not valid JSON" in bad.json()["detail"]
    huge = json.dumps({"repo": REPO, "title": "t", "description": "x" * (1024 * 1024 + 10)}).encode()
    resp = api.call("POST", "/api/generate-code", body=huge, headers={"content-type": "application/json"})
    assert resp.status_code == 413 and "1048576" in resp.json()["detail"]
    assert github.pulls(REPO) == []


def test_huge_streamed_body_over_loopback_is_a_413(api, github):
    def chunks():
        for _ in range(20):
            yield b"x" * 65536

    with api.serve() as url:
        resp = httpx.post(f"{url}/api/generate-code", content=chunks(), timeout=30,
                          headers={"Authorization": "Bearer x", "content-type": "application/json"})
    assert resp.status_code == 413 and "detail" in resp.json()


def test_token_mode_needs_the_bearer_token(api, github):
    assert api.call("POST", "/api/generate-code", json={"repo": REPO, "title": "t"}, token=None).status_code == 401
    wrong = api.call("POST", "/api/generate-code", json={"repo": REPO, "title": "t"}, token="nope")
    assert wrong.status_code == 401 and "not the UI token" in wrong.json()["detail"]
    assert api.call("GET", "/api/jobs", token="nope").status_code == 401
    assert github.pulls(REPO) == []


@pytest.mark.parametrize("mode", [None, "cognito"])
def test_no_usable_sign_in_refuses_user_facing_endpoints(make_api, github, mode):
    api = make_api(aipm_auth=mode)
    resp = api.generate(story_id="s")
    assert resp.status_code == 401 and "AIPM_AUTH" in resp.json()["detail"]
    assert api.call("GET", "/health", token=None).status_code == 200


def test_none_mode_serves_loopback_and_refuses_everything_else(make_api, github, processor):
    api = make_api(aipm_auth="none")
    # Through a Function URL (a public address, a public Host): refused.
    lambda_resp = api.generate(story_id="s")
    assert lambda_resp.status_code == 401 and "loopback" in lambda_resp.json()["detail"]
    with api.serve() as url:
        body = {"repo": REPO, "title": "t", "story_id": "s"}
        ok = httpx.post(f"{url}/api/generate-code", json=body, timeout=30)
        rebinding = httpx.post(f"{url}/api/generate-code", json=body, headers={"Host": "attacker.example"}, timeout=30)
    assert ok.status_code == 202, ok.text
    assert processor.submissions[0]["requested_by"] == "local"
    assert processor.submissions[0]["callback_url"] is None  # no PUBLIC_API_URL, no Lambda event: no callback
    assert rebinding.status_code == 401


def test_too_many_new_pull_requests_from_one_caller_is_a_429_and_repeats_do_not_count(make_api, github):
    api = make_api(aipm_rate_limit_per_minute=2)
    assert [api.generate(story_id=f"r{i}").status_code for i in range(2)] == [202, 202]
    assert [api.generate(story_id=f"r{i % 2}").status_code for i in range(6)] == [200] * 6  # at the limit: answered
    resp = api.generate(story_id="r3")
    assert resp.status_code == 429 and 1 <= int(resp.headers["retry-after"]) <= 61
    assert "a minute" in resp.json()["detail"]
    assert len(github.pulls(REPO)) == 2


def test_a_call_that_races_into_another_calls_pull_request_is_given_back_its_count(make_api, github, processor):
    api = make_api(aipm_rate_limit_per_minute=2)
    assert api.generate(story_id="twice").status_code == 202
    github.inject("GET", r"/pulls$", 200, [], times=1)  # it looks before the other call's PR shows, then meets it
    again = api.generate(story_id="twice")
    assert again.status_code == 200 and ("POST", f"/repos/{REPO}/pulls") in github.requests[-6:]
    assert api.generate(story_id="other").status_code == 202  # only the first "twice" was counted
    assert api.generate(story_id="third").status_code == 429


def test_rate_limit_default_is_30_when_signed_in_off_on_loopback_and_configurable(make_api, github, monkeypatch):
    assert make_api().runtime.rate_limiter.per_minute == 30
    assert make_api(aipm_auth="none").runtime.rate_limiter.per_minute == 0
    monkeypatch.setenv("AIPM_RATE_LIMIT_PER_MINUTE", "5")
    assert make_api(aipm_auth="none").runtime.rate_limiter.per_minute == 5
    assert make_api().runtime.rate_limiter.per_minute == 5


def test_loopback_mode_serves_more_than_ten_new_stories_a_minute(make_api, github, processor):
    api = make_api(aipm_auth="none")
    with api.serve() as url:
        codes = [httpx.post(f"{url}/api/generate-code", json={"repo": REPO, "title": "t", "story_id": f"many-{i}"},
                            timeout=30).status_code for i in range(12)]
    assert codes == [202] * 12


def test_body_not_sent_as_json_is_a_415(api, github):
    resp = api.call("POST", "/api/generate-code", body=b'{"repo": "Octo/Hello-World", "title": "t"}',
                    headers={"content-type": "text/plain"})
    assert resp.status_code == 415 and "application/json" in resp.json()["detail"]
    assert github.pulls(REPO) == []
