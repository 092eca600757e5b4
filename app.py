#!/usr/bin/env python3
"""The CDK app: reads the context once into an AipmConfig, builds the App and its one stack, and adds the cdk-nag
AwsSolutions checks (a finding that is not acknowledged with a reason fails ``cdk synth``).

``cdk synth`` / ``cdk deploy`` run this through cdk.json (the CLI passes its context, feature flags included, in
CDK_CONTEXT_JSON); ``python app.py`` alone reads cdk.json's context itself and synthesizes into cdk.out (or
$CDK_OUTDIR), so both give the same template. Every knob is a context key (cdk.json, or ``-c key=value``): see
infra/config.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk  # noqa: E402 - after the jsii setting above
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from infra.config import AipmConfig, ConfigError  # noqa: E402
from infra.stack import AipmStack  # noqa: E402


def build(app: cdk.App) -> AipmStack:
    config = AipmConfig.from_context(app.node.try_get_context)
    # Environment-agnostic on purpose (no lookups): `cdk deploy` targets the account and region of its credentials.
    stack = AipmStack(app, config.stack_name, config=config)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stack


def main() -> None:
    # Without the CLI nothing passes cdk.json's context (its feature flags change the template): read it here.
    standalone = "CDK_CONTEXT_JSON" not in os.environ
    context = json.loads((Path(__file__).with_name("cdk.json")).read_text())["context"] if standalone else None
    app = cdk.App(context=context)
    try:
        build(app)
    except ConfigError as exc:
        sys.exit(f"cdk.json / -c context: {exc}")
    app.synth()


if __name__ == "__main__":
    main()
