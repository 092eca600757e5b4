"""The transcript's bulk path (runs of lines that cannot matter kept as one block) answers exactly what the line by
line path answers, on the realistic P6 corpus built from the real captures, cut into blocks anywhere."""

from __future__ import annotations

import random

from bench.p6_output_flood import realistic_unit
from ec2_services.worker_pool.profiles import PROFILES
from ec2_services.worker_pool.screen import LineAssembler, Patterns
from ec2_services.worker_pool.transcript import Transcript

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
