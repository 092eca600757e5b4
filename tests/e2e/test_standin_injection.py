"""Story text reaching the stand-in agent is data: a hostile title or criterion never runs as code (issue 17 item 1)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aipm_local.standin_change import (
    MODULE_NAME,
    NOTES_NAME,
    check_functions,
    foreign_calls,
    parse_criterion,
    plan_change,
)

pytestmark = pytest.mark.timeout(120)


def _write(ws: Path, plan) -> None:
    for rel, content in plan.files.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(content, encoding="utf-8")


def _task(ws: Path, title: str, criteria: list[str]) -> Path:
    ws.mkdir(parents=True, exist_ok=True)
    body = "\n".join(f"- {c}" for c in criteria)
    (ws / "TASK.md").write_text(f"# {title}\n\n## Acceptance criteria\n\n{body}\n", encoding="utf-8")
    return ws / "TASK.md"


def test_a_title_that_closes_the_docstring_does_not_run_its_payload(tmp_path):
    # Before: the title went inside a """ docstring after a `"`; a title that starts and ends with `""` closed it, and
    # the stand-in's own check (exec) ran what lay between: this exact title created the marker file.
    marker = tmp_path / "PWNED"
    title = f'"" + str(__import__("os").system("touch {marker}")) + ""'
    ws = tmp_path / "ws"
    task = _task(ws, title, ["add(2, 3) == 5"])
    _task_, plan = plan_change(task, ws)
    _write(ws, plan)
    assert foreign_calls(plan.files[f"{MODULE_NAME}.py"], {"add"}) == []
    assert check_functions(ws, plan) == [("add(2, 3) == 5", True)]
    imported = subprocess.run([sys.executable, "-c", f"import {MODULE_NAME}; print({MODULE_NAME}.__doc__)"],
                              cwd=ws, capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    assert title in imported.stdout  # the title is kept, as text
    assert not marker.exists()


@pytest.mark.parametrize("text", [
    "f(__import__('os')) == 1",
    "f(x=1) == 2",
    "exec('1') == None",
    "print(1) == None",
    "Path(1) == 2",
    "_private(1) == 2",
    "f(1e999) == 1",
    "f(" + "9" * 500 + ") == 1",
])
def test_criteria_that_are_not_a_plain_call_of_literals_go_to_the_notes(text):
    assert parse_criterion(text) is None


def test_words_after_the_expected_value_stay_words():
    criterion = parse_criterion('f(1) == 2 or __import__("os").system("id")')
    assert criterion is not None and criterion.expression == "f(1) == 2"


def test_huge_numbers_are_not_tried_against_formulas(tmp_path):
    # `pow(10, 10**6)`-style arguments would pin the host's CPU in _fits; they become a lookup table instead.
    ws = tmp_path / "ws"
    _task_, plan = plan_change(_task(ws, "Big", ["power(10, 999999999) == 1"]), ws)
    assert "_POWER_CASES" in plan.files[f"{MODULE_NAME}.py"]


def test_the_check_runs_the_generated_tests_in_another_process(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    _task_, plan = plan_change(_task(ws, "T", ["add(2, 3) == 5", "add(1, 1) == 3"]), ws)
    _write(ws, plan)
    monkeypatch.setattr("builtins.exec", None)  # any exec in this process would now fail
    assert check_functions(ws, plan) == [("add(2, 3) == 5", True), ("add(1, 1) == 3", True)]
    (ws / f"{MODULE_NAME}.py").write_text("def add(a, b):\n    return 0\n")  # a broken change is reported as such
    assert check_functions(ws, plan) == [("add(2, 3) == 5", False), ("add(1, 1) == 3", False)]


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
_literal = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner) | st.dictionaries(st.text(max_size=5), inner,
                                                                                          max_size=2),
    max_leaves=6)


@st.composite
def _criterion(draw) -> str:
    kind = draw(st.sampled_from(["call", "text", "mixed"]))
    name = draw(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True))
    if kind == "call":
        args = draw(st.lists(_literal, max_size=3))
        return f"{name}({', '.join(repr(a) for a in args)}) == {draw(_literal)!r}"
    if kind == "mixed":
        return f"{name}({draw(_text)}) == {draw(_text)}"
    return draw(_text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(title=_text, criteria=st.lists(_criterion(), max_size=4))
def test_generated_files_parse_and_call_only_the_function_under_test(tmp_path, title, criteria):
    ws = tmp_path / "fuzz"
    task = _task(ws, title.replace("\n", " ") or "t", [c.replace("\n", " ") for c in criteria])
    _task_, plan = plan_change(task, ws)
    names = {c.name for c in plan.functions}
    for rel, source in plan.files.items():
        if rel == NOTES_NAME:
            continue
        ast.parse(source)
        assert foreign_calls(source, names) == [], (rel, source)
        tree = ast.parse(source)
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert defined <= names | {f"test_{n}_criterion_{i}" for n in names for i in range(1, 10)}
