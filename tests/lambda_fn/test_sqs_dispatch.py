"""AIPM_DISPATCH=sqs on the API: generate-code puts one message per job on the FIFO queue (moto server on loopback)
instead of calling the PR processor; a job's state comes from its pull request's label; cancel is refused clearly.
"""

from __future__ import annotations

import json

import pytest

from aipm_common.settings import SettingsError, load_settings
from lambda_fn.naming import job_id
from lambda_fn.settings import LambdaSettings
from tests.lambda_fn.conftest import FUNCTION_DOMAIN, REPO, callback, dead_url

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sqs_api(make_api, job_queue, monkeypatch):
    for name, value in job_queue.env().items():
        monkeypatch.setenv(name, value)
    return make_api(aipm_dispatch="sqs", aipm_job_queue_url=job_queue.url)


def _messages(queue) -> list[dict]:
    got = queue.drain(queue.url)
    for message in got:  # back to the queue, so counts stay what the API left
        queue.client.change_message_visibility(QueueUrl=queue.url, ReceiptHandle=message["ReceiptHandle"],
                                               VisibilityTimeout=0)
    return got


def test_generate_code_puts_the_process_pr_body_on_the_queue_with_the_job_as_group_and_dedup_id(
        sqs_api, job_queue, processor, github):
    resp = sqs_api.generate(story_id="Q-1")
    assert resp.status_code == 202, resp.text
    out = resp.json()
    branch = "aipm/story-q-1"
    assert out["status"] == "queued" and out["job_id"] == job_id(REPO, branch)

    [message] = _messages(job_queue)
    assert json.loads(message["Body"]) == {
        "job_id": out["job_id"], "repo": REPO, "branch": branch, "base_branch": "main", "pr_number": out["pr_number"],
        "task_file": "TASK.md", "callback_url": f"https://{FUNCTION_DOMAIN}/api/callbacks/job",
        "requested_by": "ui-token", "title": "Add a greeting"}
    assert message["Attributes"]["MessageGroupId"] == out["job_id"]
    assert message["Attributes"]["MessageDeduplicationId"] == out["job_id"]
    assert processor.submissions == [] and processor.calls == 0  # no PR processor is called in this mode
    assert github.pulls(REPO)[0]["labels"] == {"aipm:in-progress"}


def test_the_same_story_again_answers_its_pull_request_and_the_queue_keeps_one_message(sqs_api, job_queue):
    first = sqs_api.generate(story_id="Q-2")
    second = sqs_api.generate(story_id="Q-2", title="Clicked twice")
    assert (first.status_code, second.status_code) == (202, 200), second.text
    assert second.json()["job_id"] == first.json()["job_id"]
    assert job_queue.counts() == (1, 0)
    assert len(_messages(job_queue)) == 1


def test_job_state_is_read_from_the_pull_request_label(sqs_api, job_queue, shared_secret):
    out = sqs_api.generate(story_id="Q-3").json()
    query = f"repo={REPO}&branch={out['branch']}"
    job = sqs_api.call("GET", f"/api/jobs/{out['job_id']}", query=query)
    assert job.status_code == 200, job.text
    assert job.json()["status"] == "dispatched" and job.json()["pr_number"] == out["pr_number"]

    result = {"job_id": out["job_id"], "status": "succeeded", "commit": "b" * 40, "error": None,
              "pr_number": out["pr_number"], "repo": REPO, "branch": out["branch"], "attempts": 1,
              "duration_s": 3.0, "credits": None, "output_tail": "done"}
    assert callback(sqs_api, shared_secret, result).status_code == 200
    assert sqs_api.call("GET", f"/api/jobs/{out['job_id']}", query=query).json()["status"] == "succeeded"
    [story_job] = sqs_api.call("GET", "/api/jobs", query=f"repo={REPO}&story_id=Q-3").json()["jobs"]
    assert (story_job["job_id"], story_job["status"]) == (out["job_id"], "succeeded")

    # Clicked again after the end: the job is not queued a second time (a host that never saw it would run it).
    _messages(job_queue)  # the first message is still there (no host in this test)
    again = sqs_api.generate(story_id="Q-3")
    assert (again.status_code, again.json()["status"]) == (200, "succeeded")
    assert job_queue.counts() == (1, 0)


