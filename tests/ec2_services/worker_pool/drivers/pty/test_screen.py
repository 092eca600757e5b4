"""Reading the agent's screen: real captured Kiro/Q screens, and the line stream's handling of terminal redraws."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ec2_services.worker_pool.drivers.pty.screen import (
    Block,
    LineAssembler,
    Patterns,
    RecentScreen,
    ScreenState,
    classify_screen,
    screen_of,
    strip_ansi,
)
from ec2_services.worker_pool.drivers.pty.transcript import Transcript
from ec2_services.worker_pool.profiles import PROFILES

FIXTURES = Path(__file__).resolve().parents[4] / "fixtures" / "kiro"
KIRO = PROFILES["kiro"]
PATTERNS = Patterns(KIRO)


def read(name: str) -> list[str]:
    raw = (FIXTURES / f"{name}.txt").read_text(encoding="utf-8")
    return screen_of(raw)


@pytest.mark.parametrize(
    ("fixture", "state"),
    [
        ("kiro_cli_idle_output", ScreenState.IDLE),
        ("kiro_cli_completed_output", ScreenState.IDLE),
        ("kiro_cli_complex_response", ScreenState.IDLE),
        ("kiro_cli_error_output", ScreenState.IDLE),
        ("kiro_cli_handoff_error", ScreenState.IDLE),
        ("kiro_cli_permission_output", ScreenState.APPROVAL),
        ("kiro_cli_handoff_with_permission", ScreenState.APPROVAL),
        ("kiro_cli_permission_active_empty", ScreenState.APPROVAL),
        ("kiro_cli_permission_active_partial_typing", ScreenState.APPROVAL),
        ("kiro_cli_permission_active_trailing_text", ScreenState.APPROVAL),
        ("kiro_cli_permission_active_injection", ScreenState.APPROVAL),
        ("kiro_cli_permission_stale_answered", ScreenState.IDLE),
        ("kiro_cli_permission_stale_long_response", ScreenState.IDLE),
        ("kiro_cli_processing_output", ScreenState.BUSY),
        ("kiro_cli_tui_processing_output", ScreenState.BUSY),
        ("kiro_cli_tui_idle_output", ScreenState.BUSY),
        ("kiro_cli_tui_completed_output", ScreenState.BUSY),
        ("kiro_trust_all_tools_dialog_active", ScreenState.BUSY),
        ("kiro_trust_all_tools_dialog_in_scrollback", ScreenState.IDLE),
    ],
)
def test_captured_screens_are_read_as_a_person_would(fixture, state):
    assert classify_screen(read(fixture), PATTERNS).state is state


@pytest.mark.parametrize("fixture", sorted(p.stem for p in FIXTURES.glob("*.txt")))
def test_reading_only_the_bottom_rows_agrees_with_the_whole_screen(fixture):
    raw = (FIXTURES / f"{fixture}.txt").read_text(encoding="utf-8")
    screen = RecentScreen(budget=len(raw) + 1)
    screen.feed(raw.replace("\r\n", "\n").replace("\n", "\r\n"))
    whole = screen.lines()
    assert classify_screen(screen.bottom_lines(), PATTERNS) == classify_screen(whole, PATTERNS)
    assert screen.bottom_lines() == [line for line in whole if line.strip()][-3:]


def test_stale_answered_permission_above_a_fresh_prompt_is_not_pending():
    lines = read("kiro_cli_permission_stale_answered")
    assert any("Allow this action?" in line for line in lines)
    reading = classify_screen(lines, PATTERNS)
    assert reading.state is ScreenState.IDLE
    assert not reading.bare


def test_agent_name_percentage_and_lambda_prompt_is_idle_and_not_bare():
    reading = classify_screen(["", "[agent] 16% λ > "], PATTERNS)
    assert reading == reading.__class__(ScreenState.IDLE, bare=False)


def test_a_bare_prompt_is_idle_but_flagged_bare():
    assert classify_screen(["> "], PATTERNS).bare


def test_an_answer_line_ending_in_gt_is_not_a_prompt():
    assert classify_screen(["x = a -> b", "<div>"], PATTERNS).state is ScreenState.BUSY


def test_having_trouble_capture_marks_the_turn_for_retry():
    transcript = Transcript(PATTERNS)
    lines = read("kiro_cli_error_output")
    transcript.add(lines)
    assert transcript.trouble
    assert "having trouble" in transcript.output()


def test_clear_confirmation_above_the_prompt_is_a_confirm_question():
    lines = ["Are you sure? This will erase the conversation history. [y/n]:", "", "[aipm] 20% λ > "]
    assert classify_screen(lines, PATTERNS).state is ScreenState.CONFIRM


def test_spinner_redrawn_on_cr_and_cleared_leaves_only_the_answer():
    assembler = LineAssembler(KIRO)
    raw = "\r⠋ Thinking...\r⠙ Thinking...\r\x1b[2K\x1b[38;5;10m> \x1b[39mHello there\r\nsecond\r\n"
    assert assembler.feed(raw).plain_lines() == ["Hello there", "second"]


def test_a_literal_uncoloured_gt_line_is_kept():
    assembler = LineAssembler(KIRO)
    assert assembler.feed("> quoted text\r\n").plain_lines() == ["> quoted text"]


def test_the_coloured_answer_start_cannot_be_the_prompt():
    assembler = LineAssembler(KIRO)
    assembler.feed("\r\x1b[2K\x1b[38;5;10m> \x1b[39m")
    assert assembler.partial_plain() == "> "
    assert assembler.partial_is_answer_start()
    assembler.feed("text\r\n\x1b[36m[aipm] \x1b[32m20% \x1b[35mλ > \x1b[39m")
    assert not assembler.partial_is_answer_start()
    assert PATTERNS.prompt_at_end(assembler.partial_plain())


def test_lines_split_across_reads_are_joined():
    assembler = LineAssembler(KIRO)
    assert assembler.feed("hel").lines == []
    assert assembler.feed("lo\x1b[3").lines == []
    block = assembler.feed("1mred\x1b[0m\r\nnext\x1b[2m line\r\n")
    assert block.plain_lines() == ["hellored", "next line"]
    assert assembler.lines_completed == 2


def test_strip_ansi_removes_csi_osc_and_controls_but_keeps_text():
    raw = "\x1b]0;title\x07\x1b[1;31mred\x1b[0m\x1b(B plain\x07\ttab\x1b[K"
    assert strip_ansi(raw) == "red plain\ttab"


def test_two_byte_escapes_leave_no_letter_or_digit_behind():
    # ESC 7 / ESC 8 (save and restore the cursor, as crossterm writes them), ESC = / ESC > (keypad modes), ESC c
    # (reset), ESC M (reverse index): none of their second bytes is text, and a stray ">" would look like a marker.
    raw = "\x1b=\x1b7\x1b[1;1Hstatus\x1b8done\x1bM \x1b>kept\x1bc"
    assert strip_ansi(raw) == "statusdone kept"
    assembler = LineAssembler(KIRO)
    assembler.feed("answer \x1b")  # an escape split across two reads
    block = assembler.feed("7saved\x1b8 line\r\n")
    assert block.plain_lines() == ["answer saved line"]
    assert strip_ansi("\x1b[31mred\x1b[") == "red["  # an unfinished CSI is not a two-byte escape: its [ stays


def test_transcript_leaves_out_echo_questions_replies_and_credits():
    transcript = Transcript(PATTERNS)
    transcript.begin("first line\nsecond line")
    transcript.add(["[aipm] 20% λ > first line", "second line", "Answer starts", "I'll write x (using tool: write)", ""])
    transcript.add(["Allow this action? Use 't' to trust (always allow) this tool for the session. [y/n/t]:", ""])
    assert transcript.last_tool == "write"
    transcript.replied("t\r")
    transcript.add(["[aipm] 20% λ > t", "Creating: x", "", "▸ Credits: 0.42 • Time: 3s", ""])
    assert transcript.output() == "Answer starts\nI'll write x (using tool: write)\nCreating: x"
    assert transcript.credits == 0.42


def test_an_answer_marker_that_lost_its_colour_is_left_out_where_a_stretch_of_text_begins_only():
    """A captured screen replayed as plain text: each stretch of the agent's text (the first, and the one after a
    tool's `- Completed in`) begins with the CLI's `> `, which goes; a `> ` quote inside the text stays."""
    transcript = Transcript(PATTERNS)
    transcript.begin("do it")
    transcript.add(["[aipm] 20% λ > do it", "", "> I'll update both files.", "> a quoted line stays",
                    "Updating: a.py", " - Completed in 0.3s", "", "> Done! Updated both files."])
    assert transcript.output().splitlines() == [
        "I'll update both files.", "> a quoted line stays", "Updating: a.py", " - Completed in 0.3s", "",
        "Done! Updated both files."]


def test_a_stretch_that_begins_without_a_marker_keeps_a_later_quote():
    transcript = Transcript(PATTERNS)
    transcript.begin("do it")
    transcript.add(["[aipm] 20% λ > do it"])
    transcript.add(Block("plain start, no marker\r\nsecond", plain=False, crlf=True))  # the fast path
    transcript.add(["> a quote"])
    assert transcript.output().splitlines() == ["plain start, no marker", "second", "> a quote"]


def test_transcript_memory_is_bounded_and_says_what_it_dropped():
    transcript = Transcript(PATTERNS, limit_chars=1000)
    transcript.add([f"line {i:05d}" for i in range(1000)])
    output = transcript.output()
    assert len(output) < 1200
    assert output.endswith("line 00999")
    assert "earlier lines omitted" in output.splitlines()[0]


_PIECES = st.sampled_from(
    ["plain words ", "\x1b[1;32m", "\x1b[0m", "\r\n", "\r⠋ Thinking...", "\r\x1b[2K", "\x1b[38;5;10m> \x1b[39m",
     "> literal", "λ", "x" * 30, "\x1b[K", "\t", "Allow this action? [y/n/t]:"]
)


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(_PIECES, max_size=40), cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8))
def test_lines_do_not_depend_on_how_reads_split_the_output(pieces, cuts):
    text = "".join(pieces) + "\r\n"
    whole = LineAssembler(KIRO)
    expected = whole.feed(text).plain_lines()
    split = LineAssembler(KIRO)
    got: list[str] = []
    last = 0
    for cut in sorted({c % (len(text) + 1) for c in cuts}):
        got += split.feed(text[last:cut]).plain_lines() if cut > last else []
        last = cut
    got += split.feed(text[last:]).plain_lines()
    assert got == expected
    assert split.lines_completed == whole.lines_completed == len(expected)


def test_echo_redrawn_by_a_line_editor_is_left_out():
    transcript = Transcript(PATTERNS)
    transcript.begin("fix the bug\nin module x")
    transcript.add(["[aipm] 20% λ > fix the b", "[aipm] 20% λ > fix the bug", "in module x", "The answer."])
    assert transcript.output() == "The answer."


def test_an_agent_that_does_not_echo_loses_no_answer_line():
    transcript = Transcript(PATTERNS)
    transcript.begin("one line prompt")
    transcript.add([f"answer line {i}" for i in range(3)])
    assert transcript.output() == "answer line 0\nanswer line 1\nanswer line 2"
    transcript.begin("one line prompt")
    transcript.add([f"answer line {i}" for i in range(10)])
    assert transcript.output().splitlines() == [f"answer line {i}" for i in range(10)]


def test_plain_coloured_lines_are_kept_raw_until_read_then_stripped():
    assembler = LineAssembler(KIRO)
    block = assembler.feed("a\x1b[1mb\x1b[0m\r\nc\r\nd")
    assert not block.plain  # nothing to emulate: stripping waits until someone reads it
    assert block.count == 2 and block.lines == ["a\x1b[1mb\x1b[0m", "c"]
    assert block.plain_lines() == ["ab", "c"]
    assert assembler.partial == "d"


def test_the_agent_log_writes_each_line_of_a_read_as_shown_and_condenses_a_flood():
    import io  # noqa: PLC0415
    import json  # noqa: PLC0415
    import logging  # noqa: PLC0415

    from aipm_common.logging import setup_logging  # noqa: PLC0415
    from ec2_services.worker_pool.drivers.agent_log import AgentOutputLog  # noqa: PLC0415

    stream = io.StringIO()
    setup_logging("worker-pool", stream=stream, json_lines=True)
    try:
        agent_log = AgentOutputLog(4, lines_per_window=3, window_s=3600)
        assembler = LineAssembler(KIRO)
        spinner = "\r\x1b[38;5;8m⠋ Thinking...\x1b[0m\r\x1b[2K"
        agent_log.block(assembler.feed(f"{spinner}\x1b[38;5;10m> \x1b[39mHello\r\n\x1b[1mbold\x1b[0m\r\nthird\r\nfourth\r\n"))
        agent_log.block(assembler.feed("fifth\r\n"))
        agent_log.flush()
    finally:
        logging.getLogger().handlers.clear()
    messages = [json.loads(line)["message"] for line in stream.getvalue().splitlines()]
    assert messages == ["[Worker 4] Hello", "[Worker 4] bold", "[Worker 4] third",
                        "[Worker 4] … 2 lines omitted (output flood)"]
