"""The Lambda's and the host's requirement files are subsets of requirements.txt, with the same bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def parse(path: Path) -> dict[str, str]:
    reqs = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = line
        for sep in ("[", ">", "<", "=", "!", "~", ";"):
            name = name.split(sep, 1)[0]
        reqs[name.strip().lower()] = line
    return reqs


ROOT_REQS = parse(ROOT / "requirements.txt")


@pytest.mark.parametrize("name", ["lambda.txt", "host.txt"])
def test_runtime_requirements_match_root(name):
    runtime = parse(ROOT / "requirements" / name)
    assert runtime, f"requirements/{name} is empty"
    for pkg, spec in runtime.items():
        assert pkg in ROOT_REQS, f"{pkg} is in requirements/{name} but not in requirements.txt"
        assert spec == ROOT_REQS[pkg], f"{pkg}: requirements/{name} says {spec!r}, requirements.txt {ROOT_REQS[pkg]!r}"


def test_every_root_requirement_is_bounded():
    for pkg, spec in ROOT_REQS.items():
        assert "<" in spec or "==" in spec, f"{pkg} has no upper bound: {spec}"
        assert ">=" in spec or "==" in spec, f"{pkg} has no lower bound: {spec}"


def test_runtime_files_hold_no_test_or_infra_packages():
    for name in ("lambda.txt", "host.txt"):
        runtime = parse(ROOT / "requirements" / name)
        for pkg in ("pytest", "moto", "aws-cdk-lib", "playwright", "ruff", "hypothesis"):
            assert pkg not in runtime, f"{pkg} should not ship in requirements/{name}"
