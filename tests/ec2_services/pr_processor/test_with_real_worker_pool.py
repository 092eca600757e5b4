"""The PR processor against the real worker pool process (``python -m ec2_services.worker_pool``) and a scripted
agent on a real PTY: the Kiro double, and the local stand-in agent that makes a real change from TASK.md."""

from __future__ import annotations

import shlex
import sys

import pytest

from tests.ec2_services.pr_processor.conftest import BRANCH, REPO
from tests.support.servers import ROOT

pytest.importorskip("ec2_services.worker_pool.app", reason="the worker pool is not there yet")
harness = pytest.importorskip("tests.kiro_double.harness", reason="the Kiro double is not there yet")

STANDIN = ROOT / "aipm_local" / "standin_agent.py"


@pytest.mark.timeout(120)
def test_job_through_the_real_pool_with_the_kiro_double_ends_no_changes(start_processor, forge, shared_secret,
                                                                        tmp_path):
    root = tmp_path / "workspaces"
    with harness.running_pool(1, ("--credits", "0.42"), AIPM_SHARED_SECRET=shared_secret,
                              KIRO_WORKSPACE_ROOT=str(root)) as pool:
        proc = start_processor(WORKER_POOL_URL=pool.url, KIRO_WORKSPACE_ROOT=str(root))
        assert proc.submit("j-double").status_code == 202
        job = proc.wait("j-double", timeout=90)
    assert job["status"] == "no_changes", job
    assert job["credits"] == 0.42
    assert "[agent] Done." in job["log_tail"]  # the agent's answer, read off the PTY by the pool


@pytest.mark.timeout(120)
@pytest.mark.skipif(not STANDIN.exists(), reason="the local stand-in agent is not there")
def test_job_through_the_real_pool_with_the_standin_agent_pushes_its_change(start_processor, forge, shared_secret,
                                                                           tmp_path):
    root = tmp_path / "workspaces"
    command = shlex.join([sys.executable, str(STANDIN), "--think", "0.05", "--delay", "2.5"])
    with harness.running_pool(1, (), AIPM_SHARED_SECRET=shared_secret, KIRO_WORKSPACE_ROOT=str(root),
                              KIRO_COMMAND=command) as pool:
        proc = start_processor(WORKER_POOL_URL=pool.url, KIRO_WORKSPACE_ROOT=str(root))
        before = forge.tip(REPO, BRANCH)
        assert proc.submit("j-standin").status_code == 202
        # While the agent works, log_tail already shows its latest lines (read from the pool's GET /tasks/{id}).
        live = proc.wait("j-standin", until=lambda j: "[agent] Working slowly on purpose" in j["log_tail"]
                         or j["status"] not in ("queued", "running"), timeout=60)
        assert live["status"] == "running", live
        job = proc.wait("j-standin", timeout=90)
    assert job["status"] == "succeeded", job
    head = forge.log(REPO, BRANCH)[0]
    assert head.sha == job["commit"] and forge.log(REPO, BRANCH)[1].sha == before
    assert "AIPM-Job: j-standin" in head.body
    assert "(not an AI)" in job["log_tail"]
    assert "task j-standin.1 running on worker 1" in job["log_tail"]  # progress read from GET /tasks/{id}
    assert "Add a greeting" in forge.show(REPO, BRANCH, "AIPM_NOTES.md")
