"""One client per container and per dependency, made on first use (cold start stays cheap) and then reused
by every request the container serves, so connections to GitHub and the PR processor stay open between events.

httpx (or boto3, for the job queue) is imported on first use too: ``/health`` and a cold start never pay for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

C = TypeVar("C")


class LazyClient(Generic[C]):
    def __init__(self, factory: Callable[[], C]):
        """``factory`` builds the client (and imports its library) the first time ``get`` is called; the client
        needs a ``close()``."""
        self._factory = factory
        self._client: C | None = None
        self._lock = threading.Lock()

    def get(self) -> C:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._factory()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()  # type: ignore[attr-defined]
            self._client = None
