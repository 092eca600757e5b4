"""docs/contracts.md and aipm_common.contracts describe the same bodies: every field of every contract model is
named in the section of the page that names the model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aipm_common.contracts import CONTRACT_MODELS, ExecuteRequest, JobResult, ProcessPrRequest, dump_job_result

DOC = Path(__file__).resolve().parents[2] / "docs" / "contracts.md"


def _section_naming(text: str, name: str) -> str:
    """The part of the page between the headings around the first mention of `name` past the introduction."""
    at = text.find(f"`{name}`", text.find("\n## "))
    assert at >= 0, f"docs/contracts.md never names the model `{name}`"
    start = text.rfind("\n#", 0, at)
    end = text.find("\n#", at)
    return text[start if start >= 0 else 0:end if end >= 0 else len(text)]


@pytest.mark.parametrize("model", CONTRACT_MODELS, ids=lambda m: m.__name__)
def test_every_field_of_a_contract_model_is_documented_beside_it(model):
    section = _section_naming(DOC.read_text(encoding="utf-8"), model.__name__)
    missing = [f for f in model.model_fields if not re.search(rf"[`\"]{re.escape(f)}[`\"]", section)]
    assert not missing, f"docs/contracts.md does not list {missing} of {model.__name__}"


def test_the_senders_bodies_keep_the_wire_order():
    """The JSON a sender writes has the keys in the order the receivers and stored outboxes have always seen."""
    execute = ExecuteRequest(prompt="p", cwd="/w", task_id="j-1.1").model_dump()
    assert list(execute) == ["prompt", "cwd", "timeout_s", "task_id"]
    job = ProcessPrRequest(job_id="j-1", repo="o/n", branch="aipm/x").model_dump()
    assert list(job) == ["job_id", "repo", "branch", "base_branch", "pr_number", "task_file", "callback_url",
                         "requested_by", "title"]
    result = dump_job_result(JobResult(job_id="j-1", status="failed", repo="o/n", branch="aipm/x"))
    assert list(result) == ["job_id", "status", "commit", "error", "pr_number", "repo", "branch", "attempts",
                            "duration_s", "credits", "output_tail"]  # no "tests" key when none ran
    tests = {"command": "pytest", "source": "AIPM_TEST_COMMAND", "summary": "3 passed", "passed": 3, "failed": 0,
             "exit_code": 0, "timed_out": False, "duration_s": 1.5, "output_tail": ""}
    ran = dump_job_result(JobResult(job_id="j-1", status="succeeded", repo="o/n", branch="aipm/x", tests=tests))
    assert ran["tests"] == tests and list(ran["tests"]) == list(tests)


def test_tokens_are_sent_only_when_the_agent_reported_them():
    bare = dump_job_result(JobResult(job_id="j-1", status="succeeded", repo="o/n", branch="aipm/x"))
    assert "tokens" not in bare  # Kiro and claude-code-acp: the callback Kiro's users have always had
    counted = dump_job_result(JobResult(job_id="j-1", status="succeeded", repo="o/n", branch="aipm/x",
                                        tokens={"input": 1234, "output": 56}))
    assert counted["tokens"] == {"input": 1234, "output": 56}
    with pytest.raises(ValueError):
        JobResult(job_id="j-1", status="succeeded", repo="o/n", branch="aipm/x", tokens={"input": -1, "output": 0})
