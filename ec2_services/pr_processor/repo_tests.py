"""Which test command a job's repository asks for, and the record of its run (docs/contracts.md, "Tests").

A repository names its own in ``.aipm.toml`` at the job's base commit (what the agent found, not what it wrote)::

    [tests]
    command = "python -m pytest -q"
    timeout_s = 300

Without one, ``AIPM_TEST_COMMAND`` is the default (empty: no tests). The worker pool runs it as the agent
(``POST /run``); this module only decides the command and shapes the record kept on the job and sent in the callback.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Any

from aipm_common.envnames import PrProcessor

CONFIG_FILE = ".aipm.toml"
MAX_COMMAND_CHARS = 2000
MAX_TIMEOUT_S = 3600.0
OUTPUT_TAIL_CHARS = 4000


@dataclass(frozen=True)
class TestCommand:
    command: str
    timeout_s: float
    source: str  # ".aipm.toml" or "AIPM_TEST_COMMAND"


def choose(config_text: str | None, default_command: str, default_timeout: float) -> tuple[TestCommand | None, str | None]:
    """The command to run (None: none), and a warning about a ``.aipm.toml`` that could not be used."""
    fallback = TestCommand(default_command.strip(), default_timeout, PrProcessor.AIPM_TEST_COMMAND) if default_command.strip() else None
    if config_text is None:
        return fallback, None
    try:
        tests = tomllib.loads(config_text).get("tests", {})
    except tomllib.TOMLDecodeError as exc:
        return fallback, f"{CONFIG_FILE} is not valid TOML ({exc}); it was ignored"
    if not isinstance(tests, dict) or "command" not in tests:
        return fallback, None
    command, timeout = tests.get("command"), tests.get("timeout_s", default_timeout)
    if not isinstance(command, str) or not command.strip() or len(command) > MAX_COMMAND_CHARS:
        return fallback, f"{CONFIG_FILE}: [tests] command must be a non-empty string of at most {MAX_COMMAND_CHARS} characters"
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TIMEOUT_S:
        return fallback, f"{CONFIG_FILE}: [tests] timeout_s must be a number of seconds in (0, {MAX_TIMEOUT_S:g}]"
    return TestCommand(command.strip(), float(timeout), CONFIG_FILE), None


def record(spec: TestCommand, answer: dict[str, Any] | None, *, not_run: str | None = None) -> dict[str, Any]:
    """What the job keeps: the pool's answer to ``/run``, or why the tests did not run."""
    if answer is None:
        return {"command": spec.command, "source": spec.source, "summary": f"not run: {not_run}", "passed": None,
                "failed": None, "exit_code": None, "timed_out": False, "duration_s": None, "output_tail": ""}
    return {
        "command": spec.command,
        "source": spec.source,
        "summary": str(answer.get("summary") or "ran"),
        "passed": answer.get("passed"),
        "failed": answer.get("failed"),
        "exit_code": answer.get("exit_code"),
        "timed_out": bool(answer.get("timed_out")),
        "duration_s": answer.get("duration_s"),
        "output_tail": str(answer.get("output") or "")[-OUTPUT_TAIL_CHARS:],
    }
