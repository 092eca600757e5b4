"""The worker pool's CloudWatch metrics (EMF through ``aipm_common.metrics``; Service=worker-pool)."""

from __future__ import annotations

from aipm_common import metrics as _emf

SERVICE = "worker-pool"


def emit(message: str, values: dict[str, tuple[float, str]], **properties: object) -> None:
    _emf.emit(SERVICE, message, values, **properties)


def queue_depth(depth: int) -> None:
    emit(f"metric QueueDepth={depth}", {"QueueDepth": (depth, "Count")})
