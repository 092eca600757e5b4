"""``python -m aipm_local.status`` (``make status``): the local stack's health and the PR processor's queue.

Reads the state directory as ``make run`` does (``aipm_local.run.read_config``) and the ports and PIDs the running
``make run`` recorded there (``<state>/run.json``, ``aipm_local.run_record``), so no port variable has to be repeated;
without a record, the configured ports. Asks each service's ``/health``, says whether each recorded process runs, and
lists recent jobs with a signed ``GET /api/jobs`` using the secret in ``<state>/secret``. It only reads; it never
changes a job or signals a process. Exit status 0 when all three answer, 1 otherwise.
"""

from __future__ import annotations

import sys
import time

import httpx

from aipm_common.settings import SettingsError
from aipm_common.signing import PR_PROCESSOR, SigningAuth
from aipm_local import run_record
from aipm_local.run import read_config, read_secret

JOB_LIMIT = 20


def _health(url: str) -> tuple[bool, str]:
    try:
        response = httpx.get(f"{url}/health", timeout=3, trust_env=False)  # loopback: never via a proxy
    except httpx.HTTPError as exc:
        return False, f"not answering ({type(exc).__name__})"
    if response.status_code != 200:
        return False, f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return True, "ok"
    parts = [str(body.get("status", "ok"))]
    if "workers" in body:
        states = ", ".join(f"#{w.get('id')} {w.get('state')}" for w in body.get("workers", []))
        parts.append(f"queue {body.get('queue_depth', 0)}; workers: {states}")
    if "jobs" in body:
        jobs = body["jobs"]
        parts.append(f"jobs queued {jobs.get('queued', 0)}, running {jobs.get('running', 0)}; "
                     f"worker pool {body.get('worker_pool', '?')}")
    if "forge" in body:
        parts.append(f"forge {body['forge']}, auth {body.get('auth', '?')}")
    return True, " — ".join(parts)


def _jobs(processor_url: str, secret: str | None) -> list[str]:
    if not secret:
        return ["(no secret in the state directory: has `make run` been started here?)"]
    try:
        response = httpx.get(f"{processor_url}/api/jobs", params={"limit": JOB_LIMIT}, timeout=5, trust_env=False,
                             auth=SigningAuth(secret, PR_PROCESSOR))
    except httpx.HTTPError as exc:
        return [f"(cannot list jobs: {type(exc).__name__})"]
    if response.status_code != 200:
        detail = response.json().get("detail", "") if response.headers.get("content-type", "").startswith(
            "application/json") else response.text[:200]
        return [f"(cannot list jobs: HTTP {response.status_code} {detail})"]
    jobs = response.json().get("jobs", [])
    if not jobs:
        return ["(no jobs yet)"]
    rows = [f"{'job':<27} {'status':<10} {'pos':>3}  {'repo':<20} {'branch':<32} commit / error"]
    for job in jobs:
        position = job.get("queue_position")
        outcome = (job.get("commit") or "")[:12] or (job.get("error") or "")[:60]
        rows.append(f"{job.get('job_id', ''):<27} {job.get('status', ''):<10} {position if position else '':>3}  "
                    f"{job.get('repo', ''):<20} {job.get('branch', ''):<32} {outcome}")
    return rows


def main() -> int:
    try:
        config = read_config()
    except SettingsError as exc:
        print(f"aipm status: {exc.message}", file=sys.stderr)
        return 2
    record = run_record.read(config.state_dir)
    ports = {"worker-pool": config.pool_port, "pr-processor": config.processor_port, "lambda-api": config.api_port}
    pids: dict[str, int | None] = {}
    print(f"state: {config.state_dir}")
    if record is None:
        print(f"no stack recorded in {config.state_dir / run_record.RUN_FILE} (`make run` writes it once ready): "
              "asking the configured ports")
    else:
        for service in record.services:
            ports[service.name], pids[service.name] = service.port, service.pid
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.started_at))
        runner = "running" if run_record.pid_alive(record.runner_pid) else \
            "NOT running (killed? its record was left behind)"
        print(f"make run: pid {record.runner_pid}, {runner}; ready since {started}")
    services = [
        ("worker pool", "worker-pool"),
        ("PR processor", "pr-processor"),
        ("API and UI", "lambda-api"),
    ]
    all_up = True
    for name, key in services:
        url = f"http://127.0.0.1:{ports[key]}"
        up, summary = _health(url)
        all_up &= up
        pid = pids.get(key)
        process = "" if key not in pids else f"pid {pid} {'running' if run_record.pid_alive(pid) else 'gone'} — "
        print(f"{'UP  ' if up else 'DOWN'} {name:<13} {url:<24} {process}{summary}")
    print(f"\nrecent jobs (newest first, at most {JOB_LIMIT}):")
    for row in _jobs(f"http://127.0.0.1:{ports['pr-processor']}", read_secret(config.state_dir)):
        print(f"  {row}")
    if all_up:
        print(f"\nUI: http://127.0.0.1:{ports['lambda-api']}/")
    return 0 if all_up else 1


if __name__ == "__main__":
    sys.exit(main())
