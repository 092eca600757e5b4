"""The Lambda API (deploys ``lambda_fn/``): the function, its Function URL, its role and its log group.

Owns the runtime shape (Python 3.12 on arm64, the handler, memory, timeout) and the environment of docs/contracts.md
("Lambda API"). It grants nothing to itself: the Stack grants the secret reads, so every relation is seen there.
CORS is not configured on the Function URL: the app's middleware answers it from ``ALLOWED_ORIGINS`` (one place).
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, Fn, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.bundling import lambda_code

HANDLER = "lambda_fn.handler.handler"


def url_origin(url: str) -> str:
    """``https://abc.lambda-url.region.on.aws/`` → ``https://abc.lambda-url.region.on.aws`` (works on tokens)."""
    return Fn.join("", ["https://", Fn.select(2, Fn.split("/", url))])


class Api(Construct):
    """``function``, ``url`` (the Function URL construct), ``url_origin`` and ``log_group``."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        environment: Mapping[str, str],
        log_retention: logs.RetentionDays,
        log_group_name: str,
    ) -> None:
        super().__init__(scope, id_)
        self.log_group = logs.LogGroup(
            self, "Logs", log_group_name=log_group_name, retention=log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        # Its own role instead of AWSLambdaBasicExecutionRole: writes to this log group only, plus the Stack's grants.
        self.role = iam.Role(
            self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="aipm-kiro Lambda API: its log group and the secrets the stack grants",
        )
        self.log_group.grant_write(self.role)
        self.function = lambda_.Function(
            self,
            "Function",
            description="aipm-kiro API: Generate Code & PR (FastAPI + Mangum)",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.ARM_64,
            handler=HANDLER,
            code=lambda_code(),
            memory_size=512,
            # GitHub calls (branch, TASK.md, PR) then the PR processor's 202: well under this.
            timeout=Duration.seconds(30),
            role=self.role,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.TEXT,
            environment=dict(environment),
        )
        # The app authenticates every user-facing request (Cognito / token) and the callback is signed.
        self.url = self.function.add_function_url(auth_type=lambda_.FunctionUrlAuthType.NONE)
        self.url_origin = url_origin(self.url.url)
