"""How long the current request may still take: the Lambda's remaining time, or nothing under uvicorn.

An ASGI middleware reads ``aws.context`` (Mangum puts the Lambda context in the scope) and keeps the deadline in a
context variable, which Starlette copies into the thread a sync route runs in. Retries ask ``time_left()`` before
sleeping, so a wait that would outlive the Lambda is answered at once with a clear 503 instead.
"""

from __future__ import annotations

import contextvars
import time

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("aipm_deadline", default=None)


def time_left() -> float | None:
    """Seconds until the Lambda is stopped, or None when nothing bounds this request."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


def can_wait(seconds: float, *, margin: float, max_wait: float) -> bool:
    """Whether sleeping ``seconds`` then doing a call still leaves ``margin`` before the deadline."""
    left = time_left()
    if left is None:
        return seconds <= max_wait
    return seconds + margin <= left


class DeadlineMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        context = scope.get("aws.context")
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if scope["type"] != "http" or remaining is None:
            return await self.app(scope, receive, send)
        token = _DEADLINE.set(time.monotonic() + remaining() / 1000)
        try:
            await self.app(scope, receive, send)
        finally:
            _DEADLINE.reset(token)
