"""The transcript's bulk path (runs of lines that cannot matter kept as one block) answers exactly what the line by
line path answers, on the realistic P6 corpus built from the real captures, cut into blocks anywhere."""

from __future__ import annotations

import random

from bench.p6_output_flood import realistic_unit
from ec2_services.worker_pool.drivers.pty.screen import LineAssembler, Patterns
from ec2_services.worker_pool.drivers.pty.transcript import Transcript
from ec2_services.worker_pool.profiles import PROFILES

PROFILE = PROFILES["kiro"]


def _answer(stream: str, cuts: list[int], *, bulk: bool, typed: str = "Flood [[cat x]]") -> Transcript:
    assembler = LineAssembler(PROFILE)
    turn = Transcript(Patterns(PROFILE), limit_chars=200_000)
    if not bulk:
        turn._candidates = None  # every line through _add_one, as before the bulk path
    turn.begin(typed)
    start = 0
    for cut in [*cuts, len(stream)]:
        turn.add(assembler.feed(stream[start:cut]))
        start = cut
    turn.add(assembler.feed("\n"))
    return turn


def test_bulk_path_answers_what_the_line_path_answers():
    rng = random.Random(20)
    stream = "[aipm] 20% λ > Flood [[cat x]]\r\n" + "".join(realistic_unit(n) for n in range(40))
    for _ in range(8):
        cuts = sorted(rng.sample(range(1, len(stream)), 30))
        bulk, lines = _answer(stream, cuts, bulk=True), _answer(stream, cuts, bulk=False)
        assert bulk.output() == lines.output()
        assert (bulk.credits, bulk.last_tool, bulk.trouble) == (lines.credits, lines.last_tool, lines.trouble)
    out = bulk.output()
    assert "Allow this action" not in out and "Credits" not in out and "Thinking" not in out
    assert "Flood [[cat x]]" not in out  # the echo
    assert "def hello_world():" in out and " - Completed in 0.3s" in out and "Finished" in out


def test_bulk_path_keeps_plain_lines_with_markers_and_questions_split_across_blocks():
    text = (
        "> quoted start\nplain one\n\n\nAllow this action? [y/n/t]:\n\n"
        "after\n - Completed in 0.1s\n\n> again\nend >\n⠋ spinning\n▸ Credits: 0.5 • Time: 1s\n"
    )
    for cut in range(1, len(text)):
        bulk = _answer(text, [cut], bulk=True, typed="")
        lines = _answer(text, [cut], bulk=False, typed="")
        assert bulk.output() == lines.output(), cut
        assert bulk.credits == lines.credits == 0.5


def _lazy_and_eager(stream: str, cuts: list[int], limit: int) -> tuple[Transcript, Transcript]:
    """The same stream into a transcript read only at the end and one read after every block."""
    turns = []
    for eager in (False, True):
        assembler = LineAssembler(PROFILE)
        turn = Transcript(Patterns(PROFILE), limit_chars=limit)
        turn.begin("Flood [[cat x]]")
        start = 0
        for cut in [*cuts, len(stream)]:
            turn.add(assembler.feed(stream[start:cut]))
            start = cut
            if eager:
                assert turn.credits is None or turn.credits > 0  # reading a field reads every waiting block
        turn.add(assembler.feed("\n"))
        turns.append(turn)
    return turns[0], turns[1]


def test_blocks_the_memory_bound_pushes_out_unread_change_nothing_the_answer_keeps():
    rng = random.Random(7)
    stream = "[aipm] 20% λ > Flood [[cat x]]\r\n" + "".join(realistic_unit(n) for n in range(60))
    cuts = sorted(rng.sample(range(1, len(stream)), 120))
    lazy, eager = _lazy_and_eager(stream, cuts, limit=20_000)
    lazy_out, eager_out = lazy.output().splitlines(), eager.output().splitlines()
    # Only the count of lines omitted may differ (unread blocks count their raw lines): the lines kept are the same.
    assert "earlier lines omitted" in lazy_out[0] and "earlier lines omitted" in eager_out[0]
    assert lazy_out[1:] == eager_out[1:]
    assert (lazy.credits, lazy.last_tool, lazy.ended_on_credits) == (eager.credits, eager.last_tool, eager.ended_on_credits)
    assert lazy.last_tool == "shell" and lazy.credits == 1.05


def test_hints_in_blocks_pushed_out_unread_still_count():
    """The last tool named and the last credits outlive the lines that named them."""
    assembler = LineAssembler(PROFILE)
    turn = Transcript(Patterns(PROFILE), limit_chars=1000)
    turn.begin("go")
    turn.add(assembler.feed("\x1b[1mI'll run it\x1b[0m (using tool: execute_bash)\r\n▸ Credits: 0.25 • Time: 2s\r\n"))
    for k in range(50):
        turn.add(assembler.feed(f"\x1b[32mline {k}\x1b[0m " + "x" * 80 + "\r\n"))
    assert turn.last_tool == "execute_bash"
    assert turn.credits == 0.25 and not turn.ended_on_credits
    assert turn.output().splitlines()[-1].startswith("line 49")


def test_the_running_tail_of_a_flood_shows_its_newest_lines_without_reading_it_all():
    assembler = LineAssembler(PROFILE)
    turn = Transcript(Patterns(PROFILE), limit_chars=1_000_000)
    turn.begin("go")
    unit = "".join(realistic_unit(n) for n in range(5))
    while turn._pending_chars < 400_000:
        turn.add(assembler.feed(unit))
    tail = turn.tail(3)
    assert turn._pending  # not read: the flood is too big to read for a progress view
    # The newest lines as the terminal shows them (the Credits line too: the answer would leave it out).
    assert tail == [" - Completed in 0.3s", "The build passes.", "▸ Credits: 1.05 • Time: 12s"]
    small = Transcript(Patterns(PROFILE), limit_chars=1_000_000)
    small.begin("go")
    small.add(LineAssembler(PROFILE).feed(unit))
    assert small.tail(2) == [" - Completed in 0.3s", "The build passes."]  # read first: as the answer shows it
