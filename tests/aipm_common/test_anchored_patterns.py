"""A name checked against a pattern ending in ``$`` is checked with ``fullmatch``: with ``match`` (or ``search``) the
``$`` also matches before a final newline, so ``"0\\n"`` passed as a job id and reached a URL (a 500 found by the
OpenAPI fuzz), and ``"aipm/x\\n"`` would have passed as a branch name on its way to git.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from fastapi import HTTPException

from ec2_services.pr_processor.models import InvalidInput, check_branch, check_repo, parse_requested_by
from lambda_fn import naming
from lambda_fn.routes.api import check_job_id

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ("aipm_common", "aipm_local", "ec2_services", "infra", "lambda_fn")


def _production_modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), str(path)))
            for package in PRODUCTION for path in sorted((ROOT / package).rglob("*.py"))]


def _string_constants(modules: list[tuple[Path, ast.Module]]) -> dict[str, str]:
    """Module-level ``NAME = "…"`` across production code (``JOB_ID_PATTERN`` and its kind)."""
    return {t.id: node.value.value for _, tree in modules for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str) for t in node.targets if isinstance(t, ast.Name)}


def _is_validator(node: ast.AST, constants: dict[str, str]) -> bool:
    """A whole-value pattern: ``^…$`` (a pattern that finds something in a line is not one)."""
    if isinstance(node, ast.Name):
        value = constants.get(node.id)
    else:
        value = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None
    return value is not None and value.startswith("^") and value.endswith("$")


def _compiled_validators(tree: ast.Module, constants: dict[str, str]) -> set[str]:
    """The names a module binds to ``re.compile("^…$")``."""
    return {t.id for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute) and node.value.func.attr == "compile"
            and node.value.args and _is_validator(node.value.args[0], constants)
            for t in node.targets if isinstance(t, ast.Name)}


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_no_production_code_matches_a_dollar_anchored_pattern_with_match_or_search():
    modules = _production_modules()  # parsed once
    constants = _string_constants(modules)
    compiled = {_module_name(path): _compiled_validators(tree, constants) for path, tree in modules}
    assert {"JOB_ID_RE", "REPO_RE", "_BRANCH_CHARS"} <= compiled["lambda_fn.naming"]  # the scan sees what it must
    found = []
    for path, tree in modules:
        names = set(compiled[_module_name(path)])  # its own, and those it imports by name
        imports = [(node.module or "", alias) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   for alias in node.names]
        names |= {alias.asname or alias.name for module, alias in imports if alias.name in compiled.get(module, ())}
        modules_as = {alias.asname or alias.name: f"{module}.{alias.name}" for module, alias in imports}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("match", "search")):
                continue
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
            module_attr = (isinstance(owner, ast.Attribute) and isinstance(owner.value, ast.Name)
                           and name in compiled.get(modules_as.get(owner.value.id, ""), ()))
            if name in names or module_attr or name == "re" and node.args and _is_validator(node.args[0], constants):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)[:80]}")
    assert found == [], "use fullmatch:\n" + "\n".join(found)


@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_a_name_with_a_line_break_at_its_end_is_refused_at_every_edge(end):
    assert naming.valid_repo("octo/app") and not naming.valid_repo("octo/app" + end)
    assert naming.valid_branch("aipm/x") and not naming.valid_branch("aipm/x" + end)
    assert check_job_id("j-1") == "j-1"
    with pytest.raises(HTTPException) as refused:
        check_job_id("j-1" + end)
    assert refused.value.status_code == 400
    assert check_repo("octo/app") == "octo/app" and check_branch("aipm/x") == "aipm/x"
    for check, value in ((check_repo, "octo/app"), (check_branch, "aipm/x")):
        with pytest.raises(InvalidInput):
            check(value + end)
    with pytest.raises(InvalidInput):
        parse_requested_by("Ann <ann@example.com>" + end)
