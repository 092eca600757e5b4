"""``POST /api/jobs/{id}/rerun``: a new job on the ended job's branch and pull request, the earlier runs kept."""

from __future__ import annotations

from tests.ec2_services.pr_processor.conftest import BRANCH, REPO
from tests.ec2_services.pr_processor.fake_pool import Plan


def test_a_failed_job_is_run_again_on_its_branch_with_every_run_kept(start_processor, forge, fake_pool):
    fake_pool.plan("j-story", Plan(status=502), Plan(status=502))
    fake_pool.plan("j-story-r2", Plan(files={"fixed.txt": "fixed\n"}))
    proc = start_processor(PR_MAX_ATTEMPTS="2")
    assert proc.submit("j-story", pr_number=7, title="A story").status_code == 202
    assert proc.wait("j-story")["status"] == "failed"

    answer = proc.client.post("/api/jobs/j-story/rerun", json={"requested_by": "Ann <ann@example.com>"})
    assert answer.status_code == 202, answer.text
    rerun = answer.json()
    assert rerun["job_id"] == "j-story-r2" and rerun["rerun_of"] == "j-story"
    assert (rerun["branch"], rerun["pr_number"], rerun["title"]) == (BRANCH, 7, "A story")
    done = proc.wait("j-story-r2")
    assert done["status"] == "succeeded" and forge.show(REPO, BRANCH, "fixed.txt") == "fixed\n"
    assert [(r["job_id"], r["status"]) for r in done["runs"]] == [("j-story", "failed"), ("j-story-r2", "succeeded")]
    first = proc.job("j-story")
    assert first["status"] == "failed" and first["attempts"] == 2  # the first run's attempts stay as they were
    assert [r["job_id"] for r in first["runs"]] == ["j-story", "j-story-r2"]

    # A re-run of any run is numbered after every run of the branch.
    third = proc.client.post("/api/jobs/j-story/rerun")
    assert third.status_code == 202 and third.json()["job_id"] == "j-story-r3"
    proc.wait("j-story-r3")


def test_a_live_job_or_a_busy_branch_is_not_run_again_and_the_answer_says_why(start_processor, fake_pool):
    fake_pool.plan("j-live", Plan(hang=True))
    proc = start_processor()
    assert proc.client.post("/api/jobs/j-none/rerun").status_code == 404
    assert proc.submit("j-live").status_code == 202
    proc.wait("j-live", lambda j: j["status"] == "running")
    refused = proc.client.post("/api/jobs/j-live/rerun")
    assert refused.status_code == 409 and "still running" in refused.json()["detail"]

    assert proc.client.post("/api/jobs/j-live/cancel").status_code == 200
    assert proc.wait("j-live")["status"] == "cancelled"
    bad = proc.client.post("/api/jobs/j-live/rerun", json={"requested_by": "Eve <x>\nCo-authored-by: y"})
    assert bad.status_code in (400, 422), bad.text
    again = proc.client.post("/api/jobs/j-live/rerun")
    assert again.status_code == 202 and again.json()["job_id"] == "j-live-r2"
    busy = proc.client.post("/api/jobs/j-live/rerun")
    assert busy.status_code == 409 and "already has a live job (j-live-r2)" in busy.json()["detail"]
    proc.wait("j-live-r2")
