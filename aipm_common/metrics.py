"""CloudWatch metrics as Embedded Metric Format records in the JSON log (no API calls, no extra agent).

The one EMF writer for every service: namespace ``AIPM``, dimension ``Service``. The CloudWatch agent ships the
log lines and CloudWatch Logs turns them into metrics. Callers must not put task content in properties.
"""

from __future__ import annotations

import logging
import time

NAMESPACE = "AIPM"

log = logging.getLogger("aipm.metrics")


def emf_record(service: str, values: dict[str, tuple[float, str]], **properties: object) -> dict[str, object]:
    """The EMF document for ``{"TasksCompleted": (1, "Count"), …}`` plus plain properties (e.g. the status)."""
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Service"]],
                    "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in values.items()],
                }
            ],
        },
        "Service": service,
        **{name: value for name, (value, _) in values.items()},
        **properties,
    }


def emit(service: str, message: str, values: dict[str, tuple[float, str]], **properties: object) -> None:
    log.info(message, extra={"fields": emf_record(service, values, **properties)})
