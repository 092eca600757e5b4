"""Who asked for the job: ``requested_by`` ("Name <email>" from the Lambda's signed-in user) becomes a
``Co-authored-by`` trailer on the agent's commit; anything that could break out of a trailer is refused with 400."""

from __future__ import annotations

import subprocess

import pytest

from ec2_services.pr_processor.models import InvalidInput, parse_requested_by
from tests.ec2_services.pr_processor.conftest import BRANCH, REPO
from tests.ec2_services.pr_processor.fake_pool import Plan


def _trailers(forge, sha: str) -> str:
    message = subprocess.run(["git", "--git-dir", str(forge.bare(REPO)), "log", "-1", "--format=%B", sha],
                             capture_output=True, text=True, check=True).stdout
    return subprocess.run(["git", "interpret-trailers", "--parse"], input=message, capture_output=True, text=True,
                          check=True).stdout


def test_requester_with_an_email_is_a_co_author_of_the_commit(start_processor, forge, fake_pool):
    fake_pool.plan("j-ann", Plan(files={"hello.py": "print('hi')\n"}))
    fake_pool.plan("j-bob", Plan(files={"bye.py": "print('bye')\n"}))
    proc = start_processor()

    assert proc.submit("j-ann", pr_number=3, requested_by="Ann <ann@example.com>").status_code == 202
    job = proc.wait("j-ann")
    assert job["status"] == "succeeded", job
    head = forge.log(REPO, BRANCH)[0]
    assert head.sha == job["commit"] and (head.author, head.email) == ("Test Bot", "test-bot@example.com")
    # git itself reads both trailers (so GitHub shows Ann as co-author).
    assert _trailers(forge, head.sha) == "AIPM-Job: j-ann\nCo-authored-by: Ann <ann@example.com>\n"

    # A name without an e-mail: recorded, but no trailer.
    assert proc.submit("j-bob", branch="aipm/story-2", requested_by="bob").status_code == 202
    job = proc.wait("j-bob")
    assert job["status"] == "succeeded", job
    assert _trailers(forge, job["commit"]) == "AIPM-Job: j-bob\n"


BAD = [
    "Ann <ann@example.com>\nCo-authored-by: Mallory <m@evil.example>",
    "Ann\r <ann@example.com>",
    "Ann <ann@example.com>\u2028Signed-off-by: x",
    "Ann <ann@example.com> <b@example.com>",
    "Ann <not-an-email>",
    "<ann@example.com>",
    "Ann <ann@example.com",
    "A" * 120 + " <ann@example.com>",
    "x" * 201,
    "   ",
]


def test_a_requested_by_that_could_break_out_of_a_trailer_is_refused_400(start_processor, fake_pool):
    proc = start_processor()
    for requested_by in BAD:
        response = proc.submit("j-bad", requested_by=requested_by)
        assert response.status_code == 400, (requested_by, response.text)
        assert "requested_by" in response.json()["detail"]
    assert proc.client.get("/api/jobs/j-bad").status_code == 404
    assert fake_pool.executes == []


def test_parse_requested_by_forms():
    assert parse_requested_by("Ann <ann@example.com>") == ("Ann", "ann@example.com")
    assert parse_requested_by("Ann  B.  Lee <ann.lee+ci@mail.example.org>") == ("Ann B. Lee", "ann.lee+ci@mail.example.org")
    assert parse_requested_by("ui-token") == ("ui-token", None)
    assert parse_requested_by("ann@example.com") == ("ann@example.com", None)  # a bare name, no trailer
    with pytest.raises(InvalidInput):
        parse_requested_by("Ann <ann@example.com>\n")
