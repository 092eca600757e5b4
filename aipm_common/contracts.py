"""The bodies that cross between the parts (docs/contracts.md): one pydantic model per body, used by the sender to
build it and by the receiver to read it, so the two cannot drift apart.

Owns field names, types and the bounds a receiver answers with 422. It must not hold a receiver's own rules (the
400s: branch names, allowed callback origins, forbidden prompts), which stay at that receiver's edge, nor import a
service. Field order is the wire order: senders dump these models as they are, so the JSON keeps that order.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from aipm_common.bounds import MAX_SECONDS, Count, Credits, PrNumber, Seconds

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$"
# A pool task id: the PR processor sends "{job_id}.{attempt}", which the job id's 120 characters leave room for.
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
MAX_REF_LEN = 200
FinalStatus = Literal["succeeded", "failed", "no_changes", "cancelled"]


# --- worker pool: POST /execute ---------------------------------------------------------------------------------


class ExecuteRequest(BaseModel):
    """``POST /execute``, sent by the PR processor (``pool_client``) to the worker pool."""

    prompt: str = Field(min_length=1, max_length=65536, description="The task for the agent; `\\n` and `\\t` allowed.")
    cwd: str | None = Field(None, description="An existing absolute directory inside KIRO_WORKSPACE_ROOT.")
    timeout_s: float | None = Field(
        None, gt=0, le=MAX_SECONDS, allow_inf_nan=False,
        description="Capped at KIRO_TASK_TIMEOUT; counted from when a worker takes it.",
    )
    task_id: str = Field(pattern=TASK_ID_PATTERN, description="Made by the caller; a replay never runs twice.")


class TaskResult(BaseModel):
    """What ``POST /execute`` answers (and ``GET /tasks/{id}`` once the task ended), whatever the HTTP status."""

    status: str
    task_id: str
    worker_id: int | None
    output: str
    approvals: int
    denials: int
    duration_s: float
    credits: float | None
    tokens: dict[str, int] | None = Field(
        None, description="Model tokens the agent reported for the task ({input, output}): Gemini CLI does; "
        "claude-code-acp and Kiro do not (Kiro reports credits).")
    trouble_retries: int = 0
    detail: str | None = None
    stalled: bool | None = None


# --- PR processor: POST /api/process-pr ----------------------------------------------------------------------------


class ProcessPrRequest(BaseModel):
    """``POST /api/process-pr`` (and the job queue's message body), sent by the Lambda to the PR processor."""

    model_config = ConfigDict(extra="ignore")

    job_id: str = Field(max_length=200)  # its pattern is a 400 rule, checked at the PR processor's edge
    repo: str = Field(max_length=140)
    branch: str = Field(max_length=MAX_REF_LEN + 1)
    base_branch: str | None = Field(default=None, max_length=MAX_REF_LEN + 1)
    pr_number: PrNumber | None = None
    task_file: str = "TASK.md"
    callback_url: str | None = Field(default=None, max_length=2048)
    requested_by: str | None = Field(default=None, max_length=1024)
    title: str | None = Field(default=None, max_length=200)  # the pull request's title, shown in the job history


class ProcessPrAccepted(BaseModel):
    """The 202 answer to a new job."""

    job_id: str
    status: str


# --- Lambda: POST /api/callbacks/job ------------------------------------------------------------------------------


class TestRun(BaseModel):
    """The repository's tests on the agent's commit, as the job keeps them (run through the pool's ``/run``)."""

    __test__ = False  # not a pytest class, whatever its name

    command: str = Field(max_length=2000)
    source: str | None = Field(None, max_length=40)
    summary: str = Field(max_length=200)
    passed: int | None = Field(None, ge=0, le=10_000_000)
    failed: int | None = Field(None, ge=0, le=10_000_000)
    exit_code: int | None = Field(None, ge=-255, le=255)
    timed_out: bool = False
    duration_s: Seconds | None = None
    output_tail: str = Field("", max_length=100_000)


class Tokens(BaseModel):
    """The model tokens an agent reported for a job's run (Gemini CLI does; Kiro reports credits instead)."""

    input: int = Field(ge=0, le=10**12)
    output: int = Field(ge=0, le=10**12)


class JobResult(BaseModel):
    """The callback the PR processor sends to the Lambda when a job ends."""

    job_id: str = Field(pattern=JOB_ID_PATTERN)
    status: FinalStatus
    commit: str | None = Field(None, max_length=64)
    error: str | None = Field(None, max_length=200_000)
    pr_number: PrNumber | None = None
    repo: str = Field(max_length=140)
    branch: str = Field(max_length=200)
    attempts: Count | None = None
    duration_s: Seconds | None = None
    credits: Credits | None = None
    output_tail: str | None = Field(None, max_length=500_000)
    tests: TestRun | None = None  # sent only when the repository's tests ran (``dump_job_result``)
    tokens: Tokens | None = None  # sent only when the agent reported them


def dump_job_result(result: JobResult) -> dict:
    """The callback's JSON object: ``tests`` and ``tokens`` are left out, not null, when there are none."""
    return result.model_dump(exclude={name for name in ("tests", "tokens") if getattr(result, name) is None})


CONTRACT_MODELS: tuple[type[BaseModel], ...] = (ExecuteRequest, TaskResult, ProcessPrRequest, ProcessPrAccepted, TestRun, Tokens,
                                                JobResult)
