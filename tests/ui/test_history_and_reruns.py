"""The job history, re-runs and story identity in headless Chromium against the real local stack.

Each test opens fresh browser contexts (no cookies, no localStorage): what a second browser sees comes from the API.
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.e2e.local_stack import running_stack
from tests.support.servers import ROOT
from tests.ui.conftest import CHROMIUM, CHROMIUM_ARGS, browser_marks

ARTIFACTS = ROOT / "test-artifacts"

pytestmark = browser_marks(180)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("history") / "state", agent_args=("--delay", "0.5")) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def fresh_page(browser):
    """A page in a browser context of its own: nothing remembered from any other test or context."""
    contexts = []

    def make():
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def open_ui(page, stack) -> None:
    page.goto(stack.api_url + "/")
    page.wait_for_selector("body[data-ready=true]")


def submit(page, title: str, criteria: str = "") -> str:
    page.get_by_label("Title").fill(title)
    page.get_by_label("Acceptance criteria").fill(criteria)
    page.get_by_role("button", name="Generate Code & PR").click()
    card = page.locator("li.job", has_text=title).first
    from playwright.sync_api import expect

    expect(card).to_have_attribute("data-job-id", re.compile(r".+"))
    return card.get_attribute("data-job-id")


def test_a_fresh_browser_sees_the_history_and_a_reload_loses_nothing(fresh_page, stack):
    from playwright.sync_api import expect

    first = fresh_page()
    open_ui(first, stack)
    job_id = submit(first, "History from the server", "history() == 1")
    expect(first.locator(f"li.job[data-job-id='{job_id}']")).to_have_attribute("data-status", "succeeded",
                                                                                timeout=60_000)
    other = httpx.post(f"{stack.api_url}/api/generate-code", timeout=30, json={
        "repo": "local/example", "title": "Sent by a script", "acceptance_criteria": []}).json()
    stack.wait_job(other["job_id"])

    second = fresh_page()  # another browser: its localStorage has never seen either job
    open_ui(second, stack)
    card = second.locator(f"li.job[data-job-id='{job_id}']")
    expect(card).to_have_attribute("data-status", "succeeded")
    expect(card.locator(".job-title")).to_have_text("History from the server")
    expect(card.locator(".pr-link")).to_have_text(re.compile(r"Pull request #\d+"))
    expect(second.locator(f"li.job[data-job-id='{other['job_id']}'] .job-title")).to_have_text("Sent by a script")

    second.reload()
    second.wait_for_selector("body[data-ready=true]")
    expect(second.locator(f"li.job[data-job-id='{job_id}']")).to_have_attribute("data-status", "succeeded")
    expect(second.locator(f"li.job[data-job-id='{other['job_id']}']")).to_be_visible()

    # Filtered on the server: a status no job has shows none; a repository with jobs shows them.
    second.get_by_label("Filter by status").select_option("cancelled")
    second.get_by_role("button", name="Show").click()
    expect(second.locator("#jobs-empty")).to_have_text("No job matches this filter.")
    expect(second.locator("li.job")).to_have_count(0)
    second.get_by_label("Filter by status").select_option("succeeded")
    second.get_by_label("Filter by owner/name").fill("LOCAL/example")
    second.get_by_role("button", name="Show").click()
    expect(second.locator(f"li.job[data-job-id='{job_id}']")).to_be_visible()
    expect(second.locator("#history-note")).to_have_text("Jobs of LOCAL/example, Succeeded.")
    ARTIFACTS.mkdir(exist_ok=True)
    second.screenshot(path=str(ARTIFACTS / "ui-history.png"), full_page=True)


def test_rerun_from_the_job_page_starts_a_new_job_on_the_same_pull_request_and_keeps_the_first(fresh_page, stack):
    from playwright.sync_api import expect

    page = fresh_page()
    open_ui(page, stack)
    job_id = submit(page, "Run me twice", "twice() == 2")
    page.goto(f"{stack.api_url}/#/jobs/{job_id}")
    view = page.locator("#job-view")
    expect(view).to_have_attribute("data-status", "succeeded", timeout=60_000)
    first = httpx.get(f"{stack.api_url}/api/jobs/{job_id}", timeout=10).json()

    page.get_by_role("button", name="Re-run").click()
    expect(page).to_have_url(re.compile(rf"#/jobs/{re.escape(job_id)}-r2$"))
    expect(view).to_have_attribute("data-status", re.compile(r"^(succeeded|no_changes)$"), timeout=60_000)
    runs = page.locator("#job-runs")
    expect(runs).to_contain_text("Runs on this branch: 1. Succeeded · 2.")
    expect(runs).to_contain_text("(this one)")
    expect(page.locator("#job-page-links a.pr-link")).to_have_text(f"Pull request #{first['pr_number']}")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-rerun.png"), full_page=True)

    # The first run is kept as it was, one click away.
    runs.locator(f"a.run-link[data-job-id='{job_id}']").click()
    expect(page).to_have_url(re.compile(rf"#/jobs/{re.escape(job_id)}$"))
    expect(view).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#job-page-meta")).to_contain_text("1 attempt")
    pulls = httpx.get(f"{stack.api_url}/api/forge/local/example/pulls", timeout=10).json()["pulls"]
    assert [p["number"] for p in pulls if p["head"] == first["branch"]] == [first["pr_number"]]


def test_the_same_story_after_a_reload_names_its_pull_request_instead_of_opening_a_second(fresh_page, stack):
    from playwright.sync_api import expect

    page = fresh_page()
    open_ui(page, stack)
    page.get_by_label("Title").fill("Only one pull request")
    expect(page.locator("#story-id-default")).to_have_text("local-example-only-one-pull-request")
    job_id = submit(page, "Only one pull request", "once() == 1")
    expect(page.locator(f"li.job[data-job-id='{job_id}']")).to_have_attribute("data-status", "succeeded",
                                                                               timeout=60_000)
    first = httpx.get(f"{stack.api_url}/api/jobs/{job_id}", timeout=10).json()
    assert first["branch"] == "aipm/story-local-example-only-one-pull-request"

    page.reload()  # the page's memory (and its Idempotency-Key) is gone; the story id is derived again
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_label("Title").fill("Only one pull request")
    page.get_by_role("button", name="Generate Code & PR").click()
    notice = page.locator("#story-exists")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text(f"This story has pull request #{first['pr_number']} (succeeded): open it or re-run it")
    expect(page.locator("#story-exists-open")).to_have_attribute("href", f"#/jobs/{job_id}")
    pulls = httpx.get(f"{stack.api_url}/api/forge/local/example/pulls", timeout=10).json()["pulls"]
    assert [p["number"] for p in pulls if p["title"] == "Only one pull request"] == [first["pr_number"]]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-story-exists.png"), full_page=True)

    # A story id of one's own makes it another story.
    page.get_by_label("Story id").fill("only-one-but-again")
    page.get_by_role("button", name="Generate Code & PR").click()
    expect(page.locator("li.job[data-job-id]")).not_to_have_count(0)
    expect(notice).to_be_hidden()
    other = page.locator("li.job", has_text="Only one pull request").first
    expect(other).not_to_have_attribute("data-job-id", job_id)

    page.get_by_label("Story id").fill("")
    page.get_by_role("button", name="Generate Code & PR").click()
    expect(notice).to_be_visible()
    page.get_by_role("button", name="Re-run").click()
    expect(page).to_have_url(re.compile(r"#/jobs/.+-r2$"))


def test_a_job_submitted_while_the_history_loads_stays_on_the_list(fresh_page, stack):
    from playwright.sync_api import expect

    page = fresh_page()
    held = []  # the history's answer, read before the job exists and given to the page only after it was submitted

    def hold(route):
        held.append((route, route.fetch()))

    page.route(lambda url: "/api/jobs?" in url, hold)
    open_ui(page, stack)
    job_id = submit(page, "Submitted during the history load")
    assert len(held) == 1 and job_id not in held[0][1].text()
    route, stale = held[0]
    route.fulfill(response=stale)
    page.unroute_all()
    expect(page.locator("#history-note")).to_have_text("")
    expect(page.locator(f"li.job[data-job-id='{job_id}']")).to_have_attribute("data-status", "succeeded",
                                                                               timeout=60_000)
