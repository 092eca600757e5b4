"""Everything a container builds once at cold start: settings, secrets, the forge, the PR processor client (or, with
``AIPM_DISPATCH=sqs``, the job queue), auth.

Owns start-up decisions: where each secret comes from (variable, else Secrets Manager), refusing to start without
the shared secret unless ``AIPM_INSECURE_DEV=1``, and the GitHub forge (the local forge is handed in by
``aipm_local.api``). Nothing here handles a request.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aipm_common.envnames import LambdaApi
from aipm_common.logging import register_secret
from aipm_common.settings import SettingsError, require_secret
from lambda_fn.auth import Authenticator, CognitoConfig, make_authenticator
from lambda_fn.forge.base import Forge
from lambda_fn.processor import ProcessorClient
from lambda_fn.queue import JobQueue
from lambda_fn.ratelimit import RateLimiter, default_per_minute
from lambda_fn.secrets import read_secret, read_secrets
from lambda_fn.settings import LambdaSettings

if TYPE_CHECKING:
    from aipm_common.signing import SignatureVerifier

log = logging.getLogger("lambda_fn")

_POOL_ID_RE = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-[0-9]_[0-9A-Za-z]{1,55}$")
_REGION_RE = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-[0-9]$")
_CLIENT_ID_RE = re.compile(r"^[0-9A-Za-z]{1,128}$")


@dataclass
class Runtime:
    settings: LambdaSettings
    shared_secret: str | None
    forge: Forge
    processor: ProcessorClient
    authenticator: Authenticator
    rate_limiter: RateLimiter
    queue: JobQueue | None = None  # AIPM_DISPATCH=sqs: jobs go here, not to the PR processor
    # Asked of the forge once per container (a job page polls every second): owner/name (lower case) → the
    # repository's web address, and → its exact spelling on the forge (sqs mode reads a job from its pull request).
    repo_urls: dict[str, str] = field(default_factory=dict)
    full_names: dict[str, str] = field(default_factory=dict)

    @property
    def allowed_repos(self) -> list[str]:
        return self.settings.allowed_repo_list

    @property
    def dispatcher(self) -> ProcessorClient | JobQueue:
        """Where ``generate-code`` sends a job: the queue in sqs mode, else the PR processor."""
        return self.queue or self.processor

    @functools.cached_property
    def callback_verifier(self) -> SignatureVerifier:
        """The job callbacks' ``SignatureVerifier(shared_secret, "lambda-api")``, built on the first callback (signing
        imports httpx, which a cold start does without)."""
        from aipm_common.signing import LAMBDA_API, SignatureVerifier

        return SignatureVerifier(self.shared_secret, LAMBDA_API)

    @functools.cached_property
    def webhook_secret(self) -> bytes | None:
        """The GitHub webhook's secret (the variable, else Secrets Manager), read on the first delivery, not at cold
        start; None when neither is set."""
        if self.settings.aipm_github_webhook_secret:
            value = self.settings.aipm_github_webhook_secret.get_secret_value()
        elif self.settings.aipm_github_webhook_secret_arn:
            value = read_secret(self.settings.aipm_github_webhook_secret_arn, LambdaApi.AIPM_GITHUB_WEBHOOK_SECRET_ARN)
        else:
            value = ""
        register_secret(value)
        return value.encode() or None


def _shared_secret(settings: LambdaSettings) -> str | None:
    if not settings.shared_secret and settings.aipm_shared_secret_arn:
        return read_secret(settings.aipm_shared_secret_arn, LambdaApi.AIPM_SHARED_SECRET_ARN)
    return require_secret(settings, "lambda-api", log)


def _ui_token(settings: LambdaSettings) -> str | None:
    if settings.aipm_ui_token:
        return settings.aipm_ui_token.get_secret_value()
    if settings.aipm_ui_token_secret_arn:
        return read_secret(settings.aipm_ui_token_secret_arn, LambdaApi.AIPM_UI_TOKEN_SECRET_ARN)
    return None


def _cognito(settings: LambdaSettings) -> CognitoConfig | None:
    """The user pool the tokens must come from; None when AIPM_AUTH=cognito lacks a part (every call is then 401)."""
    if not (settings.cognito_user_pool_id and settings.cognito_client_id):
        return None
    region = settings.cognito_region or settings.cognito_user_pool_id.split("_", 1)[0]
    if not (_POOL_ID_RE.fullmatch(settings.cognito_user_pool_id) and _REGION_RE.fullmatch(region)
            and _CLIENT_ID_RE.fullmatch(settings.cognito_client_id)):
        log.error("COGNITO_USER_POOL_ID / COGNITO_REGION / COGNITO_CLIENT_ID do not look like Cognito's "
                  "(us-east-1_AbC123, us-east-1, 26 letters and digits)")
        return None
    return CognitoConfig(user_pool_id=settings.cognito_user_pool_id, client_id=settings.cognito_client_id,
                         region=region, allowed_groups=tuple(settings.allowed_group_list),
                         jwks_url=settings.cognito_jwks_url)


def _github_forge(settings: LambdaSettings) -> Forge:
    from lambda_fn.forge.github import AppInstallationToken, GitHubForge, StaticToken

    token = settings.token
    if not token and settings.github_token_secret_arn:
        token = read_secret(settings.github_token_secret_arn, LambdaApi.GITHUB_TOKEN_SECRET_ARN)
    if token:
        provider = StaticToken(token)
    elif settings.github_app_id:
        if not (settings.github_app_private_key_secret_arn and settings.github_app_installation_id):
            raise SettingsError(
                "GITHUB_APP_ID is set: GITHUB_APP_PRIVATE_KEY_SECRET_ARN and GITHUB_APP_INSTALLATION_ID are needed too")
        key = read_secret(settings.github_app_private_key_secret_arn, LambdaApi.GITHUB_APP_PRIVATE_KEY_SECRET_ARN)
        provider = AppInstallationToken(settings.github_app_id, key, settings.github_app_installation_id)
    else:
        log.warning("no GitHub credentials (GITHUB_TOKEN, GITHUB_TOKEN_SECRET_ARN or a GitHub App): calls go unauthenticated")
        provider = StaticToken(None)
    return GitHubForge(
        settings.github_api_url, provider,
        max_wait=settings.github_rate_limit_max_wait, margin=settings.aipm_deadline_margin,
    )


def _processor_pin(settings: LambdaSettings):
    """The PR processor's certificate pin: given (PR_PROCESSOR_CERT_SHA256), read from SSM on first use
    (PR_PROCESSOR_CERT_PARAMETER), or none for a plain-http processor (``make run``, loopback)."""
    if settings.pr_processor_cert_sha256:
        return settings.pr_processor_cert_sha256
    if settings.pr_processor_cert_parameter:
        from lambda_fn.pinning import ssm_pin

        return ssm_pin(settings.pr_processor_cert_parameter)
    return None  # http, or https with a certificate the system's CAs vouch for


def _rate_limit(settings: LambdaSettings) -> int:
    """AIPM_RATE_LIMIT_PER_MINUTE when it is set, else the default for the sign-in mode (``ratelimit``)."""
    if settings.aipm_rate_limit_per_minute is not None:
        return settings.aipm_rate_limit_per_minute
    return default_per_minute(settings.aipm_auth)


def _secret_arns(settings: LambdaSettings, *, github: bool) -> dict[str, str]:
    """``{variable: ARN}`` of every secret this container will read from Secrets Manager."""
    wanted = {}
    if not settings.shared_secret and settings.aipm_shared_secret_arn:
        wanted[LambdaApi.AIPM_SHARED_SECRET_ARN] = settings.aipm_shared_secret_arn
    if not settings.aipm_ui_token and settings.aipm_ui_token_secret_arn:
        wanted[LambdaApi.AIPM_UI_TOKEN_SECRET_ARN] = settings.aipm_ui_token_secret_arn
    if github and not settings.token:
        if settings.github_token_secret_arn:
            wanted[LambdaApi.GITHUB_TOKEN_SECRET_ARN] = settings.github_token_secret_arn
        elif settings.github_app_id and settings.github_app_private_key_secret_arn:
            wanted[LambdaApi.GITHUB_APP_PRIVATE_KEY_SECRET_ARN] = settings.github_app_private_key_secret_arn
    return wanted


def build_runtime(settings: LambdaSettings, *, forge: Forge | None = None) -> Runtime:
    """Read the secrets and build the parts; a missing secret or bad setting raises ``SettingsError``."""
    if forge is None and settings.aipm_forge == "local":
        raise SettingsError("AIPM_FORGE=local: the local forge is the local stack's, not the Lambda's: run "
                            "`python -m aipm_local.api` (what `make run` starts)")
    # All at once, in parallel; the reads below then answer from the per-container cache.
    read_secrets(_secret_arns(settings, github=forge is None), read=read_secret)
    secret = _shared_secret(settings)
    register_secret(secret)
    register_secret(settings.token)
    ui_token = _ui_token(settings)
    register_secret(ui_token)
    if forge is None:
        forge = _github_forge(settings)
    return Runtime(
        settings=settings,
        shared_secret=secret,
        forge=forge,
        processor=ProcessorClient(settings.pr_processor_url, secret, pin=_processor_pin(settings)),
        authenticator=make_authenticator(settings.aipm_auth, ui_token,
                                         cognito=_cognito(settings) if settings.aipm_auth == "cognito" else None),
        rate_limiter=RateLimiter(_rate_limit(settings)),
        queue=JobQueue(settings.aipm_job_queue_url) if settings.aipm_dispatch == "sqs" else None,
    )
