"""The whole pipeline with the real claude-code-acp, end to end (``stories.py`` says what each story checks)."""

import pytest

from tests.real_agents.stories import (
    story_ends_with_the_agents_commit_and_a_passing_test,
    story_whose_every_tool_is_refused_reports_that_not_success,
)

pytestmark = pytest.mark.timeout(240)


def test_a_story_ends_with_the_real_agents_commit_and_a_passing_test(claude_code_acp, tmp_path):
    story_ends_with_the_agents_commit_and_a_passing_test("claude-code", tmp_path)


def test_a_story_whose_every_tool_is_refused_reports_that_not_success(claude_code_acp, tmp_path):
    story_whose_every_tool_is_refused_reports_that_not_success("claude-code", tmp_path)
