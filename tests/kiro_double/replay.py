"""Replays captured Kiro screens byte for byte as an agent session: the first file at start, then one file per
message typed (each captured answer ends on its idle prompt, as the capture has it — some with a newline after).

    replay.py START [ANSWER ...]

A message is what is typed up to ``\\r`` (echoed). ``/clear`` asks `[y/n]:` above the start capture's last line (its
prompt) and shows that prompt again after the reply; ``/quit`` ends the session. A message past the last answer file exits with status 4.
Only the capture's ``\\n`` are turned into ``\\r\\n`` (a terminal's output processing); nothing else is changed.
"""

from __future__ import annotations

import os
import sys

from kiro_double import raw_input_mode  # run as a script: this directory is on sys.path


def out(data: bytes) -> None:
    while data:
        data = data[os.write(1, data):]


def read_until_return() -> str | None:
    typed = bytearray()
    while True:
        chunk = os.read(0, 1)
        if not chunk:
            return None
        if chunk == b"\r":
            out(b"\r\n")
            return typed.decode("utf-8", "replace")
        if chunk == b"\n":  # Ctrl+J: a newline inside the message
            out(b"\r\n")
        else:
            out(chunk)
        typed += chunk


def main() -> int:
    raw_input_mode()
    captures = []
    for path in sys.argv[1:]:
        with open(path, "rb") as capture:
            captures.append(capture.read().replace(b"\n", b"\r\n"))
    start, *answers = captures
    prompt = start.rsplit(b"\r\n", 1)[-1]
    out(start)
    while True:
        message = read_until_return()
        if message is None or message.strip() == "/quit":
            return 0
        if message.strip() == "/clear":  # the question, then the idle prompt under it (as Kiro asks)
            out(b"\r\nAre you sure? This will erase the conversation history and context from hooks for the current "
                b"session. [y/n]:\r\n\r\n" + prompt)
            if read_until_return() is None:
                return 0
            out(b"Conversation history cleared.\r\n\r\n" + prompt)
            continue
        if not answers:
            return 4
        out(answers.pop(0))


if __name__ == "__main__":
    sys.exit(main())
