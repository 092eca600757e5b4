"""``AIPM_RATE_LIMIT_PER_MINUTE``: how many Generate Code & PR calls one caller may make a minute (0 = no limit).

A sliding window per caller identity, kept in this container's memory: it stops a stuck button or a script from
opening pull requests in a loop. Across containers the Lambda's reserved concurrency is the bound; nothing here
is needed for correctness (idempotency lives in the forge).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from fastapi import HTTPException

WINDOW_S = 60.0


class RateLimiter:
    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self._clock = clock
        self._calls: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Count one call for ``key``; 429 with ``Retry-After`` when over the limit."""
        if self.per_minute <= 0:
            return
        now = self._clock()
        with self._lock:
            calls = self._calls.setdefault(key, deque())
            while calls and now - calls[0] >= WINDOW_S:
                calls.popleft()
            if len(calls) >= self.per_minute:
                retry = max(1, int(WINDOW_S - (now - calls[0])) + 1)
                raise HTTPException(429, f"more than {self.per_minute} Generate Code & PR calls a minute; "
                                         f"try again in {retry} s", headers={"Retry-After": str(retry)})
            calls.append(now)
            if len(self._calls) > 10_000:  # forget idle callers rather than grow without bound
                for idle in [k for k, v in self._calls.items() if not v or now - v[-1] >= WINDOW_S]:
                    del self._calls[idle]
