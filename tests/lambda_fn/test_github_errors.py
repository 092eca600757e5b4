"""GitHub's failures reach the caller as clear errors: bad credentials, unknown repository, refusals, rate limits;
and the GitHub App installation token works in place of a personal token."""

from __future__ import annotations

import json
import time

from tests.lambda_fn.conftest import REPO

RATE_LIMITED = {"message": "API rate limit exceeded for user ID 1."}


def test_bad_token_is_a_502_that_names_the_credentials(make_api, github, processor):
    api = make_api(github_token="ghp_wrongwrongwrongwrongwrongwrong0000")
    resp = api.generate(story_id="s")
    assert resp.status_code == 502
    assert "rejected the credentials" in resp.json()["detail"] and "GITHUB_TOKEN" in resp.json()["detail"]
    assert "ghp_wrong" not in resp.text
    assert processor.submissions == []


def test_unknown_repository_is_a_404(api, github, processor):
    resp = api.generate(repo="octo/no-such-repo", story_id="s")
    assert resp.status_code == 404
    assert "octo/no-such-repo" in resp.json()["detail"] and "not found" in resp.json()["detail"]


def test_permission_refused_is_a_502_with_githubs_message(api, github):
    github.inject("POST", r"/git/refs$", 403, {"message": "Resource not accessible by personal access token"})
    resp = api.generate(story_id="s")
    assert resp.status_code == 502
    assert "Resource not accessible" in resp.json()["detail"] and "create branch" in resp.json()["detail"]


def test_a_422_other_than_already_exists_is_a_409_naming_the_branch_left_not_a_502(api, github, processor):
    # GitHub works and judged the request against the repository: not a failed dependency.
    github.inject("POST", r"/pulls$", 422, {"message": "Validation Failed",
                                           "errors": [{"message": "No commits between main and aipm/story-s"}]})
    resp = api.generate(story_id="s")
    assert resp.status_code == 409
    detail = resp.json()["detail"]
    assert "No commits between" in detail and "aipm/story-s" in detail and "left" in detail
    assert processor.submissions == []
    assert len([m for m, p in github.requests if m == "POST" and p.endswith("/pulls")]) == 1  # not retried
    github.inject("POST", r"/labels$", 422, {"message": "Validation Failed", "errors": [{"code": "invalid"}]})
    labelled = api.generate(story_id="t")
    assert labelled.status_code == 409 and "could not be labelled" in labelled.json()["detail"]


def test_already_exists_from_github_means_reuse_what_is_there(api, github, processor):
    # A concurrent call made the branch between our look-up and our create: GitHub answers 422 "already exists".
    github.create_branch(REPO, "aipm/story-race")
    first = api.generate(story_id="race")
    assert first.status_code == 202, first.text
    assert github.branch_file(REPO, "aipm/story-race", "TASK.md").startswith("# Add a greeting")
    # And one made the pull request too: hide it from our look-up once, so our create gets GitHub's 422.
    github.inject("GET", r"/pulls$", 200, [], times=1)
    second = api.generate(story_id="race")
    assert second.status_code == 200, second.text
    assert second.json()["pr_number"] == first.json()["pr_number"]
    assert ("POST", f"/repos/{REPO}/pulls") in github.requests[-6:]
    assert len(github.pulls(REPO)) == 1 and len(processor.jobs) == 1
    assert github.commit_count(REPO, "aipm/story-race") == github.commit_count(REPO, "main") + 1


def test_primary_rate_limit_is_waited_out_when_the_reset_fits(api, github):
    reset = int(time.time()) + 1
    github.inject("GET", r"^/repos/[^/]+/[^/]+$", 403, RATE_LIMITED,
                  {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)})
    start = time.monotonic()
    resp = api.generate(story_id="s")
    assert resp.status_code == 202, resp.text
    assert time.monotonic() - start >= 0.9


def test_secondary_rate_limit_with_retry_after_is_retried(api, github):
    github.inject("POST", r"/pulls$", 429, {"message": "You have exceeded a secondary rate limit"}, {"Retry-After": "1"})
    assert api.generate(story_id="s").status_code == 202


def test_rate_limit_past_the_lambdas_remaining_time_is_a_503_with_retry_after(api, github, processor):
    github.inject("GET", r"^/repos/[^/]+/[^/]+$", 403, RATE_LIMITED,
                  {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 120)})
    start = time.monotonic()
    resp = api.call("POST", "/api/generate-code", json={"repo": REPO, "title": "t", "story_id": "s"},
                    remaining_ms=10_000)
    assert time.monotonic() - start < 3
    assert resp.status_code == 503
    assert 115 <= int(resp.headers["retry-after"]) <= 125
    assert "rate limit" in resp.json()["detail"]
    assert processor.submissions == []


def test_github_down_is_a_502_after_retries(make_api, processor):
    from tests.lambda_fn.conftest import dead_url

    api = make_api(github_api_url=dead_url())
    resp = api.generate(story_id="s")
    assert resp.status_code == 502 and "could not be reached" in resp.json()["detail"]


