"""The scripted stand-in agent for local runs — NOT an AI — speaking the Kiro CLI's terminal protocol.

``python -m aipm_local.standin_agent`` or ``python /abs/path/aipm_local/standin_agent.py`` (stdlib only, so the
worker pool can start it from any directory). It owns the chat loop a PTY driver sees, as ``kiro-cli chat
--legacy-ui`` shows it: a greeting, the coloured idle prompt ``[aipm] N% λ > ``, echo of typed input, Ctrl+J for a
newline inside a message and ``\\r`` to submit, a braille spinner cleared with ``ESC[2K``, answers that start with a
coloured ``> ``, a ``(using tool: write)`` line and the coloured ``Allow this action? … [y/n/t]:`` question (followed by
the idle prompt) before each file it writes, ``/clear`` with its ``[y/n]:`` question, ``/quit``, Ctrl+C to stop a
turn, and a closing ``▸ Credits: 0.00 • Time: Ns`` line.

From a prompt that names an absolute path to TASK.md it makes the small real change ``standin_change`` plans. It says
it is not an AI in its greeting and in every answer. It must not write outside the workspace nor touch TASK.md.
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import re
import select
import sys
import time
from pathlib import Path

try:
    from aipm_local import standin_change as change
except ImportError:  # started as a plain script by path: its own folder is on sys.path
    import standin_change as change  # type: ignore[no-redef]

ESC = "\x1b"
GREEN = f"{ESC}[38;5;10m"
RED = f"{ESC}[38;5;9m"
CYAN = f"{ESC}[36m"
MAGENTA = f"{ESC}[35m"
DIM = f"{ESC}[2m"
RESET = f"{ESC}[39m"
CLEAR_LINE = f"{ESC}[2K"
ANSWER_MARK = f"{GREEN}> {RESET}"
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
APPROVAL_QUESTION = (
    f"{RED}Allow this action? Use '{GREEN}t{RED}' to trust (always allow) this tool for the session. "
    f"[{GREEN}y{RED}/{RED}n{RED}/{GREEN}t{RED}]:{RESET}"
)
CLEAR_QUESTION = (
    f"{RED}Are you sure? This will erase the conversation history and context from hooks for the current session. "
    f"[{GREEN}y{RED}/{RED}n{RED}]:{RESET}"
)
GREETING = (
    "AIPM stand-in agent: a scripted program, NOT an AI.\n"
    "It speaks the Kiro CLI's terminal protocol so the local stack runs without kiro-cli. For each acceptance\n"
    "criterion like `add(2, 3) == 5` in a TASK.md it writes a function and a test; otherwise a notes file.\n"
    "For real AI work install kiro-cli and sign in (`kiro-cli login`).\n"
)
_ABS_PATH = re.compile(r"(?<![\w.~])(/[^\s'\"`<>|]+)")


class Interrupted(Exception):
    """Ctrl+C while a turn runs or a question waits."""


class EndOfInput(Exception):
    """The terminal closed (EOF) or Ctrl+D on an empty line."""


class Terminal:
    """The agent's side of the PTY: raw keys in (no line discipline, like a line editor), text out."""

    def __init__(self, fd_in: int = 0, fd_out: int = 1):
        self.fd_in = fd_in
        self.fd_out = fd_out
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = ""
        self._saved = None

    def __enter__(self) -> Terminal:
        if os.isatty(self.fd_in):
            import termios

            self._saved = termios.tcgetattr(self.fd_in)
            attrs = termios.tcgetattr(self.fd_in)
            # Raw input (\r stays \r, Ctrl+C arrives as a byte) but output processing kept (\n → \r\n).
            attrs[0] &= ~(termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP | termios.IXON)
            attrs[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG)
            attrs[6][termios.VMIN] = 1
            attrs[6][termios.VTIME] = 0
            termios.tcsetattr(self.fd_in, termios.TCSANOW, attrs)
        return self

    def __exit__(self, *exc) -> None:
        if self._saved is not None:
            import termios

            try:
                termios.tcsetattr(self.fd_in, termios.TCSANOW, self._saved)
            except termios.error:
                pass  # the PTY is already gone

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        while data:
            try:
                written = os.write(self.fd_out, data)
            except InterruptedError:
                continue
            data = data[written:]

    def _fill(self, timeout: float | None) -> bool:
        """Read what is available into the pending buffer; False on timeout; EndOfInput on EOF."""
        ready, _, _ = select.select([self.fd_in], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.fd_in, 4096)
        except OSError:  # EIO: the PTY's other side closed
            data = b""
        if not data:
            raise EndOfInput
        self._pending += self._decoder.decode(data)
        return True

    def pause(self, seconds: float) -> None:
        """Sleep, but stop at once on Ctrl+C (other typed input is kept for later)."""
        deadline = time.monotonic() + seconds
        while True:
            if "\x03" in self._pending:
                self._pending = self._pending.split("\x03", 1)[1]
                raise Interrupted
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._fill(left)

    def read_line(self) -> str:
        """One message as a line editor reads it: echo, Ctrl+J newline, \\r submit, backspace, escape sequences."""
        buffer: list[str] = []
        while True:
            while not self._pending:
                self._fill(None)
            ch, self._pending = self._pending[0], self._pending[1:]
            if ch == "\r":
                self.write("\n")
                return "".join(buffer)
            if ch == "\n":
                buffer.append("\n")
                self.write("\n")
            elif ch in "\x7f\x08":
                if buffer and buffer[-1] != "\n":
                    buffer.pop()
                    self.write("\b \b")
            elif ch == "\x03":
                self.write("^C\n")
                raise Interrupted
            elif ch == "\x04":
                if not buffer:
                    raise EndOfInput
            elif ch == ESC:
                self._skip_escape_sequence()
            elif ch == "\t" or ch >= " ":
                buffer.append(ch)
                self.write(ch)

    def _skip_escape_sequence(self) -> None:
        # Arrow keys, bracketed-paste markers and the like: ESC [ params final-byte.
        while not self._pending:
            if not self._fill(0.05):
                return
        if self._pending[0] != "[":
            self._pending = self._pending[1:]
            return
        i = 1
        while True:
            while i >= len(self._pending):
                if not self._fill(0.05):
                    self._pending = ""
                    return
            if "\x40" <= self._pending[i] <= "\x7e":
                self._pending = self._pending[i + 1 :]
                return
            i += 1


