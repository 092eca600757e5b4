"""The agent's output in the service log: one ``[Worker N] …`` line per output line, floods condensed.

A read's lines go to the log as one record (``log_lines``): decoded, redacted and written once per block, still
one line of log per line of output.

Owns the rate limit that keeps a flooding agent from flooding the log: past ``lines_per_window`` lines in a window
the rest are counted, not formatted, and one explicit ``… N lines omitted`` line says so. It never buffers
output (memory stays bounded) and never waits (the agent is never blocked by the log).
"""

from __future__ import annotations

import logging
import time

from aipm_common.logging import log_lines
from ec2_services.worker_pool.drivers.pty.screen import Block

log = logging.getLogger("ec2_services.worker_pool.agent")


class AgentOutputLog:
    def __init__(self, worker_id: int, *, lines_per_window: int = 200, window_s: float = 1.0, max_chars: int = 2000):
        self.worker_id = worker_id
        self._per_window = lines_per_window
        self._window_s = window_s
        self._max_chars = max_chars
        self._window_start = time.monotonic()
        self._budget = lines_per_window
        self.omitted = 0

    def lines(self, lines: list[str]) -> None:
        self.block(Block.of(lines))

    def block(self, block: Block) -> None:
        """Log a block's lines; only the ones shown are split and stripped."""
        now = time.monotonic()
        if now - self._window_start >= self._window_s:
            self.flush()
            self._window_start = now
            self._budget = self._per_window
        if self._budget <= 0:
            self.omitted += block.count
            return
        shown = block.lines[: self._budget]
        self._budget -= len(shown)
        self.omitted += block.count - len(shown)
        if not shown:
            return
        prefix, most = f"[Worker {self.worker_id}] ", self._max_chars
        lines = block.plain_of("\n".join(shown))  # one decode for the lines shown
        log_lines(log, [
            prefix + (line if len(line) <= most else f"{line[:most]}… ({len(line) - most} more characters)")
            for line in lines
        ])

    def flush(self) -> None:
        """Say how many lines were left out since the last flush, if any."""
        if self.omitted:
            log.info("[Worker %d] … %d lines omitted (output flood)", self.worker_id, self.omitted)
            self.omitted = 0
