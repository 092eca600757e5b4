"""The small real change the stand-in agent makes from a TASK.md (stdlib only: the agent may run as a plain script).

Owns: reading TASK.md (title, acceptance criteria), turning each criterion of the form ``f(args) == value`` into a
Python function and a pytest test that meet it, and a notes file with the checklist for every other criterion.
It plans files; it never writes TASK.md, never a path outside the workspace, and never claims to be an AI.
"""

from __future__ import annotations

import ast
import keyword
import re
from dataclasses import dataclass, field
from pathlib import Path

MODULE_NAME = "story_functions"
NOTES_NAME = "AIPM_NOTES.md"
NOT_AN_AI = "the AIPM stand-in agent, a scripted program (not an AI)"

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(?:\[[ xX]\]\s+)?(.*\S)\s*$")
_CALL_START = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")


@dataclass(frozen=True)
class Criterion:
    """``name(*args) == value``, parsed from one acceptance criterion."""

    name: str
    args: tuple
    value: object

    @property
    def expression(self) -> str:
        return f"{self.name}({', '.join(repr(a) for a in self.args)}) == {self.value!r}"


@dataclass
class Task:
    title: str
    criteria: list[str]


@dataclass
class Plan:
    """What the stand-in will write: relative path → content, and what each criterion became."""

    files: dict[str, str] = field(default_factory=dict)
    functions: list[Criterion] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


def read_task(path: Path) -> Task:
    """Title (first heading) and acceptance criteria (list items under a heading that says "acceptance")."""
    title = ""
    criteria: list[str] = []
    checkboxes: list[str] = []
    in_section_level = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        heading = _HEADING.match(line)
        if heading:
            level, text = len(heading.group(1)), heading.group(2)
            if not title:
                title = re.sub(r"^(task|story)\s*:\s*", "", text, flags=re.IGNORECASE)
            if in_section_level and level <= in_section_level:
                in_section_level = 0
            if "acceptance" in text.lower():
                in_section_level = level
            continue
        item = _LIST_ITEM.match(line)
        if item:
            if in_section_level:
                criteria.append(item.group(1))
            elif re.match(r"^\s*[-*+]\s+\[[ xX]\]", line):
                checkboxes.append(item.group(1))
    return Task(title=title or path.parent.name, criteria=criteria or checkboxes)


def _balanced_end(text: str, open_index: int) -> int | None:
    depth = 0
    quote = ""
    for i in range(open_index, len(text)):
        ch = text[i]
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _literal(source: str):
    """(True, value) of the longest leading run of words that is a Python literal (trailing full stop ignored)."""
    words = source.strip().split(" ")
    for n in range(len(words), 0, -1):
        candidate = " ".join(words[:n]).strip().rstrip(".;,:").strip()
        if not candidate:
            continue
        try:
            return True, ast.literal_eval(candidate)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return False, None


def parse_criterion(text: str) -> Criterion | None:
    """``add(2, 3) == 5`` (possibly in backticks, with words around) → Criterion; anything else → None."""
    plain = text.replace("`", " ")
    for match in _CALL_START.finditer(plain):
        name = match.group(1)
        if keyword.iskeyword(name) or name.startswith("__"):
            continue
        close = _balanced_end(plain, match.end() - 1)
        if close is None:
            return None
        rest = re.match(r"\s*==\s*(.+)$", plain[close + 1 :])
        if not rest:
            continue
        args_src = plain[match.end() : close].strip()
        ok_args, args = _literal(f"({args_src},)") if args_src else (True, ())
        ok_value, value = _literal(rest.group(1))
        if ok_args and ok_value and isinstance(args, tuple):
            return Criterion(name=name, args=args, value=value)
    return None


