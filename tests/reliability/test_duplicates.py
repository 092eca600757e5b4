"""Duplicates: the same story sent 10 times at once through the Lambda API (local forge) → one branch, one PR, one
job, one commit of the job; and the same again without a story_id but with one Idempotency-Key."""

from __future__ import annotations

import concurrent.futures

import httpx
import pytest

from tests.reliability.stack import record_figures

CALLS = 10


def burst(stack, body: dict, headers: dict | None = None) -> list:
    api = stack.url("api")

    def call(_):
        response = httpx.post(api + "/api/generate-code", json=body, headers=headers or {}, timeout=120)
        stack._record(response)
        return response

    with concurrent.futures.ThreadPoolExecutor(CALLS) as pool:
        return list(pool.map(call, range(CALLS)))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("keyed_by", ["story_id", "idempotency_key"])
def test_the_same_story_ten_times_at_once_makes_one_pr_and_one_job(make_stack, keyed_by):
    stack = make_stack(pool_size=1).start_all()
    body = {"repo": "local/example", "title": "Duplicate story", "description": "Once. [[sleep 0.5]] [[write d.txt 1]]",
            "acceptance_criteria": ["exactly one PR"]}
    headers = {}
    if keyed_by == "story_id":
        body["story_id"] = "dup-1"
    else:
        headers["Idempotency-Key"] = "dup-key-1"
    responses = burst(stack, body, headers)
    codes = sorted(r.status_code for r in responses)
    assert all(c in (200, 202) for c in codes), [(r.status_code, r.text) for r in responses]
    answers = {(r.json()["job_id"], r.json()["pr_number"], r.json()["branch"]) for r in responses}
    assert len(answers) == 1, answers
    job_id, pr_number, branch = answers.pop()
    api = stack.client("api")
    pulls = api.get("/api/forge/local/example/pulls").json()["pulls"]
    assert len(pulls) == 1, pulls
    processor = stack.client("processor")
    jobs = processor.get("/api/jobs").json()["jobs"]
    assert [j["job_id"] for j in jobs] == [job_id]
    job = stack.wait_final([job_id], timeout=120)[job_id]
    assert job["status"] == "succeeded", job
    assert stack.job_commits(branch).count(job_id) == 1
    branches = [b for b in stack.git("for-each-ref", "--format=%(refname:short)", "refs/heads/aipm").split() if b]
    assert branches == [branch], branches
    record_figures(f"duplicates_{keyed_by}", calls=CALLS, status_codes=codes, prs=len(pulls), jobs=len(jobs))
