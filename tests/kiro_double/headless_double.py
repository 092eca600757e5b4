#!/usr/bin/env python3
"""A test double of ``kiro-cli chat --no-interactive`` (Kiro's headless mode): one run per process, scripted, no AI.

As Kiro documents it: the prompt is the last argument; ``--trust-tools=a,b`` names the only tools it may use (with
nobody to ask, any other tool is refused); the answer goes to stdout, starting with the coloured ``> `` marker;
Kiro's own lines go to stderr — ``▸ Credits: N • Time: Ns`` after the answer, and its errors; the exit status is
0 (success), 1 (failure: auth, bad arguments, the request failed — throttling included), 3 (an MCP server required
by ``--require-mcp-startup`` did not start). ``KIRO_API_KEY`` must be set (else exit 1, as an unsigned run).

Directives in the prompt, as the PTY double's (run in order):

    [[tool NAME]]     use tool NAME: runs if trusted, else refused     [[write PATH TEXT]]  write a file (tool `write`)
    [[say TEXT]]      a line of text            [[quote TEXT]]  a line `> TEXT`       [[flood N]]  N lines
    [[sleep S]]       work S seconds (a line every 0.5 s)               [[silent S]]  print nothing for S seconds
    [[crash]]         a panic on stderr, killed by SIGABRT mid-answer   [[hang]]  print nothing, ignore SIGINT
    [[trouble N]]     the first N runs of this prompt fail as Kiro does when throttled (stderr, exit 1)
    [[fail]]          fail with exit 1 and an error on stderr           [[mcpfail]]  exit 3
    [[env NAME]]      whether NAME is in its environment                [[pwd]]  its working directory
    [[recall]]        says it remembers nothing (every run is a new conversation)

``--state-dir`` (default: the system temp dir) keeps the run counts [[trouble]] needs across processes.
``--work-seconds`` waits before the answer. Unknown options (the PTY double's) are accepted and ignored.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

ESC = "\x1b"
ANSWER_MARK = f"{ESC}[38;5;141m> {ESC}[0m"
GREY, RESET = f"{ESC}[38;5;8m", f"{ESC}[0m"
DIRECTIVE = re.compile(r"\[\[(\w+)(?:[ \t]+([^\]\n]*))?\]\]")


def out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def err(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def runs_of(prompt: str, state_dir: Path) -> int:
    """How many times this prompt has been run, this run included."""
    counter = state_dir / f"kiro-headless-double-{hashlib.sha256(prompt.encode()).hexdigest()[:16]}"
    count = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(count))
    return count


def use_tool(name: str, trusted: set[str]) -> bool:
    out(f"I will run the {name} tool.\n")
    if name in trusted or "*" in trusted:
        return True
    err(f"{GREY}Tool approval required for {name}, but --no-interactive was specified: denied.{RESET}\n")
    out(f"The {name} tool was denied.\n")
    return False


def directive(name: str, arg: str, trusted: set[str]) -> None:  # noqa: C901 - a test double: one branch per scripted directive
    if name == "tool" and use_tool(arg, trusted):
        out(f" ● Ran {arg}\n - Completed in 0.01s\n")
    elif name == "write":
        path, _, text = arg.partition(" ")
        if use_tool("write", trusted):
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text + "\n")
            out(f"Creating: {target.resolve()}\n - Completed in 0.01s\n")
    elif name == "say":
        out(f"{arg}\n")
    elif name == "quote":
        out(f"> {arg}\n")
    elif name == "flood":
        out("".join(f"{ESC}[32mflood line {i}{RESET}\n" for i in range(int(arg or 1000))))
    elif name == "sleep":
        end = time.monotonic() + float(arg or 1)
        while time.monotonic() < end:
            out("… still working\n")
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))
    elif name == "silent":
        time.sleep(float(arg or 1))
    elif name == "crash":
        err("thread 'main' panicked at 'the double was told to crash'\n")
        os.kill(os.getpid(), signal.SIGABRT)
    elif name == "hang":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        while True:
            time.sleep(3600)
    elif name == "env":
        out(f"{arg} is {'set' if arg in os.environ else 'not set'}\n")
    elif name == "pwd":
        out(f"pwd: {os.getcwd()}\n")
    elif name == "recall":
        out("I remember 0 earlier message(s) in this conversation\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("subcommand", nargs="?")
    parser.add_argument("--no-interactive", action="store_true")
    parser.add_argument("--trust-tools", default=None)
    parser.add_argument("--trust-all-tools", action="store_true")
    parser.add_argument("--agent", default=None)
    parser.add_argument("--work-seconds", type=float, default=0.0)
    parser.add_argument("--state-dir", default=tempfile.gettempdir())
    args, rest = parser.parse_known_args(argv)
    words = [word for word in rest if not word.startswith("--")]
    if args.subcommand != "chat" or not args.no_interactive or not words:
        err("error: the double runs only as `chat --no-interactive PROMPT`\n")
        return 1
    if not os.environ.get("KIRO_API_KEY"):
        err("error: not signed in: set KIRO_API_KEY for headless mode\n")
        return 1
    prompt = words[-1]
    trusted = {"*"} if args.trust_all_tools else set(filter(None, (args.trust_tools or "").split(",")))
    directives = DIRECTIVE.findall(prompt)
    names = [name for name, _ in directives]
    started = time.monotonic()
    if "mcpfail" in names:
        err("error: MCP server 'required' failed to start\n")
        return 3
    trouble = next((int(arg or 1) for name, arg in directives if name == "trouble"), 0)
    if trouble and runs_of(prompt, Path(args.state_dir)) <= trouble:
        err("Kiro is having trouble responding right now:\n   0: ThrottlingException: Too many requests, "
            "please wait before trying again.\n")
        return 1
    time.sleep(args.work_seconds)
    out(f"{ANSWER_MARK}Working on your message ({len(prompt.splitlines())} lines).\n")
    for name, arg in directives:
        directive(name, arg.strip(), trusted)
    if "fail" in names:
        err("error: the request failed: ValidationException: the double was told to fail\n")
        return 1
    out(f"\n{ANSWER_MARK}Done.\n")
    err(f"{GREY}\n ▸ Credits: 0.28 • Time: {int(time.monotonic() - started)}s\n{RESET}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
