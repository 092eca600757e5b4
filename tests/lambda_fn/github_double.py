"""A GitHub double: the REST v3 endpoints the Lambda API uses, over real bare git repositories, on loopback.

Answers like GitHub does where the API depends on it: 401 "Bad credentials" without the right token, 404 for an
unknown repository, 422 "Reference already exists" / "A pull request already exists for …" / "No commits between
<base> and <head>", 422 when ``sha`` is missing for an existing file, 409 when a branch moved, ``full_name`` keeping
the owner's spelling. Faults (any status, body and headers — e.g. a rate limit) are injected per method and path,
and so are delays (to make calls overlap). Commits are made in a temporary clone and pushed, so refs move exactly as
git moves them; a merged pull request is merged into its base with a merge commit, as GitHub's merge button does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse, Response

GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "Octo Cat", "GIT_AUTHOR_EMAIL": "octo@example.com",
    "GIT_COMMITTER_NAME": "GitHub", "GIT_COMMITTER_EMAIL": "noreply@github.com",
}


def run_git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, timeout=60, check=False)


@dataclass
class Fault:
    method: str
    path: re.Pattern
    status: int
    body: dict
    headers: dict
    times: int


@dataclass
class RepoState:
    full_name: str
    path: Path
    default_branch: str
    next_number: itertools.count = field(default_factory=lambda: itertools.count(1))
    pulls: dict[int, dict] = field(default_factory=dict)


@dataclass
class Gather:
    method: str
    path: re.Pattern
    parties: int
    timeout: float
    arrived: int = 0
    all_here: asyncio.Event = field(default_factory=asyncio.Event)


class GitHubDouble:
    def __init__(self, root: Path, *, token: str = "ghp_testtoken0123456789abcdefghijklmnop"):
        self.token = token
        self.lock = threading.RLock()
        self.reset(root)
        self.app = self._build()

    def reset(self, root: Path) -> None:
        """Forget everything: a new test starts from an empty GitHub whose repositories live under ``root``."""
        with self.lock:
            self.root = root
            self.tokens = {self.token}
            self.repos: dict[str, RepoState] = {}
            self.comments: dict[int, dict] = {}
            self._comment_ids = itertools.count(1000)
            self.faults: list[Fault] = []
            self.delays: list[tuple[str, re.Pattern, float]] = []
            self.gathers: list[Gather] = []
            self.roles: dict[str, str] = {}  # login → role on every repository (collaborator permission API)
            self.requests: list[tuple[str, str]] = []
            # (method, path, start, end) of each answered request, perf_counter seconds: what ran at once.
            self.spans: list[tuple[str, str, float, float]] = []
            self.not_modified = 0  # 304 answers (not counted against GitHub's rate limit)
            self.app_key_public: str | None = None  # PEM of a GitHub App's public key, when one is configured
            self.app_id: str | None = None
            self.installation_tokens_made = 0
            self.installation_token_ttl = 3600.0

    # --- set-up and inspection (for tests) ---------------------------------------------------------------

    _templates: dict[tuple, Path] = {}  # bare repositories already built, copied for each test (git is slow to spawn)

    def add_repo(self, full_name: str, *, default_branch: str = "main", files: dict[str, str] | None = None) -> RepoState:
        path = self.root / f"{full_name}.git"
        path.parent.mkdir(parents=True, exist_ok=True)
        key = (full_name, default_branch, tuple(sorted((files or {}).items())))
        template = self._templates.get(key)
        if template is None or not template.exists():
            template = Path(tempfile.mkdtemp(prefix="github-double-template-")) / "repo.git"
            self._make_repo(template, full_name, default_branch, files)
            self._templates[key] = template
        shutil.copytree(template, path)
        state = RepoState(full_name=full_name, path=path, default_branch=default_branch)
        self.repos[full_name.lower()] = state
        return state

    @classmethod
    def drop_templates(cls) -> None:
        for template in cls._templates.values():
            shutil.rmtree(template.parent, ignore_errors=True)
        cls._templates.clear()

    @staticmethod
    def _make_repo(path: Path, full_name: str, default_branch: str, files: dict[str, str] | None) -> None:
        assert run_git("init", "-q", "--bare", f"--initial-branch={default_branch}", str(path)).returncode == 0
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            run_git("init", "-q", f"--initial-branch={default_branch}", cwd=work)
            for rel, text in (files or {"README.md": f"# {full_name}\n"}).items():
                (work / rel).parent.mkdir(parents=True, exist_ok=True)
                (work / rel).write_text(text)
            run_git("add", "-A", cwd=work)
            run_git("commit", "-q", "-m", "Initial commit", cwd=work)
            assert run_git("push", "-q", str(path), f"{default_branch}:{default_branch}", cwd=work).returncode == 0

    def inject(self, method: str, path_regex: str, status: int, body: dict | list | None = None,
               headers: dict | None = None, times: int = 1) -> None:
        self.faults.append(Fault(method.upper(), re.compile(path_regex), status,
                                 body if body is not None else {"message": "injected"}, headers or {}, times))

    def delay(self, method: str, path_regex: str, seconds: float) -> None:
        """Hold every matching request ``seconds`` before answering it (to make concurrent calls overlap)."""
        self.delays.append((method.upper(), re.compile(path_regex), seconds))

    def gather(self, method: str, path_regex: str, parties: int, timeout: float = 20) -> None:
        """Hold matching requests until ``parties`` of them have arrived (at most ``timeout`` s), then answer them all:
        calls that must overlap do, however slowly their senders run."""
        self.gathers.append(Gather(method.upper(), re.compile(path_regex), parties, timeout))

    def round_trips(self) -> tuple[int, int]:
        """(requests answered, sequential depth): the longest chain of requests each made after the one before it
        was answered — the round trips a caller waited for one after another."""
        spans = sorted(self.spans, key=lambda span: span[2])
        depth: list[int] = []
        for i, (_, _, start, _) in enumerate(spans):
            depth.append(1 + max((depth[j] for j in range(i) if spans[j][3] <= start), default=0))
        return len(spans), max(depth, default=0)

    def pulls(self, full_name: str) -> list[dict]:
        return sorted(self.repos[full_name.lower()].pulls.values(), key=lambda p: p["number"])

    def comments_on(self, full_name: str, number: int) -> list[dict]:
        with self.lock:
            snapshot = list(self.comments.values())
        return [c for c in sorted(snapshot, key=lambda c: c["id"])
                if c["repo"] == full_name.lower() and c["number"] == number]

    def branch_file(self, full_name: str, branch: str, path: str) -> str | None:
        out = run_git("--git-dir", str(self.repos[full_name.lower()].path), "show", f"refs/heads/{branch}:{path}")
        return out.stdout if out.returncode == 0 else None

    def branches(self, full_name: str) -> list[str]:
        out = run_git("--git-dir", str(self.repos[full_name.lower()].path), "for-each-ref", "--format=%(refname:short)",
                      "refs/heads/")
        return out.stdout.split()

    def commit_count(self, full_name: str, branch: str) -> int:
        out = run_git("--git-dir", str(self.repos[full_name.lower()].path), "rev-list", "--count", f"refs/heads/{branch}")
        return int(out.stdout.strip())

    def create_branch(self, full_name: str, branch: str, source: str = "main") -> None:
        """A branch made behind the API's back (a concurrent call, a person)."""
        git_dir = str(self.repos[full_name.lower()].path)
        assert run_git("--git-dir", git_dir, "branch", branch, source).returncode == 0

    def close_pull(self, full_name: str, number: int, *, merged: bool = False) -> None:
        """Close a pull request, or merge it into its base (a merge commit, as GitHub's merge button makes)."""
        repo = self.repos[full_name.lower()]
        pr = repo.pulls[number]
        if merged:
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp) / "w"
                assert run_git("clone", "-q", "--branch", pr["base"], str(repo.path), str(work)).returncode == 0
                merge = run_git("merge", "--no-ff", "-q", "-m", f"Merge pull request #{number} from {pr['head']}",
                                f"origin/{pr['head']}", cwd=work)
                assert merge.returncode == 0, merge.stderr
                assert run_git("push", "-q", "origin", f"HEAD:refs/heads/{pr['base']}", cwd=work).returncode == 0
        pr["state"] = "closed"
        pr["merged_at"] = datetime.now(UTC).isoformat() if merged else None

    # --- the HTTP app --------------------------------------------------------------------------------------

    def _build(self) -> FastAPI:  # noqa: C901 - one route per GitHub endpoint, kept together for reading
        app = FastAPI()
        double = self

        def err(status: int, message: str, errors: list | None = None) -> JSONResponse:
            body = {"message": message, "documentation_url": "https://docs.github.com/rest"}
            if errors:
                body["errors"] = errors
            return JSONResponse(body, status_code=status)

        @app.middleware("http")
        async def auth_and_faults(request: Request, call_next):
            path = request.url.path
            double.requests.append((request.method, path))
            start = time.perf_counter()
            try:
                return await answer(request, path, call_next)
            finally:
                double.spans.append((request.method, path, start, time.perf_counter()))

        async def answer(request: Request, path: str, call_next):
            with double.lock:
                for fault in double.faults:
                    if fault.times > 0 and fault.method == request.method and fault.path.search(path):
                        fault.times -= 1
                        return JSONResponse(fault.body, status_code=fault.status, headers=fault.headers)
                pause = sum(seconds for method, pattern, seconds in double.delays
                            if method == request.method and pattern.search(path))
                gathers = [g for g in double.gathers if g.method == request.method and g.path.search(path)]
                for waiting in gathers:
                    waiting.arrived += 1
                    if waiting.arrived >= waiting.parties:
                        waiting.all_here.set()
            if pause:
                await asyncio.sleep(pause)
            for waiting in gathers:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiting.all_here.wait(), waiting.timeout)
            if not path.startswith("/app/"):
                auth = request.headers.get("authorization", "")
                if not auth.startswith("Bearer ") or auth[7:] not in double.tokens:
                    return err(401, "Bad credentials")
            return await call_next(request)

        def repo_of(owner: str, name: str) -> RepoState | None:
            return double.repos.get(f"{owner}/{name}".lower())

        def git_dir(repo: RepoState, *args: str) -> subprocess.CompletedProcess:
            return run_git("--git-dir", str(repo.path), *args)

        def pull_json(repo: RepoState, pr: dict) -> dict:
            return {
                "number": pr["number"], "state": pr["state"], "title": pr["title"], "body": pr["body"],
                "html_url": f"https://github.example/{repo.full_name}/pull/{pr['number']}",
                "head": {"ref": pr["head"], "label": f"{repo.full_name.split('/')[0]}:{pr['head']}"},
                "base": {"ref": pr["base"]}, "merged_at": pr.get("merged_at"), "merged": bool(pr.get("merged_at")),
                "labels": [{"name": n} for n in sorted(pr["labels"])],
            }

        @app.post("/app/installations/{installation_id}/access_tokens")
        def installation_token(installation_id: str, request: Request):
            import jwt

            auth = request.headers.get("authorization", "")
            try:
                claims = jwt.decode(auth.removeprefix("Bearer "), double.app_key_public, algorithms=["RS256"])
            except Exception:
                return err(401, "A JSON web token could not be decoded")
            if str(claims.get("iss")) != double.app_id:
                return err(401, "Integration not found")
            with double.lock:
                double.installation_tokens_made += 1
                token = f"ghs_installation{double.installation_tokens_made:04d}abcdefghijklmnopqrstuv"
                double.tokens.add(token)
            expires = datetime.fromtimestamp(time.time() + double.installation_token_ttl, UTC).isoformat().replace("+00:00", "Z")
            return JSONResponse({"token": token, "expires_at": expires}, status_code=201)

        @app.get("/repos/{owner}/{name}")
        def get_repo(owner: str, name: str):
            repo = repo_of(owner, name)
            if repo is None:
                return err(404, "Not Found")
            return {"full_name": repo.full_name, "default_branch": repo.default_branch,
                    "html_url": f"https://github.example/{repo.full_name}"}

        @app.get("/repos/{owner}/{name}/git/ref/heads/{branch:path}")
        def get_ref(owner: str, name: str, branch: str):
            repo = repo_of(owner, name)
            out = git_dir(repo, "rev-parse", "--verify", "-q", f"refs/heads/{branch}") if repo else None
            if out is None or out.returncode != 0:
                return err(404, "Not Found")
            return {"ref": f"refs/heads/{branch}", "object": {"sha": out.stdout.strip(), "type": "commit"}}

        @app.post("/repos/{owner}/{name}/git/refs")
        def create_ref(owner: str, name: str, data: dict = Body(...)):
            repo = repo_of(owner, name)
            if repo is None:
                return err(404, "Not Found")
            out = git_dir(repo, "update-ref", data["ref"], data["sha"], "")
            if out.returncode != 0:
                if git_dir(repo, "rev-parse", "--verify", "-q", data["ref"]).returncode == 0:
                    return err(422, "Reference already exists")
                return err(422, "Object does not exist")
            return JSONResponse({"ref": data["ref"], "object": {"sha": data["sha"]}}, status_code=201)

        @app.get("/repos/{owner}/{name}/contents/{path:path}")
        def get_contents(owner: str, name: str, path: str, ref: str | None = None):
            repo = repo_of(owner, name)
            if repo is None:
                return err(404, "Not Found")
            spec = f"refs/heads/{ref or repo.default_branch}:{path}"
            blob = git_dir(repo, "rev-parse", "--verify", "-q", spec)
            if blob.returncode != 0:
                return err(404, "Not Found")
            content = subprocess.run(["git", "--git-dir", str(repo.path), "cat-file", "blob", blob.stdout.strip()],
                                     capture_output=True, env=GIT_ENV, check=True).stdout
            return {"type": "file", "path": path, "sha": blob.stdout.strip(),
                    "content": base64.encodebytes(content).decode(), "encoding": "base64"}

        @app.put("/repos/{owner}/{name}/contents/{path:path}")
        def put_contents(owner: str, name: str, path: str, data: dict = Body(...)):
            repo = repo_of(owner, name)
            if repo is None:
                return err(404, "Not Found")
            branch = data.get("branch") or repo.default_branch
            existing = git_dir(repo, "rev-parse", "--verify", "-q", f"refs/heads/{branch}:{path}")
            if existing.returncode == 0 and not data.get("sha"):
                return err(422, 'Invalid request.\n\n"sha" wasn\'t supplied.')
            if existing.returncode == 0 and data["sha"] != existing.stdout.strip():
                return err(409, f"{path} does not match {data['sha']}")
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp) / "w"
                if run_git("clone", "-q", "--branch", branch, str(repo.path), str(work)).returncode != 0:
                    return err(404, "Branch not found")
                (work / path).parent.mkdir(parents=True, exist_ok=True)
                (work / path).write_bytes(base64.b64decode(data["content"]))
                run_git("add", path, cwd=work)
                run_git("commit", "-q", "-m", data["message"], cwd=work)
                sha = run_git("rev-parse", "HEAD", cwd=work).stdout.strip()
                if run_git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=work).returncode != 0:
                    return err(409, f"is at {branch} but expected something else")
                shutil.rmtree(work, ignore_errors=True)
            return JSONResponse({"commit": {"sha": sha}, "content": {"path": path}},
                                status_code=200 if existing.returncode == 0 else 201)

        @app.get("/repos/{owner}/{name}/pulls")
        def list_pulls(request: Request, owner: str, name: str, head: str | None = None, state: str = "open"):
            repo = repo_of(owner, name)
            if repo is None:
                return err(404, "Not Found")
            out = []
            for pr in sorted(repo.pulls.values(), key=lambda p: -p["number"]):
                if head and f"{owner}:{pr['head']}".lower() != head.lower():
                    continue
                if state != "all" and pr["state"] != state:
                    continue
                out.append(pull_json(repo, pr))
            # Conditional reads as GitHub answers them: the same list again is a 304 with no body.
            etag = '"' + hashlib.sha1(json.dumps(out, sort_keys=True).encode()).hexdigest() + '"'
            if request.headers.get("if-none-match") == etag:
                double.not_modified += 1
                return Response(status_code=304, headers={"ETag": etag})
            return JSONResponse(out, headers={"ETag": etag})

        @app.post("/repos/{owner}/{name}/pulls")
        def create_pull(owner: str, name: str, data: dict = Body(...)):
            repo = repo_of(owner, name)
            if repo is None:
                return err(404, "Not Found")
            with double.lock:
                for pr in repo.pulls.values():
                    if pr["head"] == data["head"] and pr["state"] == "open":
                        return err(422, "Validation Failed", [{
                            "resource": "PullRequest", "code": "custom",
                            "message": f"A pull request already exists for {owner}:{data['head']}."}])
                for ref in (data["head"], data["base"]):
                    if git_dir(repo, "rev-parse", "--verify", "-q", f"refs/heads/{ref}").returncode != 0:
                        return err(422, "Validation Failed", [{"field": "head", "code": "invalid"}])
                ahead = git_dir(repo, "rev-list", "--count", f"refs/heads/{data['base']}..refs/heads/{data['head']}")
                if ahead.stdout.strip() == "0":
                    return err(422, "Validation Failed", [{
                        "resource": "PullRequest", "code": "custom",
                        "message": f"No commits between {data['base']} and {data['head']}"}])
                number = next(repo.next_number)
                repo.pulls[number] = {"number": number, "state": "open", "title": data["title"],
                                      "body": data.get("body") or "", "head": data["head"], "base": data["base"],
                                      "labels": set()}
                return JSONResponse(pull_json(repo, repo.pulls[number]), status_code=201)

        @app.get("/repos/{owner}/{name}/pulls/{number}")
        def get_pull(owner: str, name: str, number: int):
            repo = repo_of(owner, name)
            if repo is None or number not in repo.pulls:
                return err(404, "Not Found")
            return pull_json(repo, repo.pulls[number])

        @app.get("/repos/{owner}/{name}/collaborators/{login}/permission")
        def permission(owner: str, name: str, login: str):
            if repo_of(owner, name) is None:
                return err(404, "Not Found")
            role = double.roles.get(login, "read")  # GitHub: anyone may read a public repository
            legacy = {"maintain": "write", "triage": "read"}.get(role, role)
            return {"permission": legacy, "role_name": role, "user": {"login": login}}

        @app.get("/repos/{owner}/{name}/issues/{number}/comments")
        def list_comments(owner: str, name: str, number: int, request: Request, per_page: int = 30, page: int = 1):
            repo = repo_of(owner, name)
            if repo is None or number not in repo.pulls:
                return err(404, "Not Found")
            items = [{"id": c["id"], "body": c["body"]} for c in double.comments_on(repo.full_name, number)]
            chunk = items[(page - 1) * per_page: page * per_page]
            headers = {}
            if page * per_page < len(items):
                nxt = f"{request.url.path}?per_page={per_page}&page={page + 1}"
                headers["Link"] = f'<{str(request.base_url).rstrip("/")}{nxt}>; rel="next"'
            return JSONResponse(chunk, headers=headers)

        @app.post("/repos/{owner}/{name}/issues/{number}/comments")
        def create_comment(owner: str, name: str, number: int, data: dict = Body(...)):
            repo = repo_of(owner, name)
            if repo is None or number not in repo.pulls:
                return err(404, "Not Found")
            body = data["body"]
            if len(body) > 65536:
                return err(422, "Validation Failed", [{"message": "Body is too long (maximum is 65536 characters)"}])
            with double.lock:
                cid = next(double._comment_ids)
                double.comments[cid] = {"id": cid, "repo": repo.full_name.lower(), "number": number, "body": body}
            return JSONResponse({"id": cid, "body": body}, status_code=201)

        @app.patch("/repos/{owner}/{name}/issues/comments/{comment_id}")
        def update_comment(owner: str, name: str, comment_id: int, data: dict = Body(...)):
            repo = repo_of(owner, name)
            comment = double.comments.get(comment_id)
            if repo is None or comment is None or comment["repo"] != repo.full_name.lower():
                return err(404, "Not Found")
            comment["body"] = data["body"]
            return {"id": comment_id, "body": comment["body"]}

        @app.delete("/repos/{owner}/{name}/issues/comments/{comment_id}")
        def delete_comment(owner: str, name: str, comment_id: int):
            repo = repo_of(owner, name)
            with double.lock:
                comment = double.comments.get(comment_id)
                if repo is None or comment is None or comment["repo"] != repo.full_name.lower():
                    return err(404, "Not Found")
                del double.comments[comment_id]
            return Response(status_code=204)

        @app.post("/repos/{owner}/{name}/issues/{number}/labels")
        def add_labels(owner: str, name: str, number: int, data: dict = Body(...)):
            repo = repo_of(owner, name)
            if repo is None or number not in repo.pulls:
                return err(404, "Not Found")
            labels = repo.pulls[number]["labels"]
            labels.update(data["labels"])
            return [{"name": n} for n in sorted(labels)]

        @app.delete("/repos/{owner}/{name}/issues/{number}/labels/{label}")
        def remove_label(owner: str, name: str, number: int, label: str):
            repo = repo_of(owner, name)
            label = unquote(label)
            if repo is None or number not in repo.pulls or label not in repo.pulls[number]["labels"]:
                return err(404, "Label does not exist")
            repo.pulls[number]["labels"].discard(label)
            return Response(status_code=200, content=b"[]", media_type="application/json")

        return app
