"""The local forge: bare repositories under ``AIPM_LOCAL_FORGE_DIR`` (``owner/name.git``) and their pull requests,
comments and labels in SQLite there (``forge.sqlite``) — GitHub's part for ``make run`` and tests.

Owns that directory. Git goes through ``gitcmd`` (real git, argument lists); refs move only with compare-and-swap
``update-ref``, and one open pull request per head branch is a unique index, so two calls at once see
"already exists" exactly as they would on GitHub. Also builds the example repository ``local/example``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from aipm_local.forge.gitcmd import IDENTITY, GitError, git, objects, ref_sha
from lambda_fn.forge.base import AlreadyExists, Comment, Conflict, ForgeError, NoCommits, NotFound, PullRequest, Repo
from lambda_fn.naming import valid_repo

DB_NAME = "forge.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pulls (
    repo TEXT NOT NULL, number INTEGER NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL,
    head TEXT NOT NULL, base TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'open', merged INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (repo, number));
CREATE UNIQUE INDEX IF NOT EXISTS one_open_pull_per_head ON pulls (repo, head) WHERE state = 'open';
CREATE TABLE IF NOT EXISTS comments (
    id INTEGER PRIMARY KEY AUTOINCREMENT, repo TEXT NOT NULL, number INTEGER NOT NULL, body TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS labels (
    repo TEXT NOT NULL, number INTEGER NOT NULL, name TEXT NOT NULL, PRIMARY KEY (repo, number, name));
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class LocalForge:
    kind = "local"

    def __init__(self, forge_dir: Path, *, public_url: str | None = None):
        self.root = Path(forge_dir)
        self.public_url = (public_url or "").rstrip("/")
        self._init_lock = threading.Lock()
        self._ready = False

    # --- storage -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _db(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        if not self._ready:
            with self._init_lock:
                if not self._ready:
                    self.root.mkdir(parents=True, exist_ok=True)
                    with contextlib.closing(sqlite3.connect(self.root / DB_NAME, timeout=30)) as conn:
                        conn.execute("PRAGMA journal_mode=WAL")
                        conn.executescript(_SCHEMA)
                    self._ready = True
        conn = sqlite3.connect(self.root / DB_NAME, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            if write:
                conn.execute("BEGIN IMMEDIATE")
            yield conn
            if write:
                conn.execute("COMMIT")
        except BaseException:
            if write and conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def _locate(self, repo: str) -> tuple[str, Path]:
        """Canonical ``owner/name`` and the bare repository's path, matched case-insensitively."""
        if not valid_repo(repo):
            raise ForgeError(f"{repo!r} is not a repository name of the form owner/name", status=400)
        owner, name = repo.lower().split("/", 1)
        if self.root.is_dir():
            for owner_dir in sorted(self.root.iterdir()):
                if owner_dir.is_dir() and owner_dir.name.lower() == owner:
                    for repo_dir in sorted(owner_dir.glob("*.git")):
                        if repo_dir.name[:-4].lower() == name:
                            return f"{owner_dir.name}/{repo_dir.name[:-4]}", repo_dir
        raise NotFound(f"repository {repo} does not exist in the local forge ({self.root})")

    def _key(self, repo: str) -> str:
        return self._locate(repo)[0].lower()

    def web_url(self, full_name: str, suffix: str = "") -> str:
        return f"{self.public_url}/forge/{full_name}{suffix}"

    # --- repository, branches, files ------------------------------------------------------------------------

    def get_repo(self, repo: str) -> Repo:
        full_name, path = self._locate(repo)
        head = git(path, "symbolic-ref", "--quiet", "--short", "HEAD", ok=(0, 1)).strip() or "main"
        return Repo(full_name=full_name, default_branch=head, html_url=self.web_url(full_name))

    def branch_sha(self, repo: str, branch: str) -> str | None:
        return ref_sha(self._locate(repo)[1], f"refs/heads/{branch}")

    def create_branch(self, repo: str, branch: str, sha: str) -> None:
        path = self._locate(repo)[1]
        # An empty old value makes update-ref refuse when the ref exists: atomic create.
        try:
            git(path, "update-ref", f"refs/heads/{branch}", sha, "")
        except GitError as exc:
            if ref_sha(path, f"refs/heads/{branch}"):
                raise AlreadyExists(f"branch {branch} already exists in {repo}") from exc
            raise ForgeError(f"could not create branch {branch} in {repo}: {exc}") from exc

    def get_file(self, repo: str, branch: str, path: str) -> tuple[str, str] | None:
        repo_dir = self._locate(repo)[1]
        blob = git(repo_dir, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}:{path}", ok=(0, 1, 128)).strip()
        if not blob:
            return None
        return git(repo_dir, "cat-file", "blob", blob), blob

    def put_file(self, repo: str, branch: str, path: str, text: str, message: str, *, blob_sha: str | None) -> str:
        repo_dir = self._locate(repo)[1]
        parent, current = objects(repo_dir, f"refs/heads/{branch}", f"refs/heads/{branch}:{path}")
        if parent is None:
            raise NotFound(f"branch {branch} does not exist in {repo}")
        if current != blob_sha:
            raise Conflict(f"{path} on {branch} changed meanwhile")
        # One git process writes the blob, the tree and the commit and moves the branch, which it does only if the
        # commit contains the branch's tip by then: a branch moved meanwhile is refused (exit 1), never overwritten.
        stream = b"".join([
            f"commit refs/heads/{branch}\nmark :1\n".encode(),
            f"committer {IDENTITY['name']} <{IDENTITY['email']}> {int(time.time())} +0000\n".encode(),
            _data(message.encode()), f"from {parent}\n".encode(),
            f"M 100644 inline {_quoted(path)}\n".encode(), _data(text.encode()), b"\nget-mark :1\n",
        ])
        try:
            return git(repo_dir, "fast-import", "--quiet", input=stream).strip()
        except GitError as exc:
            if exc.returncode == 1 and "Not updating" in exc.stderr:
                raise Conflict(f"{branch} moved while {path} was being committed") from exc
            raise

    # --- pull requests ---------------------------------------------------------------------------------------

    def _pull(self, conn: sqlite3.Connection, full_name: str, row: sqlite3.Row) -> PullRequest:
        labels = [r["name"] for r in conn.execute(
            "SELECT name FROM labels WHERE repo = ? AND number = ? ORDER BY name", (row["repo"], row["number"]))]
        return PullRequest(
            number=row["number"], state=row["state"], merged=bool(row["merged"]), head=row["head"], base=row["base"],
            title=row["title"], html_url=self.web_url(full_name, f"/pull/{row['number']}"), labels=tuple(labels),
        )

    def pulls_for_branch(self, repo: str, branch: str) -> list[PullRequest]:
        full_name = self._locate(repo)[0]
        with self._db() as conn:
            rows = conn.execute(
                "SELECT * FROM pulls WHERE repo = ? AND head = ? ORDER BY number DESC", (full_name.lower(), branch)
            ).fetchall()
            return [self._pull(conn, full_name, row) for row in rows]

    def list_pulls(self, repo: str, state: str = "all") -> list[dict]:
        full_name = self._locate(repo)[0]
        with self._db() as conn:
            rows = conn.execute("SELECT * FROM pulls WHERE repo = ? ORDER BY number DESC", (full_name.lower(),))
            pulls = [(row, self._pull(conn, full_name, row)) for row in rows.fetchall()]
        return [
            {**_pull_json(pr), "created_at": row["created_at"], "updated_at": row["updated_at"]}
            for row, pr in pulls if state == "all" or pr.state == state
        ]

    def open_pull(self, repo: str, *, head: str, base: str, title: str, body: str) -> PullRequest:
        full_name, path = self._locate(repo)
        for ref, sha in zip((head, base), objects(path, f"refs/heads/{head}", f"refs/heads/{base}"), strict=True):
            if sha is None:
                raise ForgeError(f"branch {ref} does not exist in {full_name}", status=409)
        if git(path, "rev-list", "--count", f"refs/heads/{base}..refs/heads/{head}", "--").strip() == "0":
            raise NoCommits(f"no pull request can be opened from {head} to {base} in {full_name}: "
                            f"{head} has no commits over {base}")
        key, now = full_name.lower(), _now()
        try:
            with self._db(write=True) as conn:
                number = conn.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM pulls WHERE repo = ?", (key,)).fetchone()[0]
                conn.execute(
                    "INSERT INTO pulls (repo, number, title, body, head, base, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (key, number, title, body, head, base, now, now))
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"a pull request for {head} is already open in {full_name}") from exc
        return self.get_pull(repo, number)

    def get_pull(self, repo: str, number: int) -> PullRequest:
        full_name = self._locate(repo)[0]
        with self._db() as conn:
            row = conn.execute("SELECT * FROM pulls WHERE repo = ? AND number = ?", (full_name.lower(), number)).fetchone()
            if row is None:
                raise NotFound(f"pull request #{number} does not exist in {full_name}")
            return self._pull(conn, full_name, row)

    def pull_body(self, repo: str, number: int) -> str:
        self.get_pull(repo, number)
        with self._db() as conn:
            row = conn.execute("SELECT body FROM pulls WHERE repo = ? AND number = ?", (self._key(repo), number)).fetchone()
            return row["body"]

    def close_pull(self, repo: str, number: int, *, merged: bool = False) -> PullRequest:
        """Close (or merge into its base, with a merge commit) a pull request, as a person would on GitHub."""
        pr = self.get_pull(repo, number)
        if merged:
            self._merge(repo, pr)
        with self._db(write=True) as conn:
            conn.execute(
                "UPDATE pulls SET state = 'closed', merged = ?, updated_at = ? WHERE repo = ? AND number = ?",
                (int(merged), _now(), self._key(repo), number))
        return self.get_pull(repo, number)

    def _merge(self, repo: str, pr: PullRequest) -> None:
        path = self._locate(repo)[1]
        base, head = ref_sha(path, f"refs/heads/{pr.base}"), ref_sha(path, f"refs/heads/{pr.head}")
        if base is None or head is None:
            raise ForgeError(f"pull request #{pr.number} cannot be merged: {pr.base} or {pr.head} is gone", status=409)
        try:
            tree = git(path, "merge-tree", "--write-tree", base, head).splitlines()[0].strip()
        except GitError as exc:
            raise ForgeError(f"pull request #{pr.number} cannot be merged: {pr.head} conflicts with {pr.base}",
                             status=409) from exc
        commit = git(path, "commit-tree", tree, "-p", base, "-p", head,
                     "-m", f"Merge pull request #{pr.number} from {pr.head}").strip()
        try:
            git(path, "update-ref", f"refs/heads/{pr.base}", commit, base)
        except GitError as exc:
            raise ForgeError(f"{pr.base} moved while pull request #{pr.number} was being merged", status=409) from exc

    # --- comments and labels ---------------------------------------------------------------------------------

    def list_comments(self, repo: str, number: int) -> list[Comment]:
        self.get_pull(repo, number)
        with self._db() as conn:
            rows = conn.execute(
                "SELECT id, body FROM comments WHERE repo = ? AND number = ? ORDER BY id", (self._key(repo), number))
            return [Comment(id=r["id"], body=r["body"]) for r in rows]

    def create_comment(self, repo: str, number: int, body: str) -> Comment:
        self.get_pull(repo, number)
        now = _now()
        with self._db(write=True) as conn:
            cur = conn.execute(
                "INSERT INTO comments (repo, number, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (self._key(repo), number, body, now, now))
            return Comment(id=cur.lastrowid, body=body)

    def update_comment(self, repo: str, comment_id: int, body: str) -> Comment:
        with self._db(write=True) as conn:
            cur = conn.execute(
                "UPDATE comments SET body = ?, updated_at = ? WHERE id = ? AND repo = ?",
                (body, _now(), comment_id, self._key(repo)))
            if cur.rowcount == 0:
                raise NotFound(f"comment {comment_id} does not exist in {repo}")
        return Comment(id=comment_id, body=body)

    def delete_comment(self, repo: str, comment_id: int) -> None:
        with self._db(write=True) as conn:
            conn.execute("DELETE FROM comments WHERE id = ? AND repo = ?", (comment_id, self._key(repo)))

    def permission(self, repo: str, login: str) -> str:
        """One person owns a local forge: whoever comments there may change it."""
        self.get_repo(repo)
        return "admin"

    def add_labels(self, repo: str, number: int, labels: list[str]) -> None:
        self.get_pull(repo, number)
        with self._db(write=True) as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO labels (repo, number, name) VALUES (?, ?, ?)",
                [(self._key(repo), number, label) for label in labels])

    def remove_label(self, repo: str, number: int, label: str) -> None:
        with self._db(write=True) as conn:
            conn.execute("DELETE FROM labels WHERE repo = ? AND number = ? AND name = ?", (self._key(repo), number, label))

    def commit_url(self, repo: Repo, sha: str) -> str:
        return self.web_url(repo.full_name, f"/commit/{sha}")

    # --- what the forge pages show ---------------------------------------------------------------------------

    def commits(self, repo: str, base: str, head: str, limit: int = 100) -> list[dict]:
        path = self._locate(repo)[1]
        out = git(path, "log", f"--max-count={limit}", "--format=%H%x1f%an%x1f%aI%x1f%s",
                  f"refs/heads/{base}..refs/heads/{head}", "--", ok=(0, 128))
        return [dict(zip(("sha", "author", "date", "subject"), line.split("\x1f"), strict=False))
                for line in out.splitlines() if line]

    def diff(self, repo: str, base: str, head: str, max_bytes: int = 1_000_000) -> str:
        path = self._locate(repo)[1]
        out = git(path, "diff", "--no-color", "--no-ext-diff", f"refs/heads/{base}...refs/heads/{head}", "--",
                  ok=(0, 128))
        return out if len(out) <= max_bytes else out[:max_bytes] + "\n… (diff truncated)\n"

    def show_commit(self, repo: str, sha: str) -> str:
        path = self._locate(repo)[1]
        return git(path, "show", "--no-color", "--no-ext-diff", "--format=fuller", sha, "--", ok=(0,))[:1_000_000]


