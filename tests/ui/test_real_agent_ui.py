"""The web UI in headless Chromium with a real, unmodified agent behind it: ``make run AIPM_AGENT=gemini
AIPM_MODEL=scripted`` as a person uses it — a story typed in the form, Generate Code & PR, the job page following
the real Gemini CLI's work to its commit, and the pull request with the result."""

from __future__ import annotations

import re
import time

import pytest

from tests.real_agents.conftest import GEMINI_CLI, installed
from tests.real_agents.stories import agent_stack
from tests.ui.conftest import browser_marks

pytestmark = browser_marks(240)


@pytest.fixture(scope="module")
def gemini_stack(tmp_path_factory):
    installed(GEMINI_CLI)
    with agent_stack(tmp_path_factory.mktemp("real-agent-ui"), "gemini") as stack:
        yield stack


def test_a_story_from_the_form_is_implemented_by_the_real_agent_on_the_job_page(page, gemini_stack):
    from playwright.sync_api import expect

    page.goto(gemini_stack.api_url + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_label("Title").fill("Multiply in the browser with a real agent")
    page.get_by_label("Description").fill("A multiply() helper next to add().")
    page.get_by_label("Acceptance criteria").fill("multiply(4, 5) == 20")
    page.get_by_role("button", name="Generate Code & PR").click()
    card = page.locator("li.job").first
    expect(card).to_have_attribute("data-job-id", re.compile(r"j-.+"), timeout=30_000)
    card.get_by_role("link", name="Open job Multiply in the browser with a real agent: transcript and timeline").click()

    view = page.locator("#job-view")
    expect(view).to_have_attribute("data-status", "succeeded", timeout=200_000)
    transcript = page.locator("#transcript")
    # The real agent's own tool calls, approved by the pool, and its answer are in the transcript.
    expect(transcript).to_contain_text("tool calls:")
    expect(transcript).to_contain_text("[agent]")
    expect(transcript).to_contain_text("job ended: succeeded")
    # Gemini CLI reports its model tokens: the job page shows them beside duration and attempts.
    expect(page.locator("#job-page-meta")).to_contain_text(re.compile(r"[\d,]+ in / [\d,]+ out tokens"))
    pr_link = page.locator("#job-page-links a.pr-link")
    expect(pr_link).to_be_visible()
    pr = page.context.new_page()
    pr.goto(pr_link.get_attribute("href"))
    expect(pr.locator("body")).to_contain_text("def multiply", timeout=30_000)  # the agent's change in the diff
    # The result comment comes with the job's callback, which may land a moment after the job page says succeeded;
    # the forge's page is drawn once per load.
    deadline = time.monotonic() + 30
    while "The agent finished this task" not in pr.content() and time.monotonic() < deadline:
        time.sleep(0.5)
        pr.reload()
    expect(pr.locator("body")).to_contain_text("The agent finished this task")
    expect(pr.locator("body")).to_contain_text(re.compile(r"Tokens\s*[\d,]+ in / [\d,]+ out"))  # the comment's row
    pr.close()
