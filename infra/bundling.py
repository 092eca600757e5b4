"""The Lambda's code bundle, built without Docker: pip resolves arm64 / CPython 3.12 wheels on this machine.

Owns what ships in the Lambda zip (requirements/lambda.txt, ``lambda_fn/``, ``aipm_common/``) and the asset
hash over exactly those inputs. It must not reach into other folders, and must never fall back to a silent empty zip:
a failed pip run stops synthesis with pip's own message.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = "requirements/lambda.txt"
# (source, destination inside the zip): the handler package and the shared code it imports.
CODE = (("lambda_fn", "lambda_fn"), ("aipm_common", "aipm_common"))
PIP_PLATFORM = ("--platform", "manylinux2014_aarch64", "--only-binary=:all:", "--python-version", "3.12",
                "--implementation", "cp")
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")


def _files(root: Path) -> list[Path]:
    paths = [root / src for src, _ in CODE] + [root / REQUIREMENTS, Path(__file__)]
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        elif path.exists():
            out.append(path)
    return out


def source_hash(root: Path = ROOT) -> str:
    """A hash of every input of the bundle (and of this file, which decides how it is built)."""
    digest = hashlib.sha256()
    for path in _files(root):
        digest.update(str(path.relative_to(root) if path.is_relative_to(root) else path.name).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


@jsii.implements(ILocalBundling)
class LocalPipBundling:
    """``ILocalBundling``: pip into the output directory for manylinux2014_aarch64 / cp312, then copy the code."""

    def __init__(self, root: Path = ROOT, python: str = sys.executable):
        self._root = root
        self._python = python

    def try_bundle(self, output_dir: str, *, image=None, **_options) -> bool:  # noqa: ANN001 - jsii passes options
        out = Path(output_dir)
        cmd = [self._python, "-m", "pip", "install", "--disable-pip-version-check", "--no-compile", "--quiet",
               "-r", str(self._root / REQUIREMENTS), *PIP_PLATFORM, "--target", str(out)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"Lambda bundling failed: pip could not install {REQUIREMENTS} for manylinux2014_aarch64/cp312 "
                f"(exit {result.returncode}):\n{result.stderr.strip() or result.stdout.strip()}"
            )
        copy_code(self._root, out)
        return True


def copy_code(root: Path, out: Path) -> None:
    """Copy the handler package and the shared code into the bundle directory."""
    for src, dest in CODE:
        source, target = root / src, out / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=_SKIP, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)


def lambda_code(root: Path = ROOT) -> lambda_.Code:
    """The Lambda asset: bundled locally; Docker (the SAM build image) is only the fallback CDK would try."""
    docker_command = (
        f"pip install --no-compile -r {REQUIREMENTS} --target /asset-output && "
        + " && ".join(f"mkdir -p /asset-output/$(dirname {dest}) && cp -r {src} /asset-output/{dest}"
                      for src, dest in CODE)
    )
    return lambda_.Code.from_asset(
        str(root),
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=source_hash(root),
        bundling=BundlingOptions(
            image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.12:latest-arm64"),
            command=["bash", "-c", docker_command],
            local=LocalPipBundling(root),
        ),
    )
