"""CloudWatch metrics as Embedded Metric Format lines in the JSON log (namespace AIPM, dimension Service).

The CloudWatch agent turns these log lines into metrics; nothing here calls AWS.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("ec2_services.pr_processor.metrics")

NAMESPACE = "AIPM"
SERVICE = "pr-processor"


def emit(name: str, value: float, unit: str = "Count") -> None:
    fields = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {"Namespace": NAMESPACE, "Dimensions": [["Service"]], "Metrics": [{"Name": name, "Unit": unit}]}
            ],
        },
        "Service": SERVICE,
        name: value,
    }
    log.info("metric %s=%s", name, value, extra={"fields": fields})


def job_started() -> None:
    emit("JobsStarted", 1)


def job_ended(status: str, duration_s: float | None) -> None:
    emit("JobsSucceeded" if status == "succeeded" else "JobsFailed" if status == "failed" else "JobsEnded", 1)
    if duration_s is not None:
        emit("JobDuration", duration_s, "Seconds")


def queue_depth(depth: int) -> None:
    emit("QueueDepth", depth)
