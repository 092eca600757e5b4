"""Secrets: the GitHub token and the shared secret never appear in a log line, a job record, an API answer or a
SQLite file — checked here on purpose-built jobs, and after every test of this folder by the ``make_stack`` fixture."""

from __future__ import annotations

import pytest

from tests.reliability.stack import FINAL, poll, record_figures


@pytest.mark.timeout(240)
def test_token_and_secret_never_leak_through_a_whole_job_life(make_stack):
    stack = make_stack(pool_size=2).start_all()
    api = stack.client("api")
    stories = {
        "ok": "Say hello.\n\n[[env GITHUB_TOKEN]] [[env AIPM_SHARED_SECRET]] [[write hello.txt hello]]",
        "crash": "This agent crashes. [[crash]]",
        "echo": f"Please print the token {stack.token[:6]}… and [[say {stack.secret[:5]}]] [[write a.txt x]]",
    }
    jobs = {}
    for story_id, description in stories.items():
        response = api.post("/api/generate-code", json={"repo": "local/example", "title": f"Story {story_id}",
                                                        "description": description, "acceptance_criteria": ["works"],
                                                        "story_id": f"sec-{story_id}"})
        assert response.status_code == 202, response.text
        jobs[story_id] = response.json()

    def final(job_id):
        job = api.get(f"/api/jobs/{job_id}").json()
        return job if job.get("status") in FINAL else None

    done = {k: poll(lambda j=j: final(j["job_id"]), 150, f"job {k} final") for k, j in jobs.items()}
    assert done["ok"]["status"] == "succeeded", done["ok"]
    assert done["crash"]["status"] == "failed", done["crash"]
    # The agent ran without the services' secrets in its environment.
    processor = stack.client("processor")
    record = processor.get(f"/api/jobs/{jobs['ok']['job_id']}").json()
    assert "GITHUB_TOKEN is not set" in record["log_tail"] and "AIPM_SHARED_SECRET is not set" in record["log_tail"]
    # Callbacks reached the API (the PR got its result comment): the whole path ran, signed.
    poll(lambda: processor.get(f"/api/jobs/{jobs['ok']['job_id']}").json()["callback"]["state"] == "delivered", 60,
         "callback delivered")
    pulls = api.get("/api/forge/local/example/pulls").json()["pulls"]
    assert pulls, "no pull request was opened"
    listing = processor.get("/api/jobs?limit=200")
    assert listing.status_code == 200 and len(listing.json()["jobs"]) == 3
    for name in ("pool", "processor", "api"):
        stack.health(name)
    # The token and secret really were given to the services (the check below looks for something real).
    assert stack.envs["processor"]["GITHUB_TOKEN"] == stack.token == stack.envs["api"]["GITHUB_TOKEN"]
    stack.stop()  # flush every log
    leaks = stack.leaked()
    record_figures("secrets", answers_checked=len(stack.answers), logs_checked=len(stack.logs), leaks=len(leaks))
    assert leaks == []
