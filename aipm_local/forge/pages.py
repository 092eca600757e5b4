"""The local forge, seen through the API: pull request pages (``/forge/{owner}/{name}/pull/{n}``) and JSON.

Included by the local stack's app (``aipm_local.api``), never by the Lambda's; a local pull request's ``pr_url``
points here, so the UI works without GitHub. The pages are Jinja2 templates (``templates/``, autoescape on): every
value is HTML-escaped, and a pull request's body and comments go through the ``markdown`` filter
(``aipm_local.forge.markdown``: raw HTML escaped, HTML comments hidden). The pulls list, and merge and close buttons that
POST JSON (the same-origin guard's rule) from the one inline script the page's CSP allows by its nonce.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from pydantic import BaseModel, Field

from aipm_common.bounds import INT32_MAX
from aipm_local.forge.local import LocalForge
from aipm_local.forge.markdown import render
from lambda_fn.auth import Caller, current_caller
from lambda_fn.naming import valid_repo
from lambda_fn.routes.deps import callback_url, require_json, runtime
from lambda_fn.runtime import Runtime

_SHA_RE = re.compile(r"^[0-9a-fA-F]{7,64}$")

_env = Environment(loader=FileSystemLoader(FilePath(__file__).parent / "templates"), autoescape=True,
                   undefined=StrictUndefined)
_env.filters["markdown"] = lambda text: Markup(render(text))  # render() escapes raw HTML itself
templates = Jinja2Templates(env=_env)


class NewComment(BaseModel):
    body: str = Field(min_length=1, max_length=65_536)


def _page(request: Request, template: str, title: str, *, scripts: tuple[str, ...] = (), **context) -> HTMLResponse:
    """``template`` under the page's CSP: no script at all, or only the page's own (``scripts``) by a fresh nonce."""
    nonce = secrets.token_urlsafe(16)
    csp = "default-src 'none'; style-src 'unsafe-inline'"
    if scripts:
        csp += f"; script-src 'nonce-{nonce}'; connect-src 'self'"
    return templates.TemplateResponse(request, template, {"title": title, "nonce": nonce, "scripts": scripts, **context},
                                      headers={"Content-Security-Policy": csp})


def diff_lines(diff: str) -> list[tuple[str, str]]:
    """Each line of a diff with its class on the page: ``add``, ``del``, ``hunk`` or none."""
    return [("add" if line.startswith("+") else "del" if line.startswith("-") else "hunk" if line.startswith("@@")
             else "", line) for line in diff.splitlines()]


def local_forge(request: Request) -> LocalForge:
    """The app's forge, which is the local one whenever these routes are included."""
    forge = runtime(request).forge
    if not isinstance(forge, LocalForge):
        raise HTTPException(404, "the local forge's pages are served only with the local forge")
    return forge


Forge = Annotated[LocalForge, Depends(local_forge)]
router = APIRouter(tags=["local forge"])


def repo_name(forge: LocalForge, owner: str, name: str) -> str:
    repo = f"{owner}/{name}"
    if not valid_repo(repo):
        raise HTTPException(400, "repository must be owner/name")
    return forge.get_repo(repo).full_name


def pull_view(forge: LocalForge, repo: str, number: int) -> dict:
    pr = forge.get_pull(repo, number)
    return {
        "number": pr.number, "title": pr.title, "state": pr.state, "merged": pr.merged, "head": pr.head,
        "base": pr.base, "html_url": pr.html_url, "labels": list(pr.labels), "body": forge.pull_body(repo, number),
        "commits": forge.commits(repo, pr.base, pr.head),
        "comments": [{"id": c.id, "body": c.body} for c in forge.list_comments(repo, number)],
        "diff": forge.diff(repo, pr.base, pr.head),
    }


def end_pull(forge: LocalForge, owner: str, name: str, number: int, *, merged: bool) -> dict:
    repo = repo_name(forge, owner, name)
    pr = forge.get_pull(repo, number)
    if not pr.is_open:
        raise HTTPException(409, f"pull request #{number} is already {'merged' if pr.merged else 'closed'}")
    pr = forge.close_pull(repo, number, merged=merged)
    return {"number": pr.number, "state": pr.state, "merged": pr.merged}


