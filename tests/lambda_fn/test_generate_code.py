"""POST /api/generate-code through the real Mangum handler (Function URL events) against the GitHub double."""

from __future__ import annotations

from lambda_fn.naming import job_id
from tests.lambda_fn.conftest import FUNCTION_DOMAIN, REPO, UI_ORIGIN, callback


def test_story_becomes_branch_task_pull_request_and_signed_job(api, github, processor):
    resp = api.generate(story_id="STORY-42", title="Add a greeting")
    assert resp.status_code == 202, resp.text
    out = resp.json()
    branch = "aipm/story-story-42"
    assert out == {"job_id": job_id(REPO, branch), "pr_number": 1, "pr_url": f"https://github.example/{REPO}/pull/1",
                   "branch": branch, "status": "queued", "existing": False}
    assert out["job_id"].startswith("j-") and len(out["job_id"]) == 26

    task = github.branch_file(REPO, branch, "TASK.md")
    assert task.startswith("# Add a greeting\n")
    assert "- [ ] greet('Ann') == 'Hello, Ann!'" in task
    assert "Work only inside this repository" in task and "Add or update tests" in task
    assert github.commit_count(REPO, branch) == github.commit_count(REPO, "main") + 1

    [pr] = github.pulls(REPO)
    assert (pr["head"], pr["base"], pr["state"], pr["labels"]) == (branch, "main", "open", {"aipm:in-progress"})
    assert out["job_id"] in pr["body"] and "Say hello." in pr["body"] and f"({UI_ORIGIN}/#/jobs/{out['job_id']})" in pr["body"]
    assert "Requested by: `ui-token`" in pr["body"]

    [job] = processor.submissions
    assert job == {"job_id": out["job_id"], "repo": REPO, "branch": branch, "base_branch": "main", "pr_number": 1,
                   "task_file": "TASK.md", "callback_url": f"https://{FUNCTION_DOMAIN}/api/callbacks/job",
                   "requested_by": "ui-token", "title": "Add a greeting"}


def test_job_end_is_reported_on_the_pull_request_once_and_edited_on_repeat(api, github, processor, shared_secret):
    out = api.generate(story_id="s1").json()
    result = {"job_id": out["job_id"], "status": "succeeded", "commit": "a" * 40, "error": None,
              "pr_number": out["pr_number"], "repo": REPO, "branch": out["branch"], "attempts": 1,
              "duration_s": 83.2, "credits": 0.42, "output_tail": "All tests pass."}
    first = callback(api, shared_secret, result)
    assert first.status_code == 200, first.text
    assert first.json()["comment"] == "created"
    [comment] = github.comments_on(REPO, out["pr_number"])
    assert comment["body"].startswith(f"<!-- aipm-job:{out['job_id']} -->\n")
    assert f"https://github.example/{REPO}/commit/{'a' * 40}" in comment["body"]
    assert "1m 23s" in comment["body"] and "0.42" in comment["body"] and "All tests pass." in comment["body"]
    assert github.pulls(REPO)[0]["labels"] == {"aipm:succeeded"}

    again = callback(api, shared_secret, {**result, "status": "failed", "commit": None, "error": "push rejected"})
    assert again.status_code == 200 and again.json()["comment"] == "updated"
    [edited] = github.comments_on(REPO, out["pr_number"])
    assert edited["id"] == comment["id"] and "push rejected" in edited["body"]
    assert github.pulls(REPO)[0]["labels"] == {"aipm:failed"}


def test_same_story_while_its_pull_request_is_open_answers_it_again_and_resends_the_job(api, github, processor):
    first = api.generate(story_id="S-7")
    second = api.generate(story_id="S-7", title="A different title this time")
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.json() == {**first.json(), "status": "queued", "existing": True,
                             "detail": f"this story has pull request #{first.json()['pr_number']} (queued): open it"}
    assert len(github.pulls(REPO)) == 1
    assert [s["job_id"] for s in processor.submissions] == [first.json()["job_id"]] * 2
    assert len(processor.jobs) == 1


def test_closed_pull_request_makes_the_story_move_to_a_numbered_branch(api, github, processor):
    first = api.generate(story_id="S-8").json()
    github.close_pull(REPO, first["pr_number"], merged=True)
    second = api.generate(story_id="S-8")
    assert second.status_code == 202
    assert second.json()["branch"] == "aipm/story-s-8-2" and second.json()["pr_number"] == 2
    github.close_pull(REPO, 2)
    assert api.generate(story_id="S-8").json()["branch"] == "aipm/story-s-8-3"
    assert len({s["job_id"] for s in processor.submissions}) == 3


