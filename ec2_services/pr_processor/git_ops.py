"""Every git call the PR processor makes: the cached bare mirror, per-job worktrees, commit, push, rebase.

Git runs as an argument list (never through a shell), with hooks disabled, no fsmonitor, no credential helpers, no
user or system config, and only the environment built here — the service's own secrets are not in it. The remote is
always the URL built from ``repo`` and ``GIT_BASE_URL``, passed on the command line: no configured remote exists that
a work tree could change. Worktree commands name their git directory explicitly, so a ``.git`` file the agent rewrote
is never followed.

HTTPS credentials: ``GIT_ASKPASS`` points at a small script written into the state directory; it answers only
prompts for the ``GIT_BASE_URL`` origin, and the token reaches it through the environment of the fetch/push process
alone (never a URL, an argument, a file, a log line or an error message).

Names (repo, branch, task file) are validated at the edge (``models``) before they get here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from aipm_common.logging import redact

log = logging.getLogger(__name__)

_CONFIG = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "credential.helper=",
    "http.followRedirects=false",
    "commit.gpgsign=false",
    "protocol.allow=never",
    "protocol.https.allow=always",
    "protocol.http.allow=always",
    "protocol.file.allow=always",
    "submodule.recurse=false",
    "gc.auto=0",
)

ASKPASS_SCRIPT = """#!/bin/sh
# AIPM git askpass: answers git's credential prompts for one origin only (docs/contracts.md: the token goes to that host alone).
case "$1" in
  "Username for '$AIPM_ASKPASS_ORIGIN'"*) printf '%s\\n' x-access-token ;;
  "Password for '$AIPM_ASKPASS_USER_ORIGIN'"*) printf '%s\\n' "$AIPM_ASKPASS_TOKEN" ;;
  *) echo "aipm askpass: no credentials for this prompt" >&2; exit 1 ;;
esac
"""

# Where finished jobs' worktrees wait for the repository's next job (under the workspace root: a move, not a copy),
# and how many may wait per repository.
PARKED_DIR = ".parked"
# How far below a branch's tip a job's own result commit is looked for (job_commit).
JOB_COMMIT_DEPTH = 256
PARKED_PER_REPO = 2

# What git says of a push refused because the branch is not an ancestor of the pushed commit (``--porcelain``:
# ``!<TAB>src:dst<TAB>[rejected] (fetch first)``). Any other refusal — ``[remote rejected] (failed to lock)``, a hook,
# a server error — is not a moved branch: the same commit may go through later.
_MOVED_REASONS = ("fetch first", "non-fast-forward")


class GitError(Exception):
    """A git command failed; ``permanent`` when trying again cannot help (missing branch or repository)."""

    permanent = False

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BranchMissing(GitError):
    permanent = True


class PushRejected(GitError):
    """The remote branch moved: the push was not a fast-forward."""


class PushRefused(GitError):
    """The remote refused the push for another reason (a ref it could not lock, a hook, a server error): pushing the
    same commit again may succeed."""


class RebaseConflict(GitError):
    permanent = True


class TaskFileRefused(GitError):
    """The branch's task file is missing, or is not a regular file inside the work tree and outside ``.git``."""

    permanent = True


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Worktree:
    path: Path
    git_dir: Path
    repo: str


