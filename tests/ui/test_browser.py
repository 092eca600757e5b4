"""The web UI in headless Chromium (Debian's /usr/bin/chromium through Playwright) against the real local stack.

A person's path: load the page, fill a story, click Generate Code & PR, watch the job go to succeeded and open its
pull request; an invalid repository shows the API's own error; Cancel on a long job shows cancelled. Screenshots of
the finished page (laptop and phone widths) go to test-artifacts/.
"""

from __future__ import annotations

import json
import shutil
import time

import httpx
import pytest

from tests.e2e.local_stack import running_stack
from tests.support.servers import ROOT, free_port, serve_in_thread, wait_http
from tests.ui.conftest import browser_marks

ARTIFACTS = ROOT / "test-artifacts"

pytestmark = browser_marks(120)

# Records every status a job shows, as the page changes.
STATUS_RECORDER = """
window.__jobStates = {};
new MutationObserver(() => {
  for (const li of document.querySelectorAll("li.job")) {
    const seen = (window.__jobStates[li.dataset.jobId] ||= []);
    if (seen[seen.length - 1] !== li.dataset.status) seen.push(li.dataset.status);
  }
}).observe(document.documentElement, {subtree: true, childList: true, attributes: true, characterData: true});
"""


@pytest.fixture(scope="module")
def website(tmp_path_factory):
    """A copy of the UI served on an origin of its own, as from the S3 website: (its URL, its folder)."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    site = tmp_path_factory.mktemp("site")
    shutil.copytree(ROOT / "frontend", site, dirs_exist_ok=True)
    with serve_in_thread(Starlette(routes=[Mount("/", StaticFiles(directory=site, html=True))])) as url:
        yield url, site


@pytest.fixture(scope="module")
def hold(tmp_path_factory):
    """A file the stand-in waits on before it works: a test holds a job running, sees it, then lets it go."""
    return tmp_path_factory.mktemp("hold") / "hold"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, website, hold):
    # The agent takes a few seconds per task, so the page's 1 s polling sees it run; the website's origin is allowed.
    with running_stack(tmp_path_factory.mktemp("ui") / "state", agent_args=("--delay", "2.5", "--hold-while", str(hold)),
                       ALLOWED_ORIGINS=website[0]) as running:
        yield running


def open_ui(page, stack) -> None:
    page.goto(stack.api_url + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.evaluate(STATUS_RECORDER)


def fill_story(page, *, repo: str | None = None, title: str, description: str = "", criteria: str = "") -> None:
    if repo is not None:
        page.get_by_label("Repository").fill(repo)
    page.get_by_label("Title").fill(title)
    page.get_by_label("Description").fill(description)
    page.get_by_label("Acceptance criteria").fill(criteria)


def test_generate_code_goes_to_succeeded_and_links_the_pull_request(page, stack, browser_context, hold):
    from playwright.sync_api import expect

    open_ui(page, stack)
    expect(page.locator("#auth-badge")).to_have_text("local mode — no sign-in")
    expect(page.get_by_label("Repository")).to_have_value("local/example")
    fill_story(page, title="Multiply in the browser", description="A multiply() helper.",
               criteria="multiply(4, 5) == 20\nThe README mentions multiply")
    hold.touch()  # the agent waits until the page has been seen showing the running job
    page.get_by_role("button", name="Generate Code & PR").click()

    job = page.locator("li.job").first
    try:
        expect(job).to_have_attribute("data-status", "running", timeout=30_000)
        # While it runs, the job's latest log lines (log_tail) are on the page.
        expect(job.locator(".job-log")).to_contain_text("agent working", timeout=30_000)
        assert job.get_attribute("data-status") == "running"
    finally:
        hold.unlink(missing_ok=True)
    expect(job).to_have_attribute("data-status", "succeeded", timeout=60_000)
    job_id = job.get_attribute("data-job-id")
    states = page.evaluate("window.__jobStates")[job_id]
    assert states[0] == "queued" and states[-1] == "succeeded" and "running" in states, states

    api_job = httpx.get(f"{stack.api_url}/api/jobs/{job_id}", timeout=10).json()
    expect(job.locator(".job-status")).to_have_text("Succeeded")
    expect(job.locator("code.commit")).to_have_text(api_job["commit"][:12])
    link = job.get_by_role("link", name="Pull request #")
    href = link.get_attribute("href")
    assert href.startswith(f"{stack.api_url}/forge/local/example/pull/")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-succeeded.png"), full_page=True)

    # The pull request page a person opens from the link: title and the result comment (the stand-in says it is not
    # an AI there too); the callback may land a moment after the job ends.
    with browser_context.expect_page() as opened:
        link.click()
    pr_page = opened.value
    deadline = time.monotonic() + 15
    while "not an AI" not in pr_page.content() and time.monotonic() < deadline:
        time.sleep(0.5)
        pr_page.reload()
    assert "Multiply in the browser" in pr_page.content() and "not an AI" in pr_page.content()
    assert "def multiply(a, b):" in pr_page.content()  # the diff of the agent's change
    pr_page.screenshot(path=str(ARTIFACTS / "ui-pull-request.png"), full_page=True)
    pr_page.close()

    # The same story clicked again is the same pull request and job (same Idempotency-Key), not a second one.
    with page.expect_response(lambda r: r.url.endswith("/api/generate-code")) as again:
        page.get_by_role("button", name="Generate Code & PR").click()
    assert again.value.status == 200 and again.value.json()["job_id"] == job_id
    expect(page.locator("li.job")).to_have_count(1)

    # A reload keeps the list (localStorage) and shows the job's final state again.
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator(f'li.job[data-job-id="{job_id}"]')).to_have_attribute("data-status", "succeeded")

    # Readable on a phone: nothing wider than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(ARTIFACTS / "ui-succeeded-phone.png"), full_page=True)


def test_an_invalid_repository_shows_the_apis_error_using_the_keyboard_only(page, stack):
    from playwright.sync_api import expect

    open_ui(page, stack)
    story = {"repo": "not a repo", "title": "Bad repo", "description": "", "acceptance_criteria": []}
    detail = httpx.post(f"{stack.api_url}/api/generate-code", json=story, timeout=10).json()["detail"]

    jobs_before = page.locator("li.job").count()
    page.get_by_label("Repository").focus()
    page.keyboard.press("Control+A")
    page.keyboard.type("not a repo")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Title")).to_be_focused()
    page.keyboard.type("Bad repo")
    page.keyboard.press("Enter")

    error = page.get_by_role("alert").filter(has_text="Generate Code & PR failed")
    expect(error).to_be_visible()
    expect(error).to_contain_text(f"400: {detail}")
    expect(page.locator("li.job")).to_have_count(jobs_before)  # no job was added


def test_cancel_on_a_long_job_shows_cancelled(page, tmp_path):
    from playwright.sync_api import expect

    with running_stack(tmp_path / "state", agent_args=("--delay", "120"), pool_size=1) as slow:
        open_ui(page, slow)
        fill_story(page, title="A long story", criteria="double(2) == 4")
        page.get_by_role("button", name="Generate Code & PR").click()
        job = page.locator("li.job").first
        expect(job).to_have_attribute("data-status", "running", timeout=30_000)
        job.get_by_role("button", name="Cancel job A long story").click()
        expect(job).to_have_attribute("data-status", "cancelled", timeout=30_000)
        expect(job.locator(".job-detail")).to_have_text("Cancelled.")
        expect(job.get_by_role("button", name="Cancel job A long story")).to_be_hidden()
        job_id = job.get_attribute("data-job-id")
        assert httpx.get(f"{slow.api_url}/api/jobs/{job_id}", timeout=10).json()["status"] == "cancelled"


def test_token_mode_asks_for_the_token_and_sends_it_as_a_bearer_header(page, service_process, tmp_path):
    from playwright.sync_api import expect

    port = free_port()
    api = service_process("aipm_local.api", {
        "AIPM_SHARED_SECRET": "ui-test-secret-0123456789abcdef", "AIPM_STATE_DIR": str(tmp_path),
        "AIPM_FORGE": "local", "AIPM_AUTH": "token", "AIPM_UI_TOKEN": "the-right-token",
        "AIPM_UI_DIR": str(ROOT / "frontend"), "AIPM_API_PORT": str(port),
        "PR_PROCESSOR_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens: the job cannot start
    }, name="api-token")
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/health", proc=api.proc)
    page.goto(base + "/")
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#auth-badge")).to_have_text("signed out")
    expect(page.get_by_label("Bearer token")).to_be_visible()

    fill_story(page, title="Needs a token")
    page.get_by_role("button", name="Generate Code & PR").click()
    expect(page.locator("#form-error")).to_have_text("Sign in first: enter the API's bearer token above.")

    page.get_by_label("Bearer token").fill("a-wrong-token")
    page.get_by_role("button", name="Use token").click()
    page.get_by_role("button", name="Generate Code & PR").click()
    expect(page.locator("#form-error")).to_contain_text("401: the bearer token is not the UI token")
    expect(page.get_by_label("Bearer token")).to_be_visible()  # asked again

    page.get_by_label("Bearer token").fill("the-right-token")
    page.get_by_role("button", name="Use token").click()
    expect(page.locator("#auth-badge")).to_have_text("signed in (token)")
    page.get_by_role("button", name="Generate Code & PR").click()
    # Past sign-in: the API itself now fails on the PR processor that is not running, and says so.
    error = page.locator("#form-error")
    expect(error).to_contain_text("Generate Code & PR failed — 5", timeout=30_000)
    expect(error).not_to_contain_text("401")


def test_the_ui_on_its_own_origin_calls_the_api_named_in_config_json(page, stack, website):
    from playwright.sync_api import expect

    site_url, site = website
    (site / "config.json").write_text(json.dumps({"apiUrl": stack.api_url, "authMode": "none"}))
    page.goto(site_url + "/")
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#auth-badge")).to_have_text("local mode — no sign-in")
    fill_story(page, title="From the website", criteria="triple(3) == 9")
    with page.expect_response(lambda r: r.url == f"{stack.api_url}/api/generate-code") as sent:
        page.get_by_role("button", name="Generate Code & PR").click()
    assert sent.value.status == 202
    job = page.locator("li.job").first
    expect(job).to_have_attribute("data-status", "succeeded", timeout=60_000)
    href = job.get_by_role("link", name="Pull request #").get_attribute("href")
    assert href.startswith(f"{stack.api_url}/forge/local/example/pull/")
