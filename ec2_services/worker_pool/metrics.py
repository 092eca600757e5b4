"""CloudWatch metrics as Embedded Metric Format records in the JSON log (no API calls, no extra agent).

One helper, ``emit``: a log record whose fields carry the ``_aws`` envelope, namespace ``AIPM`` and the
dimension ``Service=worker-pool``; the CloudWatch agent turns it into metrics. It must not log task content.
"""

from __future__ import annotations

import logging
import time

NAMESPACE = "AIPM"
SERVICE = "worker-pool"

log = logging.getLogger("ec2_services.worker_pool.metrics")


def emf_record(values: dict[str, tuple[float, str]], **properties: object) -> dict[str, object]:
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
        "Service": SERVICE,
        **{name: value for name, (value, _) in values.items()},
        **properties,
    }


def emit(message: str, values: dict[str, tuple[float, str]], **properties: object) -> None:
    log.info(message, extra={"fields": emf_record(values, **properties)})
