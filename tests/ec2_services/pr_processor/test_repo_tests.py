"""Which test command a job runs: the repository's ``.aipm.toml`` at the base commit, else AIPM_TEST_COMMAND."""

from __future__ import annotations

import pytest

from ec2_services.pr_processor.repo_tests import choose, record


def test_the_repositorys_file_wins_over_the_default():
    spec, warning = choose('[tests]\ncommand = "make check"\ntimeout_s = 90\n', "pytest", 600)
    assert (spec.command, spec.timeout_s, spec.source, warning) == ("make check", 90.0, ".aipm.toml", None)


def test_without_a_file_or_a_tests_table_the_default_runs_and_without_a_default_nothing():
    assert choose(None, " pytest -q ", 600)[0].command == "pytest -q"
    assert choose("[other]\nx = 1\n", "pytest", 30)[0].source == "AIPM_TEST_COMMAND"
    assert choose(None, "", 600) == (None, None)


@pytest.mark.parametrize("text, why", [
    ("[tests\ncommand = 1", "not valid TOML"),
    ('[tests]\ncommand = ""', "non-empty string"),
    ("[tests]\ncommand = 3", "non-empty string"),
    ('[tests]\ncommand = "x"\ntimeout_s = 0', "timeout_s"),
    ('[tests]\ncommand = "x"\ntimeout_s = 99999', "timeout_s"),
    ('[tests]\ncommand = "x"\ntimeout_s = true', "timeout_s"),
])
def test_a_file_that_cannot_be_used_falls_back_with_a_warning(text, why):
    spec, warning = choose(text, "pytest", 600)
    assert spec.command == "pytest" and why in warning


def test_a_run_that_could_not_happen_says_why():
    spec, _ = choose(None, "pytest", 600)
    kept = record(spec, None, not_run="worker pool unreachable (ConnectError)")
    assert kept["summary"] == "not run: worker pool unreachable (ConnectError)" and kept["exit_code"] is None
    ran = record(spec, {"summary": "1 passed / 0 failed", "passed": 1, "failed": 0, "exit_code": 0,
                        "output": "x" * 10_000, "duration_s": 0.4})
    assert len(ran["output_tail"]) == 4000 and ran["passed"] == 1
