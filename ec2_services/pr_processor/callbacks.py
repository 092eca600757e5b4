"""The callback outbox: delivers each ended job's payload to its ``callback_url``, signed for ``lambda-api``.

Owns delivery only: the payload is written to the outbox in the same transaction that ends the job (``jobs``), so a
restart loses none. Retries back off exponentially with jitter until ``PR_CALLBACK_MAX_AGE``; redirects are never
followed (a signed request goes to the origin that was checked, nowhere else).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import httpx

from ec2_services.common.logging import log_context
from ec2_services.common.signing import LAMBDA_API, SigningAuth
from ec2_services.pr_processor.jobs import CallbackState, JobStore, OutboxItem

log = logging.getLogger(__name__)

MAX_DELAY_S = 3600.0
POLL_S = 0.25
# Answers that may change on their own; any other 4xx means the receiver refuses this callback for good.
_TRANSIENT_4XX = {408, 425, 429}


class CallbackSender:
    def __init__(self, store: JobStore, secret: str | None, *, base_delay: float, max_age: float):
        self._store = store
        self._base_delay = base_delay
        self._max_age = max_age
        self._client = httpx.AsyncClient(
            auth=SigningAuth(secret, LAMBDA_API), follow_redirects=False, timeout=httpx.Timeout(15.0)
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def delay(self, attempts: int) -> float:
        """Backoff before the next try after ``attempts`` failed ones: exponential, capped, with jitter."""
        raw = min(max(self._base_delay, 0.01) * 2 ** max(attempts - 1, 0), MAX_DELAY_S)
        return raw * random.uniform(0.5, 1.0)

    async def run_forever(self) -> None:
        while True:
            try:
                await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("callback outbox: delivery round failed")
            await asyncio.sleep(POLL_S)

    async def deliver_due(self) -> None:
        for item in self._store.due_callbacks(time.time()):
            with log_context(job_id=item.job_id):
                await self._deliver(item)

    async def _deliver(self, item: OutboxItem) -> None:
        error: str | None = None
        permanent = False
        try:
            response = await self._client.post(
                item.url, content=item.payload.encode(), headers={"content-type": "application/json"}
            )
            if 200 <= response.status_code < 300:
                self._store.record_callback(item.job_id, state=CallbackState.DELIVERED, next_at=time.time(), error=None)
                log.info("callback delivered (HTTP %s, try %d)", response.status_code, item.attempts + 1)
                return
            error = f"HTTP {response.status_code}"
            if 300 <= response.status_code < 400:
                error += " (a redirect; callbacks do not follow redirects)"
            permanent = 400 <= response.status_code < 500 and response.status_code not in _TRANSIENT_4XX
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}"
        attempts = item.attempts + 1
        expired = time.time() - item.created_at + self.delay(attempts) > self._max_age
        if permanent or expired:
            why = "the receiver refused it" if permanent else "it was not delivered within PR_CALLBACK_MAX_AGE"
            self._store.record_callback(item.job_id, state=CallbackState.FAILED, next_at=time.time(), error=error)
            log.warning("callback given up after %d tries: %s (%s)", attempts, why, error)
            return
        wait = self.delay(attempts)
        self._store.record_callback(item.job_id, state=CallbackState.PENDING, next_at=time.time() + wait, error=error)
        log.warning("callback try %d failed (%s); next in %.1f s", attempts, error, wait)
