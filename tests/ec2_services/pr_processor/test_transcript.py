"""A job's transcript and timeline as the job page reads them: every stored line, a page at a time, with the states
the job went through and when."""

from __future__ import annotations

from tests.ec2_services.pr_processor.conftest import BRANCH, REPO
from tests.ec2_services.pr_processor.fake_pool import Plan


def test_the_transcript_pages_through_every_line_and_the_timeline_names_each_state(start_processor, fake_pool):
    fake_pool.plan("j-talk", Plan(files={"a.py": "A = 1\n"}))
    proc = start_processor()
    assert proc.submit("j-talk", pr_number=4).status_code == 202
    job = proc.wait("j-talk")
    assert job["status"] == "succeeded", job
    assert [step["status"] for step in job["timeline"]] == ["queued", "running", "pushing", "succeeded"]
    assert all(step["at"].endswith("Z") for step in job["timeline"])
    assert job["started_at"] <= job["ended_at"] and job["pr_number"] == 4

    whole = proc.client.get("/api/jobs/j-talk/transcript").json()
    texts = [line["text"] for line in whole["lines"]]
    assert whole["complete"] is True and whole["live"] is None and whole["status"] == "succeeded"
    assert texts[0].startswith("[aipm] accepted: ") and texts[-1] == "[aipm] job ended: succeeded"
    assert "[agent] All tests pass." in texts
    assert any("agent finished" in t and "tool calls:" in t for t in texts), texts
    assert whole["next"] == whole["lines"][-1]["id"]

    # Two lines at a time, after the last one seen, gives the same lines in the same order.
    seen, after = [], 0
    while True:
        page = proc.client.get("/api/jobs/j-talk/transcript", params={"after": after, "limit": 2}).json()
        seen += [line["text"] for line in page["lines"]]
        after = page["next"]
        if page["complete"]:
            break
        assert len(page["lines"]) == 2
    assert seen == texts


def test_the_transcript_refuses_bad_bounds_and_unknown_jobs(start_processor):
    proc = start_processor()
    assert proc.submit("j-bounds", branch=BRANCH).status_code == 202
    for query in ({"after": -1}, {"limit": 0}, {"limit": 2001}, {"after": 2**63}):
        answer = proc.client.get("/api/jobs/j-bounds/transcript", params=query)
        assert answer.status_code == 422, (query, answer.text)
    assert proc.client.get("/api/jobs/j-none/transcript").status_code == 404


def test_the_history_is_paged_newest_first_and_filtered_by_repo_and_status(start_processor, fake_pool):
    proc = start_processor()
    for n in range(5):
        assert proc.submit(f"j-h{n}", branch=f"aipm/h-{n}", title=f"Story {n}").status_code == 202
    for n in range(5):
        proc.wait(f"j-h{n}")
    ids, before = [], None
    while True:
        params = {"limit": 2} | ({"before": before} if before else {})
        page = proc.client.get("/api/jobs", params=params).json()
        ids += [job["job_id"] for job in page["jobs"]]
        before = page["next_before"]
        if before is None:
            break
    assert ids == [f"j-h{n}" for n in reversed(range(5))]
    titled = proc.client.get("/api/jobs", params={"limit": 1}).json()["jobs"][0]
    assert titled["title"] == "Story 4"
    assert proc.client.get("/api/jobs", params={"repo": "nobody/else"}).json() == {"jobs": [], "next_before": None}
    assert len(proc.client.get("/api/jobs", params={"repo": REPO.upper()}).json()["jobs"]) == 5
    ended = titled["status"]
    assert {j["status"] for j in proc.client.get("/api/jobs", params={"status": ended}).json()["jobs"]} == {ended}
    assert proc.client.get("/api/jobs", params={"status": "cancelled"}).json()["jobs"] == []
    for query in ({"status": "bogus"}, {"before": 0}, {"limit": 0}, {"title": "x" * 10}):
        answer = proc.client.get("/api/jobs", params=query)
        assert answer.status_code == (200 if "title" in query else 422), (query, answer.text)
    assert proc.submit("j-long", branch="aipm/long", title="x" * 201).status_code == 422