class GitOps:
    def __init__(self, *, base_url: str, token: str | None, state_dir: Path, workspace_root: Path,
                 author_name: str, author_email: str):
        self.base_url = base_url.rstrip("/")
        self.mirrors = state_dir / "mirrors"
        self.workspace_root = workspace_root
        self._token = token
        self._git = shutil.which("git") or "/usr/bin/git"
        self._locks: dict[str, asyncio.Lock] = {}
        self._env = {
            "PATH": f"{Path(self._git).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(state_dir),
            "LC_ALL": "C",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_AUTHOR_NAME": author_name,
            "GIT_AUTHOR_EMAIL": author_email,
            "GIT_COMMITTER_NAME": author_name,
            "GIT_COMMITTER_EMAIL": author_email,
        }
        self._askpass_env: dict[str, str] = {}
        parts = urlsplit(self.base_url)
        if parts.scheme in ("http", "https"):
            script = state_dir / "git-askpass.sh"
            state_dir.mkdir(parents=True, exist_ok=True)
            script.write_text(ASKPASS_SCRIPT)
            script.chmod(stat.S_IRWXU)
            origin = f"{parts.scheme}://{parts.netloc}"
            self._askpass_env = {
                "GIT_ASKPASS": str(script),
                "AIPM_ASKPASS_ORIGIN": origin,
                "AIPM_ASKPASS_USER_ORIGIN": f"{parts.scheme}://x-access-token@{parts.netloc}",
            }

    # --- names and places ---------------------------------------------------------------------------------------

    def remote_url(self, repo: str) -> str:
        return f"{self.base_url}/{repo}.git"

    def mirror_dir(self, repo: str) -> Path:
        owner, name = repo.lower().split("/", 1)
        return self.mirrors / owner / f"{name}.git"

    def _lock(self, repo: str) -> asyncio.Lock:
        return self._locks.setdefault(repo.lower(), asyncio.Lock())

    # --- running git ----------------------------------------------------------------------------------------------

    async def _run(self, *args: str, cwd: Path | None = None, network: bool = False, check: bool = True) -> Result:
        env = dict(self._env)
        if network and self._askpass_env:
            env.update(self._askpass_env)
            if self._token:
                env["AIPM_ASKPASS_TOKEN"] = self._token
        argv = [self._git]
        for item in _CONFIG:
            argv += ["-c", item]
        argv += list(args)
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=str(cwd) if cwd else None, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await proc.communicate()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        result = Result(proc.returncode or 0, self._clean(out), self._clean(err))
        if check and result.code != 0:
            raise GitError(self._describe(args, result))
        return result

    def _clean(self, data: bytes) -> str:
        text = data.decode("utf-8", "replace")
        if self._token:
            text = text.replace(self._token, "***")
        return redact(text)

    @staticmethod
    def _describe(args: tuple[str, ...], result: Result) -> str:
        verb = next((a for a in args if not a.startswith("-")), "git")
        detail = (result.err.strip() or result.out.strip())[-600:]
        return f"git {verb} failed (exit {result.code}): {detail}"

    async def _in(self, wt: Worktree, *args: str, check: bool = True) -> Result:
        return await self._run(f"--git-dir={wt.git_dir}", f"--work-tree={wt.path}", *args, cwd=wt.path, check=check)

    async def _mirror(self, repo: str, *args: str, network: bool = False, check: bool = True) -> Result:
        return await self._run(f"--git-dir={self.mirror_dir(repo)}", *args, network=network, check=check)

    # --- mirror ---------------------------------------------------------------------------------------------------

    async def fetch_branch(self, repo: str, branch: str) -> str:
        """Bring the mirror's copy of ``branch`` up to date (only what changed) and return its tip."""
        async with self._lock(repo):
            mirror = self.mirror_dir(repo)
            if not (mirror / "HEAD").exists():
                _read_only_for_others(mirror.parent, stop=self.mirrors.parent)
                # Files and directories 0644/0755 whatever the umask: the agent (in the workspaces' group on the host)
                # must not write the mirror's config, hooks or refs, which run as the service.
                await self._run("init", "--bare", "-q", "--shared=0644", str(mirror))
            result = await self._mirror(
                repo, "fetch", "--no-tags", "--no-write-fetch-head", "-q", self.remote_url(repo),
                f"+refs/heads/{branch}:refs/remotes/origin/{branch}", network=True, check=False,
            )
        if result.code != 0:
            err = result.err.lower()
            if "couldn't find remote ref" in err:
                raise BranchMissing(f"branch {branch!r} does not exist in {repo}")
            if "does not appear to be a git repository" in err or "repository not found" in err:
                raise BranchMissing(f"repository {repo} was not found at {self.base_url} (or the token cannot read it)")
            raise GitError(self._describe(("fetch",), result))
        return await self.rev(repo, f"refs/remotes/origin/{branch}")

    async def rev(self, repo: str, ref: str) -> str:
        return (await self._mirror(repo, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}")).out.strip()

    async def has_commit(self, repo: str, sha: str) -> bool:
        result = await self._mirror(repo, "cat-file", "-e", f"{sha}^{{commit}}", check=False)
        return result.code == 0

    async def is_ancestor(self, repo: str, ancestor: str, descendant: str) -> bool:
        result = await self._mirror(repo, "merge-base", "--is-ancestor", ancestor, descendant, check=False)
        return result.code == 0

    async def job_commit(self, repo: str, tip: str, job_id: str) -> str | None:
        """The newest commit among the ``JOB_COMMIT_DEPTH`` newest reachable from ``tip`` that is this job's result:
        subject ``aipm: …`` and the trailer ``AIPM-Job: <job_id>`` (a WIP commit of a failed attempt does not count).
        None when the job left none. Only the branch's newest commits are read (a job's commit sits on top of its
        story's branch), so the look costs the same on a repository of 100,000 commits as on one of 10."""
        result = await self._mirror(
            repo, "log", f"--max-count={JOB_COMMIT_DEPTH}", "--format=%H%x1f%B%x1e", tip, check=False,
        )
        for record in result.out.split("\x1e"):
            sha, _, message = record.strip().partition("\x1f")
            lines = message.splitlines()
            if sha and lines and lines[0].startswith("aipm: ") and f"AIPM-Job: {job_id}" in lines[1:]:
                return sha
        return None

    async def keep(self, repo: str, job_id: str, sha: str | None) -> None:
        """Hold (or with None release) a job's commit by a ref, so it outlives its worktree and any gc."""
        ref = f"refs/aipm/jobs/{job_id}"
        if not (self.mirror_dir(repo) / "HEAD").exists():
            return
        if sha:
            await self._mirror(repo, "update-ref", ref, sha)
        else:
            await self._mirror(repo, "update-ref", "-d", ref, check=False)

    async def maintain(self, repo: str) -> None:
        """``git gc --auto`` on the mirror (job commands run with gc.auto=0 so a job never waits for a repack)."""
        if (self.mirror_dir(repo) / "HEAD").exists():
            await self._mirror(repo, "-c", "gc.auto=6700", "gc", "--auto", "--quiet", check=False)

    async def push(self, repo: str, sha: str, branch: str) -> None:
        """Push ``sha`` to ``branch`` of the built URL, never forced: PushRejected when the branch moved (not a
        fast-forward), PushRefused for any other failure, with git's own reason."""
        result = await self._mirror(
            repo, "push", "--porcelain", "--no-verify", self.remote_url(repo), f"{sha}:refs/heads/{branch}",
            network=True, check=False,
        )
        if result.code == 0:
            await self._mirror(repo, "update-ref", f"refs/remotes/origin/{branch}", sha, check=False)
            return
        summary = _refusal(result.out)
        if summary is None:  # no ref status at all: the connection or the remote failed before the update
            raise PushRefused(self._describe(("push",), result))
        if summary.startswith("[rejected]") and any(reason in summary for reason in _MOVED_REASONS):
            raise PushRejected(f"push to {branch} rejected: the branch moved on the remote")
        said = _remote_said(result.err)
        raise PushRefused(f"push to {branch} refused by the remote: {summary}" + (f" — {said}" if said else ""))

    # --- worktrees ------------------------------------------------------------------------------------------------

    async def add_worktree(self, repo: str, name: str, sha: str) -> Worktree:
        """A clean detached worktree at ``sha`` under the workspace root (an old one of that name is removed).

        A worktree an earlier job of the repository left parked is moved here and brought to ``sha`` (``checkout -f``
        rewrites only the files that differ, ``clean -ffdx`` removes every untracked and ignored file), and used only
        if git then sees nothing but ``sha``'s files: else, and when none is parked, a new one is checked out."""
        path = self.workspace_root / name
        async with self._lock(repo):
            if path.exists() or self._git_dir_of(repo, path) is not None:
                await self._remove(repo, path)
            self.workspace_root.mkdir(parents=True, exist_ok=True)
            reused = await self._reuse_parked(repo, path, sha)
            if reused is not None:
                await asyncio.to_thread(_seal, reused.git_dir)
                return reused
            await self._mirror(repo, "worktree", "add", "-q", "--detach", str(path), sha)
            git_dir = self._git_dir_of(repo, path)
        if git_dir is None or not (git_dir / "HEAD").exists():
            raise GitError(f"git worktree add did not register {path}")
        await asyncio.to_thread(_seal, git_dir)
        return Worktree(path=path, git_dir=git_dir, repo=repo)

    def existing_worktree(self, repo: str, name: str) -> Worktree | None:
        path = self.workspace_root / name
        git_dir = self._git_dir_of(repo, path)
        if path.is_dir() and git_dir is not None and (git_dir / "HEAD").exists():
            return Worktree(path=path, git_dir=git_dir, repo=repo)
        return None

    async def remove_worktree(self, wt: Worktree) -> None:
        """Done with a job's worktree: parked for the repository's next job (cleaned), or removed."""
        async with self._lock(wt.repo):
            if not await self._park(wt):
                await self._remove(wt.repo, wt.path)

    async def remove_worktree_named(self, repo: str, name: str) -> None:
        async with self._lock(repo):
            await self._remove(repo, self.workspace_root / name)

    async def _remove(self, repo: str, path: Path) -> None:
        await self._mirror(repo, "worktree", "remove", "--force", "--force", str(path), check=False)
        if path.exists():
            await asyncio.to_thread(shutil.rmtree, path, True)
        await self._mirror(repo, "worktree", "prune", check=False)

    # --- parked worktrees (a job's checkout costs only the files that differ from the last job's) ---------------

    def _parked_root(self, repo: str) -> Path:
        return self.workspace_root / PARKED_DIR / repo.lower().replace("/", "__")

    def _git_dir_of(self, repo: str, path: Path) -> Path | None:
        """The mirror's administrative directory of the worktree at ``path``, from the ``gitdir`` file git keeps
        there (never from the worktree's own ``.git`` file, which the agent could have rewritten)."""
        admin = self.mirror_dir(repo) / "worktrees"
        wanted = (path / ".git").resolve()
        try:
            entries = list(admin.iterdir())
        except OSError:
            return None
        for entry in entries:
            try:
                if Path((entry / "gitdir").read_text().strip()).resolve() == wanted:
                    return entry
            except OSError:
                continue
        return None

    async def _park(self, wt: Worktree) -> bool:
        """Move the worktree aside, cleaned, when fewer than ``PARKED_PER_REPO`` wait already; False otherwise."""
        root = self._parked_root(wt.repo)
        try:
            waiting = len(list(root.iterdir())) if root.exists() else 0
        except OSError:
            return False
        if waiting >= PARKED_PER_REPO or not wt.path.is_dir() or not (wt.git_dir / "HEAD").exists():
            return False
        target = root / f"wt-{os.urandom(6).hex()}"
        root.mkdir(parents=True, exist_ok=True)
        _restore_git_file(wt)
        moved = await self._mirror(wt.repo, "worktree", "move", str(wt.path), str(target), check=False)
        if moved.code != 0:
            return False
        parked = Worktree(path=target, git_dir=wt.git_dir, repo=wt.repo)
        for leftover in ("rebase-merge", "rebase-apply", "MERGE_HEAD", "CHERRY_PICK_HEAD"):
            await asyncio.to_thread(_remove_path, wt.git_dir / leftover)
        await self._in(parked, "checkout", "-q", "-f", "--detach", "HEAD", check=False)
        await self._in(parked, "clean", "-ffdxq", check=False)
        if not await self._spotless(parked):
            await self._remove(wt.repo, target)
            return True  # removed, as it would have been
        await asyncio.to_thread(_seal, wt.git_dir)
        return True

    async def _reuse_parked(self, repo: str, path: Path, sha: str) -> Worktree | None:
        root = self._parked_root(repo)
        try:
            candidates = sorted(root.iterdir()) if root.exists() else []
        except OSError:
            return None
        for parked_path in candidates:
            git_dir = self._git_dir_of(repo, parked_path)
            if git_dir is None:
                await asyncio.to_thread(_remove_path, parked_path)
                continue
            moved = await self._mirror(repo, "worktree", "move", str(parked_path), str(path), check=False)
            if moved.code != 0:
                await self._remove(repo, parked_path)
                continue
            wt = Worktree(path=path, git_dir=git_dir, repo=repo)
            _restore_git_file(wt)
            checkout = await self._in(wt, "checkout", "-q", "-f", "--detach", sha, check=False)
            await self._in(wt, "clean", "-ffdxq", check=False)
            if checkout.code == 0 and await self._spotless(wt, at=sha):
                return wt
            await self._remove(repo, path)
        return None

    async def _spotless(self, wt: Worktree, *, at: str | None = None) -> bool:
        """Nothing but the checked-out commit's files (and, given ``at``, that commit is ``at``): no change, no
        untracked or ignored file. One ``git status``: its v2 headers name the commit, every other line is a file."""
        result = await self._in(wt, "status", "--porcelain=v2", "--branch", "--untracked-files=all",
                                "--ignored=matching", "--ignore-submodules=none", check=False)
        lines = result.out.splitlines()
        files = [line for line in lines if not line.startswith("# ")]
        return result.code == 0 and not files and (at is None or f"# branch.oid {at}" in lines)

    async def show_file(self, repo: str, sha: str, path: str, limit: int = 65536) -> str | None:
        """A file's text at ``sha`` in the mirror (None when it is not there, or is larger than ``limit``)."""
        spec = f"{sha}:{path}"
        size = await self._mirror(repo, "cat-file", "-s", spec, check=False)
        if size.code != 0 or not size.out.strip().isdigit() or int(size.out) > limit:
            return None
        shown = await self._mirror(repo, "cat-file", "blob", spec, check=False)
        return shown.out if shown.code == 0 else None

    async def clean(self, wt: Worktree) -> None:
        """Remove every untracked and ignored file (what a test run left), keeping what is committed."""
        await self._in(wt, "clean", "-ffdxq", check=False)

    async def head(self, wt: Worktree) -> str:
        return (await self._in(wt, "rev-parse", "--verify", "HEAD^{commit}")).out.strip()

    async def is_dirty(self, wt: Worktree) -> bool:
        result = await self._in(wt, "status", "--porcelain=v1", "--untracked-files=all", "--ignore-submodules=none")
        return bool(result.out.strip())

    async def commit_all(self, wt: Worktree, message: str) -> str:
        """``git add -A`` and commit; returns the new HEAD (the old one when there was nothing to commit)."""
        await self._in(wt, "add", "-A")
        if (await self._in(wt, "diff", "--cached", "--quiet", "--no-ext-diff", check=False)).code != 0:
            await self._in(wt, "commit", "-q", "--no-verify", "-m", message)
        return await self.head(wt)

    async def rebase(self, wt: Worktree, onto: str, upstream: str) -> str:
        """Replay the commits after ``upstream`` onto ``onto``; RebaseConflict (aborted) when they do not apply."""
        result = await self._in(wt, "rebase", "-q", "--no-autostash", "--onto", onto, upstream, check=False)
        if result.code != 0:
            await self._in(wt, "rebase", "--abort", check=False)
            raise RebaseConflict(
                "the branch moved while the job ran and the job's commit does not apply on top of it: "
                + (result.err.strip() or result.out.strip())[-300:]
            )
        return await self.head(wt)

    def task_path(self, wt: Worktree, task_file: str) -> Path:
        """The task file's absolute path; ``TaskFileRefused`` unless it is a regular file inside the work tree and
        outside ``.git`` once symlinks are resolved (a symlink or a directory on the branch is only seen here)."""
        root = wt.path.resolve()
        candidate = (wt.path / task_file).resolve()
        if not candidate.is_relative_to(root):
            raise TaskFileRefused(f"task file {task_file!r} points outside the work tree")
        if ".git" in (part.lower() for part in candidate.relative_to(root).parts):
            raise TaskFileRefused(f"task file {task_file!r} points into .git/")
        if not candidate.exists():
            raise TaskFileRefused(f"task file {task_file!r} is not on the branch")
        if not candidate.is_file():
            raise TaskFileRefused(f"task file {task_file!r} is not a regular file")
        return wt.path / task_file


def _restore_git_file(wt: Worktree) -> None:
    """The worktree's ``.git`` file as git wrote it (an agent may have replaced it), so ``worktree move`` finds it."""
    dot_git = wt.path / ".git"
    with contextlib.suppress(OSError):
        if dot_git.is_dir() and not dot_git.is_symlink():
            shutil.rmtree(dot_git)
        elif dot_git.exists() or dot_git.is_symlink():
            dot_git.unlink()
        dot_git.write_text(f"gitdir: {wt.git_dir}\n")


def _seal(git_dir: Path) -> None:
    """The worktree's administrative files in the mirror 0755/0644, whatever the umask: the agent, in the
    workspaces' group on the host, must not change what the service's git reads there (as for the mirror itself)."""
    for folder, _dirs, files in os.walk(git_dir):
        with contextlib.suppress(OSError):
            os.chmod(folder, 0o755)
        for name in files:
            target = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                if not os.path.islink(target):
                    os.chmod(target, 0o644)


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _read_only_for_others(path: Path, *, stop: Path) -> None:
    """Create ``path`` (and parents up to ``stop``) as 0755, so no group member can rename what is inside."""
    missing = []
    current = path
    while current != stop and not current.exists():
        missing.append(current)
        current = current.parent
    path.mkdir(parents=True, exist_ok=True)
    for directory in missing:
        directory.chmod(0o755)


def _refusal(porcelain: str) -> str | None:
    """The status git gave the refused ref in ``push --porcelain`` output (``[remote rejected] (failed to lock)``)."""
    for line in porcelain.splitlines():
        flag, _, rest = line.partition("\t")
        if flag == "!":
            return rest.partition("\t")[2].strip() or "refused"
    return None


def _remote_said(stderr: str, limit: int = 400) -> str:
    """The remote's own explanation (its ``remote: error: …`` lines first), on one line."""
    lines = [line.removeprefix("remote:").strip() for line in stderr.splitlines() if line.startswith("remote:")]
    lines = [line for line in lines if line]
    errors = [line for line in lines if line.startswith(("error:", "fatal:"))]
    return " ".join(errors or lines)[:limit]