def test_idempotency_key_stands_in_for_a_story(api, github):
    a = api.generate(title="Fix the login page!", headers={"Idempotency-Key": "click-1"})
    b = api.generate(title="Fix the login page!", headers={"Idempotency-Key": "click-1"})
    c = api.generate(title="Fix the login page!")
    assert (a.status_code, b.status_code, c.status_code) == (202, 200, 202)
    assert a.json()["branch"] == b.json()["branch"]
    assert a.json()["branch"].startswith("aipm/fix-the-login-page-") and len(a.json()["branch"]) == len(
        "aipm/fix-the-login-page-") + 6
    assert c.json()["branch"] != a.json()["branch"]
    assert len(github.pulls(REPO)) == 2


def test_repository_name_is_matched_case_insensitively_and_reported_canonically(api, github, processor):
    resp = api.generate(repo="octo/hello-world", story_id="x")
    assert resp.status_code == 202
    assert processor.submissions[0]["repo"] == REPO
    assert api.generate(repo="OCTO/HELLO-WORLD", story_id="x").status_code == 200


def test_base_branch_is_used_and_a_missing_one_is_a_clear_400(api, github, processor):
    missing = api.generate(story_id="b1", base_branch="release")
    assert missing.status_code == 400 and "release" in missing.json()["detail"]
    assert github.pulls(REPO) == []
    github.branches(REPO)  # the double still answers
    assert api.generate(story_id="b2", base_branch="main").json()["branch"] == "aipm/story-b2"


def test_story_run_again_after_its_pull_request_was_merged_gets_a_commit_and_a_pull_request_of_its_own(
        api, github, processor):
    first = api.generate(story_id="X").json()
    github.close_pull(REPO, first["pr_number"], merged=True)
    assert github.branch_file(REPO, "main", "TASK.md") is not None  # the merge put the first run's TASK.md on main

    second = api.generate(story_id="X")
    assert second.status_code == 202, second.text
    out = second.json()
    assert (out["branch"], out["pr_number"]) == ("aipm/story-x-2", 2)
    task = github.branch_file(REPO, out["branch"], "TASK.md")
    assert "`aipm/story-x-2`" in task and out["job_id"] in task  # the run is named: TASK.md differs from main's
    assert github.commit_count(REPO, out["branch"]) == github.commit_count(REPO, "main") + 1
    assert [s["job_id"] for s in processor.submissions] == [first["job_id"], out["job_id"]]
    assert api.generate(story_id="X").status_code == 200  # and a retry answers it, as for any open PR


def test_github_double_refuses_a_pull_request_whose_head_has_no_commits(github):
    import httpx

    github.create_branch(REPO, "aipm/empty")
    resp = httpx.post(f"{github.url}/repos/{REPO}/pulls", headers={"Authorization": f"Bearer {github.token}"},
                      json={"title": "t", "head": "aipm/empty", "base": "main"})
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["message"] == "No commits between main and aipm/empty"


def test_a_click_makes_7_github_calls_6_in_sequence_and_5_with_a_base_branch(api, github, processor):
    # The repository and the story's pull requests (and the base branch, when named) are read at once: the double
    # holds them until all have arrived, so a client making them one after another would wait 5 s and show it.
    github.gather("GET", r"^/repos/[^/]+/[^/]+$|/pulls$|/git/ref/heads/", 2, timeout=5)
    resp = api.generate(story_id="count")
    assert resp.status_code == 202, resp.text
    assert github.round_trips() == (7, 6), github.requests
    assert [m for m, _ in github.requests].count("GET") == 3  # repository, pull requests, base head: no TASK.md read

    github.requests.clear(), github.spans.clear(), github.gathers.clear()
    github.create_branch(REPO, "dev")
    github.gather("GET", r"^/repos/[^/]+/[^/]+$|/pulls$|/git/ref/heads/", 3, timeout=5)
    resp = api.generate(story_id="count-dev", base_branch="dev")
    assert resp.status_code == 202, resp.text
    assert github.round_trips() == (7, 5), github.requests

    github.requests.clear(), github.spans.clear(), github.gathers.clear()
    github.gather("GET", r"^/repos/[^/]+/[^/]+$|/pulls$|/git/ref/heads/", 3, timeout=5)
    again = api.generate(story_id="count-dev", base_branch="dev")  # answered again: the reads only, at once
    assert again.status_code == 200, again.text
    assert github.round_trips() == (3, 1), github.requests


def test_task_md_already_on_the_base_is_read_then_replaced_on_a_new_branch(api, github, processor, tmp_path):
    github.reset(tmp_path / "github-with-task")
    github.add_repo(REPO, files={"TASK.md": "an earlier story's task\n"})
    resp = api.generate(story_id="over")
    assert resp.status_code == 202, resp.text
    assert github.branch_file(REPO, "aipm/story-over", "TASK.md").startswith("# Add a greeting")
    assert github.branch_file(REPO, "main", "TASK.md") == "an earlier story's task\n"
    puts = [p for m, p in github.requests if m == "PUT"]
    assert len(puts) == 2 and github.commit_count(REPO, "aipm/story-over") == github.commit_count(REPO, "main") + 1
