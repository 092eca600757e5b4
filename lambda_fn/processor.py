"""The PR processor as the API sees it: submit a job, read jobs, cancel one — every request signed for it.

Owns the HTTP client to ``PR_PROCESSOR_URL`` (one per container), the retries of a submission (tenacity: only
transport failures and 5xx, never a 4xx, within the request's remaining time) and the mapping of its answers to
the API's errors, each saying what failed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from lambda_fn.deadline import time_left
from lambda_fn.httpclient import LazyClient

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)


DEFAULT_RETRY_AFTER_S = 10  # a 429 from the PR processor that says nothing of when to come back


class ProcessorError(Exception):
    """The PR processor failed or refused; ``status``, ``detail`` and ``headers`` are what the API answers."""

    def __init__(self, detail: str, status: int = 502, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.headers = headers or {}


class _Retryable(Exception):
    def __init__(self, error: ProcessorError):
        super().__init__(error.detail)
        self.error = error


def _detail(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:300] or resp.reason_phrase
    return str(data.get("detail", data))[:500] if isinstance(data, dict) else str(data)[:300]


def _retry_after(resp: httpx.Response) -> str:
    """The processor's ``Retry-After`` in whole seconds (a number or an HTTP date), else the default."""
    value = resp.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return str(max(1, min(int(value), 3600)))
    try:
        from email.utils import parsedate_to_datetime

        seconds = parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError):
        return str(DEFAULT_RETRY_AFTER_S)
    return str(max(1, min(math.ceil(seconds), 3600)))