@router.get("/api/forge/repos")
def list_repos(caller: Annotated[Caller, Depends(current_caller)], forge: Forge):
    repos = []
    if forge.root.is_dir():
        for owner in sorted(p for p in forge.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            repos += [f"{owner.name}/{r.name[:-4]}" for r in sorted(owner.glob("*.git")) if (r / "HEAD").exists()]
    return {"repos": repos}


@router.get("/api/forge/{owner}/{name}/pulls")
def list_pulls(owner: str, name: str, caller: Annotated[Caller, Depends(current_caller)], forge: Forge,
               state: str = "all"):
    if state not in ("all", "open", "closed"):
        raise HTTPException(400, "state must be all, open or closed")
    return {"pulls": forge.list_pulls(repo_name(forge, owner, name), state)}


@router.get("/api/forge/{owner}/{name}/pulls/{number}")
def show_pull(owner: str, name: str, number: Annotated[int, Path(ge=1, le=INT32_MAX)],
              caller: Annotated[Caller, Depends(current_caller)], forge: Forge):
    return pull_view(forge, repo_name(forge, owner, name), number)


@router.post("/api/forge/{owner}/{name}/pulls/{number}/comments", status_code=201,
             dependencies=[Depends(require_json)])
def add_comment(owner: str, name: str, number: Annotated[int, Path(ge=1, le=INT32_MAX)], comment: NewComment,
                request: Request, caller: Annotated[Caller, Depends(current_caller)], forge: Forge,
                rt: Annotated[Runtime, Depends(runtime)]):
    """A comment; one starting with AIPM_FOLLOWUP_PREFIX is also a follow-up (``lambda_fn.followup``, as a
    GitHub webhook's): ``followup`` is ``{"started": job_id}`` or ``{"ignored": why}``, answered in the thread too."""
    from lambda_fn.followup import FollowUp, FollowUps, parse

    repo = repo_name(forge, owner, name)
    forge.get_pull(repo, number)
    made = forge.create_comment(repo, number, comment.body)
    text = parse(comment.body, rt.settings.aipm_followup_prefix)
    if text is None:
        return {"comment_id": made.id, "followup": None}
    follow_up = FollowUp(repo=repo, number=number, comment_id=made.id, author=caller.requested_by or "local",
                         text=text)
    started = FollowUps(rt.forge, rt.processor, rt.queue).start(follow_up, callback_url=callback_url(request, rt))
    return {"comment_id": made.id, "followup": started}


@router.post("/api/forge/{owner}/{name}/pulls/{number}/merge", dependencies=[Depends(require_json)])
def merge_pull(owner: str, name: str, number: Annotated[int, Path(ge=1, le=INT32_MAX)],
               caller: Annotated[Caller, Depends(current_caller)], forge: Forge):
    """Merge into its base with a merge commit (409 when it conflicts or has ended), as on GitHub."""
    return end_pull(forge, owner, name, number, merged=True)


@router.post("/api/forge/{owner}/{name}/pulls/{number}/close", dependencies=[Depends(require_json)])
def close_pull(owner: str, name: str, number: Annotated[int, Path(ge=1, le=INT32_MAX)],
               caller: Annotated[Caller, Depends(current_caller)], forge: Forge):
    return end_pull(forge, owner, name, number, merged=False)


@router.get("/forge/{owner}/{name}/pull/{number}", response_class=HTMLResponse)
def pull_page(owner: str, name: str, number: Annotated[int, Path(ge=1, le=INT32_MAX)], request: Request,
              caller: Annotated[Caller, Depends(current_caller)], forge: Forge,
              rt: Annotated[Runtime, Depends(runtime)]):
    repo = repo_name(forge, owner, name)
    pr = pull_view(forge, repo, number)
    state = "merged" if pr["merged"] else pr["state"]
    return _page(request, "pull.html", f"{pr['title']} · {repo}#{number}",
                 scripts=("actions.js", "comment.js") if state == "open" else (),
                 repo=repo, pr=pr, state=state, diff_lines=diff_lines(pr["diff"]),
                 followup_prefix=rt.settings.aipm_followup_prefix)


@router.get("/forge/{owner}/{name}/commit/{sha}", response_class=HTMLResponse)
def commit_page(owner: str, name: str, sha: str, request: Request, caller: Annotated[Caller, Depends(current_caller)],
                forge: Forge):
    repo = repo_name(forge, owner, name)
    if not _SHA_RE.fullmatch(sha):
        raise HTTPException(400, "not a commit sha")
    try:
        shown = forge.show_commit(repo, sha)
    except Exception as exc:
        raise HTTPException(404, f"commit {sha} not found in {repo}") from exc
    return _page(request, "commit.html", f"{sha[:10]} · {repo}", repo=repo, sha=sha, diff_lines=diff_lines(shown))


@router.get("/forge/{owner}/{name}/pulls", response_class=HTMLResponse)
def pulls_page(owner: str, name: str, request: Request, caller: Annotated[Caller, Depends(current_caller)],
               forge: Forge, state: str = "open"):
    """The pull requests, open ones by default as on GitHub (``?state=closed`` or ``all`` for the others)."""
    if state not in ("all", "open", "closed"):
        raise HTTPException(400, "state must be all, open or closed")
    repo = repo_name(forge, owner, name)
    counts = {s: len(forge.list_pulls(repo, s)) for s in ("open", "closed")}
    return _page(request, "pulls.html", f"Pull requests · {repo}", repo=repo, state=state, counts=counts,
                 pulls=forge.list_pulls(repo, state))


@router.get("/forge/{owner}/{name}", response_class=HTMLResponse)
def repo_page(owner: str, name: str, request: Request, caller: Annotated[Caller, Depends(current_caller)],
              forge: Forge):
    repo = repo_name(forge, owner, name)
    return _page(request, "repo.html", repo, repo=repo, pulls=forge.list_pulls(repo))
