"""The worker pool's settings (docs/contracts.md, "Worker pool"): its variables, their defaults and checks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from aipm_common.settings import WorkspaceSettings, split_csv


class WorkerPoolSettings(WorkspaceSettings):
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
