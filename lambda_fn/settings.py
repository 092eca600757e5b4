"""The Lambda API's settings (docs/contracts.md, "Lambda API"): its variables, their defaults and checks."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from aipm_common.settings import DispatchSettings, split_csv


class LambdaSettings(DispatchSettings):
    """The Lambda API (``lambda_fn``), also run locally as ``python -m lambda_fn`` (docs/contracts.md, "Lambda API")."""

    github_api_url: str = "https://api.github.com"
    github_token: SecretStr | None = None
    github_token_secret_arn: str | None = None
    github_app_id: str | None = None
    github_app_private_key_secret_arn: str | None = None
    github_app_installation_id: str | None = None
    pr_processor_url: str = "http://127.0.0.1:8082"
    aipm_shared_secret_arn: str | None = None
    public_api_url: str | None = None
    aipm_auth: Literal["cognito", "token", "none"] | None = None
    aipm_ui_token: SecretStr | None = None
    # On AWS in s3-website mode the UI token lives in Secrets Manager (read once per cold start).
    aipm_ui_token_secret_arn: str | None = None
    aipm_allowed_groups: str = ""
    cognito_user_pool_id: str | None = None
    cognito_client_id: str | None = None
    cognito_region: str | None = None
    cognito_domain: str | None = None
    # Where the pool's signing keys are read (default: the pool's own .well-known/jwks.json); tests serve one locally.
    cognito_jwks_url: str | None = None
    # Generate-code calls that open a pull request, per caller and minute (0 = no limit). Unset: 30 with
    # token/cognito sign-in, none with AIPM_AUTH=none (lambda_fn.ratelimit.default_per_minute).
    aipm_rate_limit_per_minute: int | None = Field(None, ge=0)
    allowed_origins: str = ""
    aipm_forge: Literal["github", "local"] = "github"
    aipm_local_forge_dir: Path | None = None
    aipm_allowed_repos: str = ""
    # Follow-ups from a pull request (POST /api/github/webhook): the webhook's secret (or its Secrets Manager
    # secret), and the prefix that makes a comment a follow-up.
    aipm_github_webhook_secret: SecretStr | None = None
    aipm_github_webhook_secret_arn: str | None = None
    aipm_followup_prefix: str = Field("/aipm ", min_length=2, max_length=40)
    aipm_api_host: str = "127.0.0.1"
    aipm_api_port: int = Field(8000, ge=1, le=65535)
    # The static UI served at / by the API (local runs); None = API only.
    aipm_ui_dir: Path | None = None
    # Longest wait for a GitHub rate limit to reset when no Lambda deadline bounds it (local runs).
    github_rate_limit_max_wait: float = Field(20.0, ge=0)
    # Time kept in reserve before the Lambda's own deadline: a retry that would end inside it is not tried.
    aipm_deadline_margin: float = Field(3.0, ge=0)

    @model_validator(mode="after")
    def _default_forge_dir(self):
        self.aipm_local_forge_dir = (self.aipm_local_forge_dir or self.aipm_state_dir / "forge").expanduser().absolute()
        return self

    @property
    def allowed_origin_list(self) -> list[str]:
        return [origin.rstrip("/") for origin in split_csv(self.allowed_origins)]

    @property
    def allowed_repo_list(self) -> list[str]:
        return [repo.lower() for repo in split_csv(self.aipm_allowed_repos)]

    @property
    def allowed_group_list(self) -> list[str]:
        return split_csv(self.aipm_allowed_groups)

    @property
    def token(self) -> str | None:
        return self.github_token.get_secret_value() if self.github_token else None
