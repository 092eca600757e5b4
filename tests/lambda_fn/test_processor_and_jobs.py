"""The PR processor side: down → 502 and a comment on the PR; jobs read, found by story and cancelled through it."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from tests.lambda_fn.conftest import REPO, dead_url


def test_processor_down_is_a_502_and_the_pull_request_says_the_job_was_not_started(make_api, github):
    api = make_api(pr_processor_url=dead_url())
    resp = api.generate(story_id="down")
    assert resp.status_code == 502
    body = resp.json()
    assert "job was not started" in body["detail"] and "could not be reached" in body["detail"]
    assert body["pr_number"] == 1 and body["pr_url"].endswith("/pull/1") and body["branch"] == "aipm/story-down"
    [comment] = github.comments_on(REPO, 1)
    assert comment["body"].startswith(f"<!-- aipm-dispatch:{body['job_id']} -->")
    assert "was not started" in comment["body"]

    again = api.generate(story_id="down")  # still down: the same comment is edited, not a second one
    assert again.status_code == 502
    assert len(github.comments_on(REPO, 1)) == 1


def test_retry_after_the_processor_is_back_starts_the_same_job_and_says_so(make_api, github, processor):
    down = make_api(pr_processor_url=dead_url())
    failed = down.generate(story_id="back").json()
    up = make_api()
    resp = up.generate(story_id="back")
    assert resp.status_code == 200
    assert resp.json()["job_id"] == failed["job_id"] and resp.json()["pr_number"] == failed["pr_number"]
    assert list(processor.jobs) == [failed["job_id"]]
    [comment] = github.comments_on(REPO, failed["pr_number"])  # the "not started" comment, edited
    assert "The job has started" in comment["body"] and "was not started" not in comment["body"]
    assert up.generate(story_id="back").status_code == 200  # the processor knew the job: nothing to change
    assert len(github.comments_on(REPO, failed["pr_number"])) == 1


def test_processor_errors_are_retried_then_reported(api, github, processor):
    processor.fail_with = 503
    resp = api.generate(story_id="flaky")
    assert resp.status_code == 502 and "PR processor failed (503" in resp.json()["detail"]
    assert processor.calls == 3  # three attempts


def test_processor_refusing_the_signature_names_the_shared_secret(make_api, github, processor):
    api = make_api(aipm_shared_secret="another-secret-entirely-0123456789")
    resp = api.generate(story_id="sig")
    assert resp.status_code == 502 and "AIPM_SHARED_SECRET" in resp.json()["detail"]
    assert processor.submissions == []


def test_job_state_is_proxied_and_unknown_ids_are_404(api, github, processor):
    out = api.generate(story_id="j").json()
    job = api.call("GET", f"/api/jobs/{out['job_id']}")
    assert job.status_code == 200 and job.json()["status"] == "queued" and job.json()["branch"] == out["branch"]
    missing = api.call("GET", "/api/jobs/j-000000000000000000000000")
    assert missing.status_code == 404 and "not found" in missing.json()["detail"]
    assert api.call("GET", "/api/jobs/..%2Fetc").status_code in (400, 404)
    assert api.call("GET", "/api/jobs/-bad").status_code == 400
    for line_break in ("%0A", "%0D%0A"):  # a pattern's `$` matches before a final newline: fullmatch, not match
        for method, path in (("GET", f"/api/jobs/0{line_break}"), ("POST", f"/api/jobs/0{line_break}/cancel"),
                             ("GET", f"/api/jobs/{out['job_id']}{line_break}")):
            resp = api.call(method, path, json={} if method == "POST" else None)
            assert resp.status_code == 400 and "job id must match" in resp.json()["detail"], (path, resp.text)


def test_story_job_is_found_by_repo_and_story_id(api, github, processor):
    first = api.generate(story_id="find-me").json()
    github.close_pull(REPO, first["pr_number"])
    second = api.generate(story_id="find-me").json()
    resp = api.call("GET", "/api/jobs", query="repo=octo/hello-world&story_id=find-me")
    assert resp.status_code == 200
    jobs = resp.json()["jobs"]
    assert [j["job_id"] for j in jobs] == [second["job_id"], first["job_id"]]
    assert jobs[0]["pr_url"] == second["pr_url"] and jobs[0]["pr_state"] == "open" and jobs[1]["pr_state"] == "closed"
    assert api.call("GET", "/api/jobs", query="repo=octo/hello-world&story_id=never").json()["jobs"] == []
    assert api.call("GET", "/api/jobs", query="story_id=find-me").status_code == 400
    listed = api.call("GET", "/api/jobs", query="repo=Octo/Hello-World").json()["jobs"]
    assert {j["job_id"] for j in listed} == {first["job_id"], second["job_id"]}


def test_cancel_is_proxied_and_a_second_cancel_is_a_409(api, github, processor):
    out = api.generate(story_id="c").json()
    first = api.call("POST", f"/api/jobs/{out['job_id']}/cancel", json={})
    assert first.status_code == 200 and first.json()["status"] == "cancelled"
    second = api.call("POST", f"/api/jobs/{out['job_id']}/cancel", json={})
    assert second.status_code == 409 and "already ended" in second.json()["detail"]
    assert api.call("POST", "/api/jobs/j-000000000000000000000000/cancel", json={}).status_code == 404


@pytest.mark.parametrize("upstream,expected", [({"Retry-After": "7"}, {"7"}), ({}, {"10"}),
                                               ({"Retry-After": "soon"}, {"10"})])
def test_a_429_passed_on_from_the_pr_processor_carries_retry_after(api, github, processor, upstream, expected):
    out = api.generate(story_id="busy").json()
    processor.fail_with, processor.fail_headers = 429, upstream
    for method, path in (("GET", f"/api/jobs/{out['job_id']}"), ("POST", f"/api/jobs/{out['job_id']}/cancel")):
        resp = api.call(method, path, json={} if method == "POST" else None)
        assert resp.status_code == 429 and resp.headers.get("retry-after") in expected, (path, resp.headers)
    for story in ("busy", "busy-2"):  # the job sent again on its open PR, and a new PR's job
        sent = api.generate(story_id=story)
        assert sent.status_code == 429 and sent.headers.get("retry-after") in expected, sent.headers
        assert sent.json()["pr_number"] and "job was not started" in sent.json()["detail"]


def test_a_processor_retry_after_given_as_a_date_becomes_seconds(api, github, processor):
    out = api.generate(story_id="date").json()
    processor.fail_with, processor.fail_headers = 429, {"Retry-After": formatdate(time.time() + 30, usegmt=True)}
    resp = api.call("GET", f"/api/jobs/{out['job_id']}")
    assert resp.status_code == 429 and 28 <= int(resp.headers["retry-after"]) <= 31


def test_a_jobs_transcript_is_proxied_with_its_bounds_checked_at_the_edge(api, github, processor):
    out = api.generate(story_id="t").json()
    processor.jobs[out["job_id"]]["lines"] = ["[aipm] accepted", "[agent] hello", "[aipm] job ended: succeeded"]
    whole = api.call("GET", f"/api/jobs/{out['job_id']}/transcript")
    assert whole.status_code == 200
    assert [line["text"] for line in whole.json()["lines"]] == ["[aipm] accepted", "[agent] hello",
                                                               "[aipm] job ended: succeeded"]
    rest = api.call("GET", f"/api/jobs/{out['job_id']}/transcript", query="after=2").json()
    assert [line["text"] for line in rest["lines"]] == ["[aipm] job ended: succeeded"]
    for query in ("after=-1", "limit=0", "limit=2001", "after=x"):
        bad = api.call("GET", f"/api/jobs/{out['job_id']}/transcript", query=query)
        assert bad.status_code == 422, (query, bad.text)
    assert api.call("GET", "/api/jobs/j-000000000000000000000000/transcript").status_code == 404
    assert api.call("GET", "/api/jobs/-bad/transcript").status_code == 400


def test_the_history_is_paged_and_filtered_with_its_inputs_checked(api, github, processor):
    made = [api.generate(story_id=f"h{n}").json()["job_id"] for n in range(3)]
    first = api.call("GET", "/api/jobs", query="limit=2")
    assert first.status_code == 200
    page = first.json()
    assert [j["job_id"] for j in page["jobs"]] == made[::-1][:2] and page["next_before"]
    rest = api.call("GET", "/api/jobs", query=f"limit=2&before={page['next_before']}").json()
    assert [j["job_id"] for j in rest["jobs"]] == made[:1] and rest["next_before"] is None
    assert all(j["pr_url"].endswith(f"/pull/{j['pr_number']}") for j in page["jobs"])
    assert processor.submissions[-1]["title"]
    assert api.call("GET", "/api/jobs", query="status=failed").json()["jobs"] == []
    for query in ("status=bogus", "before=0", "limit=201", "repo=not%20a%20repo"):
        assert api.call("GET", "/api/jobs", query=query).status_code in (400, 422), query
