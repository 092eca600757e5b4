"""P4: per-job git time (fetch + worktree + commit + push) with the cached bare mirror vs a fresh clone (goal ≤ 0.3×).

Generates a repository of 5,000 commits with ``git fast-import`` into a file:// forge, then times, for several jobs in a
row, what the PR processor's git_ops does per job against a warm mirror, and what a naive job does (clone, commit,
push, delete). Between jobs someone else pushes a commit, so every fetch has something new to bring.
Run: ``python -m bench p4_git_mirror`` (or ``python -m bench.p4_git_mirror``).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ec2_services.pr_processor.git_ops import GitOps

COMMITS = 5000
FILES = 1000
TOUCHED = 3  # files changed per commit
LINES = 40  # functions per file (~3 KB)
JOBS = 9
REPO = "bench/big"
BRANCH = "aipm/bench"
ENV = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def git(*args: str, cwd: Path | None = None, stdin: bytes | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, env=ENV, input=stdin, capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"git {args[0]} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout.decode()


def _data(payload: bytes) -> bytes:
    return b"data %d\n" % len(payload) + payload + b"\n"


def generate_repo(bare: Path, commits: int = COMMITS, files: int = FILES) -> None:
    """A bare repository with ``commits`` commits on main (and ``BRANCH`` at its tip), built by git fast-import."""
    git("init", "--bare", "-q", "-b", "main", str(bare))
    chunks: list[bytes] = []
    for n in range(1, commits + 1):
        chunks.append(b"commit refs/heads/main\nmark :%d\n" % n)
        chunks.append(b"committer Bench <bench@example.com> %d +0000\n" % (1_700_000_000 + n))
        chunks.append(_data(b"change %d" % n))
        if n > 1:
            chunks.append(b"from :%d\n" % (n - 1))
        # A commit of a real project touches a few files of a few kilobytes each.
        targets = range(files) if n == 1 else [(n * 7 + k * 131) % files for k in range(TOUCHED)]
        for f in targets:
            body = (f"# module {f}, revision {n}\n" + "".join(
                f"def function_{i}(x):\n    return x * {i} + {n} + {f}  # revision {n}\n" for i in range(LINES))).encode()
            chunks.append(b"M 100644 inline src/pkg%d/mod%d.py\n" % (f % 20, f) + _data(body))
    git("fast-import", "--quiet", cwd=bare, stdin=b"".join(chunks))
    git("--git-dir", str(bare), "branch", BRANCH, "main")


def someone_pushes(bare: Path, work: Path, n: int) -> None:
    if not work.exists():
        git("clone", "-q", "-b", BRANCH, f"file://{bare}", str(work))
    git("pull", "-q", "--ff-only", "origin", BRANCH, cwd=work)
    (work / f"human-{n}.txt").write_text(f"human change {n}\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", f"human {n}", cwd=work)
    git("push", "-q", "origin", f"HEAD:refs/heads/{BRANCH}", cwd=work)


async def mirror_job(ops: GitOps, n: int, steps: dict[str, list[float]] | None = None) -> float:
    """One job's git work through git_ops; ``steps`` collects the time of each step."""
    marks = [time.perf_counter()]
    tip = await ops.fetch_branch(REPO, BRANCH)
    marks.append(time.perf_counter())
    wt = await ops.add_worktree(REPO, f"bench-{n}", tip)
    marks.append(time.perf_counter())
    (wt.path / f"bot-{n}.txt").write_text(f"bot change {n}\n")
    sha = await ops.commit_all(wt, f"bot {n}\n\nAIPM-Job: bench-{n}\n")
    marks.append(time.perf_counter())
    await ops.push(REPO, sha, BRANCH)
    marks.append(time.perf_counter())
    await ops.remove_worktree(wt)
    marks.append(time.perf_counter())
    _record(steps, ("fetch", "worktree add (checkout)", "commit", "push", "worktree remove"), marks)
    return marks[-1] - marks[0]


