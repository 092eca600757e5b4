"""The job state machine: the states a job can be in and the one table of moves between them.

Pure (no database): ``store.jobs.Jobs.transition`` asks ``check`` before every status change, so no code path can move
a job where the table says it cannot go; ``store.timeline`` records each state a job entered.
"""

from __future__ import annotations

import enum


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PUSHING = "pushing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NO_CHANGES = "no_changes"
    CANCELLED = "cancelled"

    @property
    def live(self) -> bool:
        return self in LIVE_STATES

    @property
    def final(self) -> bool:
        return not self.live


LIVE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING, JobState.PUSHING})
FINAL_STATES = frozenset(JobState) - LIVE_STATES

# The whole state machine. A retried attempt stays in its state (running, or pushing for a push retried without
# running the agent again); a pushing job is past cancelling: its commit is made and goes out.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.PUSHING, JobState.NO_CHANGES, JobState.FAILED, JobState.CANCELLED}),
    JobState.PUSHING: frozenset({JobState.SUCCEEDED, JobState.FAILED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.NO_CHANGES: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class InvalidTransition(RuntimeError):
    pass


def check(job_id: str, current: JobState, to: JobState) -> None:
    """Raise ``InvalidTransition`` unless TRANSITIONS allows ``current → to``."""
    if to not in TRANSITIONS[current]:
        raise InvalidTransition(f"job {job_id}: {current.value} → {to.value} is not allowed")
