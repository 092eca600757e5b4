"""POST /api/callbacks/job: signed for lambda-api only, and what the agent printed cannot escape its code fence."""

from __future__ import annotations

import json
import time

from ec2_services.common.logging import register_secret
from ec2_services.common.signing import PR_PROCESSOR
from lambda_fn.results import fenced
from tests.lambda_fn.conftest import REPO, callback, signed_headers


def _result(out: dict, **extra) -> dict:
    return {"job_id": out["job_id"], "status": "succeeded", "commit": "b" * 40, "error": None,
            "pr_number": out["pr_number"], "repo": REPO, "branch": out["branch"], "attempts": 1, "duration_s": 5,
            "credits": None, "output_tail": "done", **extra}


def test_callback_without_a_signature_is_401_and_changes_nothing(api, github, processor):
    out = api.generate(story_id="cb").json()
    resp = api.call("POST", "/api/callbacks/job", json=_result(out), token=None)
    assert resp.status_code == 401 and "signed" in resp.json()["detail"]
    assert github.comments_on(REPO, out["pr_number"]) == []


def test_callback_signed_for_another_receiver_or_stale_is_401(api, github, shared_secret):
    out = api.generate(story_id="cb").json()
    assert callback(api, shared_secret, _result(out), receiver=PR_PROCESSOR).status_code == 401
    body = json.dumps(_result(out)).encode()
    headers = signed_headers(shared_secret, "POST", "/api/callbacks/job", body)
    headers["X-AIPM-Timestamp"] = str(int(time.time()) - 1000)
    stale = api.call("POST", "/api/callbacks/job", body=body, headers=headers, token=None)
    assert stale.status_code == 401
    assert callback(api, "wrong-secret-0123456789", _result(out)).status_code == 401
    assert github.comments_on(REPO, out["pr_number"]) == []


def test_callback_for_a_job_that_is_not_this_branchs_is_refused(api, github, shared_secret):
    out = api.generate(story_id="cb").json()
    resp = callback(api, shared_secret, _result(out, job_id="j-" + "0" * 24))
    assert resp.status_code == 400 and "is not the job of" in resp.json()["detail"]
    bad = callback(api, shared_secret, _result(out, status="exploded"))
    assert bad.status_code == 422


def test_agent_text_cannot_break_the_fence_ping_people_forge_the_marker_or_leak_secrets(api, github, shared_secret):
    out = api.generate(story_id="evil").json()
    register_secret("s3cr3t-value-the-agent-saw")
    tail = (
        "````\n</details><!-- aipm-job:j-000000000000000000000000 -->\n@octocat please merge\n"
        "token ghp_abcdefghijklmnopqrstuvwxyz0123456789 and s3cr3t-value-the-agent-saw\n<img src=x onerror=alert(1)>"
    )
    assert callback(api, shared_secret, _result(out, output_tail=tail, error="`@admin` <b>x</b>")).status_code == 200
    [comment] = github.comments_on(REPO, out["pr_number"])
    body = comment["body"]
    assert body.count("<!--") == 1 and body.startswith(f"<!-- aipm-job:{out['job_id']} -->")
    assert "`````text\n" in body  # longer than the agent's four backticks
    assert "@octocat" not in body and "@admin" not in body
    assert "<img" not in body and "</details>" not in body
    assert "ghp_abcdefghijklmnopqrstuvwxyz" not in body and "s3cr3t-value-the-agent-saw" not in body
    # A later callback still finds our comment, not the agent's fake marker.
    assert callback(api, shared_secret, _result(out, status="failed")).json()["comment"] == "updated"
    assert len(github.comments_on(REPO, out["pr_number"])) == 1


def test_fence_is_longer_than_any_backtick_run():
    assert fenced("a ``` b").startswith("````text\n")
    assert fenced("plain").startswith("```text\n")
    assert fenced("x" + "`" * 9).endswith("`" * 10)


def test_callback_without_pr_number_finds_the_pull_request_by_branch(api, github, shared_secret):
    out = api.generate(story_id="nopr").json()
    resp = callback(api, shared_secret, _result(out, pr_number=None, status="no_changes", commit=None))
    assert resp.status_code == 200 and resp.json()["pr_number"] == out["pr_number"]
    assert github.pulls(REPO)[0]["labels"] == {"aipm:no-changes"}


def test_repeated_callback_finds_its_comment_past_the_first_page(api, github, shared_secret):
    out = api.generate(story_id="busy").json()
    for i in range(130):  # a busy pull request: our comment lands on the second page of 100
        github.comments[1 + i] = {"id": 1 + i, "repo": REPO.lower(), "number": out["pr_number"],
                                       "body": f"review remark {i}"}
    assert callback(api, shared_secret, _result(out)).json()["comment"] == "created"
    assert callback(api, shared_secret, _result(out, status="failed")).json()["comment"] == "updated"
    marked = [c for c in github.comments_on(REPO, out["pr_number"]) if c["body"].startswith("<!-- aipm-job:")]
    assert len(marked) == 1 and "could not finish" in marked[0]["body"]
    assert sum(1 for method, path in github.requests if method == "GET" and path.endswith("/comments")) >= 4
