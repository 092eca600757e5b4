#!/usr/bin/env python3
"""A test double of the Kiro CLI's chat (``kiro-cli chat --legacy-ui``): its terminal protocol, scripted, no AI.

It speaks what docs/contracts.md's "Kiro facts" list, as the real CLI prints it in a terminal: a greeting; the coloured
``[aipm] 20% λ > `` prompt; the typed message echoed (``\\n``/Ctrl+J a new line inside it, ``\\r`` submits); a
braille spinner redrawn on ``\\r`` and cleared with ``ESC[2K``; the answer starting with a coloured ``> ``; tool
requests as ``… (using tool: NAME)`` and a question with colour codes inside its text, followed by the idle prompt
(``y``/``n``/``t`` answer it, a blank line asks again, ``t`` trusts the tool for the session); ``/clear`` with its
``[y/n]:`` confirmation; ``/quit``; optionally ``▸ Credits: N • Time: Ns``; Ctrl+C back to the prompt.

What it does is told in the message, with directives (several allowed, run in order):

    [[tool NAME]]          ask permission for tool NAME (`-`: without naming it)
    [[write PATH TEXT]]    write a file (asks for `write`)
    [[sleep S]]            work (spinner) for S seconds         [[silent S]]         print nothing for S seconds
    [[crash]]              exit mid-answer with status 3        [[hang]]             print nothing, ignore Ctrl+C
    [[flood N]]            N lines of ANSI-heavy output         [[cat PATH]]         copy a file to the terminal
    [[trouble N]]          the first N sends of this message answer "Kiro is having trouble responding…"
    [[quote TEXT]]         a literal answer line `> TEXT`       [[slowmarker]]       the coloured `> `, a pause, text
    [[say TEXT]]           a line of text                       [[recall]]           what it remembers of the chat
    [[barequote]]          a plain `> ` at a line start, a pause, then the rest of the line
    [[env NAME]]           whether NAME is in its environment   [[pwd]]              its working directory
    [[fakeprompt]]         an answer line quoting `[aipm] 20% λ > `, 1.5 s of silence, then the answer goes on
    [[throttled N]]        the first N sends answer Kiro's throttling error (its header, `0: ThrottlingException`)
    [[savecursor]]         ESC[s, a status drawn at the top of the screen, ESC[u (as a full-screen status line does)

After every answer it prints ``▸ Credits: N • Time: Ns`` (as Kiro does; ``--credits N`` sets N, ``--no-credits``
leaves the line out, as a plan that never prints it). ``/clear`` asks its question and reads the answer at the
yellow ``> `` of the real CLI (``clear.rs``).

``PATH`` is relative to the directory named in the message (``working directory for this task is "…"``), else to
the double's own working directory. It lives under tests/ and is never the service's default command.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import termios
import time
from pathlib import Path

ESC = "\x1b"
GREY, GREEN, CYAN, MAGENTA, RESET = f"{ESC}[38;5;8m", f"{ESC}[32m", f"{ESC}[36m", f"{ESC}[35m", f"{ESC}[39m"
ANSWER_MARK = f"{ESC}[38;5;10m> {RESET}"
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
QUESTION = (
    f"{GREY}Allow this action? Use '{GREEN}t{GREY}' to trust (always allow) this tool for the session. "
    f"[{GREEN}y{GREY}/{GREEN}n{GREY}/{GREEN}t{GREY}]:{RESET}"
)
# `/clear` as the Q/Kiro CLI's clear.rs writes it: grey question, `]:\n\n`, colour reset, cursor shown, then the
# answer is read at a yellow `> ` (crossterm's yellow: 38;5;11), not at the idle prompt.
CLEAR_QUESTION = (
    f"{GREY}\nAre you sure? This will erase the conversation history and context from hooks for the current session. "
    f"[{GREEN}y{GREY}/{GREEN}n{GREY}]:\n\n{RESET}{ESC}[?25h"
)
CONFIRM_PROMPT = f"{ESC}[38;5;11m> {ESC}[39m"
TROUBLE = "Kiro is having trouble responding right now. Please try again later."
# Kiro's error form for throttling: its header, then the error's details.
THROTTLED = (
    "Kiro is having trouble responding right now:\n   0: ThrottlingException: Too many requests, please wait before "
    "trying again.\n\nLocation:\n   crates/chat-cli/src/cli/chat/mod.rs:1021"
)
DIRECTIVE = re.compile(r"\[\[(\w+)(?:[ \t]+([^\]\n]*))?\]\]")
WORKDIR = re.compile(r'working directory for this task is ("(?:[^"\\]|\\.)*")')


def out(text: str) -> None:
    data = text.encode()
    while data:
        written = os.write(1, data)
        data = data[written:]


class Double:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.memory: list[str] = []
        self.trusted: set[str] = set()
        self.sent: dict[str, int] = {}
        self.pending = b""

    # ---- terminal ----------------------------------------------------------------------------------------

    def prompt(self, *, after_answer: bool = False) -> None:
        if after_answer and self.args.prompt_log:
            with open(self.args.prompt_log, "a") as log:
                log.write(f"{time.monotonic():.6f}\n")
        if self.args.bare_prompt:  # the Q CLI without an agent: only `> `, magenta (`StyledText::prompt("> ")`)
            out(f"{MAGENTA}> {RESET}")
        else:
            out(f"{CYAN}[{self.args.agent}] {GREEN}{self.args.percent}% {MAGENTA}λ > {RESET}")

    def read_message(self) -> str | None:
        """One message as typed: echoed, Ctrl+J a new line inside it, Enter (\\r) sends. None at end of input."""
        typed: list[str] = []
        while True:
            try:
                if not self.pending:
                    self.pending = os.read(0, 4096)
                    if not self.pending:
                        return None
                data, self.pending = self.pending, b""
            except KeyboardInterrupt:  # Ctrl+C at the prompt: drop what was typed
                out("^C\n")
                typed.clear()
                self.prompt()
                continue
            text = data.decode(errors="replace")
            for index, char in enumerate(text):
                if char == "\r":
                    self.pending = text[index + 1 :].encode()
                    out("\n")
                    return "".join(typed)
                if char == "\n":
                    typed.append("\n")
                    out("\n")
                elif char in ("\x7f", "\x08"):
                    if typed and typed[-1] != "\n":
                        typed.pop()
                        out("\b \b")
                elif char >= " " or char == "\t":
                    typed.append(char)
                    out(char)

    def ask(self, question: str) -> str:
        """A question followed by the idle prompt (as Kiro does); a blank answer asks again."""
        while True:
            out(f"\n{question}\n\n")
            self.prompt()
            reply = self.read_message()
            if reply is None:
                sys.exit(0)
            if reply.strip():
                return reply.strip().lower()

    def work(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        frame = 0
        while True:
            out(f"\r{GREY}{SPINNER[frame % len(SPINNER)]} Thinking...{RESET}")
            frame += 1
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(0.08, left))
        out(f"\r{ESC}[2K")

    # ---- the chat ----------------------------------------------------------------------------------------

    def run(self) -> None:
        if self.args.startup_seconds:
            time.sleep(self.args.startup_seconds)
        out(f"{GREEN}✓{RESET} Kiro double ready {GREY}(a scripted stand-in for kiro-cli in tests, not an AI){RESET}\n\n")
        answered = False
        while True:
            self.prompt(after_answer=answered)
            answered = False
            message = self.read_message()
            if message is None or message.strip() == "/quit":
                return
            command = message.strip()
            if not command:
                continue
            if command == "/clear":
                out(CLEAR_QUESTION)
                out(CONFIRM_PROMPT)
                reply = self.read_message()
                if reply is None:
                    return
                if reply.strip() in ("y", "Y"):
                    self.memory.clear()
                    self.trusted.clear()
                    out(f"{GREEN}\nConversation history cleared.\n\n{RESET}")
                continue
            try:
                self.answer(message)
            except KeyboardInterrupt:
                out(f"\r{ESC}[2K\n")
            self.memory.append(message)
            answered = True

    def answer(self, message: str) -> None:
        match = WORKDIR.search(message)
        workdir = Path(json.loads(match.group(1))) if match else Path.cwd()
        directives = DIRECTIVE.findall(message)
        self.sent[message] = self.sent.get(message, 0) + 1
        trouble = next((int(arg or 1) for name, arg in directives if name == "trouble"), 0)
        throttled = next((int(arg or 1) for name, arg in directives if name == "throttled"), 0)
        self.work(self.args.work_seconds)
        if self.sent[message] <= trouble:
            out(f"{TROUBLE}\n\n")
            return
        if self.sent[message] <= throttled:
            out(f"{THROTTLED}\n\n")
            return
        started = time.monotonic()
        out(f"{ANSWER_MARK}Working on your message ({len(message.splitlines())} lines).\n")
        for name, arg in directives:
            self.directive(name, arg.strip(), workdir)
        out(f"\n{ANSWER_MARK}Done.\n")
        if not self.args.no_credits:
            out(f"\n{GREY}▸ Credits: {self.args.credits} • Time: {int(time.monotonic() - started)}s{RESET}\n")
        out("\n")

    def use_tool(self, name: str, purpose: str) -> bool:
        if name != "-":  # `[[tool -]]`: the question comes without a line naming the tool
            out(f"{purpose} (using tool: {name})\n")
        if name in self.trusted:
            return True
        reply = self.ask(QUESTION)
        if reply.startswith("t"):
            self.trusted.add(name)
        if reply.startswith(("y", "t")):
            return True
        out(f"{GREY}Tool use was rejected: {name}{RESET}\n")
        return False

    def directive(self, name: str, arg: str, workdir: Path) -> None:  # noqa: C901 - a test double: one branch per scripted directive
        if name == "tool" and self.use_tool(arg, f"I need to run {arg}."):
            out(f" ● Ran {arg}\n - Completed in 0.01s\n\n{ANSWER_MARK}Tool {arg} finished.\n")
        elif name == "write":
            path, _, text = arg.partition(" ")
            target = workdir / path
            if self.use_tool("write", f"I'll create the following file: {target}"):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text + "\n")
                out(f"Creating: {target}\n - Completed in 0.01s\n\n")
        elif name == "sleep":
            self.work(float(arg or 1))
        elif name == "silent":
            time.sleep(float(arg or 1))
        elif name == "crash":
            out("thread 'main' panicked at 'the double was told to crash'\n")
            os._exit(3)
        elif name == "hang":
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            while True:
                time.sleep(3600)
        elif name == "flood":
            self.flood(int(arg or 1000))
        elif name == "cat":
            with open(arg, "rb") as source:
                while block := source.read(1 << 16):
                    os.write(1, block)
        elif name == "quote":
            out(f"> {arg}\n")
        elif name == "slowmarker":
            out(ANSWER_MARK)
            time.sleep(0.6)
            out("this text follows the coloured marker after a pause\n")
        elif name == "barequote":
            out("Here is a quote:\n> ")  # a plain `> ` alone on the cursor's line: a bare prompt look-alike
            time.sleep(0.6)
            out("the quoted text, after a pause\n")
        elif name == "fakeprompt":
            out(f"The log ends with the prompt:\n{CYAN}[{self.args.agent}] {GREEN}{self.args.percent}% {MAGENTA}λ > {RESET}")
            time.sleep(1.5)
            out("\nand the story goes on after the pause.\n")
        elif name == "savecursor":
            out(f"{ESC}[s{ESC}[1;1H{GREY}status: working{RESET}{ESC}[u")
        elif name == "say":
            out(f"{arg}\n")
        elif name == "recall":
            last = self.memory[-1].splitlines()[0] if self.memory else ""
            out(f"I remember {len(self.memory)} earlier message(s) in this conversation{': ' + last if last else ''}\n")
        elif name == "env":
            out(f"{arg} is {'set' if arg in os.environ else 'not set'}\n")
        elif name == "pwd":
            out(f"pwd: {os.getcwd()}\n")

    @staticmethod
    def flood(lines: int) -> None:
        block = "".join(
            f"{ESC}[38;5;{i % 256}mflood line {i}{ESC}[0m with {ESC}[1mbold{ESC}[22m and {ESC}[32mcolour{RESET}\n"
            for i in range(min(lines, 1000))
        ).encode()
        full, rest = divmod(lines, 1000)
        for _ in range(full):
            os.write(1, block)
        if rest:
            out("".join(f"flood line {i}\n" for i in range(rest)))


def raw_input_mode() -> None:
    """Keystrokes one by one, no echo (the double echoes), \\r kept as \\r; Ctrl+C still interrupts."""
    if not os.isatty(0):
        return
    attrs = termios.tcgetattr(0)
    attrs[0] &= ~(termios.ICRNL | termios.INLCR | termios.IGNCR)
    attrs[3] &= ~(termios.ICANON | termios.ECHO)
    attrs[6][termios.VMIN] = 1
    attrs[6][termios.VTIME] = 0
    termios.tcsetattr(0, termios.TCSANOW, attrs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="aipm")
    parser.add_argument("--percent", type=int, default=20)
    parser.add_argument("--work-seconds", type=float, default=0.05, help="spinner time before every answer")
    parser.add_argument("--startup-seconds", type=float, default=0.0)
    parser.add_argument("--bare-prompt", action="store_true", help="prompt with a bare `> ` (no agent, no λ)")
    parser.add_argument("--credits", default="0.01", help="the N of `▸ Credits: N` printed after each answer")
    parser.add_argument("--no-credits", action="store_true", help="no Credits line (plans that never print it)")
    parser.add_argument("--prompt-log", default=None, help="append time.monotonic() when an answer's prompt is printed")
    args, _ = parser.parse_known_args(argv)  # accepts the real CLI's `chat --legacy-ui --agent aipm`
    raw_input_mode()
    try:
        Double(args).run()
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
