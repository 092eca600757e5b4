"""The browser for the UI tests: Debian's /usr/bin/chromium driven by Playwright, headless, one profile per module;
``browser_marks`` for a module's ``pytestmark`` and a fresh ``page`` per test."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


def browser_marks(timeout_s: int) -> list:
    """A browser test module's marks: ``browser``, a time limit, and a skip that says how to get Chromium."""
    return [
        pytest.mark.browser,
        pytest.mark.timeout(timeout_s),
        pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's /usr/bin/chromium is not installed: run `make "
                           "browser` (apt-get install chromium); no browser is ever downloaded"),
    ]


@pytest.fixture
def page(browser_context):
    page = browser_context.new_page()
    yield page
    page.close()


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
        try:
            yield context
        finally:
            context.close()
