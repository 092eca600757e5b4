"""The scripted stand-in agent in a real pseudo-terminal, driven the way the worker pool drives kiro-cli."""

from __future__ import annotations

import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ptyprocess import PtyProcess

from aipm_local.run import STANDIN_SCRIPT
from aipm_local.standin_change import parse_criterion, plan_change

pytestmark = pytest.mark.timeout(60)

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# docs/contracts.md's default KIRO_PROMPT_PATTERN and KIRO_APPROVAL_PATTERN, on ANSI-free text.
PROMPT = re.compile(r"(?:\[[\w.-]+\]\s*)?(?:\d+%\s*)?(?:λ\s*)?!?>\s*$")
APPROVAL = re.compile(r"Allow this action\?.*\[y/n/t\]:")

TASK = """# Numbers for the shop

## Description

Small helpers.

## Acceptance criteria

- [ ] `multiply(4, 5) == 20`
- [ ] fib(10) == 55
- [ ] fib(1) == 1
- [ ] Prices are shown in euros

## Instructions for the agent

1. Do not edit or delete this TASK.md file. Example: `f(1) == 2` is not a criterion here.
"""


class Agent:
    """The stand-in in a 200×50 PTY; ``expect`` searches the ANSI-free text received since the last ``expect``."""

    def __init__(self, *args: str):
        self.proc = PtyProcess.spawn([sys.executable, str(STANDIN_SCRIPT), "--think", "0.1", *args],
                                     dimensions=(50, 200), env={"TERM": "xterm-256color", "PATH": "/usr/bin:/bin"})
        self.raw = ""
        self._seen = 0

    def expect(self, pattern: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while True:
            fresh = ANSI.sub("", self.raw[self._seen:])
            match = re.search(pattern, fresh, re.S | re.M)
            if match:
                self._seen = self._advance(match.end())  # what followed the match is left for the next expect
                return fresh[: match.end()]
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in {fresh[-1500:]!r}")
            ready, _, _ = select.select([self.proc.fd], [], [], 0.05)
            if ready:
                try:
                    self.raw += self.proc.read(65536).decode("utf-8", "replace")
                except EOFError:
                    if not re.search(pattern, ANSI.sub("", self.raw[self._seen:]), re.S | re.M):
                        raise AssertionError(f"agent exited before {pattern!r}: {self.raw[-1500:]!r}") from None

    def _advance(self, clean_end: int) -> int:
        # Map an offset in the ANSI-free text back to the raw text.
        raw, clean = self._seen, 0
        while clean < clean_end and raw < len(self.raw):
            m = ANSI.match(self.raw, raw)
            if m:
                raw = m.end()
                continue
            raw += 1
            clean += 1
        return raw

    def idle(self, timeout: float = 10) -> str:
        text = self.expect(r"\[aipm\] \d+% λ > $", timeout)
        last = [line for line in text.splitlines() if line.strip()][-1]
        assert PROMPT.search(last)
        return text

    def send(self, text: str) -> None:
        self.proc.write(text.encode())

    def close(self) -> None:
        if self.proc.isalive():
            self.proc.terminate(force=True)


@pytest.fixture
def agent():
    started: list[Agent] = []

    def start(*args: str) -> Agent:
        started.append(Agent(*args))
        return started[-1]

    yield start
    for a in started:
        a.close()


@pytest.fixture
def workspace(tmp_path) -> Path:
    ws = tmp_path / "ws"
    (ws / "tests").mkdir(parents=True)
    (ws / "tests" / "__init__.py").write_text("")
    (ws / "TASK.md").write_text(TASK)
    return ws


def prompt_for(ws: Path) -> str:
    # What the PR processor and the pool send: the workspace and the task file as absolute paths, several lines.
    return (f'Your working directory for this task is "{ws}". Work only inside it.\n\n'
            f"Implement the task described in the file {ws / 'TASK.md'} .\nThe git work tree is {ws}.")


def test_greeting_says_it_is_not_an_ai_and_ends_at_the_kiro_style_prompt(agent):
    a = agent()
    greeting = a.idle()
    assert "scripted program, NOT an AI" in greeting
    assert "\x1b[36m[aipm] " in a.raw  # the coloured prompt, as kiro-cli --agent aipm shows it


def test_task_is_implemented_only_after_each_write_is_approved_and_its_tests_pass(agent, workspace):
    a = agent()
    a.idle()
    a.send(prompt_for(workspace) + "\r")
    echoed = a.expect(r"⠋ Thinking\.\.\.")
    assert "Implement the task described" in echoed and "The git work tree" in echoed
    first = a.expect(r"\(using tool: write\).*Allow this action\?.*\[y/n/t\]:.*λ > $")
    assert "\x1b[2K" in a.raw, "the spinner line is cleared with ESC[2K"
    assert "\x1b[38;5;10m> \x1b[39mThis is the AIPM stand-in agent" in a.raw  # coloured answer marker
    assert "story_functions.py (using tool: write)" in first
    assert not (workspace / "story_functions.py").exists(), "nothing is written before the approval"

    a.send("\r")  # Enter on an empty line approves nothing: the question stands
    a.expect(r"Allow this action\?.*λ > $")
    assert not (workspace / "story_functions.py").exists()
    a.send("y\r")
    a.expect(r"test_story_functions\.py \(using tool: write\).*\[y/n/t\]:.*λ > $")
    assert (workspace / "story_functions.py").exists()
    a.send("t\r")  # trust `write` for the session: the notes file is written without asking
    done = a.idle()
    assert not APPROVAL.search(done.split("AIPM_NOTES.md (using tool: write)")[1])
    assert "✓ multiply(4, 5) == 20" in done and "✓ fib(10) == 55" in done
    assert "not an AI" in done.split("Done with")[1]
    assert re.search(r"▸ Credits: 0\.00 • Time: \d+s", done)

    notes = (workspace / "AIPM_NOTES.md").read_text()
    assert "- [ ] Prices are shown in euros" in notes and "not an AI" in notes
    assert (workspace / "TASK.md").read_text() == TASK
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=workspace,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_a_refused_write_leaves_the_file_unwritten(agent, workspace):
    a = agent()
    a.idle()
    a.send(prompt_for(workspace) + "\r")
    a.expect(r"\[y/n/t\]:.*λ > $")
    a.send("n\r")
    a.expect(r"Tool use was rejected: story_functions\.py not written")
    a.expect(r"\[y/n/t\]:.*λ > $")
    a.send("n\r")
    a.expect(r"\[y/n/t\]:.*λ > $")
    a.send("n\r")
    a.idle()
    assert not any((workspace / name).exists() for name in ("story_functions.py", "AIPM_NOTES.md"))


def test_ctrl_j_is_a_newline_inside_the_message_and_only_cr_submits(agent, workspace):
    a = agent()
    a.idle()
    a.send("first line\nsecond line")
    a.expect("second line")
    time.sleep(0.3)
    assert "Thinking" not in a.raw, "Ctrl+J must not submit"
    a.send("\r")
    reply = a.idle()
    assert "I found no absolute path to an existing task file" in reply and "not an AI" in reply


def test_ctrl_c_stops_a_slow_turn_and_the_prompt_returns(agent, workspace):
    a = agent("--delay", "30")
    a.idle()
    a.send(prompt_for(workspace) + "\r")
    a.expect("Working slowly on purpose")
    started = time.monotonic()
    a.send("\x03")
    a.expect("Stopped \\(Ctrl\\+C\\)")
    a.idle()
    assert time.monotonic() - started < 5
    assert not (workspace / "story_functions.py").exists()


def test_clear_asks_to_confirm_and_quit_ends_the_session(agent):
    a = agent()
    a.idle()
    a.send("/clear\r")
    a.expect(r"\[y/n\]:\s*\n\s*\n?\[aipm\] \d+% λ > $")
    a.send("y\r")
    a.expect("Conversation history cleared")
    a.idle()
    a.send("/quit\r")
    deadline = time.monotonic() + 5
    while a.proc.isalive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not a.proc.isalive()
    assert a.proc.exitstatus == 0


@pytest.mark.parametrize(("text", "expression"), [
    ("add(2, 3) == 5", "add(2, 3) == 5"),
    ("`greet('Ana') == 'Hello, Ana!'` for a named user.", "greet('Ana') == 'Hello, Ana!'"),
    ("total([1, 2, (3, 4)]) == 10", "total([1, 2, (3, 4)]) == 10"),
    ("now() == 1.5", "now() == 1.5"),
])
def test_criteria_of_the_form_f_args_equals_value_are_recognised(text, expression):
    criterion = parse_criterion(text)
    assert criterion is not None and criterion.expression == expression


@pytest.mark.parametrize("text", ["The page shows prices", "x == 3", "f(1) is 2", "if(1) == 2", "f(open('x')) == 1"])
def test_other_criteria_are_not_taken_for_functions(text):
    assert parse_criterion(text) is None


def test_functions_with_no_simple_formula_use_the_criteria_table(tmp_path):
    (tmp_path / "TASK.md").write_text("# T\n\n## Acceptance criteria\n\n- fib(10) == 55\n- fib(1) == 1\n"
                                      "- greet('Ana') == 'Hello, Ana!'\n- add(2, 3) == 5\n")
    _task, plan = plan_change(tmp_path / "TASK.md", tmp_path)
    source = plan.files["story_functions.py"]
    assert "def add(a, b):" in source and "return a + b" in source
    namespace: dict = {}
    exec(compile(source, "story_functions.py", "exec"), namespace)
    assert namespace["fib"](10) == 55 and namespace["fib"](1) == 1
    assert namespace["greet"]("Ana") == "Hello, Ana!"
    with pytest.raises(NotImplementedError):
        namespace["fib"](3)
    assert "AIPM_NOTES.md" not in plan.files  # every criterion became code and a test
