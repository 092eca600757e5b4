"""The local forge's comment box: a plain comment is only a comment; a ``/aipm `` comment is a follow-up
(``lambda_fn.followup``): refused in the thread while a run is live, then TASK.md gets it and the newest run is re-run."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(60)

REPO = "local/example"


def _comment(api, number: int, body: str):
    return api.call("POST", f"/api/forge/{REPO}/pulls/{number}/comments", json={"body": body})


def test_the_comment_box_starts_a_follow_up_once_the_live_run_has_ended(local_api, processor):
    out = local_api.generate(repo=REPO, story_id="follow")
    assert out.status_code == 202, out.text
    out = out.json()
    plain = _comment(local_api, out["pr_number"], "Looks good so far")
    assert plain.status_code == 201 and plain.json()["followup"] is None

    live = _comment(local_api, out["pr_number"], "/aipm also say goodbye")
    assert live.status_code == 201 and "still queued" in live.json()["followup"]["ignored"]

    processor.jobs[out["job_id"]]["status"] = "succeeded"
    started = _comment(local_api, out["pr_number"], "/aipm also say goodbye")
    assert started.status_code == 201, started.text
    assert started.json()["followup"] == {"started": out["job_id"] + "-r2"}
    assert processor.jobs[out["job_id"] + "-r2"]["rerun_of"] == out["job_id"]
    forge = local_api.runtime.forge
    task = forge.get_file(REPO, out["branch"], "TASK.md")[0]
    assert "## Acceptance criteria" in task and "## Follow-up 1" in task and task.rstrip().endswith("also say goodbye")
    bodies = [c.body for c in forge.list_comments(REPO, out["pr_number"])]
    assert any("No follow-up was started" in b for b in bodies)
    assert any(f"Follow-up started as job `{out['job_id']}-r2`" in b for b in bodies)
