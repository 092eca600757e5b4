#!/usr/bin/env python3
"""The CDK app: reads the context once into an AipmConfig, builds the App and its one stack, and adds the cdk-nag
AwsSolutions checks (a finding that is not acknowledged with a reason fails ``cdk synth``).

``cdk synth`` / ``cdk deploy`` run this through cdk.json; ``python app.py`` alone synthesizes into cdk.out
(or $CDK_OUTDIR). Every knob is a context key (cdk.json, or ``-c key=value``): see infra/config.py.
"""

from __future__ import annotations

import os
import sys

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
    app = cdk.App()
    try:
        build(app)
    except ConfigError as exc:
        sys.exit(f"cdk.json / -c context: {exc}")
    app.synth()


if __name__ == "__main__":
    main()