class ProcessorClient:
    def __init__(self, base_url: str, secret: str | None, *, attempts: int = 3, timeout: float = 10.0,
                 backoff: float = 0.3, pin: str | Callable[[], str] | None = None):
        """``pin``: the SHA-256 of the only certificate an https:// processor may present (or a function reading
        it, called when the client is made: first use, and again after a mismatch). None: plain http (local)."""
        self.base_url = base_url.rstrip("/")
        self._pin = pin
        self._secret = secret
        self._attempts = attempts
        self._timeout = timeout
        self._backoff = backoff
        self._client = LazyClient(self._new_client)

    def _new_client(self, kind: type | None = None, *, read: float | None = None):
        """An ``httpx.Client`` (or ``kind``: ``httpx.AsyncClient``), signed for the processor and pinned when
        https; ``read``: how long an answer may stay silent (the timeout otherwise)."""
        import httpx

        from aipm_common.signing import PR_PROCESSOR, SigningAuth

        verify = True
        if self._pin is not None:
            from lambda_fn.pinning import pinned_context

            verify = pinned_context(self._pin() if callable(self._pin) else self._pin)
        return (kind or httpx.Client)(
            base_url=self.base_url, auth=SigningAuth(self._secret, PR_PROCESSOR), verify=verify,
            follow_redirects=False, timeout=httpx.Timeout(self._timeout, connect=3.0, read=read or self._timeout))

    @property
    def client(self) -> httpx.Client:
        return self._client.get()

    def close(self) -> None:
        self._client.close()

    def _once(self, method: str, path: str, **kwargs) -> httpx.Response:
        import httpx

        from lambda_fn.pinning import PinMismatch

        try:
            resp = self.client.request(method, path, **kwargs)
        except (PinMismatch, httpx.ConnectError) as exc:
            if not isinstance(exc, PinMismatch) and "pinned" not in str(exc):
                raise _Retryable(ProcessorError(
                    f"the PR processor at {self.base_url} could not be reached ({type(exc).__name__}); "
                    "check PR_PROCESSOR_URL and that the service runs")) from exc
            self._client.close()  # the next attempt reads the pin again (a rebuilt host publishes a new one)
            raise _Retryable(ProcessorError(f"the PR processor at {self.base_url} was refused: {exc}", 502)) from exc
        except httpx.TimeoutException as exc:
            raise _Retryable(ProcessorError(f"the PR processor at {self.base_url} did not answer in time", 504)) from exc
        except httpx.HTTPError as exc:
            raise _Retryable(ProcessorError(
                f"the PR processor at {self.base_url} could not be reached ({type(exc).__name__}); "
                "check PR_PROCESSOR_URL and that the service runs")) from exc
        if resp.status_code >= 500:
            raise _Retryable(ProcessorError(f"the PR processor failed ({resp.status_code}: {_detail(resp)})"))
        return resp

    def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

        def worth_retrying(exc: BaseException) -> bool:
            left = time_left()  # a retry must still fit in the Lambda's remaining time
            return isinstance(exc, _Retryable) and (left is None or left > self._timeout + 2)

        retrying = Retrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=self._backoff, max=3),
            retry=retry_if_exception(worth_retrying),
            reraise=True,
        )
        try:
            return retrying(self._once, method, path, **kwargs)
        except _Retryable as exc:
            raise exc.error from None

    def _refused(self, resp: httpx.Response, what: str) -> ProcessorError:
        if resp.status_code == 401:
            return ProcessorError(
                f"the PR processor refused our signature while trying to {what}: AIPM_SHARED_SECRET must be the "
                "same on the API and the PR processor")
        if resp.status_code == 429:
            return ProcessorError(f"PR processor: {_detail(resp)}", 429, {"Retry-After": _retry_after(resp)})
        if resp.status_code in (404, 409):
            return ProcessorError(f"PR processor: {_detail(resp)}", resp.status_code)
        return ProcessorError(f"the PR processor refused to {what} ({resp.status_code}: {_detail(resp)})")

    def submit(self, job: dict) -> tuple[bool, dict]:
        """``POST /api/process-pr`` → (True if the processor took the job just now (202), its answer).

        200 means it already had this job_id and answered its current state."""
        resp = self._call("POST", "/api/process-pr", json=job)
        if resp.status_code not in (200, 202):
            raise self._refused(resp, f"start job {job['job_id']}")
        return resp.status_code == 202, resp.json()

    def get_job(self, job_id: str) -> dict:
        resp = self._call("GET", f"/api/jobs/{job_id}")
        if resp.status_code != 200:
            raise self._refused(resp, f"read job {job_id}")
        return resp.json()

    def list_jobs(self, params: dict) -> dict:
        resp = self._call("GET", "/api/jobs", params={k: v for k, v in params.items() if v is not None})
        if resp.status_code != 200:
            raise self._refused(resp, "list jobs")
        return resp.json()

    def transcript(self, job_id: str, *, after: int, limit: int) -> dict:
        resp = self._call("GET", f"/api/jobs/{job_id}/transcript", params={"after": after, "limit": limit})
        if resp.status_code != 200:
            raise self._refused(resp, f"read job {job_id}'s transcript")
        return resp.json()

    def rerun(self, job_id: str, *, requested_by: str | None) -> dict:
        """``POST /api/jobs/{id}/rerun`` → the new job (202); 404 and 409 keep their status and say why."""
        resp = self._call("POST", f"/api/jobs/{job_id}/rerun", json={"requested_by": requested_by})
        if resp.status_code not in (200, 202):
            raise self._refused(resp, f"re-run job {job_id}")
        return resp.json()

    def cancel(self, job_id: str) -> dict:
        resp = self._call("POST", f"/api/jobs/{job_id}/cancel")
        if resp.status_code not in (200, 202):
            raise self._refused(resp, f"cancel job {job_id}")
        return resp.json()

    async def open_events(self, job_id: str) -> EventStream:
        """``GET /api/jobs/{id}/events``, open (its answer is 200 and streams); 404/409 and failures as elsewhere.

        A client of its own, async, for as long as the stream lasts: the shared one serves short calls."""
        import httpx

        client = self._new_client(httpx.AsyncClient, read=EVENTS_READ_TIMEOUT_S)
        try:
            resp = await client.send(client.build_request("GET", f"/api/jobs/{job_id}/events"), stream=True)
        except httpx.HTTPError as exc:
            await client.aclose()
            raise ProcessorError(f"the PR processor at {self.base_url} could not be reached ({type(exc).__name__}); "
                                 "check PR_PROCESSOR_URL and that the service runs") from exc
        if resp.status_code != 200:
            await resp.aread()
            await client.aclose()
            raise self._refused(resp, f"stream job {job_id}'s events")
        return EventStream(client, resp)


EVENTS_READ_TIMEOUT_S = 60.0  # the processor sends a keep-alive comment every 15 s while a job is quiet


class EventStream:
    """A job's event stream from the PR processor, open: ``chunks()`` passes its bytes on as they come."""

    def __init__(self, client: httpx.AsyncClient, resp: httpx.Response):
        self._client = client
        self._resp = resp

    async def chunks(self) -> AsyncIterator[bytes]:
        import httpx

        try:
            async for chunk in self._resp.aiter_raw():
                yield chunk
        except httpx.HTTPError:
            return  # the processor went away: the stream ends here; the UI reads the job and asks again
        finally:
            await self.close()

    async def close(self) -> None:
        await self._resp.aclose()
        await self._client.aclose()

    def close_task(self):
        """The same close, as a response's background task: it runs even when no chunk was ever asked for."""
        from starlette.background import BackgroundTask

        return BackgroundTask(self.close)
