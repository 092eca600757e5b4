"""The one small interface every forge implements, its value types and its errors.

Owns the vocabulary the API speaks to a forge: repository, branch, file, pull request, comment, label. A forge
raises only the errors below, each carrying the HTTP status the API answers and a message that says what failed;
it never puts a token in one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class ForgeError(Exception):
    """A forge call failed; ``status`` is what the API answers, ``detail`` says what failed and what to do."""

    status = 502

    def __init__(self, detail: str, *, status: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        self.headers = headers or {}


class NotFound(ForgeError):
    status = 404


class AlreadyExists(ForgeError):
    """A branch or pull request that a concurrent call created first: the caller reuses it."""

    status = 409


class Conflict(ForgeError):
    """A write lost a race (a file changed under us): the caller reads again."""

    status = 409


class NoCommits(ForgeError):
    """A pull request whose head has no commits over its base: GitHub refuses to open it (422 "No commits between")."""

    status = 409


class RateLimited(ForgeError):
    status = 503

    def __init__(self, detail: str, retry_after: int):
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})
        self.retry_after = retry_after


@dataclass(frozen=True)
class Repo:
    full_name: str  # canonical spelling (GitHub's full_name)
    default_branch: str
    html_url: str


@dataclass(frozen=True)
class PullRequest:
    number: int
    state: str  # "open" | "closed"
    merged: bool
    head: str
    base: str
    title: str
    html_url: str
    labels: tuple[str, ...] = field(default=())

    @property
    def is_open(self) -> bool:
        return self.state == "open"


@dataclass(frozen=True)
class Comment:
    id: int
    body: str


class Forge(Protocol):
    """What the API needs from a forge. ``repo`` is ``owner/name`` in any case; answers use ``full_name``."""

    kind: str

    def get_repo(self, repo: str) -> Repo: ...

    def branch_sha(self, repo: str, branch: str) -> str | None: ...

    def create_branch(self, repo: str, branch: str, sha: str) -> None:
        """Raises ``AlreadyExists`` when the branch is there already."""

    def get_file(self, repo: str, branch: str, path: str) -> tuple[str, str] | None:
        """``(text, blob sha)`` of ``path`` on ``branch``, or None."""

    def put_file(self, repo: str, branch: str, path: str, text: str, message: str, *, blob_sha: str | None) -> str:
        """Commit ``text`` at ``path``; ``blob_sha`` is the version replaced (None: new file). Returns the commit sha.

        Raises ``Conflict`` when the file changed (or appeared) meanwhile."""

    def pulls_for_branch(self, repo: str, branch: str) -> list[PullRequest]:
        """Every pull request (open or closed) whose head is ``branch`` in ``repo``, newest first."""

    def open_pull(self, repo: str, *, head: str, base: str, title: str, body: str) -> PullRequest:
        """Raises ``AlreadyExists`` when an open pull request for ``head`` is there already, ``NoCommits`` when
        ``head`` has nothing over ``base``."""

    def get_pull(self, repo: str, number: int) -> PullRequest: ...

    def list_comments(self, repo: str, number: int) -> list[Comment]: ...

    def create_comment(self, repo: str, number: int, body: str) -> Comment: ...

    def update_comment(self, repo: str, comment_id: int, body: str) -> Comment: ...

    def delete_comment(self, repo: str, comment_id: int) -> None:
        """A comment already gone is not an error."""

    def permission(self, repo: str, login: str) -> str:
        """The user's role on the repository: ``admin``, ``maintain``, ``write``, ``triage``, ``read`` or ``none``."""
        ...

    def add_labels(self, repo: str, number: int, labels: list[str]) -> None: ...

    def remove_label(self, repo: str, number: int, label: str) -> None:
        """Absent labels are not an error."""

    def commit_url(self, repo: Repo, sha: str) -> str: ...
