"""The Lambda bundle is built without Docker: the shared code beside the handler, arm64/cp312 wheels from pip."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.bundling import PIP_PLATFORM, LocalPipBundling, copy_code, source_hash
from tests.infra.conftest import ROOT


def _tree(tmp_path: Path, requirements: str = "annotated-types>=0.6,<1\n") -> Path:
    root = tmp_path / "repo"
    (root / "lambda_fn").mkdir(parents=True)
    (root / "lambda_fn" / "handler.py").write_text("def handler(event, context):\n    return {}\n")
    (root / "lambda_fn" / "__pycache__").mkdir()
    (root / "lambda_fn" / "__pycache__" / "handler.cpython-312.pyc").write_bytes(b"\0")
    (root / "aipm_common").mkdir(parents=True)
    (root / "aipm_common" / "settings.py").write_text("X = 1\n")
    (root / "ec2_services" / "worker_pool").mkdir(parents=True)
    (root / "ec2_services" / "__init__.py").write_text("")
    (root / "ec2_services" / "worker_pool" / "pool.py").write_text("import ptyprocess\n")
    (root / "aipm_local" / "forge").mkdir(parents=True)
    (root / "aipm_local" / "forge" / "local.py").write_text("class LocalForge:\n    pass\n")
    (root / "requirements").mkdir()
    (root / "requirements" / "lambda.txt").write_text(requirements)
    return root


def test_bundle_holds_the_handler_and_the_shared_code_only(tmp_path):
    root = _tree(tmp_path)
    out = tmp_path / "out"
    copy_code(root, out)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["aipm_common/settings.py", "lambda_fn/handler.py"]


def test_source_hash_follows_every_input_and_nothing_else(tmp_path):
    root = _tree(tmp_path)
    before = source_hash(root)
    (root / "ec2_services" / "worker_pool" / "pool.py").write_text("changed\n")
    assert source_hash(root) == before, "host-only code does not change the Lambda asset"
    (root / "aipm_local" / "forge" / "local.py").write_text("changed\n")
    assert source_hash(root) == before, "local-only code does not change the Lambda asset"
    for path in ("lambda_fn/handler.py", "aipm_common/settings.py", "requirements/lambda.txt"):
        (root / path).write_text((root / path).read_text() + "# changed\n")
        assert source_hash(root) != before, path
        before = source_hash(root)


def test_pip_is_asked_for_arm64_cp312_wheels_only():
    assert PIP_PLATFORM == ("--platform", "manylinux2014_aarch64", "--only-binary=:all:", "--python-version", "3.12",
                            "--implementation", "cp")


def test_a_failing_pip_stops_synthesis_with_its_message(tmp_path):
    root = _tree(tmp_path, requirements="this-package-does-not-exist-aipm==0.0.0\n")
    bundler = LocalPipBundling(root, python=sys.executable)
    with pytest.raises(RuntimeError, match="Lambda bundling failed: pip could not install requirements/lambda.txt"):
        bundler.try_bundle(str(tmp_path / "out"))


@pytest.mark.slow
def test_local_bundling_installs_linux_arm64_wheels(tmp_path):
    """A real pip run (PyPI): pydantic-core is a compiled wheel, so its tag shows the platform."""
    probe = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(tmp_path / "probe"),
                            "annotated-types", *PIP_PLATFORM], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"no package index reachable: {probe.stderr.strip()[-200:]}")
    root = _tree(tmp_path, requirements=(ROOT / "requirements" / "lambda.txt").read_text())
    out = tmp_path / "out"
    assert LocalPipBundling(root).try_bundle(str(out)) is True
    native = [p.name for p in out.joinpath("pydantic_core").glob("*.so")]
    assert native and all("cpython-312-aarch64-linux-gnu" in name for name in native), native
    assert (out / "lambda_fn" / "handler.py").exists() and (out / "aipm_common" / "settings.py").exists()
    assert not (out / "ec2_services").exists()
    shutil.rmtree(out)


def test_the_real_bundle_carries_the_lambdas_settings_and_no_service_of_the_hosts(tmp_path):
    """The Lambda zip holds lambda_fn and aipm_common: the worker pool's and the PR processor's settings stay home, and
    so does the local forge (``aipm_local.forge``: its store, git helper, markdown, pages and templates)."""
    out = tmp_path / "out"
    copy_code(ROOT, out)
    tops = sorted(p.name for p in out.iterdir())
    assert tops == ["aipm_common", "lambda_fn"], tops
    assert (out / "lambda_fn" / "settings.py").is_file()
    sources = {str(p.relative_to(out)): p.read_text(encoding="utf-8") for p in out.rglob("*.py")}
    for host_only in ("WorkerPoolSettings", "PrProcessorSettings", "kiro_pool_size", "pr_max_attempts"):
        assert not [path for path, text in sources.items() if host_only in text], host_only
    for local_only in ("class LocalForge", "def ensure_example_repo", "forge.sqlite", "/forge/{owner}/{name}/pull/",
                       "markdown_it", "Jinja2Templates"):
        assert not [path for path, text in sources.items() if local_only in text], local_only
    imports_local = re.compile(r"^\s*(?:from|import)\s+aipm_local\b", re.M)
    assert not [path for path, text in sources.items() if imports_local.search(text)]
    assert not [p for p in out.rglob("*") if p.suffix in (".html", ".css", ".js")]
    shutil.rmtree(out)
