"""The Worker Pool service (docs/contracts.md, "Worker Pool API"): persistent agent CLI sessions behind a signed HTTP API.

Modules: ``profiles`` (agent CLI profiles), ``screen`` (terminal decoding and screen classification),
``transcript`` (one turn's answer), ``driver`` (the interface every session driver implements), ``session`` (the
PTY driver, ``KIRO_DRIVER=pty``), ``acp_driver`` (the Agent Client Protocol driver, ``KIRO_DRIVER=acp``), ``pool``
(workers, FIFO queue, task registry), ``app`` (the FastAPI edge), ``agent_log`` and ``metrics`` (what the service logs).
"""
