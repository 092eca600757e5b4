"""The local forge: real bare repositories and SQLite pull requests, shown by the API's own pages — the whole
Generate Code & PR path without GitHub, as ``make run`` uses it."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from aipm_local.forge.local import ensure_example_repo
from lambda_fn.forge.base import NoCommits
from tests.lambda_fn.conftest import callback

EXAMPLE = "local/example"


def _commit_on(branch_dir, forge_dir, branch: str) -> str:
    """What the PR processor does: clone, change, commit, push to the branch."""
    subprocess.run(["git", "clone", "-q", "--branch", branch, str(forge_dir / "local/example.git"), str(branch_dir)],
                   check=True)
    (branch_dir / "example" / "greet.py").write_text("def greet(name):\n    return f'Hello, {name}!'\n")
    env = {"GIT_AUTHOR_NAME": "bot", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "bot", "GIT_COMMITTER_EMAIL": "b@x",
           "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "add", "-A"], cwd=branch_dir, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "Add greet()"], cwd=branch_dir, check=True, env=env)
    subprocess.run(["git", "push", "-q", "origin", branch], cwd=branch_dir, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=branch_dir, check=True, capture_output=True,
                          text=True).stdout.strip()


def test_example_repository_is_a_small_python_project_on_main(tmp_path):
    bare = ensure_example_repo(tmp_path / "forge")
    assert bare == tmp_path / "forge" / "local" / "example.git"
    assert ensure_example_repo(tmp_path / "forge") == bare  # idempotent
    work = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True)
    head = subprocess.run(["git", "branch", "--show-current"], cwd=work, capture_output=True, text=True).stdout.strip()
    assert head == "main"
    assert (work / "tests" / "test_calc.py").exists() and (work / "example" / "calc.py").exists()
    tests = subprocess.run(["python", "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=work, capture_output=True,
                           text=True)
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_generate_on_the_local_forge_then_result_shows_on_the_pull_request_page(local_api, processor, shared_secret,
                                                                                tmp_path):
    resp = local_api.generate(repo="Local/Example", story_id="greet")
    assert resp.status_code == 202, resp.text
    out = resp.json()
    assert out["pr_url"] == "http://127.0.0.1:8000/forge/local/example/pull/1"
    assert processor.submissions[0]["repo"] == EXAMPLE
    assert processor.submissions[0]["callback_url"] == "http://127.0.0.1:8000/api/callbacks/job"

    sha = _commit_on(tmp_path / "work", tmp_path / "forge", out["branch"])
    assert callback(local_api, shared_secret, {
        "job_id": out["job_id"], "status": "succeeded", "commit": sha, "error": None, "pr_number": 1, "repo": EXAMPLE,
        "branch": out["branch"], "attempts": 1, "duration_s": 12, "credits": 0.1,
        "output_tail": "Added greet() <script>alert(1)</script>"}).status_code == 200

    with local_api.serve() as url:
        auth = {"Authorization": "Bearer ui-token-for-tests-0123456789"}
        page = httpx.get(f"{url}/forge/local/example/pull/1", headers=auth)
        listed = httpx.get(f"{url}/api/forge/local/example/pulls", headers=auth).json()["pulls"]
        shown = httpx.get(f"{url}/api/forge/local/example/pulls/1", headers=auth).json()
        commit_page = httpx.get(f"{url}/forge/local/example/commit/{sha}", headers=auth)
        repos = httpx.get(f"{url}/api/forge/repos", headers=auth).json()
        unauth = httpx.get(f"{url}/forge/local/example/pull/1")
        missing = httpx.get(f"{url}/forge/local/example/pull/99", headers=auth)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    for expected in ("Add a greeting", out["branch"], "TASK.md", "aipm:succeeded", "Add greet()", "+def greet(name):",
                     "Hello, Ann!", out["job_id"]):
        assert expected in html, expected
    assert "<script>alert" not in html and "&lt;" in html
    assert [p["number"] for p in listed] == [1] and listed[0]["labels"] == ["aipm:succeeded"]
    assert "+def greet(name):" in shown["diff"] and [c["subject"] for c in shown["commits"]][0] == "Add greet()"
    assert len(shown["comments"]) == 1 and shown["comments"][0]["body"].startswith("<!-- aipm-job:")
    assert commit_page.status_code == 200 and "greet" in commit_page.text
    assert repos == {"repos": [EXAMPLE]}
    assert unauth.status_code == 401
    assert missing.status_code == 404 and "detail" in missing.json()


def test_merged_local_pull_request_moves_the_story_to_a_next_branch_with_its_own_commit(local_api, processor):
    forge = local_api.runtime.forge
    first = local_api.generate(repo=EXAMPLE, story_id="again").json()
    forge.close_pull(EXAMPLE, first["pr_number"], merged=True)
    assert forge.get_file(EXAMPLE, "main", "TASK.md") is not None  # merged into main, as GitHub's button does
    second = local_api.generate(repo=EXAMPLE, story_id="again")
    assert second.status_code == 202, second.text
    assert second.json()["branch"] == "aipm/story-again-2"
    assert len(forge.commits(EXAMPLE, "main", "aipm/story-again-2")) == 1
    assert local_api.generate(repo=EXAMPLE, story_id="again").status_code == 200


def test_local_forge_refuses_a_pull_request_whose_head_has_no_commits(local_api):
    forge = local_api.runtime.forge
    forge.create_branch(EXAMPLE, "aipm/empty", forge.branch_sha(EXAMPLE, "main"))
    with pytest.raises(NoCommits) as refused:
        forge.open_pull(EXAMPLE, head="aipm/empty", base="main", title="t", body="")
    assert refused.value.status == 409 and "no commits over main" in refused.value.detail
    assert forge.list_pulls(EXAMPLE) == []


def test_unknown_local_repository_is_a_404(local_api):
    resp = local_api.generate(repo="local/nothing", story_id="s")
    assert resp.status_code == 404 and "local/nothing" in resp.json()["detail"]


HOSTILE = "<script>alert('x')</script>\"q\"&<b>b</b>"


def test_every_page_escapes_what_a_story_or_an_agent_wrote(local_api):
    """The pages are templates with autoescape: a title, label, branch name, commit subject or diff line that holds
    markup is shown as text on every page, and the one inline script is the page's own, by the CSP's nonce."""
    forge = local_api.runtime.forge
    forge.create_branch(EXAMPLE, "aipm/x-1", forge.branch_sha(EXAMPLE, "main"))
    forge.put_file(EXAMPLE, "aipm/x-1", "NOTE.md", HOSTILE + "\n", "Note " + HOSTILE, blob_sha=None)
    pr = forge.open_pull(EXAMPLE, head="aipm/x-1", base="main", title="Title " + HOSTILE, body="Body " + HOSTILE)
    forge.add_labels(EXAMPLE, pr.number, ["aipm:" + HOSTILE])
    sha = forge.commits(EXAMPLE, "main", "aipm/x-1")[0]["sha"]
    for path, shown in ((f"/forge/{EXAMPLE}/pull/{pr.number}", 5),  # title (<title>, <h1>), label, subject, diff line
                        (f"/forge/{EXAMPLE}/commit/{sha}", 2),  # subject and diff line
                        (f"/forge/{EXAMPLE}/pulls", 1), (f"/forge/{EXAMPLE}", 1)):  # the title in the list
        page = local_api.call("GET", path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path
        assert "<script>alert" not in page.text and "<b>b</b>" not in page.text, path
        # every place shows it as text; the pull request page also has the body (markdown, escaped by markdown-it)
        assert page.text.count("&lt;script&gt;alert(") == shown + ("pull/" in path), path
        assert page.text.count("&lt;b&gt;b&lt;/b&gt;") == shown + ("pull/" in path), path
        csp = page.headers["content-security-policy"]
        scripts = page.text.count("<script")
        if "pull/" in path:  # an open pull request: merge, close and comment need the page's own script
            nonce = csp.split("'nonce-", 1)[1].split("'", 1)[0]
            assert scripts == 1 and f'<script nonce="{nonce}">' in page.text
        else:
            assert scripts == 0 and "script-src" not in csp, path


def test_a_file_is_committed_in_one_step_and_a_branch_moved_meanwhile_is_never_overwritten(tmp_path, monkeypatch):
    """put_file writes blob, tree and commit and moves the branch in one git process; when the branch moved between
    the check and the write (the PR processor pushing), the write is refused with Conflict and the push is kept."""
    import aipm_local.forge.local as local_module  # noqa: PLC0415 - the module whose lookup this test delays
    from aipm_local.forge.local import LocalForge  # noqa: PLC0415
    from lambda_fn.forge.base import Conflict  # noqa: PLC0415

    ensure_example_repo(tmp_path / "forge")
    forge = LocalForge(tmp_path / "forge")
    forge.create_branch(EXAMPLE, "aipm/one", forge.branch_sha(EXAMPLE, "main"))
    first = forge.put_file(EXAMPLE, "aipm/one", "docs/a b \"q\".md", "first\n", "Add a note", blob_sha=None)
    assert forge.branch_sha(EXAMPLE, "aipm/one") == first
    assert forge.get_file(EXAMPLE, "aipm/one", "docs/a b \"q\".md")[0] == "first\n"

    seen = local_module.objects(tmp_path / "forge/local/example.git", "refs/heads/aipm/one",
                                "refs/heads/aipm/one:TASK.md")
    pushed = _commit_on(tmp_path / "clone", tmp_path / "forge", "aipm/one")  # the branch moves after the read
    monkeypatch.setattr(local_module, "objects", lambda *_: seen)
    with pytest.raises(Conflict, match="moved while TASK.md was being committed"):
        forge.put_file(EXAMPLE, "aipm/one", "TASK.md", "late\n", "Late", blob_sha=None)
    assert forge.branch_sha(EXAMPLE, "aipm/one") == pushed