def clone_job(url: str, root: Path, n: int, steps: dict[str, list[float]] | None = None) -> float:
    marks = [time.perf_counter()]
    work = root / f"clone-{n}"
    git("clone", "-q", "-b", BRANCH, url, str(work))
    marks.append(time.perf_counter())
    (work / f"clone-{n}.txt").write_text(f"clone change {n}\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", f"clone {n}", cwd=work)
    marks.append(time.perf_counter())
    git("push", "-q", "origin", f"HEAD:refs/heads/{BRANCH}", cwd=work)
    marks.append(time.perf_counter())
    subprocess.run(["rm", "-rf", str(work)], check=True)
    marks.append(time.perf_counter())
    _record(steps, ("clone (transfer + checkout)", "commit", "push", "delete"), marks)
    return marks[-1] - marks[0]


def _record(steps: dict[str, list[float]] | None, names: tuple[str, ...], marks: list[float]) -> None:
    if steps is not None:
        for name, start, end in zip(names, marks[:-1], marks[1:], strict=True):
            steps.setdefault(name, []).append(end - start)


def run(jobs: int = JOBS, commits: int = COMMITS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aipm-p4-") as tmp:
        root = Path(tmp)
        forge = root / "forge"
        bare = forge / f"{REPO}.git"
        bare.parent.mkdir(parents=True)
        t0 = time.perf_counter()
        generate_repo(bare, commits)
        generated_s = time.perf_counter() - t0
        state = root / "state"
        ops = GitOps(base_url=f"file://{forge}", token=None, state_dir=state, workspace_root=state / "workspaces",
                     author_name="Bench Bot", author_email="bot@example.com")
        t0 = time.perf_counter()
        asyncio.run(ops.fetch_branch(REPO, BRANCH))  # the mirror's first, full fetch (once per repository)
        first_fetch_s = time.perf_counter() - t0
        mirror_times, clone_times = [], []
        mirror_steps: dict[str, list[float]] = {}
        clone_steps: dict[str, list[float]] = {}
        for n in range(jobs):  # one pair per round; which side goes first alternates
            # os.sync() first: neither path pays for writing back the other's files.
            def mirror(n=n):
                someone_pushes(bare, root / "human", 2 * n)
                os.sync()
                mirror_times.append(asyncio.run(mirror_job(ops, n, mirror_steps)))

            def clone(n=n):
                someone_pushes(bare, root / "human", 2 * n + 1)
                os.sync()
                clone_times.append(clone_job(f"file://{bare}", root, n, clone_steps))

            for side in (mirror, clone) if n % 2 == 0 else (clone, mirror):
                side()
        return {
            "mirror_steps": {k: statistics.median(v) for k, v in mirror_steps.items()},
            "clone_steps": {k: statistics.median(v) for k, v in clone_steps.items()},
            "commits": commits,
            "generate_s": generated_s,
            "first_fetch_s": first_fetch_s,
            "mirror_s": statistics.median(mirror_times),
            "clone_s": statistics.median(clone_times),
            "ratios": [m / c for m, c in zip(mirror_times, clone_times, strict=True)],
            "jobs": jobs,
        }


def main() -> None:
    load = os.getloadavg()[0]
    r = run()
    ratios = r["ratios"]
    ratio = statistics.median(ratios)
    print(f"Repository: {r['commits']:,} commits, {FILES:,} files, generated with git fast-import in "
          f"{r['generate_s']:.2f} s; the mirror's one-time first fetch took {r['first_fetch_s']:.2f} s.")
    print(f"{r['jobs']} pairs of jobs, which side goes first alternating (another push lands on the branch before "
          f"every job); 1-min load {load:.1f} before, {os.getloadavg()[0]:.1f} after, {os.cpu_count()} CPUs.\n")
    print("| per-job git work (fetch + worktree + commit + push) | median time | ÷ fresh clone, paired: min / median / max |")
    print("| --- | --- | --- |")
    print(f"| cached bare mirror + `git worktree` (git_ops) | {r['mirror_s'] * 1000:.0f} ms | "
          f"{min(ratios):.2f} / {ratio:.2f} / {max(ratios):.2f}× |")
    print(f"| fresh `git clone` + commit + push | {r['clone_s'] * 1000:.0f} ms | 1 |")
    print(f"\nGoal ≤ 0.30× (median of the pairs): {'met' if ratio <= 0.3 else '**NOT met**'} ({ratio:.2f}×)\n")
    print("| step (median) | cached mirror | fresh clone |")
    print("| --- | --- | --- |")
    for name, value in r["mirror_steps"].items():
        print(f"| mirror: {name} | {value * 1000:.0f} ms | |")
    for name, value in r["clone_steps"].items():
        print(f"| clone: {name} | | {value * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
