"""Settings for every part, read from the environment with pydantic-settings (docs/contracts.md's variables).

The one place that reads ``os.environ``: one class per service, defaults exactly as docs/contracts.md gives them.
A bad value fails at start with a message that names the variable (``SettingsError``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_STATE_DIR = Path("~/.local/state/aipm")


def split_csv(value: str) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``."""
    return [part.strip() for part in value.split(",") if part.strip()]


class SettingsError(SystemExit):
    """A variable with a bad value; exits the service with a message naming it."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class _Base(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", env_ignore_empty=True)

    aipm_shared_secret: SecretStr | None = None
    aipm_insecure_dev: bool = False
    aipm_state_dir: Path = DEFAULT_STATE_DIR
    aipm_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("aipm_state_dir", mode="after")
    @classmethod
    def _expand_state_dir(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator("aipm_log_level", mode="before")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper() if isinstance(value, str) else value

    @property
    def shared_secret(self) -> str | None:
        return self.aipm_shared_secret.get_secret_value() if self.aipm_shared_secret else None


class _Dispatch(_Base):
    """How the Lambda hands jobs to the hosts: ``http`` (straight to one PR processor) or ``sqs`` (a FIFO queue that
    every host's PR processor long-polls). boto3 finds the queue's endpoint and region itself (``AWS_REGION``,
    ``AWS_ENDPOINT_URL_SQS``/``AWS_ENDPOINT_URL`` for a local SQS): nothing here reads them."""

    aipm_dispatch: Literal["http", "sqs"] = "http"
    aipm_job_queue_url: str | None = None

    @field_validator("aipm_dispatch", mode="before")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _queue_for_sqs(self):
        if self.aipm_dispatch == "sqs":
            url = self.aipm_job_queue_url
            if not url:
                raise ValueError("AIPM_DISPATCH=sqs needs AIPM_JOB_QUEUE_URL (the FIFO job queue's URL)")
            if not re.match(r"^https?://\S+\.fifo$", url):
                raise ValueError(f"AIPM_JOB_QUEUE_URL must be the http(s) URL of a FIFO queue (ending .fifo), got {url!r}")
        return self


class _WorkspaceRoot(_Base):
    kiro_workspace_root: Path | None = None

    @model_validator(mode="after")
    def _default_workspace_root(self):
        root = self.kiro_workspace_root or self.aipm_state_dir / "workspaces"
        self.kiro_workspace_root = root.expanduser().absolute()
        return self


class WorkerPoolSettings(_WorkspaceRoot):
    """``python -m ec2_services.worker_pool`` (docs/contracts.md, "Worker Pool API")."""

    worker_pool_host: str = "127.0.0.1"
    worker_pool_port: int = Field(8081, ge=1, le=65535)
    kiro_pool_size: int = Field(2, ge=1, le=32)
    # Which agent CLI profile supplies the defaults below ("kiro" or "q"); the KIRO_* variables override any field.
    kiro_profile: Literal["kiro", "q"] = "kiro"
    kiro_command: str | None = None
    kiro_prompt_pattern: str | None = None
    kiro_approval_pattern: str | None = None
    kiro_approval_reply: str | None = None
    kiro_deny_tools: str = ""
    kiro_driver: Literal["pty", "acp", "headless"] = "pty"
    # Which coding agent the workers run: "kiro" (either driver), "claude-code" or "gemini" (ACP only; the driver
    # follows).
    aipm_agent: Literal["kiro", "claude-code", "gemini"] = "kiro"
    # The claude-code / gemini agent's own model key: passed to that agent alone, redacted from every log.
    anthropic_api_key: SecretStr | None = None
    gemini_api_key: SecretStr | None = None
    # `make run` only: "scripted" answers the agent's model calls with aipm_local.scripted_model (not an AI).
    aipm_model: Literal["scripted"] | None = None
    # Kiro's ACP command; unset with another AIPM_AGENT, that agent's own (worker_pool.profiles.AGENTS).
    kiro_acp_command: str = "kiro-cli acp --agent-engine v2 --agent aipm"
    # KIRO_DRIVER=headless: the command each task runs (the driver adds --no-interactive, --trust-tools and the
    # prompt), and the tools it may trust: Kiro 2.x's built-in names; KIRO_DENY_TOOLS are left out of the list.
    kiro_headless_command: str = "kiro-cli chat --agent aipm"
    kiro_trust_tools: str = (
        "read,write,shell,grep,glob,code,web_search,web_fetch,introspect,knowledge,todo_list,thinking,delegate,"
        "subagent,use_aws,aws"
    )
    kiro_task_timeout: float = Field(1800, gt=0)
    # `POST /run` (a repository's test command, docs/contracts.md): the argv prefix that runs it as the agent's user
    # (the host's installer sets the same `setpriv … --` the agent commands start with; empty = as this service).
    kiro_run_as: str = ""
    kiro_queue_limit: int = Field(64, ge=0)
    kiro_stall_timeout: float = Field(600, gt=0)
    kiro_trouble_retries: int = Field(3, ge=0, le=20)
    # Backoff before re-sending a prompt after "having trouble responding" (doubles each time).
    kiro_trouble_backoff: float = Field(5.0, ge=0)
    # How long a finished task's result is kept for a replayed task_id (docs/contracts.md: 600 s).
    kiro_result_ttl: float = Field(600, gt=0)
    # The task ledger (task ids, signatures and results seen within the signing window / the TTL), so a replay after
    # a restart never runs the agent again; default $AIPM_STATE_DIR/worker-pool-tasks.sqlite.
    kiro_task_db: Path | None = None

    @model_validator(mode="after")
    def _default_task_db(self):
        self.kiro_task_db = (self.kiro_task_db or self.aipm_state_dir / "worker-pool-tasks.sqlite").expanduser().absolute()
        return self

    @field_validator("kiro_prompt_pattern", "kiro_approval_pattern")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    @field_validator("aipm_agent", mode="before")
    @classmethod
    def _agent_lower(cls, value: str) -> str:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _acp_only_agents(self):
        if self.aipm_agent != "kiro":
            if "kiro_driver" in self.model_fields_set and self.kiro_driver != "acp":
                raise ValueError(f"AIPM_AGENT={self.aipm_agent} speaks ACP only: unset KIRO_DRIVER or set it to acp")
            self.kiro_driver = "acp"
        return self

    @property
    def deny_tools(self) -> list[str]:
        return split_csv(self.kiro_deny_tools)

    @property
    def trusted_tools(self) -> list[str]:
        """KIRO_TRUST_TOOLS without the denied ones: what a headless run may use without asking."""
        denied = set(self.deny_tools)
        return [tool for tool in split_csv(self.kiro_trust_tools) if tool not in denied]


class PrProcessorSettings(_WorkspaceRoot, _Dispatch):
    """``python -m ec2_services.pr_processor`` (docs/contracts.md, "PR Processor API")."""

    pr_processor_host: str = "127.0.0.1"
    pr_processor_port: int = Field(8082, ge=1, le=65535)
    worker_pool_url: str = "http://127.0.0.1:8081"
    pr_processor_db: Path | None = None
    pr_max_attempts: int = Field(3, ge=1, le=20)
    # After the agent: the repository's tests, run by the worker pool as the agent (`POST /run`). A repository's own
    # `.aipm.toml` ([tests] command, timeout_s) wins; AIPM_TEST_COMMAND is the default for repositories without one
    # (empty: no tests are run). A failing run is reported in the result, it does not fail the job.
    aipm_test_command: str = ""
    aipm_test_timeout: float = Field(600, gt=0, le=3600)
    # Base delay of the exponential backoff between attempts, and the callback outbox's.
    pr_retry_base_delay: float = Field(5.0, ge=0)
    pr_callback_max_age: float = Field(24 * 3600, gt=0)
    # A task the pool could not take (429: every worker busy and its queue full) never ran: it is sent again within
    # the same attempt for up to this long. A pool that cannot be reached (a restart) is waited for this long.
    pr_pool_busy_wait: float = Field(3600, ge=0)
    pr_pool_down_wait: float = Field(120, ge=0)
    git_base_url: str = "https://github.com"
    github_token: SecretStr | None = None
    aipm_callback_origins: str = ""
    git_author_name: str = "AIPM Kiro Bot"
    git_author_email: str = "aipm-bot@users.noreply.github.com"
    # AIPM_DISPATCH=sqs: the long poll's wait (SQS allows 0-20 s) and the visibility timeout kept on a message
    # while its job lives (extended every third of it; a host that dies lets the message return after it).
    pr_sqs_wait_s: int = Field(20, ge=0, le=20)
    pr_sqs_visibility_s: int = Field(300, ge=3, le=43200)
    # AIPM_DISPATCH=sqs on an Auto Scaling group: the group's name. While this host has a live job it protects
    # itself from scale-in there (autoscaling:SetInstanceProtection), and clears that when it has none.
    # Empty: no protection (a local run, or one host without a group).
    aipm_asg_name: str | None = Field(None, max_length=255)

    @model_validator(mode="after")
    def _default_db(self):
        self.pr_processor_db = (self.pr_processor_db or self.aipm_state_dir / "jobs.sqlite").expanduser().absolute()
        return self

    @field_validator("git_base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not re.match(r"^(https?://[^/\s]+(/[^\s]*)?|file:///[^\s]*)$", value):
            raise ValueError("must be an http(s) URL or file:///absolute/path")
        return value.rstrip("/")

    @property
    def callback_origins(self) -> list[str]:
        return [origin.rstrip("/") for origin in split_csv(self.aipm_callback_origins)]

    @property
    def token(self) -> str | None:
        return self.github_token.get_secret_value() if self.github_token else None


class LambdaSettings(_Dispatch):
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
    # A pull request comment starting with this asks the agent for a follow-up on the same branch (local forge page).
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


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], **overrides) -> S:
    """Build ``cls`` from the environment; a bad variable raises ``SettingsError`` naming it."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper() or cls.__name__
            value = error.get("input")
            shown = "" if isinstance(value, dict) or "secret" in name.lower() or "token" in name.lower() else f" (got {value!r})"
            problems.append(f"{name}: {error['msg']}{shown}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None


def require_secret(settings: _Base, service: str, logger) -> str | None:
    """The shared secret, or ``None`` in insecure dev mode (warned); without either the service must not start."""
    secret = settings.shared_secret
    if secret:
        return secret
    if settings.aipm_insecure_dev:
        logger.warning(
            "%s starting WITHOUT AIPM_SHARED_SECRET because AIPM_INSECURE_DEV=1: signed endpoints accept anyone", service
        )
        return None
    raise SettingsError(
        f"{service}: AIPM_SHARED_SECRET is not set. Set it (the same value on every part), "
        "or set AIPM_INSECURE_DEV=1 for a local experiment without request signing."
    )
