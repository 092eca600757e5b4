"""Suite-wide fixtures. Every process or server a test starts ends with the test."""

from __future__ import annotations

import pytest

from tests.support.servers import ServiceProcess

SECRET = "test-shared-secret-0123456789abcdef"


@pytest.fixture
def shared_secret() -> str:
    return SECRET


@pytest.fixture
def service_process(tmp_path):
    """Factory: ``service_process("ec2_services.worker_pool", env)`` → a started ServiceProcess, stopped after."""
    started: list[ServiceProcess] = []

    def start(module: str, env: dict[str, str], name: str | None = None) -> ServiceProcess:
        log = tmp_path / f"{name or module.rsplit('.', 1)[-1]}-{len(started)}.log"
        proc = ServiceProcess(module, env, log).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
