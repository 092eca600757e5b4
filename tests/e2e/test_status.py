"""``make status`` (``python -m aipm_local.status``) finds the stack from what ``make run`` recorded in its state
directory: the ports (no port variable repeated) and each process's PID; a record a killed runner left is named so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aipm_local import run_record
from tests.e2e.local_stack import running_stack
from tests.support.servers import ROOT, free_port

pytestmark = pytest.mark.timeout(120)

PORT_VARIABLES = ("AIPM_API_PORT", "PR_PROCESSOR_PORT", "WORKER_POOL_PORT")


def status(state_dir: Path, **ports: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in PORT_VARIABLES}
    env |= {"AIPM_STATE_DIR": str(state_dir), **ports}
    return subprocess.run([sys.executable, "-m", "aipm_local.status"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_status_reads_the_ports_and_pids_make_run_recorded(tmp_path):
    with running_stack(tmp_path / "state") as stack:
        recorded = json.loads((stack.state_dir / "run.json").read_text())
        assert recorded["runner_pid"] == stack.proc.pid
        assert {s["name"]: s["port"] for s in recorded["services"]} == {
            "worker-pool": stack.pool_port, "pr-processor": stack.processor_port, "lambda-api": stack.api_port}
        for service in recorded["services"]:
            cmdline = Path(f"/proc/{service['pid']}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            module = {"worker-pool": "ec2_services.worker_pool", "pr-processor": "ec2_services.pr_processor",
                      "lambda-api": "aipm_local.api"}[service["name"]]
            assert f"-m {module}" in cmdline

        shown = status(stack.state_dir)  # no port variable: the record says where
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert f"make run: pid {stack.proc.pid}, running" in shown.stdout
        assert shown.stdout.count("UP ") == 3
        for service in recorded["services"]:
            assert f"127.0.0.1:{service['port']}" in shown.stdout and f"pid {service['pid']} running" in shown.stdout
        assert f"UI: http://127.0.0.1:{stack.api_port}/" in shown.stdout

    assert not (stack.state_dir / "run.json").exists()  # removed when the runner stopped
    free = {name: str(free_port()) for name in PORT_VARIABLES}
    after = status(stack.state_dir, **free)
    assert after.returncode == 1 and after.stdout.count("DOWN") == 3
    assert "no stack recorded" in after.stdout


def test_a_record_left_by_a_killed_runner_is_named_as_such(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    ports = [free_port(), free_port(), free_port()]
    run_record.write(tmp_path, run_record.RunRecord(
        runner_pid=gone.pid, started_at=run_record.now(), api_url=f"http://127.0.0.1:{ports[2]}",
        services=[run_record.Service("worker-pool", ports[0], gone.pid),
                  run_record.Service("pr-processor", ports[1], gone.pid),
                  run_record.Service("lambda-api", ports[2], gone.pid)]))
    shown = status(tmp_path)
    assert shown.returncode == 1
    assert f"make run: pid {gone.pid}, NOT running" in shown.stdout
    assert shown.stdout.count(f"pid {gone.pid} gone") == 3 and shown.stdout.count("DOWN") == 3
