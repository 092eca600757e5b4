"""The story form mirrors the API's limits: each field's maxlength (and the criteria's count and line length) is the
API's own, a counter says how much is used, and an error the API gives is shown beside the field it is about."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from lambda_fn.routes.api import GenerateRequest
from tests.e2e.local_stack import running_stack
from tests.support.servers import ROOT
from tests.ui.conftest import browser_marks

ARTIFACTS = ROOT / "test-artifacts"


class _Fields(HTMLParser):
    def __init__(self):
        super().__init__()
        self.fields: dict[str, dict[str, str | None]] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("input", "textarea") and attrs.get("name"):
            self.fields[attrs["name"]] = attrs


def test_every_limit_of_the_form_is_the_apis():
    parser = _Fields()
    parser.feed((ROOT / "frontend" / "index.html").read_text())
    form = parser.fields
    schema = GenerateRequest.model_json_schema()["properties"]

    def max_length(prop: dict) -> int:
        return next(v["maxLength"] for v in [prop, *prop.get("anyOf", [])] if "maxLength" in v)

    for field in ("repo", "title", "description", "base_branch", "story_id"):
        assert int(form[field]["maxlength"]) == max_length(schema[field]), field
    criteria = schema["acceptance_criteria"]
    assert int(form["criteria"]["data-max-items"]) == criteria["maxItems"]
    assert int(form["criteria"]["data-max-line"]) == criteria["items"]["maxLength"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("limits") / "state") as running:
        yield running


def _browser(fn):
    for mark in browser_marks(120):
        fn = mark(fn)
    return fn


@_browser
def test_counters_say_what_is_left_and_the_apis_422_is_shown_beside_its_field(page, stack):
    from playwright.sync_api import expect

    page.goto(stack.api_url + "/")
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#title-count")).to_have_text("0 / 200 characters")
    page.get_by_label("Title").fill("Limits")
    expect(page.locator("#title-count")).to_have_text("6 / 200 characters")
    expect(page.locator("#description-count")).to_have_text("0 / 65536 characters")
    page.get_by_label("Title").fill("x" * 250)  # maxlength keeps it to the API's limit
    expect(page.locator("#title-count")).to_have_text("200 / 200 characters")
    expect(page.locator("#title-count")).to_have_attribute("data-full", "true")

    page.get_by_label("Acceptance criteria").fill("\n".join(f"c{n}() == {n}" for n in range(101)))
    expect(page.locator("#criteria-count")).to_have_text("101 / 100 criteria")
    jobs_before = page.locator("li.job").count()
    page.get_by_role("button", name="Generate Code & PR").click()
    expect(page.locator("#criteria-error")).to_have_text("At most 100 acceptance criteria (there are 101).")
    expect(page.get_by_label("Acceptance criteria")).to_have_attribute("aria-invalid", "true")
    assert page.locator("li.job").count() == jobs_before

    # A page whose limit is out of date (its maxlength removed here) meets the API's: the 422 lands beside the field.
    page.get_by_label("Acceptance criteria").fill("ok() == 1")
    page.get_by_label("Title").fill("Too long a description")
    page.locator("#description").evaluate("el => el.removeAttribute('maxlength')")
    page.locator("#description").fill("d" * 65_537)
    page.get_by_role("button", name="Generate Code & PR").click()
    beside = page.locator("#description-error")
    expect(beside).to_contain_text("at most 65536 characters")
    expect(page.get_by_label("Description")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Description")).to_be_focused()
    expect(page.locator("#form-error")).to_contain_text("422")
    expect(page.locator("#criteria-error")).to_be_hidden()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-form-limits.png"), full_page=True)

    page.get_by_label("Repository").fill("not a repo")
    page.locator("#description").fill("")
    page.get_by_role("button", name="Generate Code & PR").click()
    expect(page.locator("#repo-error")).to_contain_text("repo must be of the form owner/name")
    expect(page.locator("#description-error")).to_be_hidden()
