"""A local "forge" for the tests: bare repositories under one directory, reached as GIT_BASE_URL=file:///abs/forge."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_ENV = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Forge Human",
    "GIT_AUTHOR_EMAIL": "human@example.com",
    "GIT_COMMITTER_NAME": "Forge Human",
    "GIT_COMMITTER_EMAIL": "human@example.com",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
}


def git(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, env=_ENV, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr}")
    return result.stdout


@dataclass
class Commit:
    sha: str
    author: str
    email: str
    subject: str
    body: str


class Forge:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    @property
    def base_url(self) -> str:
        return f"file://{self.root}"

    def bare(self, repo: str) -> Path:
        return self.root / f"{repo}.git"

    def create_repo(self, repo: str, branches: tuple[str, ...] = ("aipm/story-1",), task: str = "# Add a greeting\n\n"
                    "Write hello.py.\n") -> None:
        bare = self.bare(repo)
        git("init", "--bare", "-q", "-b", "main", str(bare))
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            git("clone", "-q", str(bare), str(work))
            (work / "README.md").write_text("# example\n")
            git("add", "-A", cwd=work)
            git("commit", "-q", "-m", "initial", cwd=work)
            git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=work)
            for branch in branches:
                git("checkout", "-q", "-B", branch, "main", cwd=work)
                (work / "TASK.md").write_text(task)
                git("add", "-A", cwd=work)
                git("commit", "-q", "-m", f"Add TASK.md for {branch}", cwd=work)
                git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=work)

    def push_commit(self, repo: str, branch: str, files: dict[str, str], message: str = "human change") -> str:
        """Someone else moves ``branch``: clone, change, push. Returns the new tip."""
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            git("clone", "-q", "-b", branch, str(self.bare(repo)), str(work))
            for name, content in files.items():
                (work / name).write_text(content)
            git("add", "-A", cwd=work)
            git("commit", "-q", "-m", message, cwd=work)
            git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=work)
            return git("rev-parse", "HEAD", cwd=work).strip()

    def tip(self, repo: str, branch: str) -> str:
        return git("--git-dir", str(self.bare(repo)), "rev-parse", f"refs/heads/{branch}").strip()

    def log(self, repo: str, branch: str) -> list[Commit]:
        """Commits on ``branch``, newest first."""
        out = git("--git-dir", str(self.bare(repo)), "log", "--format=%H%x1f%an%x1f%ae%x1f%s%x1f%b%x1e", f"refs/heads/{branch}")
        commits = []
        for record in out.split("\x1e"):
            if record.strip():
                sha, author, email, subject, body = record.strip("\n").split("\x1f")
                commits.append(Commit(sha, author, email, subject, body))
        return commits

    def show(self, repo: str, rev: str, path: str) -> str:
        return git("--git-dir", str(self.bare(repo)), "show", f"{rev}:{path}")