def test_reading_a_job_without_its_branch_or_cancelling_it_says_what_sqs_mode_needs(sqs_api):
    out = sqs_api.generate(story_id="Q-4").json()
    bare = sqs_api.call("GET", f"/api/jobs/{out['job_id']}")
    assert bare.status_code == 400 and "?repo=owner/name&branch=" in bare.json()["detail"]
    wrong = sqs_api.call("GET", f"/api/jobs/{out['job_id']}", query=f"repo={REPO}&branch=aipm/story-other")
    assert wrong.status_code == 404
    listed = sqs_api.call("GET", "/api/jobs")
    assert listed.status_code == 400 and "story_id" in listed.json()["detail"]
    cancel = sqs_api.call("POST", f"/api/jobs/{out['job_id']}/cancel", json={})
    assert cancel.status_code == 409 and "AIPM_DISPATCH=http" in cancel.json()["detail"]


def test_a_queue_that_cannot_be_reached_is_a_503_and_a_comment_on_the_pull_request(make_api, job_queue, github,
                                                                                     monkeypatch):
    for name, value in job_queue.env(AWS_ENDPOINT_URL_SQS=dead_url()).items():
        monkeypatch.setenv(name, value)
    api = make_api(aipm_dispatch="sqs", aipm_job_queue_url=job_queue.url)
    resp = api.generate(story_id="Q-5")
    assert resp.status_code == 503, resp.text
    body = resp.json()
    assert "job was not started" in body["detail"] and "job queue could not be reached" in body["detail"]
    assert body["pr_number"] == 1
    [comment] = github.comments_on(REPO, 1)
    assert "was not started" in comment["body"]


def test_a_queue_that_does_not_exist_is_a_502_naming_the_variable(make_api, job_queue, monkeypatch):
    for name, value in job_queue.env().items():
        monkeypatch.setenv(name, value)
    api = make_api(aipm_dispatch="sqs", aipm_job_queue_url=job_queue.url.replace(".fifo", "-gone.fifo"))
    resp = api.generate(story_id="Q-6")
    assert resp.status_code == 502, resp.text
    assert "the job queue refused" in resp.json()["detail"] and "AIPM_JOB_QUEUE_URL" in resp.json()["detail"]


def test_sqs_mode_without_a_fifo_queue_url_does_not_start():
    with pytest.raises(SettingsError, match="AIPM_JOB_QUEUE_URL"):
        load_settings(LambdaSettings, aipm_dispatch="sqs")
    with pytest.raises(SettingsError, match="FIFO"):
        load_settings(LambdaSettings, aipm_dispatch="sqs", aipm_job_queue_url="https://sqs.us-east-1.amazonaws.com/1/q")
    assert load_settings(LambdaSettings).aipm_dispatch == "http"


def test_one_viewer_polling_a_running_job_for_ten_minutes_spends_almost_none_of_githubs_rate_limit(
        sqs_api, github, shared_secret):
    """The job page polls its job every second; in sqs mode each poll reads the pull request. The repository's name is
    asked once per container and the pull requests with If-None-Match: GitHub answers 304 while nothing changed,
    and does not count a 304 against the token's 5,000 calls an hour. 600 polls (ten minutes) stay within 60 counted
    calls, and a change (the result's label) is seen on the next poll."""
    out = sqs_api.generate(story_id="Q-poll").json()
    query = f"repo={REPO}&branch={out['branch']}"
    before, not_modified = len(github.requests), github.not_modified
    for _ in range(600):
        job = sqs_api.call("GET", f"/api/jobs/{out['job_id']}", query=query)
        assert job.status_code == 200 and job.json()["status"] == "dispatched", job.text
    calls = [call for call in github.requests[before:] if call[0] == "GET"]
    counted = len(calls) - (github.not_modified - not_modified)
    assert counted <= 60, (counted, calls[:5])
    assert len(calls) <= 601  # one conditional read per poll, the repository once

    result = {"job_id": out["job_id"], "status": "succeeded", "commit": "c" * 40, "error": None,
              "pr_number": out["pr_number"], "repo": REPO, "branch": out["branch"], "attempts": 1,
              "duration_s": 3.0, "credits": None, "output_tail": "done"}
    assert callback(sqs_api, shared_secret, result).status_code == 200
    assert sqs_api.call("GET", f"/api/jobs/{out['job_id']}", query=query).json()["status"] == "succeeded"
