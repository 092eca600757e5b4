"""The callback outbox: delivers each ended job's payload to its ``callback_url``, signed for ``lambda-api``.

Owns delivery only: the payload is written to the outbox in the same transaction that ends the job (``jobs``), so a
restart loses none. Every answer but a 2xx, and every connection error, is retried with exponential backoff and jitter
until ``PR_CALLBACK_MAX_AGE`` (24 h) after the job ended: a 4xx too — a 401 from a Lambda whose clock or secret is
briefly wrong heals once that is fixed, and a callback given up early leaves the pull request without its result.
Redirects are never followed (a signed request goes to the origin that was checked, nowhere else). Due callbacks go
out at once (at most ``MAX_IN_FLIGHT``), each job's one at a time, so a target that hangs delays only its own.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import httpx

from aipm_common.logging import escape_nonprintable, log_context, redact
from aipm_common.signing import LAMBDA_API, SigningAuth
from ec2_services.pr_processor.store.outbox import CallbackState, Outbox, OutboxItem

log = logging.getLogger(__name__)

MAX_DELAY_S = 3600.0
POLL_S = 0.25
DETAIL_CHARS = 300
MAX_IN_FLIGHT = 16  # deliveries at once: a target that hangs holds its own delivery, not the others'


class CallbackSender:
    def __init__(self, outbox: Outbox, secret: str | None, *, base_delay: float, max_age: float):
        self._outbox = outbox
        self._base_delay = base_delay
        self._max_age = max_age
        self._client = httpx.AsyncClient(
            auth=SigningAuth(secret, LAMBDA_API), follow_redirects=False, timeout=httpx.Timeout(15.0)
        )
        self._in_flight: dict[str, asyncio.Task[None]] = {}

    async def aclose(self) -> None:
        for task in list(self._in_flight.values()):
            task.cancel()  # not recorded: still pending in the outbox, sent again after the restart
        await asyncio.gather(*self._in_flight.values(), return_exceptions=True)
        await self._client.aclose()

    def delay(self, attempts: int) -> float:
        """Backoff before the next try after ``attempts`` failed ones: exponential, capped, with jitter."""
        raw = min(max(self._base_delay, 0.01) * 2 ** max(attempts - 1, 0), MAX_DELAY_S)
        return raw * random.uniform(0.5, 1.0)

    async def run_forever(self) -> None:
        while True:
            try:
                self.start_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("callback outbox: delivery round failed")
            await asyncio.sleep(POLL_S)

    def start_due(self) -> list[asyncio.Task[None]]:
        """Start a delivery for each due callback that is not already on its way, up to ``MAX_IN_FLIGHT`` at once."""
        started = []
        for item in self._outbox.due(time.time()):
            if item.job_id in self._in_flight or len(self._in_flight) >= MAX_IN_FLIGHT:
                continue
            task = asyncio.create_task(self._deliver_one(item), name=f"callback-{item.job_id}")
            self._in_flight[item.job_id] = task
            task.add_done_callback(lambda _done, job_id=item.job_id: self._in_flight.pop(job_id, None))
            started.append(task)
        return started

    async def deliver_due(self) -> None:
        """One round: every due callback sent at once, and their answers awaited."""
        await asyncio.gather(*self.start_due())

    async def _deliver_one(self, item: OutboxItem) -> None:
        with log_context(job_id=item.job_id):
            try:
                await self._deliver(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("callback delivery failed; it stays in the outbox for the next round")

    async def _deliver(self, item: OutboxItem) -> None:
        status: int | None = None
        try:
            response = await self._client.post(
                item.url, content=item.payload.encode(), headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:DETAIL_CHARS]
        else:
            status = response.status_code
            if 200 <= status < 300:
                self._outbox.record(item.job_id, state=CallbackState.DELIVERED, next_at=time.time(), error=None,
                                            status=status)
                log.info("callback delivered (HTTP %s, try %d)", status, item.attempts + 1)
                return
            error = _describe(response)
            if 400 <= status < 500:
                log.warning("callback refused with HTTP %s: %s", status, error)
        self._retry_or_give_up(item, error, status)

    def _retry_or_give_up(self, item: OutboxItem, error: str, status: int | None) -> None:
        """Schedule the next try, never past ``created_at`` (the job's end) + max age; at that mark, give up."""
        attempts = item.attempts + 1
        now = time.time()
        deadline = item.created_at + self._max_age
        if now >= deadline:
            self._outbox.record(item.job_id, state=CallbackState.FAILED, next_at=now, error=error, status=status)
            log.warning("callback given up after %d tries: not delivered within PR_CALLBACK_MAX_AGE (%.0f s) of the "
                        "job's end; last answer: %s", attempts, self._max_age, error)
            return
        next_at = min(now + self.delay(attempts), deadline)
        self._outbox.record(item.job_id, state=CallbackState.PENDING, next_at=next_at, error=error,
                                    status=status)
        log.warning("callback try %d failed (%s); next in %.1f s", attempts, error, next_at - now)


def _describe(response: httpx.Response) -> str:
    """``HTTP 401: <the receiver's detail>`` — redacted, one line, short."""
    error = f"HTTP {response.status_code}"
    if 300 <= response.status_code < 400:
        return error + " (a redirect; callbacks do not follow redirects)"
    try:
        body = response.json()
        detail = body.get("detail") if isinstance(body, dict) else None
    except ValueError:
        detail = response.text
    if detail:
        text = detail if isinstance(detail, str) else str(detail)
        error += ": " + escape_nonprintable(redact(text.strip()))[:DETAIL_CHARS]
    return error
