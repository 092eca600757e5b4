"""Terminal decoding for agent sessions: the cheap line stream, the recent screen, and what the screen means.

Two views of one byte stream, because a terminal emulator is faithful but slow (pyte feeds well under 1 MB/s):

- ``LineAssembler`` — the hot path. Turns output into plain lines for the log and the answer: escape sequences
  removed in one C-speed regex pass, ``\\r`` / ``ESC[2K`` / ``ESC[K`` / backspace emulated only on the rare lines
  that hold them (spinner frames redraw with ``\\r`` and are cleared with ``ESC[2K``), the answer's coloured
  leading ``> `` dropped (a literal, uncoloured ``> `` is kept).
- ``RecentScreen`` — a real 200×50 pyte screen fed lazily and only with the most recent output, consulted when
  the line being drawn looks like a prompt; ``classify_screen`` reads it like a person would (idle prompt,
  approval question above it, ``/clear`` confirmation).

Nothing here does I/O or knows about workers; every function is pure on its input.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass

import pyte

from ec2_services.worker_pool.profiles import DEFAULT_PROMPT_PATTERN, AgentProfile

COLUMNS, ROWS = 200, 50

# CSI, OSC, charset selection and two-byte escapes: ESC then one byte from 0 to ~ (save/restore cursor ESC 7/ESC 8,
# keypad modes ESC =/ESC >, reset ESC c, …) but the CSI's [. Factored on the leading ESC so the regex engine skips
# plain text fast (about 90 MB/s here, the same order as `cat` through a PTY).
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|[0-Z\\-~])")
# Controls that never print; \x00/\x01/\x08/\r are kept for the line emulation below and removed by it.
_CONTROLS = re.compile(r"[\x02-\x07\x0b\x0c\x0e-\x1f\x7f]")
_ERASE_LINE = "\x1b[2K"
_ERASE_TO_END = ("\x1b[K", "\x1b[0K")
# Private stand-ins used between the two passes (they cannot survive _CONTROLS, so never leak out).
_CLEAR, _CLEAR_END = "\x00", "\x01"
_EDITS = re.compile(r"([\r\x00\x01\x08])")
_NEEDS_EMULATION = re.compile(r"[\r\x00\x01\x08]")
_ERASURES = (_ERASE_LINE, "\x1b[K", "\x1b[0K")


def _redrawn(raw: str) -> bool:
    """Whether ``raw`` erases, backspaces or holds the answer's marker. One-character checks first: they are
    memchr-fast, where a search for "> " or an escape sequence in ANSI-heavy text is not."""
    return (
        "\x08" in raw
        or ("K" in raw and any(seq in raw for seq in _ERASURES))
        or (">" in raw and "> " in raw)
    )


def strip_ansi(text: str) -> str:
    """``text`` without escape sequences or non-printing controls (``\\n`` and ``\\t`` kept)."""
    return _CONTROLS.sub("", _ANSI.sub("", text)).replace("\r", "")


def _emulate_line(line: str) -> str:
    """What one terminal line shows after its carriage returns, erasures and backspaces."""
    # Edits at the start of a line act on nothing; a line returned, cleared and drawn again (a spinner's last frame
    # wiped, then the text) shows only what was drawn last. Those are nearly all the redrawn lines agents print.
    line = line.lstrip("\r\x00\x01\x08")
    if not _NEEDS_EMULATION.search(line):
        return line
    redrawn = line.rfind("\r\x00")
    if redrawn >= 0 and not _NEEDS_EMULATION.search(line, redrawn + 2):
        return line[redrawn + 2 :]
    buf: list[str] = []
    cursor = 0
    for part in _EDITS.split(line):
        if not part:
            continue
        if part == "\r":
            cursor = 0
        elif part == _CLEAR:
            buf = [" "] * cursor
        elif part == _CLEAR_END:
            del buf[cursor:]
        elif part == "\x08":
            cursor = max(0, cursor - 1)
        else:
            if cursor > len(buf):
                buf.extend(" " * (cursor - len(buf)))
            buf[cursor : cursor + len(part)] = part
            cursor += len(part)
    return "".join(buf)


def _prepare(raw: str) -> str:
    raw = raw.replace("\r\n", "\n").replace(_ERASE_LINE, _CLEAR)
    for seq in _ERASE_TO_END:
        raw = raw.replace(seq, _CLEAR_END)
    return raw


class Block:
    """Finished lines from one read, as one text, in one of three forms:

    - plain (``plain=True``): the lines as shown;
    - raw (``plain=False``): still holding escape sequences, which are then the only difference from the plain text;
    - redrawn (``plain=False`` with ``decode``): raw lines that also carry ``\\r``, erasures, backspaces or the answer's
      marker; ``decode`` (the assembler's ``decode_text``) turns such raw text into the text a terminal shows.

    Nothing is stripped, emulated or split until someone asks for the lines: most of a flood never is."""

    __slots__ = ("text", "plain", "count", "_crlf", "_lines", "_decode")

    def __init__(
        self,
        text: str,
        *,
        plain: bool,
        count: int | None = None,
        crlf: bool = False,
        decode: Callable[[str], str] | None = None,
    ):
        self.text = text  # raw blocks may still end their lines with "\r\n" (``crlf``)
        self.plain = plain
        self.count = count if count is not None else text.count("\n") + 1
        self._crlf = crlf
        self._lines: list[str] | None = None
        self._decode = decode

    @classmethod
    def of(cls, lines: list[str]) -> Block:
        block = cls("\n".join(lines), plain=True, count=len(lines))
        block._lines = lines
        return block

    @property
    def lines(self) -> list[str]:
        """The lines as they came (raw unless the block is plain)."""
        if self._lines is None:
            self._lines = self.text.split("\r\n" if self._crlf else "\n")
        return self._lines

    def plain_lines(self) -> list[str]:
        return self.lines if self.plain else self.plain_text().split("\n")

    def plain_text(self) -> str:
        return self.plain_of_text(self.text)

    def plain_of_text(self, text: str) -> str:
        """A piece of ``text`` (whole lines) as plain text."""
        if self.plain:
            return text
        if self._decode is not None:
            return self._decode(text)
        return strip_ansi(text)

    def plain_of(self, text: str) -> list[str]:
        """A piece of ``text`` (whole lines, ``\\n``-separated) as plain lines."""
        return self.plain_of_text(text).split("\n")

    def plain_line(self, line: str) -> str:
        """One of ``lines`` as plain text."""
        return self.plain_of_text(line)


_EMPTY = Block.of([])


def last_nonblank_line(block: Block, *, look_back: int = 4) -> str | None:
    """The last non-blank line of ``block`` as plain text (looking at most ``look_back`` lines up), else None.
    Cheap on a flood: only the lines looked at are stripped, never the block."""
    text = block.text
    end = len(text)
    for _ in range(look_back):
        start = text.rfind("\n", 0, end) + 1
        line = block.plain_line(text[start:end])
        if line.strip():
            return line
        if start == 0:
            return None
        end = start - 1
    return None


class LineAssembler:
    """Raw terminal output in, finished plain-text lines out; the unfinished line stays raw until its newline."""

    def __init__(self, profile: AgentProfile, *, max_partial: int = 16384):
        self._marker_at_start = re.compile(profile.answer_marker_raw)
        self._confirm_prompt = re.compile(profile.confirm_prompt_raw)
        self._max_partial = max_partial
        self.partial = ""
        self.lines_completed = 0

    def feed(self, text: str) -> Block:
        """The lines ``text`` finished (the unfinished one waits for its newline), left raw: decoding waits until
        someone reads them. Costs a few C-speed scans of ``text``, whatever it holds."""
        buf = self.partial + text if self.partial else text
        cut = buf.rfind("\n")
        if cut < 0:
            self.partial = self._bounded(buf)
            return _EMPTY
        self.partial = self._bounded(buf[cut + 1 :])
        # The newline at `cut` came as "\r\n": leave its "\r" out, or every block would need the line emulation.
        raw = buf[: cut - 1] if cut and buf[cut - 1] == "\r" else buf[:cut]
        newlines = raw.count("\n")
        self.lines_completed += newlines + 1
        if not _redrawn(raw):
            returns = raw.count("\r")
            if returns == 0 or returns == newlines:
                # Every \r ends a line, nothing is erased and no answer marker: escape sequences are the only
                # difference from plain text.
                return Block(raw, plain=False, count=newlines + 1, crlf=returns > 0)
        return Block(raw, plain=False, count=newlines + 1, decode=self.decode_text)

    def decode(self, raw: str) -> list[str]:
        """Raw finished lines (``\\n``-separated) as a terminal shows them: carriage returns, erasures and
        backspaces emulated, the answer's coloured leading ``> `` dropped, escape sequences and controls removed."""
        return self.decode_text(raw).split("\n")

    def decode_text(self, raw: str) -> str:
        """``decode`` as one text: only the lines that hold a ``\\r``, an erasure or a backspace go through the
        line emulation, found by one scan of the block (a test per line would run at Python speed)."""
        block = raw.replace("\r\n", "\n")
        if "\x1b" in block:  # each step only where its sequence can be: one line is decoded per read, too
            if "K" in block:
                block = block.replace(_ERASE_LINE, _CLEAR)
                for seq in _ERASE_TO_END:
                    block = block.replace(seq, _CLEAR_END)
            if "> " in block:
                block = self._drop_markers(block)
            block = _ANSI.sub("", block)
        plain = _CONTROLS.sub("", block)
        if _CLEAR in plain:  # a line erased before it is drawn (a progress line redrawn in place) shows what follows
            plain = plain.replace("\n" + _CLEAR, "\n")
        edit = _NEEDS_EMULATION.search(plain)
        if edit is None:
            return plain
        pieces: list[str] = []
        done = 0
        while edit is not None:
            start = plain.rfind("\n", 0, edit.start()) + 1
            end = plain.find("\n", edit.end())
            end = len(plain) if end < 0 else end
            pieces.append(plain[done:start])
            pieces.append(_emulate_line(plain[start:end]))
            done = end
            edit = _NEEDS_EMULATION.search(plain, end)
        pieces.append(plain[done:])
        return "".join(pieces)

    def _drop_markers(self, text: str) -> str:
        """``text`` without the answer's marker where it starts a line (after a newline, ``\\r`` or an erase).
        Looks only where a ``> `` is: a regex anchored at every line start would scan the text at Python speed."""
        pieces: list[str] = []
        last = 0
        pos = text.find("> ")
        while pos >= 0:
            line = text.rfind("\n", 0, pos) + 1
            start = max(line, text.rfind("\r", line, pos) + 1, text.rfind(_CLEAR, line, pos) + 1)
            if start >= last:
                match = self._marker_at_start.match(text, start)
                if match and match.end() >= pos + 2:
                    pieces.append(text[last:start])
                    last = match.end()
            pos = text.find("> ", max(pos + 2, last))
        if not pieces:
            return text
        pieces.append(text[last:])
        return "".join(pieces)

    def _bounded(self, partial: str) -> str:
        # A spinner can redraw one line for minutes: keep only what the line shows now.
        if len(partial) <= self._max_partial:
            return partial
        last = max(partial.rfind("\r"), partial.rfind(_ERASE_LINE))
        tail = partial[last:] if last >= 0 else partial
        return tail[-self._max_partial :]

    def partial_plain(self) -> str:
        """The line being drawn, as it shows now."""
        return _emulate_line(_CONTROLS.sub("", _ANSI.sub("", _prepare(self.partial))))

    def partial_is_answer_start(self) -> bool:
        """The line being drawn starts with the answer's coloured ``> `` (so it cannot be the prompt)."""
        raw = _prepare(self.partial)
        start = max(raw.rfind("\r"), raw.rfind(_CLEAR)) + 1
        return bool(self._marker_at_start.match(raw, start))

    def partial_is_confirm_prompt(self) -> bool:
        """The line being drawn is the yellow `> ` a confirmation question reads its answer at (`/clear`)."""
        raw = _prepare(self.partial)
        start = max(raw.rfind("\r"), raw.rfind(_CLEAR)) + 1
        return bool(self._confirm_prompt.match(raw, start))

    def reset(self) -> None:
        self.partial = ""


class _Screen(pyte.Screen):
    """pyte's screen, with ``CSI s`` / ``CSI u`` (save / restore the cursor, as ``ESC 7`` / ``ESC 8``), which real
    terminals honour and pyte ignores: a screen that saves the cursor, draws at the top and restores it would
    otherwise print its next lines (the prompt) at the top, where nobody looks for them."""

    def save_cursor_csi(self, *_params: int, **_kwargs: object) -> None:
        self.save_cursor()

    def restore_cursor_csi(self, *_params: int, **_kwargs: object) -> None:
        self.restore_cursor()


class _Stream(pyte.Stream):
    csi = {**pyte.Stream.csi, "s": "save_cursor_csi", "u": "restore_cursor_csi"}


class RecentScreen:
    """A pyte screen of the session's recent output, fed only when asked, and after a flood only with its last
    ``rows`` lines (never more than ``budget`` chars): pyte takes about 3 µs a character, so re-reading 8 KB to
    decide on one prompt-like line would cost more than a megabyte of the line stream."""

    def __init__(self, *, columns: int = COLUMNS, rows: int = ROWS, budget: int = 8192):
        self._screen = _Screen(columns, rows)
        self._rows = rows
        self._stream = _Stream(self._screen)
        self._budget = budget
        self._pending: list[str] = []
        self._pending_len = 0
        self._restart = False

    def feed(self, text: str) -> None:
        if len(text) > self._budget:  # this alone is over the budget: nothing before it can be kept (nor copied)
            self._pending = [text]
            self._pending_len = len(text)
        else:
            self._pending.append(text)
            self._pending_len += len(text)
        if self._pending_len > 4 * self._budget:
            self._compact()

    def _compact(self) -> None:
        joined = "".join(self._pending)[-self._budget :]
        # Start on a line boundary, at most a screen's height up: what came before that is off the screen anyway.
        start = len(joined) - 1
        for _ in range(self._rows):
            start = joined.rfind("\n", 0, start)
            if start < 0:
                break
        if start < 0:
            newline = joined.find("\n")
            start = newline if 0 <= newline < len(joined) - 1 else -1
        joined = joined[start + 1 :]
        self._pending = [joined]
        self._pending_len = len(joined)
        self._restart = True

    def _catch_up(self) -> None:
        if self._pending_len > self._budget:
            self._compact()
        if self._restart:
            self._screen.reset()
            self._restart = False
        if self._pending:
            self._stream.feed("".join(self._pending))
            self._pending.clear()
            self._pending_len = 0

    def lines(self) -> list[str]:
        """The whole screen as logical lines (soft wraps joined)."""
        self._catch_up()
        return _unwrap(self._screen.display, self._screen.columns)

    def bottom_lines(self, count: int = 3) -> list[str]:
        """The last ``count`` non-blank logical lines, rendering only the rows needed (``display`` costs ms)."""
        self._catch_up()
        screen = self._screen
        rows: list[str] = []
        nonblank = 0
        for y in range(screen.lines - 1, -1, -1):
            row = screen.buffer[y]
            text = "".join(row[x].data for x in range(max(row) + 1)) if row else ""
            rows.append(text)
            nonblank += bool(text.strip())
            # One line more than asked, ending on a row that did not wrap: the lines below it are whole.
            if nonblank > count and len(text) < screen.columns:
                break
        rows.reverse()
        return [line for line in _unwrap(rows, screen.columns) if line.strip()][-count:]

    def reset(self) -> None:
        self._pending.clear()
        self._pending_len = 0
        self._restart = True


def _unwrap(rows: list[str], columns: int) -> list[str]:
    """Screen rows as logical lines: a row filled to its last column continues on the next (a soft wrap)."""
    lines: list[str] = []
    carry = ""
    for row in rows:
        if len(row) >= columns and row[-1] != " ":
            carry += row
            continue
        lines.append((carry + row).rstrip())
        carry = ""
    if carry:
        lines.append(carry.rstrip())
    return lines


class ScreenState(enum.Enum):
    BUSY = "busy"  # working, or printing
    IDLE = "idle"  # the idle prompt, nothing asked above it
    APPROVAL = "approval"  # a tool permission question above the prompt
    CONFIRM = "confirm"  # a `[y/n]:` question (the `/clear` confirmation) above the prompt


@dataclass(frozen=True)
class Reading:
    state: ScreenState
    # The prompt matched is a bare `>`: it cannot be told from the answer's leading `> ` without a quiet period.
    bare: bool = False


class Patterns:
    """A profile's regexes, compiled once."""

    def __init__(self, profile: AgentProfile):
        self.prompt = re.compile(profile.prompt_pattern)
        self.approval = re.compile(profile.approval_pattern)
        self.confirm = re.compile(profile.clear_confirm_pattern)
        self.tool = re.compile(profile.tool_pattern)
        self.credits = re.compile(profile.credits_pattern)
        self.trouble = re.compile(profile.trouble_pattern, re.IGNORECASE)
        self.spinner = re.compile(profile.spinner_pattern)
        self.approval_hint = profile.approval_hint
        self.tool_hint = profile.tool_hint
        self.credits_hint = profile.credits_hint
        # The default prompt ends its line with `>` (then only blanks): a line that does not cannot hold it, which a
        # string test tells faster than the regex's search.
        self._prompt_ends_gt = profile.prompt_pattern == DEFAULT_PROMPT_PATTERN

    @staticmethod
    def is_bare(match: re.Match) -> bool:
        return match.group().strip() in (">", "!>")

    def prompt_at_end(self, line: str) -> re.Match | None:
        if self._prompt_ends_gt and not line.rstrip().endswith(">"):
            return None
        return self.prompt.search(line)

    def asks_approval(self, text: str) -> bool:
        hint = self.approval_hint
        return (not hint or hint in text) and self.approval.search(text) is not None

    def credits_in(self, line: str) -> re.Match | None:
        return self.credits.search(line) if self.credits_hint in line else None

    def prompt_prefix(self, line: str) -> re.Match | None:
        """A non-bare prompt starting ``line`` with typed text after it (`[aipm] 20% λ > t`)."""
        end = line.find(">")
        if end < 0:
            return None
        head = line[: end + 1]
        match = self.prompt.search(head)
        if match and match.start() == len(head) - len(head.lstrip()) and not self.is_bare(match):
            return match
        return None

    def tool_name(self, line: str) -> str | None:
        match = self.tool.search(line) if self.tool_hint in line else None
        if not match:
            return None
        return next(group for group in match.groups() if group)

    def question(self, text: str) -> ScreenState | None:
        if self.asks_approval(text):
            return ScreenState.APPROVAL
        if self.confirm.search(text):
            return ScreenState.CONFIRM
        return None


def classify_screen(lines: list[str], patterns: Patterns) -> Reading:
    """What the agent is doing, read from its ANSI-free screen lines (docs/contracts.md, ``KIRO_PROMPT_PATTERN``).

    The last non-blank line decides: an idle prompt means the agent waits for input, unless a question stands above
    it with only blank lines between (or before it on the same line) — then it waits for that answer. A prompt line
    with text typed after it below a question is still that question, being answered. Anything else is busy.
    """
    nonblank = [line.rstrip() for line in lines if line.strip()]
    if not nonblank:
        return Reading(ScreenState.BUSY)
    last = nonblank[-1]
    above = nonblank[-2] if len(nonblank) > 1 else ""
    match = patterns.prompt_at_end(last)
    if match:
        before = last[: match.start()]
        if before.strip():
            asked = patterns.question(before)
            return Reading(asked) if asked else Reading(ScreenState.BUSY)
        asked = patterns.question(above)
        if asked:
            return Reading(asked)
        return Reading(ScreenState.IDLE, bare=patterns.is_bare(match))
    if patterns.prompt_prefix(last):
        asked = patterns.question(above)
        if asked:
            return Reading(asked)
    return Reading(ScreenState.BUSY)


def screen_of(raw: str, *, columns: int = COLUMNS, rows: int = ROWS) -> list[str]:
    """A captured raw terminal text as the lines a terminal shows (for fixtures and diagnostics)."""
    screen = RecentScreen(columns=columns, rows=rows, budget=max(16384, len(raw) + 1))
    screen.feed(raw.replace("\r\n", "\n").replace("\n", "\r\n"))
    return screen.lines()
