"""The GitHub forge: REST v3 through ``GITHUB_API_URL`` (github.com or GitHub Enterprise) with one httpx client.

Owns talking to GitHub: authentication (a token, or a GitHub App installation token made from the app's key and
cached until near its expiry), rate limits (wait when the reset fits in the request's time, else a clear 503 with
``Retry-After``), transient failures (a few retries), and turning GitHub's answers into the forge errors of
``base`` with a message that says what failed and what to do. It never logs or returns a token.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

from aipm_common.logging import register_secret
from lambda_fn.deadline import can_wait
from lambda_fn.forge.base import (
    AlreadyExists,
    Comment,
    Conflict,
    ForgeError,
    NoCommits,
    NotFound,
    PullRequest,
    RateLimited,
    Repo,
)
from lambda_fn.httpclient import LazyClient

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

USER_AGENT = "aipm-kiro-lambda"
API_VERSION = "2022-11-28"
_TRANSIENT_RETRIES = 2
_ETAG_ENTRIES = 256  # pull-request lists kept for conditional reads, per container


class StaticToken:
    """A personal access token (or any token GitHub takes as a bearer)."""

    refreshable = False

    def __init__(self, token: str | None):
        self._token = token

    def __call__(self, client: httpx.Client) -> str | None:
        return self._token

    def invalidate(self) -> None:
        pass


class AppInstallationToken:
    """A GitHub App installation token: JWT (RS256, the app's private key) → ``POST /app/installations/{id}/access_tokens``."""

    refreshable = True
    REFRESH_BEFORE_S = 300

    def __init__(self, app_id: str, private_key: str, installation_id: str, *, clock: Callable[[], float] = time.time):
        self.app_id = app_id
        self._key = private_key
        self.installation_id = installation_id
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def app_jwt(self) -> str:
        import jwt  # only GitHub App set-ups pay for the crypto import

        now = int(self._clock())
        return jwt.encode({"iat": now - 60, "exp": now + 540, "iss": str(self.app_id)}, self._key, algorithm="RS256")

    def __call__(self, client: httpx.Client) -> str:
        with self._lock:
            if self._token and self._expires_at - self._clock() > self.REFRESH_BEFORE_S:
                return self._token
            import httpx

            path = f"/app/installations/{quote(str(self.installation_id), safe='')}/access_tokens"
            try:
                resp = client.post(path, headers={"Authorization": f"Bearer {self.app_jwt()}"})
            except httpx.HTTPError as exc:
                raise ForgeError(f"GitHub could not be reached to make an App installation token: {exc}") from exc
            if resp.status_code != 201:
                raise ForgeError(
                    f"GitHub refused to make an installation token for app {self.app_id}, installation "
                    f"{self.installation_id} ({resp.status_code} {_message(resp)}): check GITHUB_APP_ID, "
                    "GITHUB_APP_INSTALLATION_ID and the private key secret"
                )
            data = resp.json()
            self._token = data["token"]
            register_secret(self._token)
            self._expires_at = datetime.fromisoformat(data["expires_at"].replace("Z", "+00:00")).timestamp()
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None


def _message(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.reason_phrase
    if not isinstance(data, dict):
        return resp.reason_phrase
    message = str(data.get("message") or resp.reason_phrase)
    details = [str(e.get("message") or e.get("code")) for e in data.get("errors") or [] if isinstance(e, dict)]
    return f"{message}: {'; '.join(details)}" if details else message


def _rate_limit_wait(resp: httpx.Response, clock: Callable[[], float]) -> float | None:
    """Seconds to wait when ``resp`` says "rate limited", else None."""
    if resp.status_code not in (403, 429):
        return None
    retry_after = resp.headers.get("Retry-After")
    if retry_after and retry_after.strip().isdigit():
        return float(retry_after)
    if resp.headers.get("X-RateLimit-Remaining") == "0":
        reset = resp.headers.get("X-RateLimit-Reset", "")
        return max(0.0, float(reset) - clock()) + 1 if reset.isdigit() else 60.0
    if resp.status_code == 429 or "rate limit" in resp.text[:500].lower():
        return 60.0  # GitHub: a secondary limit without Retry-After means wait at least a minute
    return None


def _q(value: str) -> str:
    return quote(value, safe="/")


class _Tries:
    """What one call has spent: transient retries, rate-limit waits, and whether the token was refreshed."""

    def __init__(self) -> None:
        self.transient = 0
        self.limited = 0
        self.refreshed = False


def _raise_for_status(resp: httpx.Response, what: str) -> None:
    """The error for an answer no retry could fix (a 5xx, a 401 or a 403); other answers are the caller's."""
    if resp.status_code >= 500:
        raise ForgeError(f"GitHub failed while trying to {what} ({resp.status_code} {_message(resp)})")
    if resp.status_code == 401:
        raise ForgeError(
            f"GitHub rejected the credentials while trying to {what} (401 {_message(resp)}): "
            "set a valid GITHUB_TOKEN (or the secret GITHUB_TOKEN_SECRET_ARN names)"
        )
    if resp.status_code == 403:
        raise ForgeError(
            f"GitHub refused to {what} (403 {_message(resp)}): the token lacks the permission "
            "(contents, pull requests and issues: read and write)"
        )


class _DoneAlready(Exception):
    """A retried call found its effect already there (``found``): the first try was carried out."""

    def __init__(self, found):
        super().__init__("done already")
        self.found = found


class GitHubForge:
    kind = "github"
    concurrent = True  # one httpx.Client, safe across threads: independent calls of a click are made at once

    def __init__(
        self,
        api_url: str,
        token: StaticToken | AppInstallationToken,
        *,
        max_wait: float = 20.0,
        margin: float = 3.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.api_url = api_url.rstrip("/")
        self._token = token
        self._max_wait = max_wait
        self._margin = margin
        self._clock = clock
        self._sleep = sleep
        self._timeout = timeout
        self._client = LazyClient(self._new_client)
        # Conditional reads (ETag → If-None-Match): GitHub answers 304 to an unchanged list and does not count a 304
        # against the rate limit, so a job page polling its pull request every second costs nothing while it waits.
        self._etags: dict[tuple[str, str], tuple[str, list[PullRequest]]] = {}

    def _new_client(self) -> httpx.Client:
        import httpx

        return httpx.Client(
            base_url=self.api_url,
            timeout=httpx.Timeout(self._timeout, connect=5.0),
            headers={"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION,
                     "User-Agent": USER_AGENT},
            follow_redirects=True,  # a renamed or transferred repository answers 301 to its new API address
        )

    @property
    def client(self) -> httpx.Client:
        return self._client.get()

    def close(self) -> None:
        self._client.close()

    # --- the request loop --------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, what: str, done_already: Callable[[], object] | None = None,
                 extra_headers: dict[str, str] | None = None, **kwargs) -> httpx.Response:
        """One GitHub call with auth, rate-limit waits and transient retries; ``what`` names it in errors.

        A POST that timed out or got a 5xx may still have been carried out: ``done_already`` (for a call that is not
        idempotent) is asked before each retry, and what it finds ends the call as ``_DoneAlready``."""
        import httpx

        tries = _Tries()
        while True:
            if tries.transient and done_already is not None and (found := done_already()) is not None:
                raise _DoneAlready(found)
            headers = dict(extra_headers or {})
            token = self._token(self.client)
            if token:
                headers["Authorization"] = f"Bearer {token}"
            try:
                resp = self.client.request(method, path, headers=headers, **kwargs)
            except httpx.HTTPError as exc:
                if self._retry_transient(tries):
                    continue
                raise self._unreachable(exc, what) from exc
            if self._retry_rate_limited(resp, what, tries) or self._retry_status(resp, tries):
                continue
            _raise_for_status(resp, what)
            return resp

    def _retry_transient(self, tries: _Tries) -> bool:
        """True (after its back-off) for another try after a timeout, a network error or a 5xx."""
        if tries.transient < _TRANSIENT_RETRIES and self._may_wait(0.5 * 2**tries.transient):
            tries.transient += 1
            return True
        return False

    def _retry_rate_limited(self, resp: httpx.Response, what: str, tries: _Tries) -> bool:
        """True (after waiting) when ``resp`` is a rate limit worth waiting out; RateLimited when it is not."""
        wait = _rate_limit_wait(resp, self._clock)
        if wait is None:
            return False
        if tries.limited < 3 and self._may_wait(wait):
            tries.limited += 1
            log.warning("GitHub rate limit while trying to %s: waiting %.0f s", what, wait)
            return True
        raise RateLimited(
            f"GitHub's rate limit was reached while trying to {what}; it resets in about {int(wait)} s. "
            "Try again after Retry-After seconds.",
            retry_after=int(wait) + 1,
        )

    def _retry_status(self, resp: httpx.Response, tries: _Tries) -> bool:
        """True for another try after a 5xx (with back-off) or a first 401 with a token that can be refreshed."""
        if resp.status_code >= 500:
            return self._retry_transient(tries)
        if resp.status_code == 401 and self._token.refreshable and not tries.refreshed:
            self._token.invalidate()
            tries.refreshed = True
            return True
        return False

    def _unreachable(self, exc: httpx.HTTPError, what: str) -> ForgeError:
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            return ForgeError(f"GitHub did not answer in time while trying to {what}", status=504)
        return ForgeError(f"GitHub ({self.api_url}) could not be reached to {what}: {type(exc).__name__}")

    def _may_wait(self, seconds: float) -> bool:
        if not can_wait(seconds, margin=self._margin, max_wait=self._max_wait):
            return False
        self._sleep(seconds)
        return True

    # --- repository, branches, files --------------------------------------------------------------------------

    def get_repo(self, repo: str) -> Repo:
        resp = self._request("GET", f"/repos/{repo}", what=f"read repository {repo}")
        _expect(resp, 200, f"read repository {repo}",
                not_found=f"repository {repo} was not found on GitHub, or the token cannot see it")
        data = _json(resp, dict, what="read GitHub's answer")
        return Repo(full_name=data["full_name"], default_branch=data["default_branch"], html_url=data["html_url"])

    def branch_sha(self, repo: str, branch: str) -> str | None:
        resp = self._request("GET", f"/repos/{repo}/git/ref/heads/{_q(branch)}", what=f"read branch {branch}")
        if resp.status_code == 404:
            return None
        _expect(resp, 200, f"read branch {branch} of {repo}")
        data = _json(resp, dict, what="read GitHub's answer")
        return data["object"]["sha"]

    def create_branch(self, repo: str, branch: str, sha: str) -> None:
        what = f"create branch {branch} in {repo}"
        resp = self._request("POST", f"/repos/{repo}/git/refs", what=what, json={"ref": f"refs/heads/{branch}", "sha": sha})
        if resp.status_code == 422 and "already exists" in _message(resp).lower():
            raise AlreadyExists(f"branch {branch} already exists in {repo}")
        _expect(resp, 201, what,
                not_found=f"repository {repo} was not found on GitHub, or the token cannot write to it")

    def get_file(self, repo: str, branch: str, path: str) -> tuple[str, str] | None:
        resp = self._request("GET", f"/repos/{repo}/contents/{_q(path)}", what=f"read {path} on {branch}",
                             params={"ref": branch})
        if resp.status_code == 404:
            return None
        _expect(resp, 200, f"read {path} on {branch} of {repo}")
        data = _json(resp, dict, what="read GitHub's answer")
        if not isinstance(data, dict) or data.get("type") != "file":
            raise ForgeError(f"{path} on {branch} of {repo} is not a file", status=409)
        content, sha = data.get("content") or "", data.get("sha")
        try:
            if not isinstance(content, str) or not isinstance(sha, str):
                raise ValueError("no content or sha")
            return base64.b64decode(content, validate=False).decode("utf-8", "replace"), sha
        except (binascii.Error, ValueError) as exc:
            raise ForgeError(f"GitHub answered {path} on {branch} of {repo} with content it could not decode "
                             f"({exc}); nothing was changed: try again, and check GITHUB_API_URL if it persists") from exc

    def put_file(self, repo: str, branch: str, path: str, text: str, message: str, *, blob_sha: str | None) -> str:
        what = f"commit {path} to {branch} in {repo}"
        body = {"message": message, "content": base64.b64encode(text.encode()).decode(), "branch": branch}
        if blob_sha:
            body["sha"] = blob_sha
        resp = self._request("PUT", f"/repos/{repo}/contents/{_q(path)}", what=what, json=body)
        if resp.status_code == 409 or (resp.status_code == 422 and "sha" in _message(resp).lower()):
            raise Conflict(f"{path} on {branch} changed meanwhile")
        _expect(resp, (200, 201), what,
                not_found=f"branch {branch} of {repo} was not found while trying to commit {path}")
        return _json(resp, dict, what=what)["commit"]["sha"]

    # --- pull requests ----------------------------------------------------------------------------------------

    def pulls_for_branch(self, repo: str, branch: str) -> list[PullRequest]:
        owner = repo.split("/", 1)[0]
        key = (repo.lower(), branch)
        known = self._etags.get(key)
        resp = self._request("GET", f"/repos/{repo}/pulls", what=f"list pull requests of {branch}",
                             params={"head": f"{owner}:{branch}", "state": "all", "per_page": 100},
                             extra_headers={"If-None-Match": known[0]} if known else None)
        if resp.status_code == 304 and known:
            return list(known[1])
        _expect(resp, 200, f"list pull requests of {branch} in {repo}")
        pulls = [_pull(item) for item in _json(resp, list, what=f"list pull requests of {branch}")]
        # GitHub filters on head; keep the exact branch only, newest first.
        found = sorted((p for p in pulls if p.head == branch), key=lambda p: p.number, reverse=True)
        etag = resp.headers.get("ETag")
        if etag:
            self._etags.pop(key, None)
            self._etags[key] = (etag, found)
            while len(self._etags) > _ETAG_ENTRIES:  # the oldest first: a container serves few branches at once
                self._etags.pop(next(iter(self._etags)))
        return list(found)

    def open_pull(self, repo: str, *, head: str, base: str, title: str, body: str) -> PullRequest:
        what = f"open a pull request from {head} to {base} in {repo}"
        resp = self._request("POST", f"/repos/{repo}/pulls", what=what,
                             json={"title": title, "head": head, "base": base, "body": body, "maintainer_can_modify": True})
        message = _message(resp) if resp.status_code == 422 else ""
        if "already exists" in message.lower():
            raise AlreadyExists(f"a pull request for {head} is already open in {repo}")
        if "no commits between" in message.lower():
            raise NoCommits(f"GitHub refused to {what}: {head} has no commits over {base} (422 {message})")
        _expect(resp, 201, what)
        return _pull(_json(resp, dict, what="read a pull request"))

    def get_pull(self, repo: str, number: int) -> PullRequest:
        resp = self._request("GET", f"/repos/{repo}/pulls/{number}", what=f"read pull request #{number}")
        _expect(resp, 200, f"read pull request #{number} of {repo}",
                not_found=f"pull request #{number} was not found in {repo}")
        return _pull(_json(resp, dict, what="read a pull request"))

    # --- comments and labels ----------------------------------------------------------------------------------

    def list_comments(self, repo: str, number: int) -> list[Comment]:
        comments: list[Comment] = []
        path: str | None = f"/repos/{repo}/issues/{number}/comments"
        params: dict | None = {"per_page": 100}
        for _ in range(30):  # 3,000 comments: past that, the marker would be far too old to matter
            if path is None:
                break
            resp = self._request("GET", path, what=f"list comments of #{number}", params=params)
            if resp.status_code == 404:
                raise NotFound(f"pull request #{number} was not found in {repo}")
            _expect(resp, 200, f"list comments of #{number} in {repo}")
            items = _json(resp, list, what=f"list comments of #{number}")
            comments += [Comment(id=c["id"], body=c.get("body") or "") for c in items]
            nxt = resp.links.get("next", {}).get("url")
            path, params = (nxt, None) if nxt else (None, None)
        return comments

    def create_comment(self, repo: str, number: int, body: str) -> Comment:
        what = f"comment on #{number} in {repo}"

        def posted_already() -> Comment | None:
            # The first line of our comments is their marker; a retried POST would post the comment twice.
            first = body.split("\n", 1)[0]
            same = [c for c in self.list_comments(repo, number)
                    if c.body == body or (first.startswith("<!--") and c.body.split("\n", 1)[0] == first)]
            return same[-1] if same else None

        try:
            resp = self._request("POST", f"/repos/{repo}/issues/{number}/comments", what=what, json={"body": body},
                                 done_already=posted_already)
        except _DoneAlready as done:
            log.warning("%s: the first POST was not answered but the comment is there (%s); not posting it again",
                        what, done.found.id)
            return done.found
        _expect(resp, 201, what,
                not_found=f"pull request #{number} was not found in {repo}")
        data = _json(resp, dict, what="read GitHub's answer")
        return Comment(id=data["id"], body=data.get("body") or body)

    def update_comment(self, repo: str, comment_id: int, body: str) -> Comment:
        what = f"edit comment {comment_id} in {repo}"
        resp = self._request("PATCH", f"/repos/{repo}/issues/comments/{comment_id}", what=what, json={"body": body})
        _expect(resp, 200, what,
                not_found=f"comment {comment_id} was not found in {repo}")
        return Comment(id=comment_id, body=body)

    def delete_comment(self, repo: str, comment_id: int) -> None:
        what = f"delete comment {comment_id} in {repo}"
        resp = self._request("DELETE", f"/repos/{repo}/issues/comments/{comment_id}", what=what)
        if resp.status_code != 404:
            _expect(resp, 204, what)

    def permission(self, repo: str, login: str) -> str:
        what = f"read {login}'s permission on {repo}"
        resp = self._request("GET", f"/repos/{repo}/collaborators/{_q(login)}/permission", what=what)
        if resp.status_code == 404:
            return "none"
        _expect(resp, 200, what)
        data = _json(resp, dict, what=what)
        role = data.get("role_name") or data.get("permission") or "none"
        return role if isinstance(role, str) else "none"

    def add_labels(self, repo: str, number: int, labels: list[str]) -> None:
        what = f"label #{number} in {repo}"
        resp = self._request("POST", f"/repos/{repo}/issues/{number}/labels", what=what, json={"labels": labels})
        _expect(resp, 200, what)

    def remove_label(self, repo: str, number: int, label: str) -> None:
        what = f"remove label {label} from #{number} in {repo}"
        resp = self._request("DELETE", f"/repos/{repo}/issues/{number}/labels/{quote(label, safe='')}", what=what)
        if resp.status_code != 404:
            _expect(resp, (200, 204), what)

    def commit_url(self, repo: Repo, sha: str) -> str:
        return f"{repo.html_url}/commit/{sha}"


def _expect(resp: httpx.Response, ok: int | tuple[int, ...], what: str, not_found: str | None = None) -> None:
    """Raise the forge error for an answer outside ``ok``; ``not_found`` says what a 404 means here."""
    if resp.status_code not in ((ok,) if isinstance(ok, int) else ok):
        if resp.status_code == 404:
            raise NotFound(not_found or f"GitHub answered 404 while trying to {what}: {_message(resp)}")
        if resp.status_code == 422:
            # GitHub works and judged our request against the repository's state: not a failed dependency (502).
            raise ForgeError(f"GitHub refused to {what} as invalid for the repository's current state "
                             f"(422 {_message(resp)}); try again, and report it if it persists", status=409)
        raise ForgeError(f"GitHub refused to {what} ({resp.status_code} {_message(resp)})")


def _json(resp: httpx.Response, kind: type, *, what: str):
    """The answer's JSON when it is a ``kind``; anything else is GitHub (or a proxy) misbehaving: 502."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    if not isinstance(data, kind):
        raise ForgeError(f"GitHub answered something unexpected while trying to {what} (not a JSON {kind.__name__})")
    return data


def _pull(data: dict) -> PullRequest:
    return PullRequest(
        number=data["number"],
        state=data["state"],
        merged=bool(data.get("merged") or data.get("merged_at")),
        head=data["head"]["ref"],
        base=data["base"]["ref"],
        title=data.get("title") or "",
        html_url=data["html_url"],
        labels=tuple(label["name"] for label in data.get("labels") or []),
    )