def test_github_app_installation_token_replaces_a_personal_token(make_api, github, processor, monkeypatch):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    import lambda_fn.runtime as runtime_mod

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    github.app_id = "123456"
    github.app_key_public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:app-key-AbCdEf"
    monkeypatch.setattr(runtime_mod, "read_secret", lambda a, v: pem if a == arn else None)
    api = make_api(github_token=None, github_app_id="123456", github_app_private_key_secret_arn=arn,
                   github_app_installation_id="42")
    assert api.generate(story_id="app-1").status_code == 202
    assert api.generate(story_id="app-2").status_code == 202
    assert github.installation_tokens_made == 1  # cached until near expiry
    github.inject("GET", r"^/repos/[^/]+/[^/]+$", 401, {"message": "Bad credentials"})  # revoked early
    assert api.generate(story_id="app-3").status_code == 202
    assert github.installation_tokens_made == 2  # one fresh token, then the call went through
    assert github.pulls(REPO)[0]["labels"] == {"aipm:in-progress"}


def test_secondary_rate_limit_without_headers_is_a_503_not_a_permission_error(api, github):
    github.inject("GET", r"^/repos/[^/]+/[^/]+$", 403, {"message": "You have exceeded a secondary rate limit."})
    resp = api.call("POST", "/api/generate-code", json={"repo": REPO, "title": "t", "story_id": "s"},
                    remaining_ms=20_000)
    assert resp.status_code == 503 and int(resp.headers["retry-after"]) >= 60


def test_malformed_base64_from_github_is_a_502_that_says_so_not_a_500(api, github, processor):
    github.create_branch(REPO, "aipm/story-b64")  # a branch there already: its TASK.md is read before it is written
    for body in ({"type": "file", "path": "TASK.md", "sha": "a" * 40, "content": "abc", "encoding": "base64"},
                 {"type": "file", "path": "TASK.md", "content": "YWJj", "encoding": "base64"},
                 {"type": "file", "path": "TASK.md", "sha": "a" * 40, "content": ["x"], "encoding": "base64"}):
        github.inject("GET", r"/contents/TASK\.md$", 200, body, times=3)
        resp = api.generate(story_id="b64")
        assert resp.status_code == 502, (body, resp.text)
        assert "could not decode" in resp.json()["detail"] and "TASK.md" in resp.json()["detail"]
        github.faults.clear()
    assert processor.submissions == []



def _flaky_github(*, lose: int = 0, drop: int = 0):
    """A GitHub whose first ``drop`` comment POSTs never arrive (connection refused) and whose next ``lose`` are
    carried out but never answered (a read timeout), as both happen."""
    import httpx

    from lambda_fn.forge.github import GitHubForge, StaticToken

    comments: list[dict] = []
    posts = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/comments"):
            posts.append(request)
            if len(posts) <= drop:
                raise httpx.ConnectError("connection refused", request=request)
            comments.append({"id": len(comments) + 1, "body": json.loads(request.content)["body"]})
            if len(posts) <= drop + lose:
                raise httpx.ReadTimeout("the answer was lost", request=request)
            return httpx.Response(201, json=comments[-1])
        if request.method == "GET" and request.url.path.endswith("/comments"):
            return httpx.Response(200, json=comments)
        return httpx.Response(404, json={"message": "Not Found"})

    forge = GitHubForge("https://github.test/api", StaticToken("t"), sleep=lambda s: None)
    client = httpx.Client(base_url="https://github.test/api", transport=httpx.MockTransport(handler))
    forge._client.get = lambda: client
    return forge, comments, posts


def test_a_comment_post_whose_answer_was_lost_is_not_posted_again_when_the_comment_is_there():
    forge, comments, posts = _flaky_github(lose=1)
    body = "<!-- aipm-job:j-x -->\nThe job succeeded."
    comment = forge.create_comment("acme/app", 7, body)
    assert [c["body"] for c in comments] == [body]  # one comment, not two
    assert len(posts) == 1 and comment.id == 1


def test_a_comment_post_that_never_arrived_is_sent_again():
    forge, comments, posts = _flaky_github(drop=1)
    comment = forge.create_comment("acme/app", 7, "<!-- aipm-job:j-y -->\nDone.")
    assert [c["body"] for c in comments] == ["<!-- aipm-job:j-y -->\nDone."] and comment.id == 1
    assert len(posts) == 2


def test_the_base_branch_read_ahead_fails_only_a_click_that_opens_a_pull_request(api, github, processor):
    github.create_branch(REPO, "dev")
    assert api.generate(story_id="ahead", base_branch="dev").status_code == 202
    github.inject("GET", r"/git/ref/heads/dev$", 403, {"message": "Resource not accessible by integration"}, times=2)
    again = api.generate(story_id="ahead", base_branch="dev")  # its pull request is open: the base is not needed
    assert again.status_code == 200, again.text
    new = api.generate(story_id="ahead-2", base_branch="dev")
    assert new.status_code == 502 and "read branch dev" in new.json()["detail"], new.text
    assert api.generate(story_id="ahead-3", base_branch="nope").status_code == 400