# Plain implementations tried before a lookup table, so `add(2, 3) == 5` becomes `return a + b`.
# (arity, body, function, words in the name that make it the first choice)
_CANDIDATES: list[tuple[int, str, object, tuple[str, ...]]] = [
    (2, "return a + b", lambda a, b: a + b, ("add", "sum", "plus", "concat", "join")),
    (2, "return a - b", lambda a, b: a - b, ("sub", "minus", "diff")),
    (2, "return a * b", lambda a, b: a * b, ("mul", "times", "product")),
    (2, "return a / b", lambda a, b: a / b, ("div", "ratio")),
    (2, "return a // b", lambda a, b: a // b, ("floor", "div")),
    (2, "return a % b", lambda a, b: a % b, ("mod", "rem")),
    (2, "return a ** b", lambda a, b: a**b, ("pow", "power", "exp")),
    (2, "return max(a, b)", lambda a, b: max(a, b), ("max", "larg", "great")),
    (2, "return min(a, b)", lambda a, b: min(a, b), ("min", "small", "least")),
    (1, "return a * a", lambda a: a * a, ("square",)),
    (1, "return a * 2", lambda a: a * 2, ("double", "twice")),
    (1, "return -a", lambda a: -a, ("neg",)),
    (1, "return abs(a)", lambda a: abs(a), ("abs",)),
    (1, "return len(a)", lambda a: len(a), ("len", "count", "size")),
    (1, "return a[::-1]", lambda a: a[::-1], ("rev",)),
    (1, "return a.upper()", lambda a: a.upper(), ("upper", "shout")),
    (1, "return a.lower()", lambda a: a.lower(), ("lower",)),
    (1, "return sum(a)", lambda a: sum(a), ("sum", "total")),
    (1, "return sorted(a)", lambda a: sorted(a), ("sort",)),
    (1, "return a % 2 == 0", lambda a: a % 2 == 0, ("even",)),
    (1, "return a % 2 == 1", lambda a: a % 2 == 1, ("odd",)),
]

_PARAMS = "abcdefgh"


def _fits(fn, cases: list[Criterion]) -> bool:
    for case in cases:
        try:
            result = fn(*case.args)
        except Exception:
            return False
        if type(result) is not type(case.value) and not (
            isinstance(result, int | float) and isinstance(case.value, int | float) and not isinstance(result, bool)
        ):
            return False
        if result != case.value:
            return False
    return True


def _implementation(name: str, cases: list[Criterion]) -> str:
    arity = {len(c.args) for c in cases}
    params = _PARAMS[: next(iter(arity))] if len(arity) == 1 and next(iter(arity)) <= len(_PARAMS) else ""
    lowered = name.lower()
    ranked = sorted(_CANDIDATES, key=lambda c: not any(word in lowered for word in c[3]))
    doc = f'    """Meets: {"; ".join(c.expression for c in cases)}."""\n'
    for cand_arity, body, fn, _words in ranked:
        if params and cand_arity == len(params) and _fits(fn, cases):
            return f"def {name}({', '.join(params)}):\n{doc}    {body}\n"
    # No plain formula fits every case: answer exactly the cases the criteria name.
    table = ",\n".join(f"    ({c.args!r}, {c.value!r})" for c in cases)
    signature = ", ".join(params) if params else "*args"
    args_expr = f"({', '.join(params)},)" if params else "args"
    return (
        f"_{name.upper()}_CASES = [\n{table},\n]\n\n\n"
        f"def {name}({signature}):\n{doc}"
        f"    args = {args_expr}\n"
        f"    for case_args, result in _{name.upper()}_CASES:\n"
        "        if args == case_args:\n"
        "            return result\n"
        f"    raise NotImplementedError(f\"{name}{{args!r}}: only the acceptance criteria's cases are implemented\")\n"
    )


def _module_source(title: str, by_name: dict[str, list[Criterion]]) -> str:
    parts = [
        f'"""Functions for the story "{_one_line(title)}".\n\n'
        f"Written by {NOT_AN_AI} from TASK.md's acceptance criteria; review before merging.\n"
        '"""\n'
    ]
    parts += [_implementation(name, cases) for name, cases in by_name.items()]
    return "\n\n".join(parts)


def _test_source(by_name: dict[str, list[Criterion]], in_tests_dir: bool) -> str:
    header = f'"""Tests for {MODULE_NAME}.py: one per acceptance criterion (written by {NOT_AN_AI})."""\n\n'
    if in_tests_dir:
        # tests/ may not be a package; make the project root importable whatever pytest's rootdir logic does.
        header += "import sys\nfrom pathlib import Path\n\nsys.path.insert(0, str(Path(__file__).resolve().parents[1]))\n\n"
    header += f"from {MODULE_NAME} import {', '.join(sorted(by_name))}  # noqa: E402\n"
    tests = []
    for name, cases in by_name.items():
        for i, case in enumerate(cases, 1):
            tests.append(f"def test_{name}_criterion_{i}():\n    assert {case.expression}\n")
    return header + "\n\n" + "\n\n".join(tests)


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace('"""', "'''").replace("\\", "/")


def _notes_source(task: Task, plan: Plan) -> str:
    lines = [
        f"# Notes: {_one_line(task.title)}",
        "",
        f"Written by {NOT_AN_AI}. It implements only criteria of the form `f(args) == value`;",
        "every other criterion below is a checklist item for a person, or for `kiro-cli` once it is signed in.",
        "",
        "## Acceptance criteria",
        "",
    ]
    done = {c.expression for c in plan.functions}
    for text in task.criteria:
        criterion = parse_criterion(text)
        if criterion and criterion.expression in done:
            lines.append(f"- [x] {_one_line(text)} — `{MODULE_NAME}.{criterion.name}`, with a test")
        else:
            lines.append(f"- [ ] {_one_line(text)}")
    if not task.criteria:
        lines.append("- [ ] (TASK.md lists no acceptance criteria: define them, then implement the story)")
    for conflict in plan.conflicts:
        lines.append(f"- [ ] conflicting criterion left out: {conflict}")
    return "\n".join(lines) + "\n"


def plan_change(task_file: Path, workspace: Path) -> tuple[Task, Plan]:
    """Read ``task_file`` and decide which files to write (relative to ``workspace``)."""
    task = read_task(task_file)
    plan = Plan()
    by_name: dict[str, list[Criterion]] = {}
    for text in task.criteria:
        criterion = parse_criterion(text)
        if criterion is None:
            plan.other.append(text)
            continue
        same = [c for c in by_name.get(criterion.name, []) if c.args == criterion.args]
        if same and same[0].value != criterion.value:
            plan.conflicts.append(text)
            continue
        if not same:
            by_name.setdefault(criterion.name, []).append(criterion)
            plan.functions.append(criterion)
    if by_name:
        tests_dir = (workspace / "tests").is_dir()
        test_path = f"tests/test_{MODULE_NAME}.py" if tests_dir else f"test_{MODULE_NAME}.py"
        plan.files[f"{MODULE_NAME}.py"] = _module_source(task.title, by_name)
        plan.files[test_path] = _test_source(by_name, tests_dir)
    if plan.other or plan.conflicts or not by_name:
        plan.files[NOTES_NAME] = _notes_source(task, plan)
    return task, plan


def check_functions(workspace: Path, plan: Plan) -> list[tuple[str, bool]]:
    """Evaluate every function criterion against the module just written (the stand-in's own check)."""
    source = (workspace / f"{MODULE_NAME}.py").read_text(encoding="utf-8")
    namespace: dict = {"__name__": MODULE_NAME}
    exec(compile(source, f"{MODULE_NAME}.py", "exec"), namespace)  # noqa: S102 - code this program just generated
    results = []
    for criterion in plan.functions:
        try:
            ok = namespace[criterion.name](*criterion.args) == criterion.value
        except Exception:
            ok = False
        results.append((criterion.expression, ok))
    return results
