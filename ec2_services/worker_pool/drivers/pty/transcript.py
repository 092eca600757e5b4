"""One turn's answer, collected from the plain line stream (docs/contracts.md, ``output`` of ``POST /execute``).

Owns what the answer keeps and what it leaves out: the echoed prompt, approval questions and the replies typed to
them, intermediate prompts, spinner frames, the answer's own ``> `` and the ``▸ Credits`` line (parsed into
``credits``) go; tool-use lines and tool output stay. It also notices the tool named before a question and a
"having trouble responding" answer. Memory is bounded: past ``limit_chars`` the oldest lines are dropped and the
answer says how many.

Lines are read lazily: blocks wait raw (``_pending``) until someone needs what they say (the answer, the credits,
the last tool, a reply typed), and are then read in order, in one go. Blocks pushed out by the memory bound while
still waiting are never decoded: only the hints that outlive them (the last tool named, the last credits) are looked
for in them, with plain substring scans. So a flood costs about what its bytes cost to receive, and reading scales
with what the answer keeps, not with what the agent printed.
Must not do I/O or know about processes: it is fed blocks (``session.py``) and asked what they said.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable

from ec2_services.worker_pool.drivers.pty.screen import Block, Patterns, last_nonblank_line, strip_ansi
from ec2_services.worker_pool.profiles import DEFAULT_PROMPT_PATTERN, DEFAULT_SPINNER_PATTERN

_TAIL_CHARS = 16_000
# Kiro's error is its header line and a few lines of details (`0: ThrottlingException …`, a location, a hint).
_ERROR_LINES = 8
# A tool call's last line (` - Completed in 0.3s`): the agent's text after it starts with its own `> ` again.
_TOOL_DONE = re.compile(r"^\s*-\s*Completed in [0-9.]+\s*m?s\b")
_TOOL_DONE_HINT = "Completed in"
# Waiting blocks past this are read anyway when someone asks for the running tail (the progress view).
_TAIL_SETTLE_CHARS = 262_144


_SPINNER_CHARS = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def _candidates(p: Patterns) -> re.Pattern | None:
    """One regex finding every line ``Transcript._add_one`` may act on (a superset: each hint the patterns need, any
    ``>``, a spinner frame, a prompt at a line start), or None when a pattern has no hint (then every line goes
    through ``_add_one``). Alternatives anchored at line starts make the regex engine try every position, at a
    tenth of the speed of literals: the default patterns need none (their spinner frames hold one of its characters,
    their prompt a ``>``)."""
    if not p.approval_hint:
        return None
    parts = [">", _TOOL_DONE_HINT, p.tool_hint, p.credits_hint, p.approval_hint]
    alternatives = [re.escape(part) for part in parts]
    if p.spinner.pattern == DEFAULT_SPINNER_PATTERN:
        alternatives.append(f"[{_SPINNER_CHARS}]")
    else:
        alternatives.append(p.spinner.pattern)
    if p.prompt.pattern != DEFAULT_PROMPT_PATTERN:
        # A prompt pattern that may not need `>` (an overridden KIRO_PROMPT_PATTERN): a line that is a prompt from
        # its start.
        alternatives.append(r"^[ \t]*(?:" + p.prompt.pattern + ")")
    return re.compile("|".join(f"(?:{alt})" for alt in alternatives), re.MULTILINE)


class Transcript:
    def __init__(self, patterns: Patterns, *, limit_chars: int = 1_000_000):
        self._p = patterns
        self._limit = limit_chars
        self._spinner_chars = re.compile(f"[{_SPINNER_CHARS}]")
        self._candidates = _candidates(patterns)
        # Kept lines, in blocks as they came (a flood's raw blocks are stripped only if still kept at the end).
        self._blocks: deque[Block] = deque()
        self._chars = 0
        # While a block is read: the lines and runs of lines it keeps, stored as one plain block when it is done.
        self._kept: list[str] | None = None
        # Blocks not read yet, in order, after ``_blocks``.
        self._pending: deque[Block] = deque()
        self._pending_chars = 0
        # The newest blocks pushed out unread that named a tool / the credits (looked into when next read).
        self._unread_tool: Block | None = None
        self._unread_credits: Block | None = None
        # The last block pushed out unread: whether its last line ends a tool call decides where an answer starts.
        self._unread_last: Block | None = None
        self._dropped = 0
        # The echo of the typed prompt: lines are held until one ends like the prompt's last line (then dropped
        # with it), or until more lines came than the echo can take (then they were answer after all).
        self._echo_end: str | None = None
        self._echo_budget = 0
        self._held: list[str] = []
        self._reply_echo: str | None = None
        self._skip_blank = False
        # The next non-blank line begins a stretch of the agent's text: its leading `> ` is the CLI's answer marker.
        # The coloured marker never gets here (``LineAssembler`` drops it); one that lost its colour (a captured
        # screen replayed as text) is dropped here, and only there: a `> ` later in the text is the agent's own.
        self._answer_starts = True
        self._credits: float | None = None
        self._ended_on_credits = False
        self._last_tool: str | None = None

    @property
    def credits(self) -> float | None:
        """The last ``▸ Credits`` line's figure."""
        self._settle()
        return self._credits

    @property
    def ended_on_credits(self) -> bool:
        """The last line that mattered was Kiro's `▸ Credits` line: what it prints after every answer, before its
        prompt. With it a prompt is the turn's end; without it a prompt-like line may be the answer's."""
        self._settle()
        return self._ended_on_credits

    @property
    def last_tool(self) -> str | None:
        """The tool named last (before a question: the tool it asks about)."""
        self._settle()
        return self._last_tool

    def begin(self, typed: str) -> None:
        """A prompt was typed (again): its echo comes first, and only this attempt's answer counts."""
        self._blocks.clear()
        self._chars = 0
        self._pending.clear()
        self._pending_chars = 0
        self._unread_tool = self._unread_credits = self._unread_last = None
        self._dropped = 0
        self._last_tool = None
        nonblank = [line.rstrip() for line in typed.split("\n") if line.strip()]
        self._echo_end = nonblank[-1].strip() if nonblank else ""
        # Its lines, plus a few for a line editor's redraws and soft wraps of long lines.
        self._echo_budget = typed.count("\n") + 4 + len(typed) // 200
        self._held = []
        self._reply_echo = None
        self._skip_blank = False
        self._answer_starts = True
        self._ended_on_credits = False

    def replied(self, reply: str) -> None:
        """A reply was typed to a question: its echo on the prompt line is not part of the answer."""
        self._settle()
        self._reply_echo = reply.strip()
        self._last_tool = None

    def add(self, block: Block | list[str]) -> None:
        """Lines that came: kept waiting, unread, until someone needs them (see the module's docstring)."""
        if isinstance(block, list):
            block = Block.of(block)
        if not block.count:
            return
        self._pending.append(block)
        self._pending_chars += len(block.text) + 1
        # The same bound as ``_keep``'s, over what is kept and what waits: the oldest waiting blocks go unread.
        limit = 2 * self._limit
        while True:
            total = self._chars + self._pending_chars
            if self._blocks and total - len(self._blocks[0].text) - 1 > limit:
                dropped = self._blocks.popleft()
                self._chars -= len(dropped.text) + 1
                self._dropped += dropped.count
            elif len(self._pending) > 1 and total - len(self._pending[0].text) - 1 > limit:
                self._pass_unread(self._pending.popleft())
            else:
                return

    def _settle(self) -> None:
        """Read the waiting blocks, in order."""
        self._resolve_unread()
        while self._pending:
            block = self._pending.popleft()
            self._pending_chars -= len(block.text) + 1
            self._read(block)

    def _pass_unread(self, block: Block) -> None:
        """A waiting block the memory bound pushes out: its lines are dropped unread. The last tool and credits it
        names still count: the newest such block is remembered and looked into once, before the next read."""
        self._pending_chars -= len(block.text) + 1
        self._dropped += block.count + len(self._held)
        self._held.clear()
        self._echo_end = self._reply_echo = None
        self._skip_blank = False
        p = self._p
        if p.tool_hint and p.tool_hint in block.text:
            self._unread_tool = block
        if p.credits_hint and p.credits_hint in block.text:
            self._unread_credits = block
        self._ended_on_credits = False
        self._unread_last = block

    def _resolve_unread(self) -> None:
        p = self._p
        if self._unread_last is not None:
            last = last_nonblank_line(self._unread_last)
            self._answer_starts = bool(last and _TOOL_DONE.match(last))
            self._unread_last = None
        if self._unread_tool is not None:
            # Only the newest such block is looked into: if its hint words name no tool, an older one is not sought.
            self._last_tool = self._last_hint(self._unread_tool, p.tool_hint, p.tool_name) or self._last_tool
            self._unread_tool = None
        if self._unread_credits is not None:
            found = self._last_hint(self._unread_credits, p.credits_hint,
                                    lambda line: (m := p.credits.search(line)) and m.group(1))
            if found:
                self._credits = float(found)
            self._unread_credits = None

    @staticmethod
    def _last_hint(block: Block, hint: str, read: Callable[[str], str | None]) -> str | None:
        """``read`` of the last line of ``block`` holding ``hint`` for which it answers something."""
        text = block.text
        end = len(text)
        while hint and (at := text.rfind(hint, 0, end)) >= 0:
            start = text.rfind("\n", 0, at) + 1
            stop = text.find("\n", at)
            found = read(strip_ansi(text[start : stop if stop >= 0 else len(text)]))  # the words, not the redraws
            if found:
                return found
            end = start
        return None

    def _read(self, block: Block) -> None:
        if not self._watching() and not self._may_matter(block.text):
            if self._answer_starts and block.text.strip():
                self._answer_starts = False  # the stretch began without a marker (no `>` in this block)
            self._keep(block)
            return
        # Stripped in one pass; then only the lines that may matter go one by one, the runs between them in bulk;
        # what the block keeps is stored as one plain block.
        self._kept = []
        try:
            self._read_text(block.plain_text())
        finally:
            kept, self._kept = self._kept, None
            if kept:
                self._store(Block("\n".join(kept), plain=True))

    def _read_text(self, text: str) -> None:
        pos = 0
        while pos <= len(text):
            if self._watching() or self._candidates is None:
                end = text.find("\n", pos)
                end = len(text) if end < 0 else end
                self._add_one(text[pos:end].rstrip())
                pos = end + 1
                continue
            match = self._candidates.search(text, pos)
            if match is None:
                self._keep_run(text[pos:])
                return
            start = text.rfind("\n", 0, match.start()) + 1
            if start < pos:  # a match spanning lines (``\s`` crosses newlines): it starts on the line at pos
                start = pos
            if start > pos:
                self._keep_run(text[pos : start - 1])
            end = text.find("\n", max(match.end(), start))
            end = len(text) if end < 0 else end
            for line in text[start:end].split("\n"):
                self._add_one(line.rstrip())
            pos = end + 1

    def _watching(self) -> bool:
        """Lines must go one by one: an echo or a reply's echo may still come, or a question's blank lines."""
        return self._echo_end is not None or self._reply_echo is not None or self._skip_blank

    def _keep_run(self, text: str) -> None:
        """Plain lines none of which may matter, kept as one run (blank lines at its end kept one by one, as a
        question that follows takes them away)."""
        body = text.rstrip()
        blanks = text.count("\n", len(body)) if body else text.count("\n") + 1
        if body:
            if self._answer_starts:
                self._answer_starts = False
            self._keep_text(body)
        if blanks:
            if self._kept is not None:
                self._kept.extend([""] * blanks)
            else:
                self._store(Block("\n" * (blanks - 1), plain=True))

    def _may_matter(self, text: str) -> bool:
        """Whether lines may hold a prompt, a question, a tool line, the Credits line or a spinner frame.

        Works on raw text too: the hints are plain words that escape sequences do not split."""
        hint = self._p.approval_hint
        return (
            ">" in text
            or _TOOL_DONE_HINT in text
            or self._p.tool_hint in text
            or self._p.credits_hint in text
            or (hint in text if hint else bool(self._p.approval.search(strip_ansi(text))))
            or (not text.isascii() and bool(self._spinner_chars.search(text)))
        )

    def _keep(self, block: Block) -> None:
        if self._ended_on_credits and block.text.strip():
            self._ended_on_credits = False
        self._store(block)

    def _keep_text(self, text: str) -> None:
        """Plain lines kept: into the block being read, if one is."""
        if self._ended_on_credits and text.strip():
            self._ended_on_credits = False
        if self._kept is not None:
            self._kept.append(text)
        else:
            self._store(Block(text, plain=True))

    def _store(self, block: Block) -> None:
        self._blocks.append(block)
        self._chars += len(block.text) + 1
        # Whole blocks go first (raw ones count twice the limit: escape sequences are about half of them);
        # output() trims the rest exactly.
        while self._blocks and self._chars - len(self._blocks[0].text) - 1 > 2 * self._limit:
            dropped = self._blocks.popleft()
            self._chars -= len(dropped.text) + 1
            self._dropped += dropped.count

    def _add_one(self, text: str) -> None:
        # The common line takes no extra call: the rare states (an echo or a reply awaited, a question) take one.
        if self._echo_end is not None:
            self._await_echo(text)
            return
        if self._reply_echo is not None and self._is_reply_echo(text):
            return
        p = self._p
        if p.asks_approval(text):
            self._on_question(text)
            return
        if self._skip_blank and self._is_question_blank(text):
            return
        tool = p.tool_name(text)
        if tool:
            self._last_tool = tool
        elif self._is_prompt_line(text):
            return
        credits = p.credits_in(text)
        if credits:
            self._credits = float(credits.group(1))
            self._ended_on_credits = True
            return
        if p.spinner.match(text):
            return
        if self._answer_starts and text.strip():
            self._answer_starts = False
            if text.startswith("> "):
                text = text[2:]
        if _TOOL_DONE.match(text):
            self._answer_starts = True
        self._keep_text(text)

    def _await_echo(self, text: str) -> None:
        """A line while the prompt's echo is awaited: the echo's end drops it and what was held; else it is held,
        until more lines than an echo could take came (then what was held is answer)."""
        end = self._echo_end
        if text.endswith(end) or (len(text.strip()) >= 8 and end.endswith(text.strip())):
            self._echo_end = None
            self._held.clear()
            return
        self._held.append(text)
        if len(self._held) > self._echo_budget:
            self._release_held()  # no echo came (or not one we recognise): what was held is answer

    def _on_question(self, text: str) -> None:
        # The question comes as "\n<question>\n\n<prompt>": its blank lines go with it.
        self._last_tool = self._p.tool_name(text) or self._last_tool
        self._drop_trailing_blanks()
        self._skip_blank = True

    def _is_question_blank(self, text: str) -> bool:
        """Whether the line is one of the blank lines after a question (they go with it); the first other ends them."""
        if not text.strip():
            return True
        self._skip_blank = False
        return False

    def _is_reply_echo(self, text: str) -> bool:
        """Whether the line after a reply typed to a question is that reply's echo (looked for on that line only)."""
        reply, self._reply_echo = self._reply_echo, None
        return text.endswith(reply) and bool(self._p.prompt_prefix(text) or len(text) <= len(reply) + 2)

    def _release_held(self) -> None:
        held, self._held, self._echo_end = self._held, [], None
        for line in held:
            self._add_one(line)

    def _drop_trailing_blanks(self) -> None:
        """The blank lines last kept go (a question's). Kept plain blocks end their non-blank text with them as
        bare newlines (lines are kept right-stripped); raw blocks are left as they are."""
        kept = self._kept
        if kept is not None:
            while kept and not kept[-1]:
                kept.pop()
            if kept:
                return
        while self._blocks:
            last = self._blocks[-1]
            if not last.plain:
                return
            body = last.text.rstrip("\n")
            if body:
                if len(body) < len(last.text):
                    self._blocks[-1] = Block(body, plain=True, count=last.count - (len(last.text) - len(body)))
                    self._chars -= len(last.text) - len(body)
                return
            self._chars -= len(self._blocks.pop().text) + 1

    @property
    def trouble(self) -> bool:
        """The turn ended on Kiro's own error ("Kiro is having trouble responding right now", then its details,
        e.g. a ``ThrottlingException``). Only a line starting with that header among the last lines counts: the
        agent's prose about throttling, or an old error earlier in a real answer, must not send the task again."""
        self._settle()
        self._release_held()
        last: list[str] = []
        for block in reversed(self._blocks):
            last.extend(line for line in reversed(block.plain_lines()) if line.strip())
            if len(last) >= _ERROR_LINES:
                break
        return any(self._p.trouble.search(line) for line in last[:_ERROR_LINES])

    def _is_prompt_line(self, text: str) -> bool:
        if self._p.prompt_prefix(text):
            return True
        match = self._p.prompt_at_end(text)
        return bool(match and not text[: match.start()].strip() and not self._p.is_bare(match))

    def tail(self, max_lines: int = 20) -> list[str]:
        """The answer's last non-blank lines so far, for a running task's progress. Reads only the newest blocks
        (a flood is not stripped whole) and settles nothing: lines still held as a possible echo are not shown.
        Waiting blocks are read first, unless a flood left more than ``_TAIL_SETTLE_CHARS`` of them: then their raw
        tail is shown as the terminal shows it."""
        if self._pending_chars <= _TAIL_SETTLE_CHARS:
            self._settle()
        lines: list[str] = []
        for block in [*reversed(self._pending), *reversed(self._blocks)]:
            text = block.text
            chopped = len(text) > _TAIL_CHARS
            if chopped:
                text = text[-_TAIL_CHARS:]
            block_lines = block.plain_of(text.replace("\r\n", "\n"))
            if chopped:
                block_lines = block_lines[1:]  # the first may be cut
            lines.extend(line.rstrip() for line in reversed(block_lines) if line.strip())
            if len(lines) >= max_lines:
                break
        return lines[:max_lines][::-1]

    def output(self) -> str:
        self._settle()
        self._release_held()
        # The newest blocks, back to the first one the limit cuts into: older blocks are only counted, never decoded.
        newest: list[list[str]] = []
        size = 0
        blocks = reversed(self._blocks)
        for block in blocks:
            lines = [line.rstrip() for line in block.plain_lines()]
            newest.append(lines)
            size += sum(map(len, lines)) + len(lines)
            if size > self._limit:
                break
        dropped = self._dropped + sum(block.count for block in blocks)
        lines = [line for block_lines in reversed(newest) for line in block_lines]
        start = 0
        while size > self._limit and start < len(lines):
            size -= len(lines[start]) + 1
            start += 1
        dropped += start
        lines = lines[start:]
        while lines and not lines[0]:
            lines.pop(0)
        while lines and not lines[-1]:
            lines.pop()
        if dropped:
            lines.insert(0, f"[… {dropped} earlier lines omitted: the answer was over {self._limit} characters …]")
        return "\n".join(lines)
