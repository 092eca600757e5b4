"""Render test-artifacts/reliability.json (written by tests/reliability) as the README's "Reliability" table.

    .venv/bin/python -m pytest tests/reliability            # default sizes
    AIPM_TORTURE=1 .venv/bin/python -m pytest tests/reliability   # `make torture`
    .venv/bin/python bench/reliability_table.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ARTIFACT = Path(__file__).resolve().parents[1] / "test-artifacts" / "reliability.json"


def describe(test: str, f: dict) -> tuple[str, str, str]:
    """(load, faults injected, result) for one test's figures."""
    row = _ROWS.get(test) or next((row for prefix, row in _PREFIXED_ROWS if test.startswith(prefix)), None)
    if row is not None:
        return row(test, f)
    return ("", test.replace("_", " "), ", ".join(f"{k} {v}" for k, v in f.items() if k != "at"))


# One formatter per fault kind: (test name, its figures) → (load, faults injected, result).

def _secrets(test: str, f: dict) -> tuple[str, str, str]:
    return ("3 stories end to end", "token + secret given to all services",
            f"{f['leaks']} leaks in {f['logs_checked']} logs, {f['answers_checked']} answers, SQLite")


def _auth(test: str, f: dict) -> tuple[str, str, str]:
    return (f"{f['endpoints']} signed endpoints", "unsigned, forged, 301 s old, 330 s ahead, other body/path/method",
            f"{f['requests_refused']}/{f['requests_refused']} → 401")


def _fuzz(test: str, f: dict) -> tuple[str, str, str]:
    total = sum(sum(v.values()) for v in f["statuses"].values())
    fivexx = sum(n for v in f["statuses"].values() for c, n in v.items() if c.startswith("5"))
    return (f"{f['examples_per_endpoint']} examples × 5 endpoints ({total} requests)", "hypothesis bodies, signed",
            f"{fivexx} × 5xx; {f['accepted_jobs']} valid jobs accepted, nothing run for the rest")


def _injection(test: str, f: dict) -> tuple[str, str, str]:
    return (f"{f['values']} hostile strings", "`;` `$()` backticks `--upload-pack` `..` `-x` NUL 10 MB",
            f"{f['refused']} refused 4xx, no new directory, no git run")


def _crash_storm(test: str, f: dict) -> tuple[str, str, str]:
    return (f"{f['jobs']} jobs, 2 workers", f"{f['crashing_tasks']} tasks crash ({f['always_crash']} always)",
            f"{f['succeeded']} succeeded, {f['failed']} failed with reason, {f['retried_jobs']} retried, "
            f"{f['session_restarts']} respawns, {f['wall_s']} s")


def _kill9(test: str, f: dict) -> tuple[str, str, str]:
    who = "PR processor" if test.endswith("processor") else "worker pool"
    return (f"{f['jobs']} jobs", f"{f['kills']} × SIGKILL of the {who}",
            f"{f['succeeded']} succeeded, {f['failed']} failed (3 attempts), 0 duplicate commits, "
            f"{f['duplicate_callbacks']} duplicate callbacks")


def _duplicates(test: str, f: dict) -> tuple[str, str, str]:
    return (f"{f['calls']} identical calls at once", test.split("_", 1)[1].replace("_", " "),
            f"{f['prs']} PR, {f['jobs']} job")


def _load(test: str, f: dict) -> tuple[str, str, str]:
    return (f"{f['submissions']} in {f['window_s']} s + burst {f['burst']}, 4 workers, 0.1 s agent, queue "
            f"{f['queue_limit']}", f"{f['processor_jobs']}+{f['burst_processor_jobs']} processor jobs meanwhile",
            f"{f['completed_200']}+{f['burst_200']} done, {f['refused_429']}+{f['burst_429']} × 429, queue ≤ "
            f"{f['max_queue_seen']}; start p50 {f['time_to_start_p50_s']} s p95 {f['time_to_start_p95_s']} s; "
            f"RSS pool {f['rss_kb_before']['pool'] // 1024}→{f['rss_kb_after']['pool'] // 1024} MiB, processor "
            f"{f['rss_kb_before']['processor'] // 1024}→{f['rss_kb_after']['processor'] // 1024} MiB, API "
            f"{f['rss_kb_before']['api'] // 1024}→{f['rss_kb_after']['api'] // 1024} MiB; "
            f"processor jobs: {f['processor_jobs_failed_by_full_pool']} failed on 429")


def _hangs(test: str, f: dict) -> tuple[str, str, str]:
    return ("3 pool tasks + 2 jobs", f"hang / silence / busy; timeout {f['task_timeout_s']} s, stall "
            f"{f['stall_timeout_s']} s", f"ended after {f['hang_ended_after_s']} / {f['silent_ended_after_s']} / "
            f"{f['busy_ended_after_s']} s; jobs failed with work salvaged and a PR comment")


def _locked_db(test: str, f: dict) -> tuple[str, str, str]:
    code = f["submit"][0]
    return ("1 job sent during the lock", f"job DB exclusively locked {f['lock_s']} s",
            f"{code} ({'waited' if code == 202 else 'job store unavailable, nothing recorded'}); /health took "
            f"{f['health_during_lock_s']} s; re-sent job and the rest succeeded")


def _read_only_db(test: str, f: dict) -> tuple[str, str, str]:
    return ("4 jobs, 1 restart under the fault", "job DB, WAL, SHM and state dir immutable (chattr +i)",
            f"submit {f['submit'][0]}, /health {f['health']}, list {f['list'][0]}, restart {f['start']}; "
            "all 4 jobs succeeded once writable")


def _missing_workspace_root(test: str, f: dict) -> tuple[str, str, str]:
    return ("3 jobs", "KIRO_WORKSPACE_ROOT deleted", f"job during fault {f['job_during_fault']} (root recreated); "
            "cwd rule still 400; later jobs succeeded")


def _full_disk(test: str, f: dict) -> tuple[str, str, str]:
    return ("2 jobs", f"workspace root a full {f['workspace_tmpfs_mb']} MiB tmpfs",
            f"job {f['job_during_fault']}: \"No space left on device\"; after freeing: {f['job_after']}")


def _job_vs_full_pool(test: str, f: dict) -> tuple[str, str, str]:
    return ("1 job", "1-worker pool busy 6 s, KIRO_QUEUE_LIMIT=0 (429)",
            f"{f['status']} after {f['attempts']} attempt(s)")


_ROWS = {
    "secrets": _secrets, "auth": _auth, "fuzz": _fuzz, "injection": _injection, "crash_storm": _crash_storm,
    "load": _load, "hangs": _hangs, "read_only_db": _read_only_db, "missing_workspace_root": _missing_workspace_root,
    "full_disk": _full_disk, "job_vs_full_pool": _job_vs_full_pool,
}
# Tests recorded in variants (kill9_pool, kill9_processor, duplicates_<key>, locked_db_<seconds>s): by prefix.
_PREFIXED_ROWS = (("kill9", _kill9), ("duplicates", _duplicates), ("locked_db", _locked_db))


def main() -> int:
    data = json.loads(ARTIFACT.read_text())
    print("| test | mode | load | faults injected | result |")
    print("| --- | --- | --- | --- | --- |")
    for test in sorted(data):
        for mode in ("default", "torture"):
            if mode in data[test]:
                load, faults, result = describe(test, data[test][mode])
                print(f"| {test} | {mode} | {load} | {faults} | {result} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
