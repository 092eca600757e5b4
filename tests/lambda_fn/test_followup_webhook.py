"""Follow-up from a pull request: GitHub's signed ``issue_comment`` webhook → TASK.md's follow-up section → a re-run
on the same branch and pull request, answered in the thread. Against the GitHub double and the PR processor stand-in."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from lambda_fn.followup import parse, task_with_follow_up
from tests.lambda_fn.conftest import REPO

HOOK_SECRET = "hook-secret-0123456789"


@pytest.fixture
def hook_api(make_api):
    return make_api(aipm_github_webhook_secret=HOOK_SECRET, public_api_url="https://api.example.com")


def delivery(out: dict, body: str, *, login: str = "ann", comment_id: int = 501, action: str = "created",
             age_s: float = 0, on_pull: bool = True, user_type: str = "User") -> dict:
    created = datetime.fromtimestamp(time.time() - age_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    issue = {"number": out["pr_number"], **({"pull_request": {"url": "x"}} if on_pull else {})}
    return {"action": action, "repository": {"full_name": REPO}, "issue": issue,
            "comment": {"id": comment_id, "body": body, "created_at": created, "user": {"login": login, "type": user_type},
                        "html_url": f"https://github.com/{REPO}/pull/{out['pr_number']}#issuecomment-{comment_id}"}}


def send(api, payload: dict, *, secret: str | None = HOOK_SECRET, event: str = "issue_comment", form: bool = False):
    raw = json.dumps(payload)
    body = (f"payload={quote(raw)}" if form else raw).encode()
    headers = {"x-github-event": event, "content-type": "application/x-www-form-urlencoded" if form else "application/json"}
    if secret is not None:
        headers["x-hub-signature-256"] = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return api.call("POST", "/api/github/webhook", body=body, headers=headers, token=None)


def ended(processor, job_id: str, status: str = "succeeded") -> None:
    processor.jobs[job_id]["status"] = status


def test_a_follow_up_comment_appends_to_task_md_reruns_and_answers_in_the_thread(hook_api, github, processor):
    out = hook_api.generate(story_id="greet").json()
    ended(processor, out["job_id"])
    github.roles["ann"] = "write"
    answer = send(hook_api, delivery(out, "/aipm  Also greet in French: greet_fr('Ann') == 'Bonjour, Ann!'"))
    assert answer.status_code == 200, answer.text
    started = answer.json()["started"]
    assert started == f"{out['job_id']}-r2" and processor.jobs[started]["requested_by"] == "ann"
    task = github.branch_file(REPO, out["branch"], "TASK.md")
    assert task.index("## Acceptance criteria") < task.index("## Follow-up 1")  # the story stays, as history
    assert task.rstrip().endswith("Also greet in French: greet_fr('Ann') == 'Bonjour, Ann!'")
    assert "_Asked by ann in https://github.com/" in task
    [reply] = github.comments_on(REPO, out["pr_number"])
    assert reply["body"].startswith("<!-- aipm-followup:501 -->") and f"job `{started}`" in reply["body"]
    assert "aipm:in-progress" in github.pulls(REPO)[0]["labels"]

    # GitHub delivers the same comment again (a retry): nothing starts twice.
    again = send(hook_api, delivery(out, "/aipm  Also greet in French: greet_fr('Ann') == 'Bonjour, Ann!'"))
    assert again.status_code == 200 and "answered already" in again.json()["ignored"]
    assert len([j for j in processor.jobs if j.startswith(out["job_id"])]) == 2

    # A second follow-up once that run ended: Follow-up 2, run 3.
    ended(processor, started)
    third = send(hook_api, delivery(out, "/aipm and in German", comment_id=502)).json()["started"]
    assert third == f"{out['job_id']}-r3"
    assert "## Follow-up 2" in github.branch_file(REPO, out["branch"], "TASK.md")


@pytest.mark.parametrize("secret, why", [(None, "missing"), ("wrong-secret", "does not match")])
def test_a_missing_or_wrong_signature_is_401_and_starts_nothing(hook_api, github, processor, secret, why):
    out = hook_api.generate(story_id="sig").json()
    ended(processor, out["job_id"])
    github.roles["ann"] = "admin"
    answer = send(hook_api, delivery(out, "/aipm do it"), secret=secret)
    assert answer.status_code == 401 and why in answer.json()["detail"]
    assert github.comments_on(REPO, out["pr_number"]) == [] and len(processor.jobs) == 1


def test_a_stale_delivery_is_401(hook_api, github, processor):
    out = hook_api.generate(story_id="stale").json()
    ended(processor, out["job_id"])
    github.roles["ann"] = "admin"
    answer = send(hook_api, delivery(out, "/aipm do it", age_s=3600))
    assert answer.status_code == 401 and "stale" in answer.json()["detail"]
    assert len(processor.jobs) == 1


def test_a_commenter_without_write_permission_is_answered_why_and_nothing_runs(hook_api, github, processor):
    out = hook_api.generate(story_id="perm").json()
    ended(processor, out["job_id"])
    github.roles["mallory"] = "triage"
    answer = send(hook_api, delivery(out, "/aipm delete everything", login="mallory"))
    assert answer.status_code == 200 and "write access" in answer.json()["ignored"]
    [reply] = github.comments_on(REPO, out["pr_number"])
    assert "No follow-up was started" in reply["body"] and "`triage` access" in reply["body"]
    assert len(processor.jobs) == 1 and "## Follow-up" not in github.branch_file(REPO, out["branch"], "TASK.md")


def test_a_follow_up_while_a_run_is_live_waits_for_it(hook_api, github, processor):
    out = hook_api.generate(story_id="busy").json()  # the job is still queued
    github.roles["ann"] = "write"
    answer = send(hook_api, delivery(out, "/aipm more"))
    assert "still queued" in answer.json()["ignored"]
    assert "comment again once its result is here" in github.comments_on(REPO, out["pr_number"])[0]["body"]


@pytest.mark.parametrize("change, ignored", [
    ({"body": "looks good to me"}, "does not start with '/aipm'"),
    ({"body": "/aipmx do it"}, "does not start with '/aipm'"),
    ({"action": "edited"}, "comment edited"),
    ({"on_pull": False}, "not on a pull request"),
    ({"user_type": "Bot"}, "by a bot"),
])
def test_other_comments_are_ignored_with_a_reason(hook_api, github, processor, change, ignored):
    out = hook_api.generate(story_id="other").json()
    ended(processor, out["job_id"])
    github.roles["ann"] = "write"
    fields = {"body": "/aipm do it", **change}
    answer = send(hook_api, delivery(out, fields.pop("body"), **fields))
    assert answer.status_code == 200 and ignored in answer.json()["ignored"], answer.text
    assert github.comments_on(REPO, out["pr_number"]) == [] and len(processor.jobs) == 1


def test_a_form_encoded_delivery_and_a_ping_are_understood(hook_api, github, processor):
    out = hook_api.generate(story_id="form").json()
    ended(processor, out["job_id"])
    github.roles["ann"] = "maintain"
    assert send(hook_api, {"zen": "Keep it logically awesome."}, event="ping").json() == {"ignored": "ping"}
    assert "started" in send(hook_api, delivery(out, "/aipm form"), form=True).json()


def test_without_a_webhook_secret_the_route_does_not_exist(make_api, github, processor):
    api = make_api()
    out = api.generate(story_id="off").json()
    answer = send(api, delivery(out, "/aipm do it"))
    assert answer.status_code == 404 and "not configured" in answer.json()["detail"]


def test_the_follow_up_text_and_task_section():
    assert parse("/aipm  add a test ", "/aipm ") == "add a test"
    assert parse("  /aipm\nmulti\nline", "/aipm ") == "multi\nline"
    assert parse("/aipm", "/aipm ") is None and parse("/aipmx y", "/aipm ") is None and parse("hi /aipm x", "/aipm ") is None
    from lambda_fn.followup import FollowUp
    text = task_with_follow_up("# T\n\n## Follow-up 1\n\nold\n", FollowUp(REPO, 1, 9, "@ann", "new"))
    assert "## Follow-up 2" in text and "@\u200bann" in text and text.endswith("new\n")
