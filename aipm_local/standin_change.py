"""The small real change the stand-in agent makes from a TASK.md (stdlib only: the agent may run as a plain script).

Owns: reading TASK.md (title, acceptance criteria), turning each criterion of the form ``f(args) == value`` into a
Python function and a pytest test that meet it, and a notes file with the checklist for every other criterion.
It plans files; it never writes TASK.md, never a path outside the workspace, and never claims to be an AI.

Story text is data, never code: a criterion becomes code only when ``ast`` shows it is a call of a plain name with
literal arguments compared with ``==`` to a literal, and every value is written with ``repr()`` (checked to read back
equal). Strings from the story (the title) are written with ``repr()`` too. Each generated file is parsed again and
refused unless its only calls are the functions under test and the templates' own. The stand-in checks its change by
running the generated tests in a subprocess, never by ``exec`` in its own process.
"""

from __future__ import annotations

import ast
import builtins
import json
import keyword
import re
import subprocess
import sys
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
        heading = _HEADING.fullmatch(line)
        if heading:
            level, text = len(heading.group(1)), heading.group(2)
            if not title:
                title = re.sub(r"^(task|story)\s*:\s*", "", text, flags=re.IGNORECASE)
            if in_section_level and level <= in_section_level:
                in_section_level = 0
            if "acceptance" in text.lower():
                in_section_level = level
            continue
        item = _LIST_ITEM.fullmatch(line)
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
            return _checked(name, args, value)
    return None


_MAX_LITERAL_CHARS = 400
# Names the generated files define or import themselves: a criterion may not shadow them.
_RESERVED = frozenset(dir(builtins)) | {"sys", "Path", "args", "case_args", "result", MODULE_NAME}


def _round_trips(value) -> bool:
    """``repr(value)`` is a short literal that reads back as an equal value of the same type."""
    text = repr(value)
    if len(text) > _MAX_LITERAL_CHARS:
        return False
    try:
        back = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return type(back) is type(value) and back == value


def _is_literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return True


def _checked(name: str, args: tuple, value) -> Criterion | None:
    """``name(*args) == value`` re-read with ``ast``: a plain name, literal arguments, ``==``, a literal value."""
    if not name.isidentifier() or keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return None
    if name.startswith("_") or name in _RESERVED or not all(_round_trips(v) for v in (*args, value)):
        return None
    expression = f"{name}({', '.join(repr(a) for a in args)}) == {value!r}"
    try:
        tree = ast.parse(expression, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    if not (isinstance(tree, ast.Compare) and len(tree.ops) == 1 and isinstance(tree.ops[0], ast.Eq)):
        return None
    call = tree.left
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == name
            and not call.keywords and len(call.args) == len(args)):
        return None
    if not all(_is_literal(node) for node in (*call.args, tree.comparators[0])):
        return None
    return Criterion(name=name, args=args, value=value)


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


def _small(value, depth: int = 0) -> bool:
    """Safe to try a formula on: no huge numbers or sequences (``a ** b`` or ``a * b`` could take the host down)."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int | float | complex):
        return abs(value) <= 10**6
    if isinstance(value, str | bytes):
        return len(value) <= 100
    if isinstance(value, tuple | list | set | frozenset) and depth < 4 and len(value) <= 100:
        return all(_small(v, depth + 1) for v in value)
    if isinstance(value, dict) and depth < 4 and len(value) <= 100:
        return all(_small(k, depth + 1) and _small(v, depth + 1) for k, v in value.items())
    return False


def _fits(fn, cases: list[Criterion]) -> bool:
    if not all(_small(a) for case in cases for a in case.args):
        return False
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
    doc = f"    {_literal_text('Meets: ' + '; '.join(c.expression for c in cases) + '.')}\n"
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


def _literal_text(text: str) -> str:
    """A string literal (used as a docstring) built with repr(): nothing in ``text`` can end it early."""
    return repr(text)


def _module_source(title: str, by_name: dict[str, list[Criterion]]) -> str:
    doc = (f'Functions for the story "{_one_line(title)}".\n\n'
           f"Written by {NOT_AN_AI} from TASK.md's acceptance criteria; review before merging.\n")
    parts = [_literal_text(doc) + "\n"]
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
    return " ".join(text.split())


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
        _verify_sources(plan, set(by_name))
    if plan.other or plan.conflicts or not by_name:
        plan.files[NOTES_NAME] = _notes_source(task, plan)
    return task, plan


# Calls the templates themselves make; anything else in a generated file means story text became code.
_TEMPLATE_CALLS = frozenset({"max", "min", "abs", "len", "sum", "sorted", "upper", "lower", "NotImplementedError",
                             "insert", "str", "Path", "resolve"})


def foreign_calls(source: str, functions: set[str]) -> list[str]:
    """Calls in ``source`` other than ``functions`` and the templates' own; ``["<syntax error>"]`` if it won't parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ["<syntax error>"]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else "?"
            if name not in functions and name not in _TEMPLATE_CALLS:
                found.append(ast.unparse(node)[:80])
    return found


def _verify_sources(plan: Plan, functions: set[str]) -> None:
    """Refuse to write code unless each generated file parses and calls nothing but the functions under test."""
    for rel, source in plan.files.items():
        bad = foreign_calls(source, functions) if rel.endswith(".py") else []
        if bad:  # a bug in this module, never expected: fail loudly rather than commit it
            raise ValueError(f"generated {rel} would call {bad}: refused")


# Runs in a fresh interpreter inside the workspace: loads the generated test file and calls the named tests.
_RUN_TESTS = """
import importlib.util, json, sys
sys.path.insert(0, ".")
spec = importlib.util.spec_from_file_location("aipm_standin_tests", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
results = {}
for name in sys.argv[2:]:
    try:
        getattr(module, name)()
        results[name] = True
    except Exception:
        results[name] = False
print(json.dumps(results))
"""


def check_functions(workspace: Path, plan: Plan, timeout_s: float = 60) -> list[tuple[str, bool]]:
    """Run the generated tests in a subprocess (never in this process): (expression, passed) per function criterion."""
    test_path = next((rel for rel in plan.files if rel.endswith(f"test_{MODULE_NAME}.py")), None)
    names, counters = [], {}
    for criterion in plan.functions:
        counters[criterion.name] = counters.get(criterion.name, 0) + 1
        names.append(f"test_{criterion.name}_criterion_{counters[criterion.name]}")
    passed: dict = {}
    if test_path and (workspace / test_path).is_file():
        try:
            done = subprocess.run([sys.executable, "-I", "-c", _RUN_TESTS, str(workspace / test_path), *names],
                                  cwd=workspace, capture_output=True, text=True, timeout=timeout_s, check=False)
            passed = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {}
        except (subprocess.TimeoutExpired, ValueError, IndexError, OSError):
            passed = {}
    return [(c.expression, passed.get(n) is True) for c, n in zip(plan.functions, names, strict=True)]
