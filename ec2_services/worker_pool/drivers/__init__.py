"""The agent drivers: one room each, behind one seam (``base.py``); ``make_driver`` picks the one ``KIRO_DRIVER`` names.

    base.py          the seam: ``AgentDriver`` (what the pool calls), ``TurnResult`` and the ``TurnError`` outcomes,
                     ``StartError``, and ``Limits`` (the stall watchdog and throttling backoff every driver waits by)
    process.py       the agent's process as every driver owns it: secret-free environment, process group, tree, end
    pty/             ``KIRO_DRIVER=pty``, the PTY protocol: a chat CLI typed at in a pseudo-terminal
        session.py       the driver (``PtySession``): spawn, read, type, the turn's protocol
        screen.py        terminal decoding: the line stream, the recent screen, what the screen means (pure)
        transcript.py    one turn's answer, read from the line stream (pure)
    acp.py           ``KIRO_DRIVER=acp``: the agent as an Agent Client Protocol server on stdio (``AcpDriver``)
    headless.py      ``KIRO_DRIVER=headless``: one ``kiro-cli chat --no-interactive`` process per task
    agent_log.py     the agent's output in the service log (``[Worker N] …``), floods condensed: every driver's
    kiro_version.py  which kiro-cli a command runs (for /health, and whether the PTY driver can read its chat)

Owns the choice of driver and what every driver gets from the settings (the agent's key, its limits).
Must not: know queues, task ids or HTTP (that is ``pool.py`` and ``app.py``). No driver imports another driver's
session; the headless driver borrows only ``pty/screen.py``'s pure line decoding (escape sequences, ``\\r`` redraws).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from aipm_common.logging import register_secret
from ec2_services.worker_pool.drivers.base import AgentDriver, Limits
from ec2_services.worker_pool.profiles import AGENTS, AgentProfile, acp_command
from ec2_services.worker_pool.settings import WorkerPoolSettings

DriverFactory = Callable[[int], AgentDriver]


def make_driver(
    settings: WorkerPoolSettings, profile: AgentProfile, env: Mapping[str, str] | None = None, **options: float
) -> DriverFactory:
    """The driver ``KIRO_DRIVER`` names, as a factory of one session per worker id (``options``: its timings)."""
    # The agent's own key variable reaches it, no other agent's (the services' secrets: process.agent_environment);
    # its value is redacted from every log record, as the services' secrets are.
    agent = AGENTS[settings.aipm_agent]
    base_env = agent.environment(os.environ if env is None else env)
    for variable in agent.key_vars:
        register_secret(base_env.get(variable))
    limits = Limits(
        stall_timeout=settings.kiro_stall_timeout,
        trouble_retries=settings.kiro_trouble_retries,
        trouble_backoff=settings.kiro_trouble_backoff,
        **options,
    )
    if settings.kiro_driver == "acp":
        from ec2_services.worker_pool.drivers.acp import AcpDriver

        command = acp_command(settings)

        def acp_factory(worker_id: int) -> AgentDriver:
            return AcpDriver(
                worker_id,
                command,
                cwd=settings.kiro_workspace_root,
                env=base_env,
                deny_tools=tuple(settings.deny_tools),
                limits=limits,
                call_id_name=agent.call_id_name,
            )

        return acp_factory
    if settings.kiro_driver == "headless":
        from ec2_services.worker_pool.drivers.headless import HeadlessDriver

        def headless_factory(worker_id: int) -> AgentDriver:
            return HeadlessDriver(
                worker_id,
                settings.kiro_headless_command,
                profile,
                cwd=settings.kiro_workspace_root,
                env=base_env,
                trust_tools=settings.trusted_tools,
                limits=limits,
            )

        return headless_factory
    if settings.kiro_driver != "pty":
        raise ValueError(f"KIRO_DRIVER={settings.kiro_driver} is not a driver; use pty, acp or headless")
    from ec2_services.worker_pool.drivers.pty.session import PtySession

    def factory(worker_id: int) -> AgentDriver:
        return PtySession(worker_id, profile, cwd=settings.kiro_workspace_root, env=base_env, limits=limits,
                          adapt_command=settings.kiro_command is None)

    return factory
