"""The names docs/contracts.md fixes (slug, branch, job id) and what TASK.md says."""

from __future__ import annotations

import hashlib

import pytest

from lambda_fn.naming import job_id, repo_allowed, slug, story_branch, title_branch, valid_branch, valid_repo
from lambda_fn.tasks import render_pr_body, render_task


@pytest.mark.parametrize("text,expected", [
    ("STORY-42", "story-42"), ("Fix: the login page!", "fix-the-login-page"), ("  ", "story"), ("ÄÖÜ", "story"),
    ("a__b--c", "a-b-c"), ("-lead-", "lead"), ("日本 語 x", "x"),
])
def test_slug_keeps_a_z_0_9_and_dash_and_is_story_when_empty(text, expected):
    assert slug(text) == expected


def test_branches_follow_the_spec():
    assert story_branch("S 1") == "aipm/story-s-1"
    assert story_branch("S 1", 3) == "aipm/story-s-1-3"
    b = title_branch("A" * 100, "key")
    assert b == f"aipm/{'a' * 40}-{hashlib.sha256(b'key').hexdigest()[:6]}"
    assert title_branch("t", None) != title_branch("t", None)
    assert all(valid_branch(x) for x in (b, story_branch("x"), "main", "release/1.2"))


def test_job_id_is_j_plus_24_hex_of_lowercased_repo_and_branch():
    expected = "j-" + hashlib.sha256(b"octo/hello:aipm/story-x").hexdigest()[:24]
    assert job_id("Octo/Hello", "aipm/story-x") == expected == job_id("octo/hello", "aipm/story-x")


def test_repo_rules():
    assert valid_repo("octo/hello.world") and not valid_repo("octo/..") and not valid_repo("a/b/c")
    assert repo_allowed("Octo/X", ["octo/*"]) and repo_allowed("any/thing", [])
    assert not repo_allowed("octopus/x", ["octo/*"]) and not repo_allowed("octo/y", ["octo/x"])


def test_task_md_has_the_story_a_checklist_and_the_agent_instructions():
    text = render_task(title="Add  greet", description="Say hello.", acceptance_criteria=["a", " ", "b\nc"],
                       story_id="S`1", branch="aipm/story-s-1-2", job_id="j-1")
    assert text.startswith("# Add greet\n")
    assert "Branch: `aipm/story-s-1-2` · Job: `j-1`" in text  # each run's TASK.md is its own
    assert "- [ ] a\n- [ ] b c\n" in text
    assert "Work only inside this repository" in text and "Keep the change focused" in text and "tests" in text
    assert "`S'1`" in text
    body = render_pr_body(description="d", acceptance_criteria=[], story_id=None, job_id="j-1", ui_url=None,
                          requested_by="local")
    assert "`j-1`" in body and "Requested by: `local`" in body and "Open in AIPM" not in body
