"""A ``/aipm `` comment on a local pull request: TASK.md gets the follow-up, the branch's newest run is re-run, and a
reply says which job; refused with the reason while a run is live. A plain comment is only a comment."""

from __future__ import annotations

import pytest

from lambda_fn.followup import with_followup

pytestmark = pytest.mark.timeout(60)

REPO = "local/example"


def _comment(api, number: int, body: str):
    return api.call("POST", f"/api/forge/{REPO}/pulls/{number}/comments", json={"body": body})


def test_a_followup_waits_for_the_live_run_then_appends_to_task_md_and_reruns(local_api, processor):
    out = local_api.generate(repo=REPO, story_id="follow")
    assert out.status_code == 202, out.text
    out = out.json()
    plain = _comment(local_api, out["pr_number"], "Looks good so far")
    assert plain.status_code == 201 and plain.json()["followup"] is None

    live = _comment(local_api, out["pr_number"], "/aipm also say goodbye")
    assert live.status_code == 409 and "still queued" in live.json()["detail"]

    processor.jobs[out["job_id"]]["status"] = "succeeded"
    started = _comment(local_api, out["pr_number"], "/aipm also say goodbye")
    assert started.status_code == 201, started.text
    followup = started.json()["followup"]
    assert followup["number"] == 1 and followup["job_id"] == out["job_id"] + "-r2"
    assert processor.jobs[followup["job_id"]]["rerun_of"] == out["job_id"]
    forge = local_api.runtime.forge
    task = forge.get_file(REPO, out["branch"], "TASK.md")[0]
    assert "## Acceptance criteria" in task and task.rstrip().endswith("also say goodbye")
    assert f"## Follow-up 1 (a comment on pull request #{out['pr_number']} by `ui-token`)" in task
    bodies = [c.body for c in forge.list_comments(REPO, out["pr_number"])]
    assert any(b.startswith(f"Follow-up 1 started as job `{followup['job_id']}`") for b in bodies)


def test_followups_are_numbered_and_the_task_keeps_its_history():
    task, n = with_followup("# Story\n\ntext\n", "first change", pr_number=3, requested_by=None)
    task, m = with_followup(task, "second change", pr_number=3, requested_by="Ann")
    assert (n, m) == (1, 2)
    assert task.index("## Follow-up 1 (a comment on pull request #3)") < task.index("first change") < \
        task.index("## Follow-up 2 (a comment on pull request #3 by `Ann`)") < task.index("second change")
