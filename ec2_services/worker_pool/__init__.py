"""The Worker Pool service (docs/contracts.md, "Worker Pool API"): persistent agent CLI sessions behind a signed HTTP API.

Modules: ``app`` (wires the FastAPI app), ``routes`` (its state and routes), ``pool`` (workers, FIFO queue, task
registry), ``ledger`` (the task ids taken and their results, across restarts), ``commands`` (a repository's test
command, ``POST /run``), ``profiles`` (agent CLI profiles), ``settings``, ``preflight`` and ``metrics``; and
``drivers/``, one room per driver behind one seam (``drivers/base.py``): ``pty/`` (the PTY protocol,
``KIRO_DRIVER=pty``), ``acp.py`` (``KIRO_DRIVER=acp``), ``headless.py`` (``KIRO_DRIVER=headless``), and what they
share (``process.py``, ``agent_log.py``, ``kiro_version.py``). ``drivers.make_driver`` picks one.
"""
