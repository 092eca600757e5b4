"""The PR processor's CloudWatch metrics (EMF through ``aipm_common.metrics``; Service=pr-processor)."""

from __future__ import annotations

from aipm_common import metrics as _emf

SERVICE = "pr-processor"


def emit(name: str, value: float, unit: str = "Count") -> None:
    _emf.emit(SERVICE, f"metric {name}={value}", {name: (value, unit)})


def job_started() -> None:
    emit("JobsStarted", 1)


def job_ended(status: str, duration_s: float | None) -> None:
    emit("JobsSucceeded" if status == "succeeded" else "JobsFailed" if status == "failed" else "JobsEnded", 1)
    if duration_s is not None:
        emit("JobDuration", duration_s, "Seconds")


def queue_depth(depth: int) -> None:
    emit("QueueDepth", depth)
