"""The signed client of the worker pool (docs/contracts.md, "Worker Pool API"), as the PR processor uses it.

Owns the HTTP details: signing for ``worker-pool``, timeouts, and turning transport failures into ``PoolUnreachable``.
It decides nothing about retries or job states; the runner does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from aipm_common.contracts import ExecuteRequest, Tokens
from aipm_common.signing import WORKER_POOL, SigningAuth

# /execute stays open for the whole agent task (the pool caps it at KIRO_TASK_TIMEOUT, plus its queue wait).
EXECUTE_READ_TIMEOUT_S = 6 * 3600


DETAIL_CHARS = 500  # of the pool's detail kept in a job's error and log lines


class PoolUnreachable(Exception):
    """The worker pool could not be reached or dropped the connection."""


@dataclass
class PoolAnswer:
    status_code: int
    body: dict[str, Any]

    @property
    def output(self) -> str:
        value = self.body.get("output")
        return value if isinstance(value, str) else ""

    @property
    def credits(self) -> float | None:
        value = self.body.get("credits")
        return float(value) if isinstance(value, int | float) else None

    @property
    def tokens(self) -> dict[str, int] | None:
        """``{input, output}`` when the pool reported the agent's tokens as the contract's ``Tokens`` (whole,
        non-negative numbers, checked strictly), else None."""
        try:
            return Tokens.model_validate(self.body.get("tokens"), strict=True).model_dump()
        except ValidationError:
            return None

    @property
    def reason(self) -> str:
        """What the pool answered, with its ``detail`` (where it puts the agent's own error line), on one line."""
        status = self.body.get("status") or "error"
        detail = self.body.get("detail")
        said = f"worker pool answered {self.status_code} ({status})"
        if isinstance(detail, str) and detail.strip():
            said += f": {' '.join(detail.split())[:DETAIL_CHARS]}"
        return said


class PoolClient:
    def __init__(self, base_url: str, secret: str | None, *, execute_timeout: float = EXECUTE_READ_TIMEOUT_S):
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            auth=SigningAuth(secret, WORKER_POOL),
            timeout=httpx.Timeout(10.0),
            follow_redirects=False,
        )
        self._execute_timeout = httpx.Timeout(10.0, read=execute_timeout)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> PoolAnswer:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise PoolUnreachable(f"worker pool unreachable ({type(exc).__name__})") from exc
        try:
            body = response.json()
        except ValueError:
            body = {}
        return PoolAnswer(response.status_code, body if isinstance(body, dict) else {})

    async def pool_size(self) -> int | None:
        """``pool_size`` from the pool's /health, or None when it does not answer."""
        try:
            answer = await self._request("GET", "/health", timeout=3.0)
        except PoolUnreachable:
            return None
        size = answer.body.get("pool_size")
        return size if answer.status_code == 200 and isinstance(size, int) and size > 0 else None

    async def execute(self, *, prompt: str, cwd: str, task_id: str) -> PoolAnswer:
        body = ExecuteRequest(prompt=prompt, cwd=cwd, timeout_s=None, task_id=task_id).model_dump()
        return await self._request("POST", "/execute", json=body, timeout=self._execute_timeout)

    async def run(self, *, task_id: str, cwd: str, command: str, timeout_s: float) -> PoolAnswer:
        """``POST /run``: a command in ``cwd`` as the agent runs (the repository's tests); open until it ends."""
        body = {"task_id": task_id, "cwd": cwd, "command": command, "timeout_s": timeout_s}
        return await self._request("POST", "/run", json=body, timeout=httpx.Timeout(10.0, read=timeout_s + 60))

    async def task_status(self, task_id: str) -> int:
        return (await self._request("GET", f"/tasks/{task_id}")).status_code

    async def task_view(self, task_id: str) -> dict[str, Any] | None:
        """``GET /tasks/{task_id}``'s body, or None when the pool does not know the task."""
        answer = await self._request("GET", f"/tasks/{task_id}")
        return answer.body if answer.status_code == 200 else None

    async def cancel(self, task_id: str) -> int:
        return (await self._request("POST", f"/tasks/{task_id}/cancel")).status_code