def _data(content: bytes) -> bytes:
    """A ``git fast-import`` data block: its exact length, then the bytes."""
    return b"data %d\n" % len(content) + content + b"\n"


def _quoted(path: str) -> str:
    """A path as ``git fast-import`` reads it: C-style quoted, so spaces, quotes and non-ASCII arrive intact."""
    escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _pull_json(pr: PullRequest) -> dict:
    return {"number": pr.number, "state": pr.state, "merged": pr.merged, "head": pr.head, "base": pr.base,
            "title": pr.title, "html_url": pr.html_url, "labels": list(pr.labels)}


# --- the example repository ---------------------------------------------------------------------------------

_EXAMPLE_FILES = {
    "README.md": (
        "# example\n\nA small Python project for trying AIPM's Generate Code & PR on the local forge.\n\n"
        "Run the tests with `python -m pytest`.\n"
    ),
    "pyproject.toml": (
        '[project]\nname = "example"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n\n'
        '[tool.pytest.ini_options]\ntestpaths = ["tests"]\npythonpath = ["."]\n'
    ),
    "example/__init__.py": '"""A small example package."""\n\nfrom example.calc import add\n\n__all__ = ["add"]\n',
    "example/calc.py": (
        '"""Arithmetic helpers."""\n\n\ndef add(a: int, b: int) -> int:\n    """The sum of ``a`` and ``b``."""\n'
        "    return a + b\n"
    ),
    "tests/__init__.py": "",
    "tests/test_calc.py": (
        "from example.calc import add\n\n\ndef test_add_sums_two_numbers():\n    assert add(2, 3) == 5\n\n\n"
        "def test_add_handles_negatives():\n    assert add(-2, 2) == 0\n"
    ),
    ".gitignore": "__pycache__/\n.pytest_cache/\n",
    # The tests the PR processor runs on the agent's commit (the result comment's "Tests" row).
    ".aipm.toml": '[tests]\ncommand = "python -m pytest -q -p no:cacheprovider"\ntimeout_s = 120\n',
}


def ensure_example_repo(forge_dir: Path | str) -> Path:
    """Create ``<forge_dir>/local/example.git`` (default branch ``main``) unless it exists; returns its path.

    Safe to call on every start and from two processes at once: the repository is built aside and renamed in.
    """
    target = Path(forge_dir).expanduser().absolute() / "local" / "example.git"
    if (target / "HEAD").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".example-", dir=target.parent) as tmp:
        work, bare = Path(tmp) / "work", Path(tmp) / "example.git"
        work.mkdir()
        for rel, text in _EXAMPLE_FILES.items():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).write_text(text)
        git(work, "init", "--quiet", "--initial-branch=main")
        git(work, "add", "--all")
        git(work, "commit", "--quiet", "-m", "Example project: add() with its tests")
        git(Path(tmp), "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
        git(work, "push", "--quiet", str(bare), "main:refs/heads/main")
        try:
            os.rename(bare, target)
        except OSError:
            if not (target / "HEAD").exists():
                raise
            shutil.rmtree(bare, ignore_errors=True)
    return target
