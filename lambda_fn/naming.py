"""Names docs/contracts.md fixes: slugs, branch names, job ids, and the repository-name rules.

Pure functions, no I/O: the same inputs give the same names in every Lambda container, which is what makes
a retry land on the same branch and job.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from aipm_common.contracts import JOB_ID_PATTERN

REPO_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
JOB_ID_RE = re.compile(JOB_ID_PATTERN)
BRANCH_PREFIX = "aipm/"
TITLE_SLUG_MAX = 40


def valid_repo(repo: str) -> bool:
    """``owner/name`` as GitHub allows it (``.`` and ``..`` are not names)."""
    return bool(REPO_RE.fullmatch(repo)) and repo.split("/", 1)[1] not in (".", "..") and not repo.endswith(".git")


def repo_allowed(repo: str, allow_list: list[str]) -> bool:
    """``AIPM_ALLOWED_REPOS`` (lower-cased entries ``owner/name`` or ``owner/*``); empty allows every repo."""
    if not allow_list:
        return True
    repo = repo.lower()
    owner = repo.split("/", 1)[0]
    return any(entry == repo or entry == f"{owner}/*" for entry in allow_list)


def slug(text: str, max_len: int | None = None) -> str:
    """Keeps ``[a-z0-9-]`` (lower-cased), collapses every other run to one ``-``; ``story`` when nothing is left."""
    out = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    out = re.sub(r"-{2,}", "-", out).strip("-")
    if max_len is not None:
        out = out[:max_len].rstrip("-")
    return out or "story"


def story_branch(story_id: str, n: int = 1) -> str:
    """``aipm/story-<slug>`` for the first pull request of a story, then ``-2``, ``-3``…"""
    base = f"{BRANCH_PREFIX}story-{slug(story_id)}"
    return base if n == 1 else f"{base}-{n}"


def title_branch(title: str, idempotency_key: str | None) -> str:
    """``aipm/<slug of title, ≤ 40>-<6 hex>``: the hex from the Idempotency-Key's hash, random without one."""
    suffix = hashlib.sha256(idempotency_key.encode()).hexdigest()[:6] if idempotency_key else secrets.token_hex(3)
    return f"{BRANCH_PREFIX}{slug(title, TITLE_SLUG_MAX)}-{suffix}"


def job_id(repo: str, branch: str) -> str:
    """``j-`` + the first 24 hex digits of SHA-256 of ``"{repo lower}:{branch}"`` (the PR processor's contract)."""
    return "j-" + hashlib.sha256(f"{repo.lower()}:{branch}".encode()).hexdigest()[:24]


_RERUN_SUFFIX = re.compile(r"-r\d{1,12}$")


def run_root(job: str) -> str:
    """The branch's first job id from the id of any of its runs: a re-run is ``<first job id>-r<n>``."""
    return _RERUN_SUFFIX.sub("", job)


def rerun_job_id(repo: str, branch: str, n: int) -> str:
    """The id of the ``n``-th run (n ≥ 2) of the branch's job."""
    return f"{job_id(repo, branch)}-r{n}"


_BRANCH_CHARS = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")


def valid_branch(name: str) -> bool:
    """The rules of ``git check-ref-format --branch`` for the characters docs/contracts.md allows (no git on Lambda)."""
    if not _BRANCH_CHARS.fullmatch(name) or name.startswith(("-", "/")) or name.endswith(("/", ".")):
        return False
    if ".." in name or "//" in name or name == "@":
        return False
    return all(part and not part.startswith(".") and not part.endswith(".lock") for part in name.split("/"))
