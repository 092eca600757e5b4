"""The local forge's pull request pages in headless Chromium: markdown rendered (headings, bold, the result comment's
table) with no hidden marker or raw markup visible and no HTML from the story run; the pulls list; merge and close;
"Open in AIPM" opens the job's page. Screenshots go to test-artifacts/."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.e2e.local_stack import running_stack
from tests.support.servers import ROOT
from tests.ui.conftest import browser_marks

ARTIFACTS = ROOT / "test-artifacts"

pytestmark = browser_marks(180)

HOSTILE = "Say **hello**.\n\n<script>window.__xss = 1</script><img src=x onerror='window.__xss = 2'>\n\n[click](javascript:window.__xss=3)"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("forge-pages") / "state") as running:
        yield running


def finished_pull(stack, title: str, description: str = "") -> tuple[dict, dict]:
    """A story through the stack, until its pull request has the result comment: (the generate answer, the pull)."""
    out = httpx.post(f"{stack.api_url}/api/generate-code", timeout=30, json={
        "repo": "local/example", "title": title, "description": description, "acceptance_criteria": ["hello() == 1"]})
    assert out.status_code == 202, out.text
    answer = out.json()
    stack.wait_job(answer["job_id"])
    deadline = time.monotonic() + 30  # the callback lands a moment after the job ends
    while True:
        pull = httpx.get(f"{stack.api_url}/api/forge/local/example/pulls/{answer['pr_number']}", timeout=10).json()
        if pull["comments"] or time.monotonic() > deadline:
            return answer, pull
        time.sleep(0.2)


def test_the_pull_request_page_shows_rendered_markdown_and_no_marker(page, stack):
    from playwright.sync_api import expect

    answer, pull = finished_pull(stack, "Rendered on the pull request page", HOSTILE)
    assert pull["comments"] and pull["comments"][0]["body"].startswith("<!-- aipm-job:")
    page.goto(answer["pr_url"])
    description = page.locator(".description")
    expect(description.locator("h2", has_text="Story")).to_be_visible()
    expect(description.locator("strong", has_text="hello")).to_be_visible()
    comment = page.locator(".comment").first
    expect(comment.locator("table")).to_be_visible()
    text = "\n".join(page.locator(".markdown").all_inner_texts())  # the description and comments (not the diff)
    for raw in ("<!--", "aipm-job:", "**", "## ", "| --- |"):
        assert raw not in text, raw
    assert "aipm-job:" not in page.locator("body").inner_text()
    assert "<script>window.__xss = 1</script>" in text  # shown as the text it is
    assert page.evaluate("window.__xss") is None
    assert page.locator("a[href^='javascript:']").count() == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "forge-pull-request.png"), full_page=True)

    page.get_by_role("link", name="Open in AIPM").click()
    expect(page).to_have_url(f"{stack.api_url}/#/jobs/{answer['job_id']}")
    expect(page.locator("#job-view")).to_have_attribute("data-status", "succeeded")


def test_merge_and_close_from_the_page_and_the_pulls_list(page, stack):
    from playwright.sync_api import expect

    merged, _ = finished_pull(stack, "Merge me from the page")
    closed, _ = finished_pull(stack, "Close me from the page")
    page.goto(f"{stack.api_url}/forge/local/example/pulls")
    rows = page.locator("#pulls tr")
    expect(rows.filter(has_text="Merge me from the page")).to_be_visible()
    expect(rows.filter(has_text="Close me from the page")).to_be_visible()

    page.goto(merged["pr_url"])
    page.get_by_role("button", name="Merge pull request").click()
    expect(page.locator("#pr-state")).to_have_text("merged")
    expect(page.get_by_role("button", name="Merge pull request")).to_have_count(0)
    page.goto(closed["pr_url"])
    page.get_by_role("button", name="Close pull request").click()
    expect(page.locator("#pr-state")).to_have_text("closed")

    page.goto(f"{stack.api_url}/forge/local/example/pulls?state=closed")
    expect(rows.filter(has_text="Merge me from the page")).to_contain_text("merged")
    expect(rows.filter(has_text="Close me from the page")).to_contain_text("closed")
    page.get_by_role("link", name=re.compile(r"^Open \(\d+\)$")).click()
    expect(rows.filter(has_text="Merge me from the page")).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "forge-pulls.png"), full_page=True)
    again = httpx.post(f"{stack.api_url}/api/forge/local/example/pulls/{merged['pr_number']}/merge", json={},
                       timeout=10)
    assert again.status_code == 409 and "already merged" in again.json()["detail"]


def test_an_aipm_comment_on_the_pull_request_page_makes_a_second_commit_on_its_branch(page, stack):
    from playwright.sync_api import expect

    answer, pull = finished_pull(stack, "Follow me up")
    agent_commits = [c for c in pull["commits"] if c["subject"].startswith("aipm:")]
    assert len(agent_commits) == 1, pull["commits"]
    page.goto(answer["pr_url"])
    page.get_by_label("Comment").fill("/aipm Also say goodbye.\n\n### Acceptance criteria\n\n- bye() == 2")
    page.get_by_role("button", name="Comment", exact=True).click()
    second = f"{answer['job_id']}-r2"
    expect(page.locator(".comment").filter(has_text=f"Follow-up started as job {second}")).to_be_visible()
    assert stack.wait_job(second)["status"] == "succeeded"

    after = httpx.get(f"{stack.api_url}/api/forge/local/example/pulls/{answer['pr_number']}", timeout=10).json()
    subjects = [c["subject"] for c in after["commits"]]
    assert len([s for s in subjects if s.startswith("aipm:")]) == 2, subjects
    assert any(s.startswith(f"TASK.md: follow-up from #{answer['pr_number']}") for s in subjects), subjects
    assert "def bye(" in after["diff"] and "## Follow-up 1" in after["diff"]
    deadline = time.monotonic() + 30  # the second run's result: a comment of its own in the thread
    while f"aipm-job:{second} " not in "".join(c["body"] for c in after["comments"]) and time.monotonic() < deadline:
        time.sleep(0.2)
        after = httpx.get(f"{stack.api_url}/api/forge/local/example/pulls/{answer['pr_number']}", timeout=10).json()
    assert any(c["body"].startswith(f"<!-- aipm-job:{second} -->") for c in after["comments"])

    # On a closed pull request the follow-up is refused, and the thread says why.
    httpx.post(f"{stack.api_url}/api/forge/local/example/pulls/{answer['pr_number']}/close", json={}, timeout=10)
    refused = httpx.post(f"{stack.api_url}/api/forge/local/example/pulls/{answer['pr_number']}/comments",
                         json={"body": "/aipm once more"}, timeout=10)
    assert refused.status_code == 201 and "is closed" in refused.json()["followup"]["ignored"]
    page.reload()
    expect(page.locator(".comment").filter(has_text="No follow-up was started")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "forge-follow-up.png"), full_page=True)
