"""``POST /api/jobs/{id}/rerun`` on the API: a new job on the ended job's branch and pull request, in http dispatch
(the PR processor numbers it) and in sqs dispatch (numbered after the runs whose result comments the pull request
has, sent to the job queue); 409 with the reason where a re-run cannot be."""

from __future__ import annotations

import json

import pytest

from tests.lambda_fn.conftest import REPO, callback

pytestmark = pytest.mark.timeout(60)


def _rerun(api, job_id: str, query: str = ""):
    return api.call("POST", f"/api/jobs/{job_id}/rerun", json={}, query=query)


def test_a_failed_job_is_run_again_on_its_pull_request_and_the_first_run_stays(api, github, processor):
    out = api.generate(story_id="again").json()
    assert _rerun(api, out["job_id"]).status_code == 409  # still queued
    processor.jobs[out["job_id"]]["status"] = "failed"
    answer = _rerun(api, out["job_id"])
    assert answer.status_code == 202, answer.text
    rerun = answer.json()
    assert rerun == {"job_id": out["job_id"] + "-r2", "rerun_of": out["job_id"], "repo": REPO,
                     "branch": out["branch"], "pr_number": out["pr_number"], "pr_url": out["pr_url"],
                     "status": "queued"}
    assert processor.jobs[out["job_id"]]["status"] == "failed"
    assert processor.jobs[rerun["job_id"]]["requested_by"] == "ui-token"
    assert github.pulls(REPO)[0]["labels"] == {"aipm:in-progress"}
    assert len(github.pulls(REPO)) == 1  # the same pull request


def test_the_result_of_a_rerun_is_a_comment_of_its_own(api, github, processor, shared_secret):
    out = api.generate(story_id="two-comments").json()
    processor.jobs[out["job_id"]]["status"] = "failed"
    new = _rerun(api, out["job_id"]).json()["job_id"]
    for job, status in ((out["job_id"], "failed"), (new, "succeeded")):
        result = {"job_id": job, "status": status, "commit": "c" * 40 if status == "succeeded" else None,
                  "error": None, "pr_number": out["pr_number"], "repo": REPO, "branch": out["branch"], "attempts": 1,
                  "duration_s": 1.0, "credits": None, "output_tail": ""}
        assert callback(api, shared_secret, result).status_code == 200
    firsts = [c["body"].split("\n", 1)[0] for c in github.comments_on(REPO, out["pr_number"])]
    assert firsts == [f"<!-- aipm-job:{out['job_id']} -->", f"<!-- aipm-job:{new} -->"]
    assert github.pulls(REPO)[0]["labels"] == {"aipm:succeeded"}
    forged = {**result, "job_id": out["job_id"] + "x-r2"}
    assert callback(api, shared_secret, forged).status_code == 400


def test_a_closed_pull_request_is_not_run_again_and_the_answer_says_why(api, github, processor):
    out = api.generate(story_id="closed").json()
    processor.jobs[out["job_id"]]["status"] = "succeeded"
    github.close_pull(REPO, out["pr_number"], merged=True)
    refused = _rerun(api, out["job_id"])
    assert refused.status_code == 409
    assert f"pull request #{out['pr_number']} is merged" in refused.json()["detail"]
    assert "Submit the story again" in refused.json()["detail"]
    assert _rerun(api, "j-unknown").status_code == 404


@pytest.fixture
def sqs_api(make_api, job_queue, monkeypatch):
    for name, value in job_queue.env().items():
        monkeypatch.setenv(name, value)
    return make_api(aipm_dispatch="sqs", aipm_job_queue_url=job_queue.url)


def test_with_sqs_dispatch_a_rerun_goes_to_the_queue_numbered_after_the_pull_requests_results(
        sqs_api, job_queue, github, shared_secret):
    out = sqs_api.generate(story_id="queued-again").json()
    query = f"repo={REPO}&branch={out['branch']}"
    refused = _rerun(sqs_api, out["job_id"], query)
    assert refused.status_code == 409 and "still dispatched" in refused.json()["detail"]
    assert _rerun(sqs_api, out["job_id"]).status_code == 400  # repo and branch say where to read it

    def ended(job_id: str, status: str) -> None:
        result = {"job_id": job_id, "status": status, "commit": None, "error": "boom", "pr_number": out["pr_number"],
                  "repo": REPO, "branch": out["branch"], "attempts": 1, "duration_s": 1.0, "credits": None,
                  "output_tail": ""}
        assert callback(sqs_api, shared_secret, result).status_code == 200

    ended(out["job_id"], "failed")
    job_queue.drain(job_queue.url)
    answer = _rerun(sqs_api, out["job_id"], query)
    assert answer.status_code == 202, answer.text
    second = answer.json()["job_id"]
    assert second == out["job_id"] + "-r2"
    [message] = job_queue.drain(job_queue.url)
    body = json.loads(message["Body"])
    assert (body["job_id"], body["branch"], body["pr_number"]) == (second, out["branch"], out["pr_number"])
    assert message["Attributes"]["MessageDeduplicationId"] == second
    # The pull request says a run is under way: another re-run waits for its result.
    assert _rerun(sqs_api, second, query).status_code == 409
    assert sqs_api.call("GET", f"/api/jobs/{second}", query=query).json()["status"] == "dispatched"

    ended(second, "cancelled")
    third = _rerun(sqs_api, second, query)
    assert third.status_code == 202 and third.json()["job_id"] == out["job_id"] + "-r3"


def test_the_same_story_again_names_its_pull_request_and_newest_run_instead_of_opening_another(
        make_api, github, processor):
    api = make_api()
    out = api.generate(story_id="known").json()
    processor.jobs[out["job_id"]]["status"] = "failed"
    again = api.generate(story_id="known")
    assert again.status_code == 200
    assert again.json()["detail"] == f"this story has pull request #{out['pr_number']} (failed): open it or re-run it"
    assert again.json()["existing"] is True and len(github.pulls(REPO)) == 1


def test_with_sqs_dispatch_the_same_story_during_a_rerun_names_the_rerun_and_queues_nothing(
        sqs_api, job_queue, shared_secret):
    out = sqs_api.generate(story_id="sqs-known").json()
    result = {"job_id": out["job_id"], "status": "failed", "commit": None, "error": "boom",
              "pr_number": out["pr_number"], "repo": REPO, "branch": out["branch"], "attempts": 1, "duration_s": 1.0,
              "credits": None, "output_tail": ""}
    assert callback(sqs_api, shared_secret, result).status_code == 200
    ended = sqs_api.generate(story_id="sqs-known").json()
    assert (ended["job_id"], ended["status"]) == (out["job_id"], "failed")
    assert "or re-run it" in ended["detail"]
    job_queue.drain(job_queue.url)
    rerun = _rerun(sqs_api, out["job_id"], f"repo={REPO}&branch={out['branch']}").json()
    job_queue.drain(job_queue.url)
    during = sqs_api.generate(story_id="sqs-known").json()
    assert (during["job_id"], during["status"]) == (rerun["job_id"], "dispatched")
    assert job_queue.drain(job_queue.url) == []  # nothing queued again