class StandinAgent:
    """The chat loop: prompt → read a message → answer (maybe writing files, each approved) → prompt."""

    def __init__(self, term: Terminal, *, think_s: float, delay_s: float, credits: bool, record: Path | None,
                 hold_while: Path | None = None):
        self.term = term
        self.think_s = think_s
        self.delay_s = delay_s
        self.hold_while = hold_while
        self.credits = credits
        self.record = record
        self.context_pct = 0
        self.trusted: set[str] = set()

    def prompt(self) -> None:
        self.term.write(f"{CYAN}[aipm] {GREEN}{self.context_pct}% {MAGENTA}λ > {RESET}")

    def run(self) -> int:
        self.term.write(GREETING + "\n")
        while True:
            self.prompt()
            try:
                message = self.term.read_line()
            except Interrupted:
                continue
            except EndOfInput:
                return 0
            text = message.strip()
            if not text:
                continue
            if text.startswith("/"):
                if self.command(text) == "quit":
                    return 0
                continue
            started = time.monotonic()
            self._record(message)
            try:
                self.turn(message)
            except Interrupted:
                self.term.write(f"{CLEAR_LINE}\r\n{DIM}Stopped (Ctrl+C). {change.NOT_AN_AI.capitalize()}.{RESET}\n\n")
                continue
            except EndOfInput:
                return 0
            if self.credits:
                self.term.write(f"{DIM}▸ Credits: 0.00 • Time: {max(1, round(time.monotonic() - started))}s{RESET}\n\n")

    def command(self, text: str) -> str | None:
        name = text.split()[0].lower()
        if name in ("/quit", "/exit", "/q"):
            return "quit"
        if name == "/clear":
            self.term.write(f"\n{CLEAR_QUESTION}\n\n")
            self.prompt()
            try:
                answer = self.term.read_line().strip().lower()
            except Interrupted:
                return None
            if answer.startswith("y"):
                self.context_pct = 0
                self.trusted.clear()
                self.term.write("\nConversation history cleared.\n\n")
            else:
                self.term.write("\n")
            return None
        self.term.write(f"\n{RED}Unknown command: {name}{RESET} (the stand-in knows /clear and /quit)\n\n")
        return None

    def _record(self, message: str) -> None:
        if self.record:
            with open(self.record, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"received_at": time.time(), "chars": len(message)}) + "\n")

    def spin(self) -> None:
        frames = max(1, int(self.think_s / 0.08))
        for i in range(frames):
            self.term.write(f"\r{SPINNER[i % len(SPINNER)]} Thinking...")
            self.term.pause(self.think_s / frames)
        self.term.write(f"\r{CLEAR_LINE}")

    def answer(self, text: str) -> None:
        self.term.write(f"{ANSWER_MARK}{text}\n\n")

    def turn(self, message: str) -> None:
        self.spin()
        self.context_pct = min(99, self.context_pct + 1)
        self.answer(f"This is {change.NOT_AN_AI}; it follows TASK.md mechanically.")
        if self.delay_s > 0:
            self.term.write(f"Working slowly on purpose (--delay {self.delay_s:g} s)...\n")
            self.term.pause(self.delay_s)
        if self.hold_while is not None and self.hold_while.exists():
            self.term.write(f"Holding while {self.hold_while.name} exists...\n")
            while self.hold_while.exists():
                self.term.pause(0.05)
        task_file, workspace = find_task(message)
        if task_file is None:
            self.answer(
                f"I found no absolute path to an existing task file (.md) in your message, so I changed nothing. "
                f"I am {change.NOT_AN_AI}: name a TASK.md to get a change."
            )
            return
        task, plan = change.plan_change(task_file, workspace)
        written = [rel for rel, content in plan.files.items() if self.write_file(workspace, rel, content)]
        self.answer(self.summary(task, plan, workspace, written))

    def write_file(self, workspace: Path, rel: str, content: str) -> bool:
        target = (workspace / rel).resolve()
        if workspace.resolve() not in target.parents or target.name == "TASK.md":
            self.term.write(f"{RED}Refusing to write {rel}: outside the workspace or the task file.{RESET}\n\n")
            return False
        verb = "modify" if target.exists() else "create"
        self.term.write(f"I'll {verb} the following file: {rel} (using tool: write)\n\n")
        if "write" not in self.trusted:
            reply = ""
            while not reply:  # Enter on an empty line approves nothing: the question stands
                self.term.write(f"{APPROVAL_QUESTION}\n\n")
                self.prompt()
                reply = self.term.read_line().strip().lower()
            if reply == "t":
                self.trusted.add("write")
            elif reply != "y":
                self.term.write(f"\n{RED}Tool use was rejected: {rel} not written.{RESET}\n\n")
                return False
        started = time.monotonic()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
        self.term.write(f"\n{'Updating' if verb == 'modify' else 'Creating'}: {rel}\n")
        self.term.write(f" - Completed in {time.monotonic() - started:.1f}s\n\n")
        return True

    def summary(self, task, plan, workspace: Path, written: list[str]) -> str:
        lines = [f'Done with "{task.title}". Files written: {", ".join(written) or "none"}.']
        if plan.functions and f"{change.MODULE_NAME}.py" in written:
            for expression, ok in change.check_functions(workspace, plan):
                lines.append(f"  {'✓' if ok else '✗'} {expression}")
        if plan.other:
            lines.append(f"{len(plan.other)} {'criterion is' if len(plan.other) == 1 else 'criteria are'} not of the form f(args) == value: listed in {change.NOTES_NAME}.")
        lines.append(f"I am {change.NOT_AN_AI}: review this change like any other before merging.")
        return "\n".join(lines)


