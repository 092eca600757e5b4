"""Bounded growth of the job database (``PR_JOB_RETENTION_DAYS``): finished jobs older than the retention go, with
their log lines, state timeline and callback outbox row, and the pages they held go back to the file system.

Owns when pruning runs (at start, then every ``every_s``) and that it runs off the event loop; the SQL is the store's
(``store.JobStore.prune`` / ``vacuum``). Live jobs are never pruned, whatever their age. It must not touch workspaces or git.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ec2_services.pr_processor.store import JobStore

log = logging.getLogger("ec2_services.pr_processor.retention")

DAY_S = 86_400.0


class Retention:
    def __init__(self, store: JobStore, *, days: float, every_s: float = 3600.0,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.days = days  # 0: keep every job
        self.every_s = every_s
        self.clock = clock

    def run_once(self) -> int:
        """Prune once; returns how many jobs went."""
        if self.days <= 0:
            return 0
        removed = self.store.prune(self.clock() - self.days * DAY_S)
        if removed:
            free = self.store.vacuum()
            log.info("retention: %d jobs ended over %g days ago removed with their logs (%d pages freed)",
                     removed, self.days, free)
        return removed

    async def run_forever(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.run_once)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention: pruning failed; the database keeps its jobs until the next round")
            await asyncio.sleep(self.every_s)
