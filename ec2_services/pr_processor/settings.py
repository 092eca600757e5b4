"""The PR processor's settings (docs/contracts.md, "PR processor"): its variables, their defaults and checks."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from aipm_common.settings import DispatchSettings, WorkspaceSettings, split_csv


class PrProcessorSettings(WorkspaceSettings, DispatchSettings):
    """``python -m ec2_services.pr_processor`` (docs/contracts.md, "PR Processor API")."""

    pr_processor_host: str = "127.0.0.1"
    pr_processor_port: int = Field(8082, ge=1, le=65535)
    # Serve over TLS with this certificate and key (the host makes them at install); unset: plain http (local runs).
    pr_processor_tls_cert: Path | None = None
    pr_processor_tls_key: Path | None = None
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
    # Finished jobs (and their logs, timeline, callback row) are deleted this many days after they ended; 0 keeps all.
    pr_job_retention_days: float = Field(30, ge=0)
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
        if not re.fullmatch(r"^(https?://[^/\s]+(/[^\s]*)?|file:///[^\s]*)$", value):
            raise ValueError("must be an http(s) URL or file:///absolute/path")
        return value.rstrip("/")

    @property
    def callback_origins(self) -> list[str]:
        return [origin.rstrip("/") for origin in split_csv(self.aipm_callback_origins)]

    @property
    def token(self) -> str | None:
        return self.github_token.get_secret_value() if self.github_token else None
