"""What the scripted model says next, whatever provider API carries it: the steps (a tool call or words), the
conversation as every wire reads it, and the two scripts (``TaskScript``, ``FixedScript``).

A wire (``scripted_model_anthropic``, ``scripted_model_gemini``) turns a request into a ``Conversation`` and a
``Step`` into its own stream; the script sees neither. It must not do HTTP.
"""

from __future__ import annotations

import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from aipm_local.standin_change import plan_change

NOT_A_MODEL = "The AIPM scripted model (not an AI)"
_READ_LINE_NUMBER = re.compile(r"^\s*\d+[→\t]", re.MULTILINE)  # Claude Code's Read shows `     1→text`
_TASK_PATH = re.compile(r"(/\S+?/TASK\.md)")


@dataclass(frozen=True)
class ToolCall:
    name: str
    input: dict


@dataclass(frozen=True)
class Say:
    text: str


Step = ToolCall | Say


@dataclass(frozen=True)
class Dialect:
    """One agent's names for the three tools the task script uses (all take ``file_path`` / ``content`` /
    ``command`` + ``description``), and where its request says the session's working directory."""

    read: str
    write: str
    shell: str
    cwd: re.Pattern


@dataclass(frozen=True)
class ToolResult:
    text: str
    is_error: bool


@dataclass(frozen=True)
class Conversation:
    """One model request, as the script reads it."""

    prompt: str  # every user text, in order
    context: str  # the system prompt and the user texts: where the working directory is said
    results: list[ToolResult] = field(default_factory=list)  # the tool results so far, in order
    tools: list[str] = field(default_factory=list)  # the tool names offered


class TaskScript:
    """The default script: read TASK.md, write the function and its test, run the tests, answer.

    The step is the number of tool results the conversation holds, so it keeps no state per conversation and a
    refused tool (an error result) moves the script on like any other."""

    def __init__(self, python: str = sys.executable):
        self.python = python

    def step(self, conversation: Conversation, dialect: Dialect) -> Step:
        done = conversation.results
        task_path = _TASK_PATH.search(conversation.prompt)
        cwd = dialect.cwd.search(conversation.context)
        if task_path is None or cwd is None:
            return Say(f"{NOT_A_MODEL}: there is no TASK.md named in the prompt, nothing to do.")
        workspace = Path(cwd.group(1))
        if not done:
            return ToolCall(dialect.read, {"file_path": task_path.group(1)})
        files = self._plan(done[0].text, workspace)
        writes = [ToolCall(dialect.write, {"file_path": str(workspace / rel), "content": text}) for rel, text in files]
        tests = [rel for rel, _ in files if Path(rel).name.startswith("test_")]
        steps: list[Step] = [*writes]
        if tests:
            steps.append(ToolCall(dialect.shell, {"command": f"{self.python} -m pytest -q {' '.join(tests)}",
                                                  "description": "Run the new tests"}))
        if len(done) <= len(steps):
            return steps[len(done) - 1]
        refused = [r for r in done[1:] if r.is_error]
        last = done[-1].text
        verdict = "the tests pass" if re.search(r"\d+ passed", last) and " failed" not in last else "see the test run"
        if refused:
            return Say(f"{NOT_A_MODEL}: I could not finish: {len(refused)} of my tool calls were refused.")
        return Say(f"{NOT_A_MODEL}: done: wrote {', '.join(rel for rel, _ in files)}; {verdict}.")

    @staticmethod
    def _plan(read_result: str, workspace: Path) -> list[tuple[str, str]]:
        text = _READ_LINE_NUMBER.sub("", read_result)
        with tempfile.TemporaryDirectory() as tmp:
            task_file = Path(tmp) / "TASK.md"
            task_file.write_text(text, encoding="utf-8")
            _task, plan = plan_change(task_file, workspace)
        return list(plan.files.items())


class FixedScript:
    """The given steps in order, one per model request with tools, then a short final answer."""

    def __init__(self, steps: list[Step]):
        self.steps = steps

    def step(self, conversation: Conversation, dialect: Dialect) -> Step:
        done = len(conversation.results)
        return self.steps[done] if done < len(self.steps) else Say(f"{NOT_A_MODEL}: done.")
