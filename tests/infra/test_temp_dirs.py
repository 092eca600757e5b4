"""The infra tests clean up after themselves: no ``aipm-synth-*`` cloud assembly (about 20 MB each) is left behind."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.infra.conftest import ROOT


@pytest.mark.slow
def test_no_synth_directory_remains_after_the_infra_tests(tmp_path):
    """A session of infra tests that synthesizes, run with its own temporary directory: empty of them afterwards."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    env.pop("PYTEST_XDIST_WORKER", None)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0",
         "tests/infra/test_stack.py::test_lambda_runs_the_handler_on_python_312_arm64"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout
    assert not list(temp.glob("aipm-synth-*")), sorted(p.name for p in temp.iterdir())
