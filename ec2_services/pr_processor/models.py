"""The edge of the PR processor: the request body of ``POST /api/process-pr`` and every rule docs/contracts.md puts on it.

This is the one place where names that later reach git are checked (repo, branch, base branch, task file) and where a
callback URL is held against ``AIPM_CALLBACK_ORIGINS``. It runs nothing: the ref-name rules are those of
``git check-ref-format --branch`` written out for the allowed character set (a property test holds them to git's).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from aipm_common.contracts import JOB_ID_PATTERN, MAX_REF_LEN
from aipm_common.contracts import ProcessPrRequest as ProcessPrBody

JOB_ID_RE = re.compile(JOB_ID_PATTERN)
# GitHub's own rules for owner and repository names, plus no leading '-' or '.' anywhere git could see an option.
_OWNER_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")
_REF_CHARS_RE = re.compile(r"^[A-Za-z0-9._/-]+$")
BRANCH_PREFIX = "aipm/"
# requested_by: who asked, as the Lambda sends it — a name, or "Name <email>" (then a Co-authored-by trailer).
MAX_REQUESTED_BY = 200
_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
_REQUESTER_RE = re.compile(r"^(?P<name>[^<>]{1,100}?) <(?P<email>[^<>\s]{3,254})>$")


class InvalidInput(ValueError):
    """A rule of docs/contracts.md broken by the request: answered with 400 and this message as ``detail``."""


def ref_name_problem(name: str) -> str | None:
    """Why ``git check-ref-format --branch`` (or the contract's character set) refuses ``name``; None when it is fine."""
    if not name:
        return "is empty"
    if len(name) > MAX_REF_LEN:
        return f"is longer than {MAX_REF_LEN} characters"
    if name.startswith("-"):
        return "starts with '-'"
    if not _REF_CHARS_RE.fullmatch(name):
        return "has a character outside [A-Za-z0-9._/-]"
    if name == "HEAD":
        return "is HEAD"
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return "has an empty path component"
    if ".." in name:
        return "contains '..'"
    if name.endswith("."):
        return "ends with '.'"
    for part in name.split("/"):
        if part.startswith("."):
            return "has a component starting with '.'"
        if part.endswith(".lock"):
            return "has a component ending with '.lock'"
    return None


def check_repo(repo: str) -> str:
    owner, sep, name = repo.partition("/")
    if not sep or not _OWNER_RE.fullmatch(owner) or not _NAME_RE.fullmatch(name) or name.endswith(".git") or name in {".", ".."}:
        raise InvalidInput(f"repo must be 'owner/name' (GitHub's characters only), got {repo!r}")
    return repo


def check_branch(branch: str, field: str = "branch", *, aipm_only: bool = True) -> str:
    problem = ref_name_problem(branch)
    if problem:
        raise InvalidInput(f"{field} {branch!r} {problem}: not a valid branch name")
    if aipm_only and not branch.startswith(BRANCH_PREFIX):
        raise InvalidInput(f"{field} must start with '{BRANCH_PREFIX}' (the processor pushes nowhere else), got {branch!r}")
    if aipm_only and branch == BRANCH_PREFIX.rstrip("/"):
        raise InvalidInput(f"{field} needs a name after '{BRANCH_PREFIX}'")
    return branch


def check_task_file(path: str) -> str:
    """A relative path to a file of the work tree, never into ``.git`` (the work tree's ``.git`` is a pointer file the
    agent would be told to "implement"). Whether it is a regular file is known only after checkout (``git_ops``)."""
    if not path or path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path):
        raise InvalidInput(f"task_file must be a path relative to the repository, got {path!r}")
    parts = re.split(r"[/\\]", path)
    if any(part == ".." for part in parts):
        raise InvalidInput(f"task_file must not contain '..', got {path!r}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path) or len(path) > 1024:
        raise InvalidInput("task_file holds control characters or is over 1024 characters")
    if any(part.lower() == ".git" for part in parts):
        raise InvalidInput(f"task_file must name a file outside .git/, got {path!r}")
    if parts[-1] in ("", "."):
        raise InvalidInput(f"task_file must name a file, not a directory, got {path!r}")
    return path


def parse_requested_by(value: str) -> tuple[str, str | None]:
    """``"Ann <ann@example.com>"`` → ``("Ann", "ann@example.com")``; ``"ann"`` → ``("ann", None)``.

    Raises ``InvalidInput`` for anything that could break out of a commit trailer or a PR body line: control or
    line-separator characters, over ``MAX_REQUESTED_BY`` characters, angle brackets other than around one e-mail
    address of the usual shape, or nothing but blanks.
    """
    if len(value) > MAX_REQUESTED_BY:
        raise InvalidInput(f"requested_by is longer than {MAX_REQUESTED_BY} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c in "\u0085\u2028\u2029" for c in value):
        raise InvalidInput("requested_by holds control characters or line breaks")
    if not value.strip():
        raise InvalidInput("requested_by is blank")
    if "<" not in value and ">" not in value:
        return " ".join(value.split()), None
    match = _REQUESTER_RE.fullmatch(value)
    if not match or not match["name"].strip() or not _EMAIL_RE.fullmatch(match["email"]):
        raise InvalidInput("requested_by must be a name, or 'Name <email>' with one e-mail address")
    return " ".join(match["name"].split()), match["email"]


def url_origin(url: str) -> str | None:
    """``scheme://host[:port]`` of ``url``, or None when it has user info, no host, or odd characters."""
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return None
    host = parts.hostname
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}"


def check_callback_url(url: str, allowed_origins: list[str]) -> str:
    origin = url_origin(url)
    if origin is None:
        raise InvalidInput("callback_url must be an http(s) URL without user info")
    parts = urlsplit(url)
    loopback_http = parts.scheme == "http" and parts.hostname == "127.0.0.1"
    if parts.scheme != "https" and not loopback_http:
        raise InvalidInput("callback_url must use https (or http://127.0.0.1:PORT listed in AIPM_CALLBACK_ORIGINS)")
    if origin.lower() not in {o.lower() for o in allowed_origins}:
        raise InvalidInput(
            f"callback_url origin {origin!r} is not in AIPM_CALLBACK_ORIGINS"
            + ("" if allowed_origins else " (empty: no callbacks accepted)")
        )
    return url


class ProcessPrRequest(ProcessPrBody):
    """``POST /api/process-pr`` (aipm_common.contracts): field types are checked by pydantic (422), the contract's
    rules by ``validate_rules`` (400)."""

    def validate_rules(self, allowed_origins: list[str]) -> None:
        """Every rule of docs/contracts.md's bad-input list that is not a type error; raises ``InvalidInput``."""
        if not JOB_ID_RE.fullmatch(self.job_id):
            raise InvalidInput(f"job_id must match {JOB_ID_RE.pattern}")
        check_repo(self.repo)
        check_branch(self.branch)
        if self.base_branch is not None:
            check_branch(self.base_branch, "base_branch", aipm_only=False)
        check_task_file(self.task_file)
        if self.callback_url is not None:
            check_callback_url(self.callback_url, allowed_origins)
        if self.requested_by is not None:
            parse_requested_by(self.requested_by)


class RerunRequest(BaseModel):
    """``POST /api/jobs/{id}/rerun``'s optional body: who asked for the re-run (the rules of ``requested_by``)."""

    model_config = ConfigDict(extra="ignore")

    requested_by: str | None = Field(default=None, max_length=1024)
