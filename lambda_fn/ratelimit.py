"""``AIPM_RATE_LIMIT_PER_MINUTE``: how many pull requests one caller may have Generate Code & PR open a minute
(0 = no limit; unset: 30 with ``AIPM_AUTH=token``/``cognito``, none with ``AIPM_AUTH=none``, which serves loopback only).

A sliding window per caller identity, kept in this container's memory: it stops a stuck button or a script from
opening pull requests in a loop. A call is counted when it is about to open a pull request and given back when it
turns out to reuse one, so repeats that answer an existing pull request (200) never count. Across containers the
Lambda's reserved concurrency is the bound; nothing here is needed for correctness (idempotency lives in the forge).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from fastapi import HTTPException

WINDOW_S = 60.0
DEFAULT_PER_MINUTE = 30


class RateLimiter:
    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self._clock = clock
        self._calls: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> Callable[[], None]:
        """Count one call for ``key`` and return what uncounts it; 429 with ``Retry-After`` when over the limit."""
        if self.per_minute <= 0:
            return _nothing
        now = self._clock()
        with self._lock:
            calls = self._calls.setdefault(key, deque())
            while calls and now - calls[0] >= WINDOW_S:
                calls.popleft()
            if len(calls) >= self.per_minute:
                retry = max(1, int(WINDOW_S - (now - calls[0])) + 1)
                raise HTTPException(429, f"more than {self.per_minute} new pull requests a minute from Generate Code & PR; "
                                         f"try again in {retry} s", headers={"Retry-After": str(retry)})
            calls.append(now)
            if len(self._calls) > 10_000:  # forget idle callers rather than grow without bound
                for idle in [k for k, v in self._calls.items() if not v or now - v[-1] >= WINDOW_S]:
                    del self._calls[idle]
        return lambda: self._give_back(key, now)

    def _give_back(self, key: str, stamp: float) -> None:
        with self._lock:
            calls = self._calls.get(key)
            if calls is not None and stamp in calls:
                calls.remove(stamp)


def default_per_minute(auth_mode: str | None) -> int:
    """The limit when ``AIPM_RATE_LIMIT_PER_MINUTE`` is unset: off for loopback-only ``none``, else 30."""
    return 0 if auth_mode == "none" else DEFAULT_PER_MINUTE


def _nothing() -> None:
    pass
