"""Disk and state faults: the job database locked by another process, made read-only (immutable) while the
processor runs and before it starts, and the workspace root removed — clear errors while the fault lasts, and no
accepted job lost once it is gone."""

from __future__ import annotations

import concurrent.futures
import contextlib
import shutil
import sqlite3
import subprocess
import time

import httpx
import pytest

from tests.reliability.stack import EXAMPLE, FINAL, TORTURE, poll, record_figures

LOCK_S = 3  # inside the processor's own SQLite busy timeout
LONG_LOCK_S = 40 if TORTURE else 8  # past it (5 s, or 30 s before the processor lowered it)


def submit(stack, job_id: str, branch: str) -> httpx.Response:
    body = {"job_id": job_id, "repo": EXAMPLE, "branch": branch, "task_file": "TASK.md"}
    response = httpx.post(stack.url("processor") + "/api/process-pr", json=body, timeout=120,
                          headers=stack.sign("pr-processor", "POST", "/api/process-pr",
                                             httpx.Request("POST", "/", json=body).content))
    stack._record(response)
    return response


def clear_error(response: httpx.Response) -> bool:
    """A refusal a caller can act on: a JSON detail, a 4xx/503, no traceback."""
    try:
        detail = response.json().get("detail")
    except ValueError:
        return False
    return bool(detail) and response.status_code in (409, 423, 429, 503, 507) and "Traceback" not in response.text


@contextlib.contextmanager
def immutable(*paths):
    done = []
    try:
        for path in paths:
            if path.exists():
                subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
                done.append(path)
        yield
    finally:
        for path in reversed(done):
            subprocess.run(["chattr", "-i", str(path)], capture_output=True)


def can_chattr(tmp_path) -> bool:
    probe = tmp_path / "chattr-probe"
    probe.write_text("x")
    ok = subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode == 0 if shutil.which(
        "chattr") else False
    if ok:
        try:
            probe.write_text("y")
            ok = False
        except OSError:
            pass
        subprocess.run(["chattr", "-i", str(probe)], capture_output=True)
    return ok