def find_task(message: str) -> tuple[Path | None, Path]:
    """The absolute task file the prompt names (TASK.md preferred) and the workspace (a named folder holding it)."""
    paths = [Path(p.rstrip(".,;:)]}'\"")) for p in _ABS_PATH.findall(message)]
    files = [p for p in paths if p.suffix.lower() == ".md" and p.is_file()]
    task = next((p for p in files if p.name == "TASK.md"), files[0] if files else None)
    if task is None:
        return None, Path.cwd()
    folders = [p for p in paths if p.is_dir() and p in task.parents]
    workspace = max(folders, key=lambda p: len(p.parts)) if folders else task.parent
    return task, workspace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The AIPM scripted stand-in agent (NOT an AI).")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each turn waits before working (slow jobs)")
    parser.add_argument("--think", type=float, default=0.3, help="seconds the spinner turns before each answer")
    parser.add_argument("--no-credits", dest="credits", action="store_false", help="omit the ▸ Credits line")
    parser.add_argument("--record", type=Path, help="append a JSON line with the time each message arrives")
    parser.add_argument("--hold-while", type=Path, help="before working, wait as long as this file exists (tests)")
    parser.add_argument("--tag", default="", help="ignored; lets a supervisor find its own agent processes")
    args = parser.parse_args(argv)
    with Terminal() as term:
        agent = StandinAgent(term, think_s=args.think, delay_s=args.delay, credits=args.credits, record=args.record,
                             hold_while=args.hold_while)
        try:
            return agent.run()
        except (EndOfInput, BrokenPipeError):
            return 0


if __name__ == "__main__":
    sys.exit(main())
