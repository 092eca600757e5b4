"""How the page follows a live job (frontend/js/follow.js), in headless Chromium against the real local stack with
the stand-in agent held running: with the API's event stream (the local stack, AIPM_DISPATCH=http) it reads the job
when the stream says something happened and otherwise seldom; where the API has no stream (a Lambda function URL, sqs
dispatch: the events answer 409, simulated here) it polls 1 s → 2 → 5 → 10 s while nothing changes, and not at all
while the tab is hidden. Every fetch the page makes is timed inside the page (performance.now())."""

from __future__ import annotations

import itertools
import json
import os
import time

import httpx
import pytest

from tests.e2e.local_stack import running_stack
from tests.support.servers import ROOT
from tests.ui.conftest import browser_marks

pytestmark = browser_marks(240)

# Every fetch the page makes, with the page's own clock (the modules call the global fetch at call time).
FETCH_LOG = """
window.__fetches = [];
const realFetch = window.fetch.bind(window);
window.fetch = (input, init) => {
  window.__fetches.push({t: performance.now(), url: String(input instanceof Request ? input.url : input)});
  return realFetch(input, init);
};
"""
SET_VISIBILITY = """(state) => {
  Object.defineProperty(document, "visibilityState", {configurable: true, get: () => state});
  document.dispatchEvent(new Event("visibilitychange"));
}"""


@pytest.fixture(scope="module")
def hold(tmp_path_factory):
    return tmp_path_factory.mktemp("hold") / "hold"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, hold):
    with running_stack(tmp_path_factory.mktemp("follow") / "state",
                       agent_args=("--delay", "1", "--hold-while", str(hold))) as running:
        yield running


def start_held_job(page, stack, hold, title: str) -> tuple[str, object]:
    """A job from the form, held running by the stand-in agent: (its id, its card)."""
    from playwright.sync_api import expect

    page.add_init_script(FETCH_LOG)
    page.goto(stack.api_url + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_label("Title").fill(title)
    hold.touch()
    page.get_by_role("button", name="Generate Code & PR").click()
    card = page.locator("li.job").first
    expect(card).to_have_attribute("data-status", "running", timeout=30_000)
    expect(card.locator(".job-log")).to_contain_text("agent working", timeout=30_000)
    return card.get_attribute("data-job-id"), card


def job_reads(page, job_id: str, since_ms: float = 0.0) -> list[float]:
    """When (page ms) the page asked GET /api/jobs/{id} (not its transcript or events) since ``since_ms``."""
    fetches = page.evaluate("window.__fetches")
    return [f["t"] for f in fetches if f["t"] >= since_ms and f["url"].split("?")[0].endswith(f"/api/jobs/{job_id}")]


def now_ms(page) -> float:
    return page.evaluate("performance.now()")


def record(name: str, **figures) -> None:
    """The measured figures, printed and kept in test-artifacts/ui-follow-<name>.json with the load average."""
    figures["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(f"\n[ui-follow] {name}: {json.dumps(figures)}")
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / f"ui-follow-{name}.json").write_text(json.dumps(figures, indent=1) + "\n")


def test_without_a_stream_the_page_backs_off_and_rests_while_hidden(page, stack, hold):
    from playwright.sync_api import expect

    refused = []

    def no_stream(route):  # what the deployed API (a Lambda function URL) and sqs dispatch answer
        refused.append(route.request.url)
        route.fulfill(status=409, content_type="application/json",
                      body='{"detail": "no event stream here: poll GET /api/jobs/{id}"}')

    page.route("**/api/jobs/*/events", no_stream)
    try:
        job_id, card = start_held_job(page, stack, hold, "Back off while held")
        page.wait_for_timeout(2000)  # the last change (the agent's first line) is behind us
        start = now_ms(page)
        page.wait_for_timeout(24_000)
        reads = job_reads(page, job_id, start)
        gaps = [round((b - a) / 1000, 1) for a, b in itertools.pairwise(reads)]
        record("poll", window_s=24, reads=len(reads), gaps_s=gaps)
        # 1 s polling would read 24 times; 1 → 2 → 5 → 10 s reads at most 6 (2 + 5 + 10 + 10 > 24 - 2).
        assert 2 <= len(reads) <= 6, (len(reads), gaps)
        assert gaps and max(gaps) >= 9.5, gaps  # it reached the 10 s step
        assert all(g >= 0.9 for g in gaps), gaps
        assert refused, "the page asked for the event stream first"
        assert len(refused) == 1, "after one 409 the page stops asking for streams"

        # Hidden: no read at all; shown again: a read at once.
        page.evaluate(SET_VISIBILITY, "hidden")
        hidden_at = now_ms(page)
        page.wait_for_timeout(12_000)
        assert job_reads(page, job_id, hidden_at) == []
        shown_at = now_ms(page)
        page.evaluate(SET_VISIBILITY, "visible")
        page.wait_for_timeout(1500)
        back = job_reads(page, job_id, shown_at)
        assert back and back[0] - shown_at < 1000, back
    finally:
        hold.unlink(missing_ok=True)
    # Released, the job ends and the page shows it within the back-off's reach.
    expect(card).to_have_attribute("data-status", "succeeded", timeout=60_000)


def test_with_the_local_apis_stream_the_page_follows_events_and_polls_seldom(page, stack, hold):
    from playwright.sync_api import expect

    streams = []
    page.on("response", lambda r: streams.append((r.status, r.headers.get("content-type", "")))
            if r.url.endswith("/events") else None)
    try:
        job_id, card = start_held_job(page, stack, hold, "Follow the stream while held")
        assert (200, "text/event-stream; charset=utf-8") in streams or any(
            s == 200 and t.startswith("text/event-stream") for s, t in streams), streams
        page.wait_for_timeout(2000)
        start = now_ms(page)
        page.wait_for_timeout(15_000)
        reads = job_reads(page, job_id, start)
        record("stream", window_s=15, reads=len(reads), at_s=[round((r - start) / 1000, 1) for r in reads])
        # With a stream open the poll is only a safety net: 2 → 5 → 10 → 30 s.
        assert len(reads) <= 4, [round(r - start) for r in reads]
    finally:
        hold.unlink(missing_ok=True)
    # The job's end arrives on the stream: the page shows it about when the API has it, not a poll step later.
    deadline = time.monotonic() + 60
    while httpx.get(f"{stack.api_url}/api/jobs/{job_id}", timeout=10).json()["status"] != "succeeded":
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.05)
    ended = time.monotonic()
    expect(card).to_have_attribute("data-status", "succeeded", timeout=3_000)
    record("stream-end", shown_after_s=round(time.monotonic() - ended, 2))
