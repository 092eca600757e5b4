"""One turn's answer, collected from the plain line stream (SPEC.md, ``output`` of ``POST /execute``).

Owns what the answer keeps and what it leaves out: the echoed prompt, approval questions and the replies typed to
them, intermediate prompts, spinner frames and the ``▸ Credits`` line (parsed into ``credits``) go; tool-use lines
and tool output stay. It also notices the tool named before a question and a "having trouble responding" answer.
Memory is bounded: past ``limit_chars`` the oldest lines are dropped and the answer says how many.
"""

from __future__ import annotations

import re
from collections import deque

from ec2_services.worker_pool.screen import Patterns


class Transcript:
    def __init__(self, patterns: Patterns, *, limit_chars: int = 1_000_000):
        self._p = patterns
        self._limit = limit_chars
        # Any line the slow path must look at; everything else is appended as is (floods stay cheap).
        self._special = re.compile(
            "|".join(
                f"(?:{pattern.pattern})"
                for pattern in (patterns.approval, patterns.tool, patterns.credits, patterns.spinner)
            )
            + f"|(?i:{patterns.trouble.pattern})"
            + "|>",
            re.MULTILINE,
        )
        self._lines: deque[str] = deque()
        self._chars = 0
        self._dropped = 0
        self._echo: deque[str] = deque()
        self._reply_echo: str | None = None
        self._skip_blank = False
        self.credits: float | None = None
        self.trouble = False
        self.last_tool: str | None = None

    def begin(self, typed: str) -> None:
        """A prompt was typed (again): its echo comes first, and only this attempt's answer counts."""
        self._lines.clear()
        self._chars = 0
        self._dropped = 0
        self.trouble = False
        self.last_tool = None
        self._echo = deque(typed.split("\n"))
        self._reply_echo = None
        self._skip_blank = False

    def replied(self, reply: str) -> None:
        """A reply was typed to a question: its echo on the prompt line is not part of the answer."""
        self._reply_echo = reply.strip()
        self.last_tool = None

    def add(self, lines: list[str]) -> None:
        if not self._echo and self._reply_echo is None and not self._skip_blank and not self._special.search("\n".join(lines)):
            self._keep_all(lines)
            return
        for line in lines:
            self._add_one(line.rstrip())

    def _keep_all(self, lines: list[str]) -> None:
        self._lines.extend(lines)
        self._chars += sum(map(len, lines)) + len(lines)
        self._trim()

    def _add_one(self, text: str) -> None:
        p = self._p
        if self._echo:
            if text.endswith(self._echo[0].rstrip()):
                self._echo.popleft()
                return
            self._echo.clear()  # this agent does not echo: everything is answer
        if self._reply_echo is not None:
            reply, self._reply_echo = self._reply_echo, None
            if text.endswith(reply) and (p.prompt_prefix(text) or len(text) <= len(reply) + 2):
                return
        if p.approval.search(text):
            # The question comes as "\n<question>\n\n<prompt>": its blank lines go with it.
            self.last_tool = p.tool_name(text) or self.last_tool
            while self._lines and not self._lines[-1].strip():
                self._chars -= len(self._lines.pop()) + 1
            self._skip_blank = True
            return
        if self._skip_blank:
            if not text.strip():
                return
            self._skip_blank = False
        tool = p.tool_name(text)
        if tool:
            self.last_tool = tool
        elif self._is_prompt_line(text):
            return
        credits = p.credits.search(text)
        if credits:
            self.credits = float(credits.group(1))
            return
        if p.spinner.match(text):
            return
        if p.trouble.search(text):
            self.trouble = True
        self._keep_all([text])

    def _is_prompt_line(self, text: str) -> bool:
        if self._p.prompt_prefix(text):
            return True
        match = self._p.prompt_at_end(text)
        return bool(match and not text[: match.start()].strip() and not self._p.is_bare(match))

    def _trim(self) -> None:
        while self._chars > self._limit and self._lines:
            self._chars -= len(self._lines.popleft()) + 1
            self._dropped += 1

    def output(self) -> str:
        lines = [line.rstrip() for line in self._lines]
        while lines and not lines[0]:
            lines.pop(0)
        while lines and not lines[-1]:
            lines.pop()
        if self._dropped:
            lines.insert(0, f"[… {self._dropped} earlier lines omitted: the answer was over {self._limit} characters …]")
        return "\n".join(lines)
