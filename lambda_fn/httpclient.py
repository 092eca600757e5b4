"""One httpx client per container and per dependency, made on first use (cold start stays cheap) and then reused
by every request the container serves, so connections to GitHub and the PR processor stay open between events.

httpx itself is imported on first use too: ``/health`` and a cold start never pay for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx


class LazyClient:
    def __init__(self, factory: Callable[[], httpx.Client]):
        """``factory`` builds the client (and imports httpx) the first time ``get`` is called."""
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
