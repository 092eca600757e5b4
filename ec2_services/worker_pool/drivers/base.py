"""The seam between the pool and one agent session: the interface every driver implements, its outcomes, its limits.

Owns the contract: the pool (``pool.py``) only ever talks to an ``AgentDriver``: ``start()`` until idle,
``run(prompt)`` one turn, ``cancel()`` the running turn, ``reset()`` the conversation between tasks, ``stop()``, plus
``state``/``pid`` and ``wait_exited()``. Three drivers implement it: ``pty.session.PtySession`` (``KIRO_DRIVER=pty``,
a chat CLI in a terminal), ``acp.AcpDriver`` (``KIRO_DRIVER=acp``, ``kiro-cli acp``: JSON-RPC over stdio) and
``headless.HeadlessDriver`` (``KIRO_DRIVER=headless``, one ``kiro-cli chat --no-interactive`` per task);
``drivers.make_driver`` picks one. Drivers report a turn's end with a ``TurnResult`` or one of the ``TurnError``
subclasses below, which carry the output so far; they never raise anything else for an agent's fault. ``Limits`` is
the one set of timings every driver waits by (the stall watchdog, the throttling backoff), so they agree on them.
Must not: know any one driver's wire, or anything of queues, task ids or HTTP.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Limits:
    """How long a driver waits for what, and how much answer it keeps: one set for every driver (each reads the
    fields it has a use for; ``make_driver`` fills them from the ``KIRO_*`` settings)."""

    stall_timeout: float = 600  # KIRO_STALL_TIMEOUT: no output while busy → timeout, "stalled"
    trouble_retries: int = 3  # KIRO_TROUBLE_RETRIES
    trouble_backoff: float = 5.0  # first wait before re-sending after throttling / "having trouble"; doubles each time
    start_timeout: float = 120  # spawn → idle (MCP servers can take a while); not for headless (nothing to wait for)
    cancel_grace: float = 5.0  # cancel asked (Ctrl+C, session/cancel, SIGINT) → turn over, else the agent is killed
    reset_timeout: float = 20.0  # PTY's /clear → prompt back, else the agent is killed
    output_limit: int = 1_000_000  # characters of answer kept (the last ones)

    def watchdog(self, deadline: float, last_output: float) -> tuple[float, bool]:
        """When a busy turn must end at the latest (the task's deadline, or a silence of ``stall_timeout`` since
        ``last_output``), and whether ending then would be a stall rather than the task's timeout."""
        stall_at = last_output + self.stall_timeout
        return min(deadline, stall_at), stall_at < deadline

    def backoff(self, retries_done: int) -> float:
        """The wait before the next retry of a throttled turn: ``trouble_backoff``, doubling with each retry done."""
        return self.trouble_backoff * 2**retries_done

    def why_ended(self, *, stalled: bool, timeout_s: float, silence: str = "agent output") -> str:
        """The words for a turn the watchdog ended: ``stalled (no … for N s)`` or ``timed out (not done within N s)``."""
        if stalled:
            return f"stalled (no {silence} for {self.stall_timeout:g} s)"
        return f"timed out (not done within {timeout_s:g} s)"


class DriverState(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    EXITED = "exited"


@dataclass
class TurnResult:
    output: str
    approvals: int = 0
    denials: int = 0
    credits: float | None = None
    # The model tokens the agent reported for the turn ({"input": n, "output": n}), where it reports them (ACP).
    tokens: dict[str, int] | None = None
    # How many times a "having trouble responding" answer was waited out and the prompt sent again.
    trouble_retries: int = 0


class TurnError(Exception):
    """A turn that did not complete; ``status`` is the API's status word for it."""

    status = "agent_error"

    def __init__(self, detail: str, partial: TurnResult):
        super().__init__(detail)
        self.detail = detail
        self.partial = partial


class TurnTimeout(TurnError):
    status = "timeout"

    def __init__(self, detail: str, partial: TurnResult, *, stalled: bool):
        super().__init__(detail, partial)
        self.stalled = stalled


class AgentExited(TurnError):
    status = "agent_exited"


class AgentTrouble(TurnError):
    status = "agent_error"


class TurnCancelled(TurnError):
    status = "cancelled"


class StartError(Exception):
    """The agent did not reach its idle prompt (not found, exited, or never idle)."""


class UnsupportedAgent(StartError):
    """The agent is one this driver cannot drive (e.g. a kiro-cli whose interface it cannot read): starting it again
    would fail the same way, so the pool does not retry; the message names the fix (another driver or version)."""


class AgentDriver(abc.ABC):
    """One agent session. All methods run on the pool's event loop; none may block it."""

    state: DriverState = DriverState.STARTING
    # True when the driver starts the agent's conversation in the task's cwd itself (ACP's session/new cwd); the
    # pool then sends the prompt as is. False: the pool puts a line naming the directory in front of the prompt.
    honours_cwd: bool = False
    # What the agent said of itself once started (ACP's initialize answer), for /health: None where it does not say.
    agent_version: str | None = None
    agent_engine: str | None = None

    @property
    @abc.abstractmethod
    def pid(self) -> int | None:
        """The agent's process id while it runs."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Spawn the agent and return once it is idle; raise ``StartError`` otherwise (leaving nothing running)."""

    @abc.abstractmethod
    async def run(self, prompt: str, *, timeout_s: float, cwd: Path | None = None) -> TurnResult:
        """Run one turn to its end; raise a ``TurnError`` if it did not complete.

        ``cwd`` is the task's working directory; only a driver that ``honours_cwd`` uses it.

        After ``TurnTimeout`` or ``AgentExited`` the process is gone (``state`` is ``EXITED``) and the pool respawns it.
        """

    async def check_session(self) -> None:
        """After ``start``: open what a task would need, where ``start`` alone does not prove it (ACP's
        session/new), for a preflight; raise ``StartError`` if it cannot. Nothing to do for most drivers."""
        return None

    def output_tail(self, max_lines: int = 20) -> list[str]:
        """The running turn's latest answer lines, for progress (``GET /tasks/{id}``); empty when idle."""
        return []

    @abc.abstractmethod
    def cancel(self) -> None:
        """Ask the running turn to stop; ``run`` then raises ``TurnCancelled``. A no-op when idle."""

    @abc.abstractmethod
    async def reset(self) -> None:
        """Start a fresh conversation, so one task's context never reaches the next; kills the agent if it cannot."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """End the agent and everything it started."""

    @abc.abstractmethod
    async def wait_exited(self) -> None:
        """Return when the agent's process has exited (whatever the reason)."""
