"""aipm_common.envnames: every variable's name written once, read by the settings, set by infra/, documented.

"No name is typed twice" (issue 19) is checked here: a known name written as a string anywhere in infra/ (the CDK
code, the secret fetcher), in a settings module or in the local stack (aipm_local/run.py), rather than taken from the module, fails a test, and so does a
string there that looks like one of the project's variables but is not declared. The host's shell scripts, which
must spell names themselves, are held to the module by tests/infra/test_host_env_names.py.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from aipm_common.envnames import (
    ALL,
    GROUPS,
    Dispatch,
    GitHub,
    LambdaApi,
    PrProcessor,
    Shared,
    WorkerPool,
    Workspace,
    names,
)
from aipm_common.settings import ServiceSettings
from ec2_services.pr_processor.settings import PrProcessorSettings
from ec2_services.worker_pool.settings import WorkerPoolSettings
from lambda_fn.settings import LambdaSettings

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "aipm_common" / "envnames.py"
SETTINGS = [ROOT / "aipm_common/settings.py", ROOT / "lambda_fn/settings.py",
            ROOT / "ec2_services/worker_pool/settings.py", ROOT / "ec2_services/pr_processor/settings.py"]
# Everything infra/ writes in Python: the CDK app and the host's secret fetcher (a Python script without .py).
INFRA = [*sorted((ROOT / "infra").glob("*.py")), ROOT / "infra/host_install/aipm-fetch-secrets"]
# The local stack's environment (make run) is built from the names as well.
LOCAL = [ROOT / "aipm_local/run.py"]
# Service code that names variables beyond its settings: the agents' profiles, the tests' environment, the test command.
SERVICES = [ROOT / "ec2_services/worker_pool/profiles.py", ROOT / "ec2_services/worker_pool/commands.py",
            ROOT / "ec2_services/pr_processor/repo_tests.py", ROOT / "lambda_fn/runtime.py", ROOT / "lambda_fn/routes/webhook.py"]
# What one of the project's own variables looks like, declared or not.
LOOKS_LIKE_A_VARIABLE = re.compile(
    r"^(AIPM|KIRO|PR|WORKER_POOL|GITHUB|GIT|COGNITO|ANTHROPIC|GEMINI|ALLOWED|PUBLIC)_[A-Z0-9_]+$")
SHELL_REFERENCE = re.compile(r"\$\{?([A-Z][A-Z0-9_]*)")


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """Every string constant in a file's code (f-string pieces included), docstrings left out: they are prose."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_each_name_is_written_once_and_is_its_own_value():
    literals = [value for _, value in _string_constants(MODULE) if value in ALL]
    assert sorted(literals) == sorted(ALL), "each name is a string exactly once in envnames.py"
    for group in GROUPS:
        for key, value in vars(group).items():
            if key.isupper():
                assert key == value, f"{group.__name__}.{key} = {value!r}"
    assert len(ALL) > 100


def test_importing_the_names_costs_nothing_at_cold_start():
    """The Lambda imports it on every cold start and the CDK app without any service code: nothing but the standard library."""
    code = ("import sys; before = set(sys.modules); import aipm_common.envnames; "
            "print(sorted(m for m in set(sys.modules) - before "
            "if m.partition('.')[0] not in sys.stdlib_module_names | {'aipm_common'}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(("settings", "groups"), [
    (LambdaSettings, (Shared, Dispatch, GitHub, LambdaApi)),
    (WorkerPoolSettings, (Shared, Workspace, WorkerPool)),
    (PrProcessorSettings, (Shared, Dispatch, Workspace, GitHub, PrProcessor)),
])
def test_each_service_reads_exactly_its_names(settings, groups):
    read = {field.validation_alias for field in settings.model_fields.values()}
    declared = {name for group in groups for name in names(group)}
    assert read == declared, f"read, not declared: {read - declared}; declared, not read: {declared - read}"


def test_a_settings_field_without_a_declared_name_fails_at_import():
    with pytest.raises(LookupError, match="aipm_verbose_typo"):
        class Typo(ServiceSettings):
            aipm_verbose_typo: bool = False


def test_the_settings_read_the_declared_name_and_still_take_a_field_by_its_own_name(monkeypatch, tmp_path):
    monkeypatch.setenv(WorkerPool.KIRO_POOL_SIZE, "5")
    monkeypatch.setenv(Shared.AIPM_STATE_DIR, str(tmp_path))
    settings = WorkerPoolSettings()
    assert settings.kiro_pool_size == 5
    assert WorkerPoolSettings(kiro_pool_size=7).kiro_pool_size == 7
    monkeypatch.setenv(WorkerPool.KIRO_POOL_SIZE, "99")
    with pytest.raises(ValidationError, match=WorkerPool.KIRO_POOL_SIZE):
        WorkerPoolSettings()


def _literal_names(paths: list[Path]) -> list[tuple[Path, int, str]]:
    """String constants that are a declared name, look like an undeclared one, or refer to one as $NAME."""
    return [(path, line, value) for path in paths for line, value in _string_constants(path)
            if value in ALL or LOOKS_LIKE_A_VARIABLE.match(value) or set(SHELL_REFERENCE.findall(value)) & ALL]


def test_no_variable_name_is_typed_in_infra_or_the_settings():
    found = [f"{path.relative_to(ROOT)}:{line}: {value!r}" for path, line, value in _literal_names(INFRA + SETTINGS + LOCAL + SERVICES)]
    assert found == [], "take these names from aipm_common.envnames"


def test_the_literal_check_finds_a_typed_name(tmp_path):
    """The check above can fail: a typed name, an undeclared one, and a shell reference are all found."""
    sample = tmp_path / "sample.py"
    sample.write_text('"""AIPM_STATE_DIR in a docstring is prose."""\n'
                      'env = {"AIPM_POOL_SIZE": "2", "AIPM_NEW_THING": "x", "ONE_DAY": "d"}\n'
                      'command = f"echo ${x}/$KIRO_VERSION"\n')
    assert [value for _, _, value in _literal_names([sample])] == ["AIPM_POOL_SIZE", "AIPM_NEW_THING", "/$KIRO_VERSION"]


def test_the_docs_list_every_variable():
    docs = (ROOT / "docs/contracts.md").read_text() + (ROOT / "docs/configuration.md").read_text()
    missing = sorted(name for name in ALL if not re.search(rf"`{name}`", docs))
    assert missing == [], "docs/contracts.md or docs/configuration.md must list these"

