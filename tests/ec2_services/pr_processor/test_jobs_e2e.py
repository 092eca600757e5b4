"""A job end to end through the real service process, a file:// forge and the scripted worker pool."""

from __future__ import annotations

import json

from tests.ec2_services.pr_processor.conftest import BRANCH, REPO
from tests.ec2_services.pr_processor.fake_pool import Plan


def test_job_that_writes_files_ends_succeeded_with_commit_on_remote_branch(start_processor, forge, fake_pool):
    fake_pool.plan("j-write", Plan(files={"hello.py": "print('hello')\n"}))
    proc = start_processor()
    before = forge.tip(REPO, BRANCH)

    response = proc.submit("j-write", pr_number=7, requested_by="alice")
    assert response.status_code == 202
    assert response.json() == {"job_id": "j-write", "status": "queued"}
    job = proc.wait("j-write")

    assert job["status"] == "succeeded", job
    assert job["attempts"] == 1 and job["error"] is None
    head = forge.log(REPO, BRANCH)[0]
    assert job["commit"] == head.sha == forge.tip(REPO, BRANCH)
    assert forge.log(REPO, BRANCH)[1].sha == before
    assert (head.author, head.email) == ("Test Bot", "test-bot@example.com")
    assert "AIPM-Job: j-write" in head.body and "j-write" in head.subject + head.body
    assert head.subject == "aipm: Add a greeting"
    assert forge.show(REPO, job["commit"], "hello.py") == "print('hello')\n"
    assert job["credits"] == 1.25 and job["duration_s"] > 0 and job["queue_position"] is None
    assert job["created_at"].endswith("Z") and job["updated_at"].endswith("Z")
    assert job["callback"] == {"state": "none", "attempts": 0, "last_status": None, "last_error": None}
    assert "All tests pass." in job["log_tail"] and "pushed" in job["log_tail"]
    # The prompt names absolute paths of the workspace and the task file, and the cwd is that workspace.
    body = fake_pool.executes[0]
    assert body["task_id"] == "j-write.1" and body["timeout_s"] is None
    workspace = str(proc.state_dir / "workspaces" / "j-write.1")
    assert body["cwd"] == workspace
    assert workspace in body["prompt"] and f"{workspace}/TASK.md" in body["prompt"]
    # The worktree is removed after the job.
    assert not (proc.state_dir / "workspaces" / "j-write.1").exists()
    # The JSON log carries the job id and CloudWatch EMF metrics.
    records = [json.loads(line) for line in proc.output().splitlines() if line.startswith("{")]
    assert any(r.get("job_id") == "j-write" and "pushed" in r["message"] for r in records)
    metrics = {}
    for record in (r for r in records if "_aws" in r):
        (directive,) = record["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "AIPM" and directive["Dimensions"] == [["Service"]]
        assert record["Service"] == "pr-processor"
        for metric in directive["Metrics"]:
            metrics[metric["Name"]] = record[metric["Name"]]
    assert metrics["JobsStarted"] == 1 and metrics["JobsSucceeded"] == 1 and metrics["JobDuration"] > 0
    assert "QueueDepth" in metrics


def test_agent_that_changes_nothing_ends_no_changes(start_processor, forge, fake_pool):
    proc = start_processor()
    before = forge.tip(REPO, BRANCH)
    assert proc.submit("j-idle").status_code == 202
    job = proc.wait("j-idle")
    assert job["status"] == "no_changes" and job["commit"] is None
    assert forge.tip(REPO, BRANCH) == before


def test_commit_made_by_the_agent_itself_is_pushed_without_another(start_processor, forge, fake_pool):
    fake_pool.plan("j-self", Plan(files={"a.txt": "a\n"}, commit_message="agent: add a.txt"))
    proc = start_processor()
    job = proc.wait("j-self") if proc.submit("j-self").status_code == 202 else None
    assert job and job["status"] == "succeeded"
    head = forge.log(REPO, BRANCH)[0]
    assert head.subject == "agent: add a.txt" and job["commit"] == head.sha
    assert forge.log(REPO, BRANCH)[1].subject.startswith("Add TASK.md")


def test_two_jobs_on_two_branches_of_one_repo_run_at_once(start_processor, forge, fake_pool):
    fake_pool.plan("j-one", Plan(files={"one.txt": "1\n"}, sleep=1.0))
    fake_pool.plan("j-two", Plan(files={"two.txt": "2\n"}, sleep=1.0))
    proc = start_processor()
    assert proc.submit("j-one", branch="aipm/story-1").status_code == 202
    assert proc.submit("j-two", branch="aipm/story-2").status_code == 202
    one, two = proc.wait("j-one"), proc.wait("j-two")
    assert one["status"] == two["status"] == "succeeded"
    assert fake_pool.max_running == 2
    assert forge.show(REPO, "aipm/story-1", "one.txt") == "1\n"
    assert forge.show(REPO, "aipm/story-2", "two.txt") == "2\n"
    assert "two.txt" not in forge.show(REPO, "aipm/story-1", "") and "one.txt" not in forge.show(REPO, "aipm/story-2", "")


def test_branch_moved_during_job_is_rebased_and_pushed(start_processor, forge, fake_pool):
    def someone_pushes(cwd):
        forge.push_commit(REPO, BRANCH, {"human.txt": "by a human\n"}, "human: meanwhile")

    fake_pool.plan("j-race", Plan(files={"bot.txt": "by the bot\n"}, action=someone_pushes))
    proc = start_processor()
    assert proc.submit("j-race").status_code == 202
    job = proc.wait("j-race")
    assert job["status"] == "succeeded", job
    log = forge.log(REPO, BRANCH)
    assert log[0].sha == job["commit"] and "AIPM-Job: j-race" in log[0].body
    assert log[1].subject == "human: meanwhile"
    assert forge.show(REPO, BRANCH, "bot.txt") == "by the bot\n" and forge.show(REPO, BRANCH, "human.txt")
    assert "rebas" in job["log_tail"]


def test_conflicting_move_of_the_branch_fails_clearly(start_processor, forge, fake_pool):
    def conflicting(cwd):
        forge.push_commit(REPO, BRANCH, {"README.md": "theirs\n"}, "human: rewrite readme")

    fake_pool.plan("j-clash", Plan(files={"README.md": "ours\n"}, action=conflicting))
    proc = start_processor()
    assert proc.submit("j-clash").status_code == 202
    job = proc.wait("j-clash")
    assert job["status"] == "failed" and job["attempts"] == 1
    assert "does not apply" in job["error"]
    assert forge.log(REPO, BRANCH)[0].subject == "human: rewrite readme"


def test_same_job_id_twice_makes_one_job_and_other_id_on_live_branch_is_409(start_processor, forge, fake_pool):
    fake_pool.plan("j-same", Plan(sleep=1.0, files={"x.txt": "x\n"}))
    proc = start_processor()
    assert proc.submit("j-same").status_code == 202
    again = proc.submit("j-same")
    assert again.status_code == 200 and again.json()["job_id"] == "j-same"
    assert again.json()["status"] in {"queued", "running"}
    other = proc.submit("j-other")
    assert other.status_code == 409 and "j-same" in other.json()["detail"]
    done = proc.wait("j-same")
    assert proc.submit("j-same").json()["status"] == "succeeded"
    assert len(fake_pool.started_tasks("j-same")) == 1
    assert len([c for c in forge.log(REPO, BRANCH) if "AIPM-Job: j-same" in c.body]) == 1
    assert done["commit"] == forge.tip(REPO, BRANCH)


def test_missing_branch_or_task_file_fails_at_once_without_retries(start_processor, forge, fake_pool):
    proc = start_processor(PR_MAX_ATTEMPTS="3")
    assert proc.submit("j-nobranch", branch="aipm/does-not-exist").status_code == 202
    assert proc.submit("j-notask", branch="aipm/story-2", task_file="docs/NOPE.md").status_code == 202
    nobranch, notask = proc.wait("j-nobranch"), proc.wait("j-notask")
    assert nobranch["status"] == "failed" and nobranch["attempts"] == 1
    assert "does not exist" in nobranch["error"]
    assert notask["status"] == "failed" and notask["attempts"] == 1 and "docs/NOPE.md" in notask["error"]
    assert fake_pool.executes == []


def test_jobs_list_is_newest_first_with_limit_and_status_filter(start_processor, forge, fake_pool):
    proc = start_processor()
    for n, branch in enumerate(("aipm/story-1", "aipm/story-2", "aipm/story-3")):
        assert proc.submit(f"j-list-{n}", branch=branch).status_code == 202
    for n in range(3):
        proc.wait(f"j-list-{n}")
    listed = proc.client.get("/api/jobs").json()["jobs"]
    assert [j["job_id"] for j in listed] == ["j-list-2", "j-list-1", "j-list-0"]
    assert [j["job_id"] for j in proc.client.get("/api/jobs?limit=1").json()["jobs"]] == ["j-list-2"]
    assert proc.client.get("/api/jobs?status=succeeded").json()["jobs"] == []
    assert len(proc.client.get("/api/jobs?status=no_changes").json()["jobs"]) == 3
    assert proc.client.get("/api/jobs/j-unknown").status_code == 404
    health = proc.health()
    assert health == {"status": "ok", "jobs": {"queued": 0, "running": 0}, "worker_pool": "ok", "job_store": "ok"}


def test_events_stream_job_lines_until_the_job_ends(start_processor, forge, fake_pool):
    fake_pool.plan("j-sse", Plan(files={"s.txt": "s\n"}, sleep=0.5, output="line one\nline two"))
    proc = start_processor()
    assert proc.submit("j-sse").status_code == 202
    events: list[tuple[str, str]] = []
    with proc.client.stream("GET", "/api/jobs/j-sse/events", timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, line[6:]))
    lines = [data for kind, data in events if kind == "line"]
    assert any("accepted" in line for line in lines)
    assert "[agent] line one" in lines and "[agent] line two" in lines
    assert events[-1][0] == "end" and '"succeeded"' in events[-1][1]
