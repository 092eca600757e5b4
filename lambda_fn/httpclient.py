"""One httpx client per container and per dependency, made on first use (cold start stays cheap) and then reused
by every request the container serves, so connections to GitHub and the PR processor stay open between events.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx


class LazyClient:
    def __init__(self, factory: Callable[[], httpx.Client]):
        self._factory = factory
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def get(self) -> httpx.Client:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._factory()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
