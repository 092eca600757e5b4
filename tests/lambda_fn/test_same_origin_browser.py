"""Cross-site request forgery in a real browser: a page on another origin tries to cancel and to generate, and fails.

Headless Debian Chromium (tests/ui/conftest.py) loads an attacker's page served from another loopback origin. The
page submits a form to cancel the user's job, a text/plain form and a no-cors fetch to generate, and a JSON fetch
(which needs a preflight). The job stays as it was and no story is generated.
"""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tests.support.servers import serve_in_thread
from tests.ui.conftest import CHROMIUM, browser_context  # noqa: F401 - fixture

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's /usr/bin/chromium is not installed: run `make browser` "
                       "(apt-get install chromium); no browser is ever downloaded"),
]

ATTACK = """<!doctype html><html><body>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe>
<form id="cancel" method="POST" action="{api}/api/jobs/{job}/cancel" target="sink1">
  <input name="x" value="1"></form>
<form id="gen" method="POST" action="{api}/api/generate-code" target="sink2" enctype="text/plain">
  <input name='{{"repo":"Octo/Hello-World","title":"pwned","story_id":"pwned","x":"' value='"}}'></form>
<script>
const loaded = name => new Promise(resolve => document.querySelector(`iframe[name=${{name}}]`)
  .addEventListener("load", () => resolve("loaded"), {{once: true}}));
const settle = p => p.then(() => "sent", e => "failed: " + e.message);
window.attack = async () => {{
  const sinks = [loaded("sink1"), loaded("sink2")];
  document.getElementById("cancel").submit();
  document.getElementById("gen").submit();
  const body = JSON.stringify({{repo: "Octo/Hello-World", title: "pwned", story_id: "pwned-fetch"}});
  const fetches = [
    settle(fetch("{api}/api/generate-code", {{method: "POST", mode: "no-cors", body,
                                              headers: {{"Content-Type": "text/plain"}}}})),
    settle(fetch("{api}/api/jobs/{job}/cancel", {{method: "POST", mode: "no-cors"}})),
    settle(fetch("{api}/api/generate-code", {{method: "POST", body, headers: {{"Content-Type": "application/json"}}}})),
  ];
  return Promise.all([...sinks, ...fetches]);
}};
</script></body></html>"""


@pytest.fixture
def local_url(make_api):
    with make_api(aipm_auth="none", aipm_ui_token=None, allowed_origins="").serve() as url:
        yield url


def test_a_page_on_another_origin_can_neither_cancel_nor_generate(browser_context, local_url):  # noqa: F811
    job_id = httpx.post(f"{local_url}/api/generate-code", timeout=30,
                        json={"repo": "Octo/Hello-World", "title": "Add a greeting", "story_id": "victim"}).json()["job_id"]
    html = ATTACK.format(api=local_url, job=job_id)
    with serve_in_thread(Starlette(routes=[Route("/", lambda request: HTMLResponse(html))])) as evil:
        page = browser_context.new_page()
        try:
            page.goto(evil + "/")
            outcomes = page.evaluate("window.attack()")
        finally:
            page.close()
    assert outcomes[0] == outcomes[1] == "loaded"  # both forms were submitted and answered
    assert outcomes[4].startswith("failed")  # the JSON fetch's preflight is refused: no CORS for that origin
    assert httpx.get(f"{local_url}/api/jobs/{job_id}", timeout=10).json()["status"] != "cancelled"
    for story in ("pwned", "pwned-fetch"):
        jobs = httpx.get(f"{local_url}/api/jobs", params={"repo": "Octo/Hello-World", "story_id": story}, timeout=10)
        assert jobs.status_code == 200 and jobs.json()["jobs"] == [], jobs.text
