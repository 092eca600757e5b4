"""The job page (``#/jobs/{id}``) in headless Chromium against the real local stack: the whole transcript follows a
live job and stays after it succeeds, the timeline and links, the download, and a fresh browser that sees the same.

Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.e2e.local_stack import running_stack
from tests.support.servers import ROOT
from tests.ui.conftest import browser_marks

ARTIFACTS = ROOT / "test-artifacts"

pytestmark = browser_marks(180)

# Every status the job page shows and every transcript line count seen, as the page changes.
PAGE_RECORDER = """
window.__pageStates = [];
window.__sawAgentWorkingWhileLive = false;
new MutationObserver(() => {
  const view = document.getElementById("job-view");
  const status = view && view.dataset.status;
  if (status && window.__pageStates[window.__pageStates.length - 1] !== status) window.__pageStates.push(status);
  const text = document.getElementById("transcript").textContent;
  if (["queued", "running", "pushing"].includes(status) && text.includes("agent working"))
    window.__sawAgentWorkingWhileLive = true;
}).observe(document.documentElement, {subtree: true, childList: true, attributes: true, characterData: true});
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # A few seconds per task, so the page sees the job live.
    with running_stack(tmp_path_factory.mktemp("jobpage") / "state", agent_args=("--delay", "6")) as running:
        yield running


def test_the_job_page_follows_a_live_job_and_keeps_its_transcript_after_success(page, stack, tmp_path):
    from playwright.sync_api import expect

    page.goto(stack.api_url + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_label("Title").fill("Square on the job page")
    page.get_by_label("Acceptance criteria").fill("square(3) == 9")
    page.get_by_role("button", name="Generate Code & PR").click()
    card = page.locator("li.job").first
    expect(card).to_have_attribute("data-job-id", re.compile(r".+"))
    job_id = card.get_attribute("data-job-id")

    card.get_by_role("link", name="Open job Square on the job page: transcript and timeline").click()
    assert page.url.endswith(f"#/jobs/{job_id}")
    page.evaluate(PAGE_RECORDER)
    # A small transcript box, so that its lines overflow and following the newest one means something.
    page.add_style_tag(content="#transcript { height: 4rem !important; }")
    view = page.locator("#job-view")
    expect(view).to_be_visible()
    expect(page.locator("#story-card")).to_be_hidden()
    transcript = page.locator("#transcript")
    expect(transcript).to_contain_text("agent working", timeout=60_000)
    expect(view).to_have_attribute("data-status", "succeeded", timeout=90_000)
    assert page.evaluate("window.__sawAgentWorkingWhileLive"), page.evaluate("window.__pageStates")

    # Kept after success: the agent's text, the events, the end.
    expect(transcript).to_contain_text("job ended: succeeded")
    expect(transcript).to_contain_text("[agent]")
    expect(transcript).to_contain_text("tool calls:")
    # It followed the newest line.
    assert page.evaluate("(b => b.scrollHeight - b.scrollTop - b.clientHeight < 24)(document.getElementById('transcript'))")

    timeline = page.locator("#job-timeline li")
    expect(timeline).to_have_count(4)
    assert [li.get_attribute("data-status") for li in timeline.all()] == ["queued", "running", "pushing", "succeeded"]
    api_job = httpx.get(f"{stack.api_url}/api/jobs/{job_id}", timeout=10).json()
    expect(page.locator("#job-page-meta")).to_contain_text("1 attempt")
    commit_link = page.locator("#job-page-links a.commit-link")
    expect(commit_link).to_have_attribute("href", f"{stack.api_url}/forge/local/example/commit/{api_job['commit']}")
    expect(page.locator("#job-page-links a.pr-link")).to_have_attribute(
        "href", f"{stack.api_url}/forge/local/example/pull/{api_job['pr_number']}")

    # Scrolled up, the page stops following and says so.
    transcript.evaluate("b => { b.scrollTop = 0; b.dispatchEvent(new Event('scroll')); }")
    expect(page.locator("#transcript-paused")).to_be_visible()
    page.get_by_role("button", name="Follow newest").click()
    expect(page.locator("#transcript-paused")).to_be_hidden()

    with page.expect_download() as downloaded:
        page.get_by_role("button", name="Download transcript").click()
    saved = tmp_path / "transcript.txt"
    downloaded.value.save_as(saved)
    text = saved.read_text()
    assert text.startswith(f"AIPM job {job_id}") and "agent working" in text and "job ended: succeeded" in text

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-job-page.png"), full_page=True)

    # The card on the list kept its lines after success.
    page.get_by_role("link", name="← Story form and all jobs").click()
    expect(card).to_have_attribute("data-status", "succeeded")
    expect(card.locator(".job-log")).to_contain_text("job ended: succeeded")


def test_a_browser_that_never_saw_the_job_opens_its_page_from_the_address(page, stack):
    from playwright.sync_api import expect

    answer = httpx.post(f"{stack.api_url}/api/generate-code", timeout=30, json={
        "repo": "local/example", "title": "Cube from elsewhere", "acceptance_criteria": ["cube(2) == 8"]}).json()
    job_id = answer["job_id"]
    page.goto(stack.api_url + "/")
    page.evaluate("window.localStorage.clear()")  # nothing remembered: all it has is the address
    page.goto(f"{stack.api_url}/#/jobs/{job_id}")
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#job-view")).to_have_attribute("data-status", "succeeded", timeout=90_000)
    expect(page.locator("#transcript")).to_contain_text("job ended: succeeded")
    expect(page.locator("#job-page-title")).to_have_text("Cube from elsewhere")  # the job's own title
    expect(page.locator("#job-page-links a.pr-link")).to_have_text(f"Pull request #{answer['pr_number']}")
