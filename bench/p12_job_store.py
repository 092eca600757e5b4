"""P12: the job database at N jobs — its size, `GET /api/jobs` and `GET /api/jobs/{id}` times, before and after the
retention (``PR_JOB_RETENTION_DAYS``) prunes it.

The database is built directly (bulk SQL into the store's own schema): ``P12_JOBS`` finished jobs (default 10,000;
the issue's figure is 100,000), each with ``P12_LINES`` log lines of 150 characters (default 100) — the last 100 in
the database, all of them in the job's transcript file (gzip, a member per 10 lines, as the service appends them) —
its state timeline and a delivered callback row, ended evenly over the last 60 days. The real PR processor (``python -m
ec2_services.pr_processor``) then serves it, and each endpoint is timed over signed loopback HTTP (median of 7).
Then the retention runs once with its default of 30 days (timed) — about half the jobs go — and the endpoints are
timed again. Run: ``python -m bench p12_job_store`` (``P12_JOBS=100000`` for the full figure; it takes minutes).
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from aipm_common.signing import PR_PROCESSOR, SigningAuth
from ec2_services.pr_processor.retention import DAY_S, Retention
from ec2_services.pr_processor.store import JobStore
from ec2_services.pr_processor.store.job_log import TAIL_LINES
from tests.support.servers import ServiceProcess, free_port, wait_http

JOBS = int(os.environ.get("P12_JOBS", "10000"))
LINES = int(os.environ.get("P12_LINES", "100"))
SAMPLES = 7


def build(path: Path, jobs: int, lines: int, now: float) -> None:
    store = JobStore(path)
    db = store.db.connection  # the bench fills the store's own schema in bulk; the service never does this
    transcripts = store.log.transcripts
    line = "x" * 130
    line_id = 0
    db.execute("BEGIN")
    for k in range(jobs):
        job_id = f"j-bench{k:017d}"
        ended = now - 60 * DAY_S * (jobs - k) / jobs
        db.execute(
            "INSERT INTO jobs (job_id, repo, repo_key, branch, base_branch, pr_number, task_file, callback_url, "
            "status, attempts, commit_sha, created_at, updated_at, started_at, ended_at, credits, output_tail, title) "
            "VALUES (?, ?, ?, ?, 'main', ?, 'TASK.md', 'https://api.example/api/callbacks/job', 'succeeded', 1, ?, ?, "
            "?, ?, ?, 0.5, 'done', ?)",
            (job_id, f"octo/app{k % 20}", f"octo/app{k % 20}", f"aipm/story-{k}", k, f"{k:040x}", ended - 300,
             ended, ended - 290, ended, f"Story {k}"))
        rows = [(line_id + i + 1, ended - 200 + i, f"[agent] {i:05d} {line}") for i in range(lines)]
        line_id += lines
        for first in range(0, lines, 10):
            transcripts.append(job_id, rows[first:first + 10])
        db.executemany("INSERT INTO job_log (id, job_id, ts, line) VALUES (?, ?, ?, ?)",
                       [(i, job_id, ts, text) for i, ts, text in rows[-TAIL_LINES:]])
        db.executemany("INSERT INTO job_states (job_id, status, ts) VALUES (?, ?, ?)",
                       [(job_id, state, ended - 300 + 100 * i)
                        for i, state in enumerate(("queued", "running", "pushing", "succeeded"))])
        db.execute("INSERT INTO outbox (job_id, url, payload, state, attempts, next_at, created_at) "
                   "VALUES (?, 'https://api.example/api/callbacks/job', ?, 'delivered', 1, ?, ?)",
                   (job_id, json.dumps({"job_id": job_id, "status": "succeeded"}), ended, ended))
        if k % 5000 == 4999:
            db.execute("COMMIT")
            db.execute("BEGIN")
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def _transcripts_size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path.parent / "transcripts").iterdir())


def endpoint_times(state: Path, db: Path) -> dict[str, float]:
    secret = secrets.token_hex(16)
    port = free_port()
    env = {"AIPM_SHARED_SECRET": secret, "AIPM_STATE_DIR": str(state), "PR_PROCESSOR_PORT": str(port),
           "PR_PROCESSOR_DB": str(db), "WORKER_POOL_URL": f"http://127.0.0.1:{free_port()}",
           "GIT_BASE_URL": "http://127.0.0.1:9/git", "PR_JOB_RETENTION_DAYS": "0", "AIPM_LOG_LEVEL": "WARNING"}
    process = ServiceProcess("ec2_services.pr_processor", env, state / "processor.log").start()
    times: dict[str, list[float]] = {}
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/health", proc=process.proc, timeout=120)
        with httpx.Client(base_url=url, auth=SigningAuth(secret, PR_PROCESSOR), timeout=120) as client:
            newest = client.get("/api/jobs", params={"limit": 1}).json()["jobs"][0]["job_id"]
            for name, path, params in (("GET /api/jobs?limit=50", "/api/jobs", {"limit": 50}),
                                       ("GET /api/jobs?limit=200", "/api/jobs", {"limit": 200}),
                                       ("GET /api/jobs?limit=1000 (served as 200)", "/api/jobs", {"limit": 1000}),
                                       ("GET /api/jobs?repo=octo/app3&limit=50", "/api/jobs",
                                        {"repo": "octo/app3", "limit": 50}),
                                       ("GET /api/jobs/{id}", f"/api/jobs/{newest}", {}),
                                       ("GET /api/jobs/{id}/transcript (first page, 500 lines)",
                                        f"/api/jobs/{newest}/transcript", {"limit": 500})):
                for _ in range(SAMPLES):
                    started = time.perf_counter()
                    r = client.get(path, params=params)
                    times.setdefault(name, []).append((time.perf_counter() - started) * 1000)
                    r.raise_for_status()
    finally:
        process.stop()
    return {name: statistics.median(samples) for name, samples in times.items()}


def main() -> None:
    now = time.time()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="p12-") as tmp:
        state = Path(tmp)
        db = state / "jobs.sqlite"
        started = time.perf_counter()
        build(db, JOBS, LINES, now)
        built_s = time.perf_counter() - started
        size_before, files_before = _size(db), _transcripts_size(db)
        before = endpoint_times(state, db)
        store = JobStore(db)
        started = time.perf_counter()
        removed = Retention(store, days=30).run_once()
        prune_s = time.perf_counter() - started
        store.db.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        left = sum(store.jobs.counts().values())
        store.close()
        size_after, files_after = _size(db), _transcripts_size(db)
        after = endpoint_times(state, db)
    print(f"\n{JOBS:,} finished jobs × {LINES} log lines (built in {built_s:.0f} s); 1-min load average {load:.1f} "
          f"before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs; medians of {SAMPLES}\n")
    print(f"| | {JOBS:,} jobs | after the retention (30 days): {left:,} jobs |")
    print("| --- | ---: | ---: |")
    print(f"| database size (with its WAL) | {size_before / 1e6:.1f} MB | {size_after / 1e6:.1f} MB |")
    print(f"| transcript files (gzip) | {files_before / 1e6:.1f} MB | {files_after / 1e6:.1f} MB |")
    for name in before:
        print(f"| {name} | {before[name]:.0f} ms | {after[name]:.0f} ms |")
    print(f"\n- the retention removed {removed:,} jobs with their log lines, transcripts, timelines and callback rows in "
          f"{prune_s:.1f} s (off the event loop in the service), then gave the pages back (incremental vacuum)")


if __name__ == "__main__":
    main()
