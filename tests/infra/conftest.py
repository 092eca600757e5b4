"""Synthesis for the infrastructure tests: each distinct context is synthesized once per session (synth is slow).

Bundling is skipped (``aws:cdk:bundling-stacks`` = []), so no pip run happens here; cdk-nag runs as in ``cdk synth``
(app.py adds it), and its validation report is read from the cloud assembly. Each synthesis writes a cloud assembly
of about 20 MB to an ``aipm-synth-*`` temporary directory; they are all removed when the session ends.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

ROOT = Path(__file__).resolve().parents[2]
ADMIN_CIDR = "203.0.113.7/32"
KIRO_KEY_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:aipm/kiro-api-key-AbCdEf"
GITHUB_TOKEN_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:aipm/github-token"
ALLOWED_GROUPS = "developers, release-managers"
TEST_AMI = "ami-0123456789abcdef0"
SQS_MIN_HOSTS, SQS_MAX_HOSTS, SQS_JOBS_PER_HOST = 2, 6, 3


@dataclass(frozen=True)
class Synth:
    """One synthesized app: the stack's template (dict and assertions view) and the cdk-nag report."""

    template: dict
    report: dict
    outdir: Path

    @property
    def assertions(self):
        from aws_cdk.assertions import Template

        return Template.from_json(self.template)

    @property
    def resources(self) -> dict:
        return self.template["Resources"]

    def of_type(self, type_: str) -> dict[str, dict]:
        return {k: v for k, v in self.resources.items() if v["Type"] == type_}

    def one(self, type_: str) -> dict:
        found = self.of_type(type_)
        assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
        return next(iter(found.values()))


_OUTDIRS: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def _remove_cloud_assemblies():
    """Every ``aipm-synth-*`` directory this session made is gone once the infra tests are done."""
    yield
    synthesize.cache_clear()
    while _OUTDIRS:
        shutil.rmtree(_OUTDIRS.pop(), ignore_errors=True)


@functools.cache
def synthesize(**overrides: str) -> Synth:
    import aws_cdk as cdk

    from app import build

    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    context["amiId"] = TEST_AMI  # the image is pinned (issue 17); "" in overrides tests the lookup instead
    context.update(overrides)
    context["aws:cdk:bundling-stacks"] = []
    outdir = Path(tempfile.mkdtemp(prefix="aipm-synth-"))
    _OUTDIRS.append(outdir)
    app = cdk.App(context=context, outdir=str(outdir))
    stack = build(app)
    app.synth()
    return Synth(
        template=json.loads((outdir / f"{stack.stack_name}.template.json").read_text()),
        report=json.loads((outdir / "validation-report.json").read_text()),
        outdir=outdir,
    )


@pytest.fixture(scope="session")
def default_synth() -> Synth:
    return synthesize()


@pytest.fixture(scope="session")
def admin_synth() -> Synth:
    return synthesize(adminCidr=ADMIN_CIDR, kiroApiKeySecretArn=KIRO_KEY_ARN, githubTokenSecretArn=GITHUB_TOKEN_ARN,
                      allowedGroups=ALLOWED_GROUPS)


@pytest.fixture(scope="session")
def s3_website_synth() -> Synth:
    return synthesize(websiteMode="s3-website")


@pytest.fixture(scope="session")
def claude_code_synth() -> Synth:
    """agent=claude-code (issue 16): the open-source agent instead of Kiro, its key in a secret the stack creates."""
    return synthesize(agent="claude-code")


GEMINI_KEY_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:gemini-key-AbCdEf"


@pytest.fixture(scope="session")
def gemini_synth() -> Synth:
    """agent=gemini with an existing secret holding GEMINI_API_KEY."""
    return synthesize(agent="gemini", geminiApiKeySecretArn=GEMINI_KEY_ARN)


@pytest.fixture(scope="session")
def sqs_synth() -> Synth:
    """dispatch=sqs with every knob of the mode away from its default, and an admin CIDR (8081 must stay open)."""
    return synthesize(dispatch="sqs", minHosts=str(SQS_MIN_HOSTS), maxHosts=str(SQS_MAX_HOSTS),
                      backlogPerHost=str(SQS_JOBS_PER_HOST), adminCidr=ADMIN_CIDR)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: needs the network or takes several seconds (skipped by make test-fast)")
