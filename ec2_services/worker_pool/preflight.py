"""``python -m ec2_services.worker_pool.preflight``: can the configured agent really start? (``make run`` asks first.)

Starts one agent session exactly as a worker would (same settings, driver, command, environment): the PTY driver to
its idle prompt; the ACP driver through ``initialize`` and a ``session/new`` in the workspace root; the headless
driver as far as its start goes (the command found, ``kiro-cli --version``). Then stops it, with everything it
started. Exit 0 with one line saying what started; exit 1 with one line saying why not, in the driver's and the
agent's own words (its last stderr or screen line). It runs no task and sends no prompt.
"""

from __future__ import annotations

import asyncio
import sys

from aipm_common.settings import SettingsError, load_settings
from ec2_services.worker_pool.drivers import make_driver
from ec2_services.worker_pool.drivers.base import AgentDriver, StartError
from ec2_services.worker_pool.profiles import resolve_profile
from ec2_services.worker_pool.settings import WorkerPoolSettings


async def check(driver: AgentDriver) -> str:
    """What started (``kiro-cli 2.19.1, engine v2``…); raises ``StartError`` with why it did not."""
    try:
        await driver.start()
        await driver.check_session()
        said = ", ".join(part for part in (
            f"version {driver.agent_version}" if driver.agent_version else "",
            f"engine {driver.agent_engine}" if driver.agent_engine else "") if part)
        return f"the agent started{' (' + said + ')' if said else ''}"
    finally:
        await driver.stop()


def main() -> int:
    try:
        settings = load_settings(WorkerPoolSettings)
        settings.kiro_workspace_root.mkdir(parents=True, exist_ok=True)
        driver = make_driver(settings, resolve_profile(settings))(1)
    except (SettingsError, ValueError, OSError) as exc:
        print(f"the worker pool's settings: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    try:
        print(asyncio.run(check(driver)))
    except StartError as exc:
        print(" ".join(str(exc).split()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
