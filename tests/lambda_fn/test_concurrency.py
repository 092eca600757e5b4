"""Ten identical clicks at once, over loopback with uvicorn: one branch, one TASK.md commit, one PR, one job."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.lambda_fn.conftest import REPO, UI_TOKEN

BODY = {"repo": REPO, "title": "Add a greeting", "description": "d", "acceptance_criteria": ["x"], "story_id": "S-10"}


def _burst(url: str, body: dict, n: int = 10) -> list[httpx.Response]:
    def one(_):
        return httpx.post(f"{url}/api/generate-code", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {UI_TOKEN}"})

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_ten_concurrent_identical_requests_make_one_pull_request_and_one_job(api, github, processor):
    with api.serve() as url:
        responses = _burst(url, BODY)
    assert sorted(r.status_code for r in responses) == [200] * 9 + [202], [r.text for r in responses]
    assert len({(r.json()["job_id"], r.json()["pr_number"], r.json()["branch"]) for r in responses}) == 1
    assert len(github.pulls(REPO)) == 1
    assert github.commit_count(REPO, "aipm/story-s-10") == github.commit_count(REPO, "main") + 1
    assert len(processor.jobs) == 1
    assert github.pulls(REPO)[0]["labels"] == {"aipm:in-progress"}


def test_ten_concurrent_identical_requests_on_the_local_forge(local_api, processor):
    with local_api.serve() as url:
        responses = _burst(url, {**BODY, "repo": "local/example"})
    assert sorted(r.status_code for r in responses) == [200] * 9 + [202], [r.text for r in responses]
    forge = local_api.runtime.forge
    assert [p["number"] for p in forge.list_pulls("local/example")] == [1]
    assert len(forge.commits("local/example", "main", "aipm/story-s-10")) == 1
    assert len(processor.jobs) == 1
