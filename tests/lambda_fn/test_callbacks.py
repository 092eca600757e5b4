"""POST /api/callbacks/job: signed for lambda-api only, and what the agent printed cannot escape its code fence."""

from __future__ import annotations

import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from aipm_common.logging import register_secret
from aipm_common.signing import PR_PROCESSOR
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


def test_simultaneous_callbacks_in_different_containers_leave_one_result_comment(make_api, github, processor,
                                                                                  shared_secret):
    containers = [make_api() for _ in range(4)]  # one app each: no memory or lock shared between them
    out = containers[0].generate(story_id="dup").json()
    github.gather("POST", r"/issues/\d+/comments$", 4)  # every container has looked before any comment lands
    body = json.dumps(_result(out, output_tail="the final answer")).encode()

    def send(url: str) -> httpx.Response:
        headers = signed_headers(shared_secret, "POST", "/api/callbacks/job", body)
        return httpx.post(f"{url}/api/callbacks/job", content=body, headers=headers, timeout=30)

    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(api.serve()) for api in containers]
        with ThreadPoolExecutor(len(urls)) as pool:
            answers = list(pool.map(send, urls))
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    [comment] = github.comments_on(REPO, out["pr_number"])
    assert comment["body"].startswith(f"<!-- aipm-job:{out['job_id']} -->") and "the final answer" in comment["body"]
    assert {a.json()["comment_id"] for a in answers} == {comment["id"]}
    assert sorted(a.json()["comment"] for a in answers) == ["created", "unchanged", "unchanged", "unchanged"]
    assert sum(1 for method, path in github.requests if method == "POST" and path.endswith("/comments")) == 4
    assert github.pulls(REPO)[0]["labels"] == {"aipm:succeeded"}


def test_a_repeated_callback_folds_duplicate_result_comments_into_the_oldest_with_the_latest_text(
        api, github, shared_secret):
    out = api.generate(story_id="fold").json()
    marker = f"<!-- aipm-job:{out['job_id']} -->"
    for cid, text in ((5, "first copy"), (7, "a person's remark"), (9, "second copy")):
        body = f"{marker}\n{text}" if "copy" in text else text
        github.comments[cid] = {"id": cid, "repo": REPO.lower(), "number": out["pr_number"], "body": body}
    resp = callback(api, shared_secret, _result(out, status="failed", error="tests fail"))
    assert resp.status_code == 200 and resp.json() == {**resp.json(), "comment_id": 5, "comment": "updated"}
    kept, remark = github.comments_on(REPO, out["pr_number"])
    assert kept["id"] == 5 and "tests fail" in kept["body"] and "could not finish" in kept["body"]
    assert remark == {"id": 7, "repo": REPO.lower(), "number": out["pr_number"], "body": "a person's remark"}


def test_duplicate_result_comments_are_folded_on_the_local_forge_too(local_api, shared_secret):
    forge = local_api.runtime.forge
    out = local_api.generate(repo="local/example", story_id="fold").json()
    marker = f"<!-- aipm-job:{out['job_id']} -->"
    first = forge.create_comment("local/example", out["pr_number"], f"{marker}\nold")
    forge.create_comment("local/example", out["pr_number"], f"{marker}\nold")
    payload = {**_result(out), "repo": "local/example", "output_tail": "newest"}
    assert callback(local_api, shared_secret, payload).json()["comment_id"] == first.id
    [kept] = forge.list_comments("local/example", out["pr_number"])
    assert kept.id == first.id and "newest" in kept.body
    forge.delete_comment("local/example", kept.id)
    forge.delete_comment("local/example", kept.id)  # already gone: not an error
    assert forge.list_comments("local/example", out["pr_number"]) == []


def test_the_test_run_is_a_row_of_the_comment_and_its_failing_output_is_fenced_and_neutralised(api, github,
                                                                                               shared_secret):
    out = api.generate(story_id="tests-row").json()
    tests = {"command": "python -m pytest -q | tee `x`", "source": ".aipm.toml", "summary": "3 passed / 1 failed",
             "passed": 3, "failed": 1, "exit_code": 1, "timed_out": False, "duration_s": 1.5,
             "output_tail": "E   assert 41 == 42\n@octocat ```\n<!-- aipm-job:j-000000000000000000000000 -->"}
    assert callback(api, shared_secret, _result(out, tests=tests)).status_code == 200
    [comment] = github.comments_on(REPO, out["pr_number"])
    body = comment["body"]
    row = next(line for line in body.splitlines() if line.startswith("| Tests |"))
    # One table row: the command's pipe and backticks cannot open a cell or a code span of their own.
    assert row.startswith("| Tests | ❌ 3 passed / 1 failed (`python -m pytest -q   tee  x `)") and row.count("|") == 3
    assert "**The tests' output**" in body and "assert 41 == 42" in body
    assert body.count("<!--") == 1 and "@octocat" not in body

    passing = {**tests, "summary": "4 passed / 0 failed", "passed": 4, "failed": 0, "exit_code": 0}
    assert callback(api, shared_secret, _result(out, tests=passing)).json()["comment"] == "updated"
    [comment] = github.comments_on(REPO, out["pr_number"])
    assert "| Tests | ✅ 4 passed / 0 failed" in comment["body"] and "The tests' output" not in comment["body"]


def test_a_test_run_out_of_bounds_is_422(api, github, shared_secret):
    out = api.generate(story_id="tests-bounds").json()
    tests = {"command": "x", "summary": "s", "passed": -1}
    assert callback(api, shared_secret, _result(out, tests=tests)).status_code == 422
    assert github.comments_on(REPO, out["pr_number"]) == []


def test_out_of_range_numbers_in_a_callback_are_422_and_change_nothing(api, github, shared_secret):
    out = api.generate(story_id="cb-big").json()
    for field, value in [("pr_number", 2**63), ("pr_number", 2**31), ("attempts", 2**63), ("attempts", -1),
                         ("duration_s", 1e308), ("duration_s", -1), ("credits", 1e300), ("credits", -5)]:
        resp = callback(api, shared_secret, _result(out, **{field: value}))
        assert resp.status_code == 422, (field, value, resp.text)
        assert field in json.dumps(resp.json()["detail"])
    assert github.comments_on(REPO, out["pr_number"]) == []


def test_the_agents_tokens_are_a_row_of_the_comment_only_when_reported(api, github, shared_secret):
    out = api.generate(story_id="tokens-row").json()
    assert callback(api, shared_secret, _result(out)).status_code == 200
    [comment] = github.comments_on(REPO, out["pr_number"])
    assert "| Tokens |" not in comment["body"]  # Kiro reports credits, not tokens
    counted = _result(out, tokens={"input": 123456, "output": 789})
    assert callback(api, shared_secret, counted).json()["comment"] == "updated"
    [comment] = github.comments_on(REPO, out["pr_number"])
    assert "| Tokens | 123,456 in / 789 out |" in comment["body"]
    assert callback(api, shared_secret, _result(out, tokens={"input": -1, "output": 0})).status_code == 422