def locked_run(make_stack, lock_s: float) -> dict:
    """Hold an exclusive lock on the job database for ``lock_s`` while a job is submitted and /health asked; then
    release it, re-send what was refused, and check every job ends succeeded. Returns what was answered."""
    stack = make_stack(pool_size=1)
    stack.start("pool")
    stack.start("processor")
    for n in range(3):
        stack.make_branch(f"aipm/lock-{n}", f"# lock {n}\n\n[[write lock-{n}.txt x]]\n")
    assert submit(stack, "j-lock-0", "aipm/lock-0").status_code == 202
    stack.wait_final(["j-lock-0"], timeout=60)
    db = stack.state_dir / "jobs.sqlite"
    assert db.exists()
    holder = sqlite3.connect(str(db), timeout=5, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    locked_at = time.monotonic()
    def timed_health():
        started = time.monotonic()
        response = httpx.get(stack.url("processor") + "/health", timeout=lock_s + 40)
        return response, time.monotonic() - started

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        during = pool.submit(submit, stack, "j-lock-1", "aipm/lock-1")
        health_call = pool.submit(timed_health)
        # The lock holder goes away after lock_s: the fault is a fixed-length window, not a wait for a condition.
        time.sleep(max(0.0, lock_s - (time.monotonic() - locked_at)))
        holder.execute("ROLLBACK")
        holder.close()
        answer = during.result(timeout=120)
        health, health_latency = health_call.result(timeout=120)
    observed = {"lock_s": lock_s, "submit": (answer.status_code, answer.text[:200]),
                "health_during_lock_s": round(health_latency, 2), "health_status": health.status_code}
    # Waited the lock out (202), or said clearly that the job store is busy and nothing was recorded (503): never a
    # bare 500.
    assert answer.status_code == 202 or clear_error(answer), observed
    if answer.status_code not in (200, 202):  # the caller's retry is taken once the fault is gone
        again = submit(stack, "j-lock-1", "aipm/lock-1")
        assert again.status_code in (200, 202), again.text
    assert submit(stack, "j-lock-2", "aipm/lock-2").status_code == 202
    jobs = stack.wait_final(["j-lock-0", "j-lock-1", "j-lock-2"], timeout=120)
    assert all(j["status"] == "succeeded" for j in jobs.values()), jobs
    record_figures(f"locked_db_{int(lock_s)}s", **observed)
    return observed


@pytest.mark.timeout(300)
def test_locked_job_database_delays_or_refuses_clearly_and_loses_nothing(make_stack):
    locked_run(make_stack, LOCK_S)


@pytest.mark.timeout(400)
def test_job_database_locked_past_the_busy_timeout_refuses_clearly_and_loses_nothing(make_stack):
    observed = locked_run(make_stack, LONG_LOCK_S)
    code, text = observed["submit"]
    assert code == 503 and "database" in text, observed  # past any sane busy timeout: refused, saying why


def read_only_run(make_stack, tmp_path) -> dict:
    """Run jobs, make the job database immutable (chattr +i: even root cannot write it), submit, list, restart the
    processor under the fault, clear the fault, restart: every accepted or re-sent job must end succeeded.
    Returns what was answered while the fault lasted."""
    if not can_chattr(tmp_path):
        pytest.skip("chattr +i is not available here (needs root and a filesystem with the immutable flag)")
    stack = make_stack(pool_size=1)
    stack.start("pool")
    stack.start("processor")
    for n in range(4):
        stack.make_branch(f"aipm/ro-{n}", f"# ro {n}\n\n[[write ro-{n}.txt x]]\n")
    assert submit(stack, "j-ro-0", "aipm/ro-0").status_code == 202
    stack.wait_final(["j-ro-0"], timeout=60)
    db = stack.state_dir / "jobs.sqlite"
    files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"), stack.state_dir]
    observed: dict = {}
    with immutable(*files):
        during = submit(stack, "j-ro-1", "aipm/ro-1")
        observed["submit"] = (during.status_code, during.text[:200])
        observed["health"] = stack.health("processor").get("status")
        listing = stack.client("processor").get("/api/jobs")
        observed["list"] = (listing.status_code, listing.text[:200])
        # Restarted while the database is read-only: it says why it cannot run (or runs and refuses clearly).
        stack.kill("processor")
        stack.procs["processor"].stop()
        stack.start("processor", wait=False)
        proc = stack.procs["processor"]

        def exited_or_up():
            if proc.proc.poll() is not None:
                return "exited"
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(stack.url("processor") + "/health", timeout=2).status_code and "up"
            return None

        observed["start"] = poll(exited_or_up, 60, "processor started or gave up")
        if observed["start"] == "exited":
            observed["start_output"] = proc.output()[-3000:]
        else:
            again = submit(stack, "j-ro-2", "aipm/ro-2")
            observed["submit_after_restart"] = (again.status_code, again.text[:200])
    # The fault is gone: restart, re-send what was refused, and every job ends.
    stack.procs["processor"].stop()
    stack.start("processor")
    client = stack.client("processor")
    for job_id, branch in (("j-ro-1", "aipm/ro-1"), ("j-ro-2", "aipm/ro-2"), ("j-ro-3", "aipm/ro-3")):
        response = submit(stack, job_id, branch)
        assert response.status_code in (200, 202), response.text
    jobs = stack.wait_final(["j-ro-0", "j-ro-1", "j-ro-2", "j-ro-3"], timeout=120)
    assert all(j["status"] == "succeeded" for j in jobs.values()), jobs
    assert len(client.get("/api/jobs").json()["jobs"]) == 4
    record_figures("read_only_db", **{k: v for k, v in observed.items() if k != "start_output"})
    return observed


@pytest.mark.timeout(300)
def test_read_only_job_database_loses_no_job_once_the_fault_is_gone(make_stack, tmp_path):
    read_only_run(make_stack, tmp_path)


@pytest.mark.timeout(300)
def test_read_only_job_database_answers_clear_errors_while_it_lasts(make_stack, tmp_path):
    observed = read_only_run(make_stack, tmp_path)
    for what in ("submit", "list", "submit_after_restart"):
        if what in observed:
            code, text = observed[what]
            assert code in (200, 202) or (code in (503, 507) and "internal error" not in text), (what, code, text)
    if observed["submit"][0] != 202:
        assert observed["health"] != "ok", observed  # a service that cannot accept jobs does not say it is fine
    if observed["start"] == "exited":
        out = observed["start_output"].lower()
        assert "jobs.sqlite" in out or "database" in out, out


@pytest.mark.timeout(300)
def test_missing_workspace_root_is_a_clear_error_or_recreated_and_no_job_is_lost(make_stack):
    stack = make_stack(pool_size=1)
    stack.start("pool")
    stack.start("processor", PR_RETRY_BASE_DELAY="1")
    for n in range(3):
        stack.make_branch(f"aipm/ws-{n}", f"# ws {n}\n\n[[write ws-{n}.txt x]]\n")
    shutil.rmtree(stack.workspace_root)
    during = submit(stack, "j-ws-0", "aipm/ws-0")
    assert during.status_code == 202 or clear_error(during), during.text
    job = stack.wait_final(["j-ws-0"], timeout=120)["j-ws-0"] if during.status_code == 202 else None
    if job and job["status"] != "succeeded":
        assert "workspace" in (job["error"] or "").lower() or "director" in (job["error"] or "").lower(), job
    # The pool's cwd rule still refuses paths outside the (missing) root, and answers sanely.
    answer = stack.client("pool").post("/execute", json={"prompt": "[[say hi]]", "cwd": "/tmp",
                                                          "task_id": "t-ws-outside"})
    assert answer.status_code == 400, answer.text
    stack.workspace_root.mkdir(parents=True, exist_ok=True)
    for job_id, branch in (("j-ws-1", "aipm/ws-1"), ("j-ws-2", "aipm/ws-2")):
        assert submit(stack, job_id, branch).status_code == 202
    jobs = stack.wait_final(["j-ws-1", "j-ws-2"], timeout=120)
    assert all(j["status"] == "succeeded" for j in jobs.values()), jobs
    health = stack.health("pool")
    assert health["pool_size"] == 1 and all(w["state"] in ("idle", "busy") for w in health["workers"])
    record_figures("missing_workspace_root", job_during_fault=job["status"] if job else during.status_code,
                   error=(job or {}).get("error"))
    assert all(j["status"] in FINAL for j in jobs.values())


@contextlib.contextmanager
def small_tmpfs(path, size_mb: int):
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot mount a small tmpfs here (needs root): the full-disk case is not run")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory) -> int:
    """Write a filler file until the filesystem says it is full; returns the bytes written."""
    written = 0
    block = b"\0" * (256 * 1024)
    with open(directory / "filler", "wb") as fh:
        try:
            while True:
                fh.write(block)
                fh.flush()
                written += len(block)
        except OSError:
            pass
    # Top up the last few bytes too.
    for n in range(1000):
        try:
            (directory / f"filler-{n}").write_bytes(b"\0" * 1024)
        except OSError:
            break
    return written


@pytest.mark.timeout(300)
def test_full_workspace_disk_fails_the_job_clearly_and_the_next_one_works_once_freed(make_stack, tmp_path):
    stack = make_stack(pool_size=1)
    with small_tmpfs(stack.workspace_root, 16):
        stack.start("pool")
        stack.start("processor", PR_RETRY_BASE_DELAY="0.2")
        for n in range(2):
            stack.make_branch(f"aipm/full-{n}", f"# full {n}\n\n[[write full-{n}.txt x]]\n")
        filled = fill(stack.workspace_root)
        response = submit(stack, "j-full-0", "aipm/full-0")
        assert response.status_code == 202 or clear_error(response), response.text
        job = stack.wait_final(["j-full-0"], timeout=120)["j-full-0"]
        if job["status"] != "succeeded":
            error = (job["error"] or "").lower()
            assert "space" in error or "disk" in error or "quota" in error or "write" in error, job
        for leftover in stack.workspace_root.glob("filler*"):
            leftover.unlink()
        # Asked again (the Lambda re-sends on a retry): the same job id answers its recorded state, not a re-run.
        again = submit(stack, "j-full-0", "aipm/full-0")
        assert again.status_code == 200 and again.json()["status"] == job["status"], again.text
        assert submit(stack, "j-full-1", "aipm/full-1").status_code == 202
        after = stack.wait_final(["j-full-1"], timeout=120)["j-full-1"]
        assert after["status"] == "succeeded", after
        health = stack.wait_pool_idle(timeout=60)
    record_figures("full_disk", workspace_tmpfs_mb=16, filler_bytes=filled, job_during_fault=job["status"],
                   error=job["error"], job_after=after["status"], pool_size=health["pool_size"])
