"""Bad input is refused at the edge with a 4xx JSON detail, and nothing runs: no job, no mirror, no agent."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aipm_common.signing import SigningAuth
from ec2_services.pr_processor.models import InvalidInput, check_callback_url, ref_name_problem
from tests.ec2_services.pr_processor.conftest import BRANCH, REPO

GOOD = {"job_id": "j-ok", "repo": REPO, "branch": BRANCH, "task_file": "TASK.md"}
ORIGIN = "http://127.0.0.1:9"

BAD_BODIES = [
    ("repo with shell", {"repo": "acme/app;rm -rf /"}),
    ("repo with $()", {"repo": "acme/$(id)"}),
    ("repo with backticks", {"repo": "acme/`id`"}),
    ("repo not owner/name", {"repo": "app"}),
    ("repo with three parts", {"repo": "acme/app/x"}),
    ("repo with ..", {"repo": "../etc"}),
    ("repo option", {"repo": "--upload-pack=touch /tmp/pwn/x"}),
    ("branch with ;", {"branch": "aipm/x;id"}),
    ("branch with $()", {"branch": "aipm/$(id)"}),
    ("branch with backticks", {"branch": "aipm/`id`"}),
    ("branch upload-pack", {"branch": "--upload-pack=touch /tmp/pwned"}),
    ("branch leading dash", {"branch": "-aipm/x"}),
    ("branch with ..", {"branch": "aipm/x..y"}),
    ("branch with NUL", {"branch": "aipm/x\u0000y"}),
    ("branch with space", {"branch": "aipm/x y"}),
    ("branch with ~", {"branch": "aipm/x~1"}),
    ("branch .lock", {"branch": "aipm/x.lock"}),
    ("branch not under aipm/", {"branch": "main"}),
    ("branch only aipm", {"branch": "aipm"}),
    ("branch refs/heads", {"branch": "refs/heads/main"}),
    ("base_branch with ;", {"base_branch": "main;id"}),
    ("base_branch leading dash", {"base_branch": "--force"}),
    ("base_branch with ..", {"base_branch": "a..b"}),
    ("task_file absolute", {"task_file": "/etc/passwd"}),
    ("task_file with ..", {"task_file": "../../etc/passwd"}),
    ("task_file inner ..", {"task_file": "docs/../../x"}),
    ("task_file with NUL", {"task_file": "TASK\u0000.md"}),
    *[(f"task_file {name!r} into .git or a directory", {"task_file": name})
      for name in (".git", ".git/x", ".git/config", "dir/../.git", "sub/.git/HEAD", ".GIT", "./.git", "docs/", ".",
                   "docs/.")],
    ("job_id with ;", {"job_id": "j;id"}),
    ("job_id leading dash", {"job_id": "-j"}),
    ("job_id too long", {"job_id": "j" * 121}),
    ("callback outside origins", {"callback_url": "https://evil.example.com/cb"}),
    ("callback http non-loopback", {"callback_url": "http://example.com/cb"}),
    ("callback with user info", {"callback_url": "http://user:pw@127.0.0.1:9/cb"}),
    ("callback other port", {"callback_url": "http://127.0.0.1:10/cb"}),
    ("callback not a url", {"callback_url": "javascript:alert(1)"}),
]


@pytest.fixture
def proc(start_processor):
    return start_processor(AIPM_CALLBACK_ORIGINS=ORIGIN)


def _nothing_ran(proc, fake_pool) -> None:
    assert proc.client.get("/api/jobs").json()["jobs"] == []
    assert not (proc.state_dir / "mirrors").exists()
    assert not (proc.state_dir / "workspaces").exists()
    assert fake_pool.executes == []


def test_every_bad_input_of_spec_is_refused_before_git_runs(proc, fake_pool):
    for name, change in BAD_BODIES:
        response = proc.client.post("/api/process-pr", json={**GOOD, **change})
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
        assert response.status_code != 404
        detail = response.json()["detail"]
        assert isinstance(detail, str) and detail, name
    _nothing_ran(proc, fake_pool)


@pytest.mark.parametrize("pr_number", [2**63, 2**31, 10**40, 0, -1])
def test_a_pr_number_outside_1_to_2_31_minus_1_is_422_not_a_500_from_sqlite(proc, fake_pool, pr_number):
    response = proc.client.post("/api/process-pr", json={**GOOD, "pr_number": pr_number})
    assert response.status_code == 422, response.text
    assert "pr_number" in json.dumps(response.json()["detail"])
    _nothing_ran(proc, fake_pool)


def test_the_largest_pr_number_is_accepted(proc, fake_pool):
    response = proc.client.post("/api/process-pr", json={**GOOD, "job_id": "j-big-pr", "pr_number": 2**31 - 1})
    assert response.status_code == 202, response.text
    assert proc.client.get("/api/jobs/j-big-pr").status_code == 200


def test_body_that_is_not_json_or_not_an_object_or_too_big_is_refused(proc, fake_pool):
    for content in (b"not json{", b"[1, 2]", b'"a string"', b"{}"):
        response = proc.client.post("/api/process-pr", content=content, headers={"content-type": "application/json"})
        assert response.status_code == 422, content
        assert response.json()["detail"]
    huge = {**GOOD, "requested_by": "x" * (1024 * 1024)}
    response = proc.client.post("/api/process-pr", json=huge)
    assert response.status_code == 413 and response.json()["detail"]
    _nothing_ran(proc, fake_pool)


def test_unsigned_or_wrongly_signed_requests_are_401(proc, fake_pool):
    assert httpx.post(proc.url + "/api/process-pr", json=GOOD).status_code == 401
    wrong = httpx.post(proc.url + "/api/process-pr", json=GOOD, auth=SigningAuth("other-secret", "pr-processor"))
    assert wrong.status_code == 401 and "signature" in wrong.json()["detail"]
    for_pool = httpx.post(proc.url + "/api/process-pr", json=GOOD, auth=SigningAuth(proc.env["AIPM_SHARED_SECRET"],
                                                                                     "worker-pool"))
    assert for_pool.status_code == 401
    assert httpx.get(proc.url + "/api/jobs").status_code == 401
    assert httpx.get(proc.url + "/health").status_code == 200
    _nothing_ran(proc, fake_pool)


def test_cancel_of_unknown_job_is_404_and_allowed_callback_origin_is_accepted(proc, fake_pool):
    assert proc.client.post("/api/jobs/j-nope/cancel").status_code == 404
    assert proc.client.get("/api/jobs/j-nope/events").status_code == 404
    response = proc.submit("j-cb", callback_url=ORIGIN + "/api/callbacks/job")
    assert response.status_code == 202


def test_callback_origin_rules():
    check_callback_url("https://abc.lambda-url.us-east-1.on.aws/api/callbacks/job", ["https://abc.lambda-url.us-east-1.on.aws"])
    check_callback_url("http://127.0.0.1:8000/cb", ["http://127.0.0.1:8000"])
    for url, origins in [
        ("http://127.0.0.1:8000/cb", []),
        ("http://localhost:8000/cb", ["http://localhost:8000"]),  # http only for 127.0.0.1
        ("https://abc.example.com.evil.io/cb", ["https://abc.example.com"]),
        ("https://abc.example.com@evil.io/cb", ["https://abc.example.com"]),
    ]:
        with pytest.raises(InvalidInput):
            check_callback_url(url, origins)


def _git_refuses(name: str) -> bool:
    result = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True)
    return result.returncode != 0


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="ab./-_", min_size=1, max_size=12))
def test_ref_rules_agree_with_git_check_ref_format_on_the_allowed_characters(name):
    assert (ref_name_problem(name) is not None) == _git_refuses(name), name


@pytest.mark.parametrize("name", ["aipm/x;id", "aipm/$(id)", "aipm/`id`", "a b", "x\u0000", "-x", "aipm/é", "a@{1}"])
def test_ref_rules_refuse_what_is_outside_the_character_set(name):
    assert ref_name_problem(name) is not None


def test_service_without_a_secret_refuses_to_start(service_process, tmp_path):
    proc = service_process("ec2_services.pr_processor", {"AIPM_SHARED_SECRET": "", "AIPM_INSECURE_DEV": "",
                                                         "AIPM_STATE_DIR": str(tmp_path / "state")}, name="no-secret")
    assert proc.proc.wait(timeout=30) != 0
    assert "AIPM_SHARED_SECRET is not set" in proc.output()
    assert not (tmp_path / "state" / "jobs.sqlite").exists()


def test_a_job_database_that_refuses_writes_answers_503_and_health_says_so(start_processor):
    import sqlite3

    proc = start_processor()
    locker = sqlite3.connect(str(proc.state_dir / "jobs.sqlite"), isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        answer = proc.submit("j-db-locked")
        assert answer.status_code == 503, answer.text
        assert "job database unavailable" in answer.json()["detail"] and answer.headers["retry-after"]
        health = proc.health()
        assert health["status"] == "degraded" and "locked" in health["job_store"]
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert proc.submit("j-db-locked").status_code == 202  # sent again once the fault is gone: accepted
    assert proc.health()["job_store"] == "ok"
