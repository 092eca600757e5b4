"""The settings every part shares, read from the environment into pydantic models (docs/contracts.md's variables).

Owns the shared bases (``ServiceSettings``, ``DispatchSettings``, ``WorkspaceSettings``), ``load_settings`` and
``require_secret``. Each service's own class sits beside it (``lambda_fn/settings.py``,
``ec2_services/worker_pool/settings.py``, ``ec2_services/pr_processor/settings.py``), so a part ships only its own
settings. These modules are the only readers of ``os.environ``; a bad value fails at start with a message that names
the variable (``SettingsError``).

``EnvSettings`` reads the environment itself, as pydantic-settings would with ``case_sensitive=False``,
``env_ignore_empty=True`` and ``extra="ignore"`` (a variable is a field's name, or its ``validation_alias``, in any
case; an empty one counts as unset; keyword arguments win) and pydantic validates it: importing pydantic-settings
(with python-dotenv, argparse and its CLI machinery) cost each Lambda cold start ~17 ms of CPU (P5).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    AliasChoices,
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from aipm_common.envnames import settings_alias

DEFAULT_STATE_DIR = Path("~/.local/state/aipm")


def split_csv(value: str) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``."""
    return [part.strip() for part in value.split(",") if part.strip()]


class SettingsError(SystemExit):
    """A variable with a bad value; exits the service with a message naming it."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _variables(name: str, alias: Any) -> list[str]:
    """The keys a field is validated under, as declared: its ``validation_alias`` (a string or ``AliasChoices`` of
    strings) if it has one, else its own name. Its variables are these in any case."""
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    return [name]


def env_values(cls: type[BaseModel], env: Mapping[str, str], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` and the values ``env`` sets (non-empty) for ``cls``'s other fields, keyed as pydantic validates
    them; variable names compared in any case."""
    lowered = {key.lower(): value for key, value in env.items() if value != ""}
    found = dict(overrides)
    for name, field in cls.model_fields.items():
        keys = _variables(name, field.validation_alias)
        if name in overrides or any(key in overrides for key in keys):
            continue
        for key in keys:
            if key.lower() in lowered:
                found[key] = lowered[key.lower()]
                break
    return found


class EnvSettings(BaseModel):
    """A pydantic model filled from ``os.environ`` (see the module's docstring); keyword arguments override it."""

    model_config = ConfigDict(extra="ignore", validate_default=True, validate_by_name=True)

    def __init__(self, **overrides: Any):
        super().__init__(**env_values(type(self), os.environ, overrides))


class ServiceSettings(EnvSettings):
    """What every part reads: the shared secret, insecure dev mode, the state directory and the log level."""

    # Each field reads the variable aipm_common.envnames declares for it (a field without one fails at import);
    # code and tests may still pass a field by its own name.
    model_config = ConfigDict(alias_generator=AliasGenerator(validation_alias=settings_alias))

    aipm_shared_secret: SecretStr | None = None
    aipm_insecure_dev: bool = False
    aipm_state_dir: Path = DEFAULT_STATE_DIR
    aipm_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Under uvicorn: seconds a connection may take to send a whole request line and headers (from connecting, or
    # from its previous answer) before it is closed, and the connections served at once before new requests get 503.
    aipm_header_timeout: float = Field(10, gt=0, le=300)
    aipm_max_connections: int = Field(1000, ge=1, le=100_000)

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


class DispatchSettings(ServiceSettings):
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
            if not re.fullmatch(r"^https?://\S+\.fifo$", url):
                raise ValueError(f"AIPM_JOB_QUEUE_URL must be the http(s) URL of a FIFO queue (ending .fifo), got {url!r}")
        return self


class WorkspaceSettings(ServiceSettings):
    """The tree job workspaces live in, shared by both EC2 services (default under the state directory)."""

    kiro_workspace_root: Path | None = None

    @model_validator(mode="after")
    def _default_workspace_root(self):
        root = self.kiro_workspace_root or self.aipm_state_dir / "workspaces"
        self.kiro_workspace_root = root.expanduser().absolute()
        return self


S = TypeVar("S", bound=EnvSettings)


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


def require_secret(settings: ServiceSettings, service: str, logger) -> str | None:
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
