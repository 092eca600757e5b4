"""The local forge, seen through the API: pull request pages (``/forge/{owner}/{name}/pull/{n}``) and JSON.

Included by the local stack's app (``aipm_local.api``), never by the Lambda's; a local pull request's ``pr_url`` points
here, so the UI works without GitHub. A pull request's body and comments are rendered from markdown
(``aipm_local.forge.markdown``: raw HTML escaped,
HTML comments hidden); every other value is HTML-escaped. The pulls list, and merge and close buttons that POST JSON
(the same-origin guard's rule) from the one inline script the page's CSP allows by its nonce.
"""

from __future__ import annotations

import html
import re
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from aipm_common.bounds import INT32_MAX
from aipm_local.forge.local import LocalForge
from aipm_local.forge.markdown import render
from lambda_fn.auth import Caller, current_caller
from lambda_fn.naming import valid_repo
from lambda_fn.routes.deps import callback_url, require_json, runtime
from lambda_fn.runtime import Runtime

_SHA_RE = re.compile(r"^[0-9a-fA-F]{7,64}$")

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:1000px;margin:2rem auto;padding:0 1rem;color:#1f2328}
h1{font-size:1.5rem}.meta{color:#59636e}.label{display:inline-block;border:1px solid #d1d9e0;border-radius:1em;
padding:0 .6em;margin-right:.3em;font-size:.85em}.state-open{color:#1a7f37}.state-closed{color:#cf222e}
pre{background:#f6f8fa;padding:1em;overflow:auto;border-radius:6px;white-space:pre-wrap}
.comment{border:1px solid #d1d9e0;border-radius:6px;margin:1em 0}.comment pre{margin:0}
.add{color:#1a7f37}.del{color:#cf222e}.hunk{color:#8250df}table{border-collapse:collapse}td{padding:.2em .8em .2em 0}
.markdown{border:1px solid #d1d9e0;border-radius:6px;padding:0 1em;margin:1em 0;overflow-wrap:anywhere}
.markdown table td,.markdown table th{border:1px solid #d1d9e0;padding:.3em .7em}.markdown code{background:#f6f8fa}
.actions button{font:inherit;padding:.3em .9em;margin-right:.5em;border-radius:6px;border:1px solid #d1d9e0;
background:#f6f8fa;cursor:pointer}.actions .merge{background:#1f883d;color:#fff;border-color:#1f883d}
.error{color:#cf222e}nav a,nav span{margin-right:1em}
"""

# Merge and close: a JSON POST (the API refuses a form's), then the page again, or the API's reason beside the buttons.
_ACTIONS_JS = """
for (const button of document.querySelectorAll("button[data-url]")) {
  button.addEventListener("click", async () => {
    const error = document.getElementById("action-error");
    button.disabled = true;
    const response = await fetch(button.dataset.url, {method: "POST", body: "{}", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json"}});
    if (response.ok) { window.location.reload(); return; }
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) {}
    error.textContent = `${button.textContent} failed: ${response.status} ${detail}`;
    button.disabled = false;
  });
}
"""


_COMMENT_JS = """
const form = document.getElementById("comment-form");
if (form) form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("comment-error");
  const button = form.querySelector("button");
  button.disabled = true;
  const response = await fetch(form.dataset.url, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "Accept": "application/json"},
    body: JSON.stringify({body: form.elements.body.value})});
  if (response.ok) { window.location.reload(); return; }
  let detail = response.statusText;
  try { detail = (await response.json()).detail || detail; } catch (e) {}
  error.textContent = `${response.status}: ${detail}`;
  button.disabled = false;
});
"""


class NewComment(BaseModel):
    body: str = Field(min_length=1, max_length=65_536)


def _page(title: str, body: str, *, script: str | None = None) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    tag = f"<script nonce={nonce}>{script}</script>" if script else ""
    csp = "default-src 'none'; style-src 'unsafe-inline'"
    if script:
        csp += f"; script-src 'nonce-{nonce}'; connect-src 'self'"
    return HTMLResponse(
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{_STYLE}</style></head>"
        f"<body>{body}{tag}</body></html>",
        headers={"Content-Security-Policy": csp},
    )


def _comment_form(api: str, prefix: str) -> str:
    e = html.escape
    return (f"<form id=comment-form data-url='{api}/comments'><label for=comment-body><b>Comment</b></label>"
            f"<textarea id=comment-body name=body rows=4 maxlength=65536 required style='width:100%;font:inherit'>"
            f"</textarea><p class=meta>Start with <code>{e(prefix)}</code> to ask the agent for a follow-up on this "
            "branch: the rest of the comment becomes the task.</p><button type=submit>Comment</button> "
            "<span id=comment-error class=error role=alert></span></form>")


def _pull_rows(repo: str, pulls: list[dict]) -> str:
    e = html.escape
    return "".join(
        f"<tr><td><a href='/forge/{e(repo)}/pull/{p['number']}'>#{p['number']}</a></td><td>{e(p['title'])}</td>"
        f"<td class=state-{e(p['state'])}>{'merged' if p['merged'] else e(p['state'])}</td>"
        f"<td><code>{e(p['head'])}</code></td></tr>" for p in pulls
    ) or "<tr><td class=meta>no pull requests</td></tr>"


def _diff_html(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        cls = "add" if line.startswith("+") else "del" if line.startswith("-") else "hunk" if line.startswith("@@") else ""
        text = html.escape(line)
        lines.append(f"<span class={cls}>{text}</span>" if cls else text)
    return "<pre>" + "\n".join(lines) + "</pre>"


def local_forge(request: Request) -> LocalForge:
    """The app's forge, which is the local one whenever these routes are included."""
    forge = runtime(request).forge
    if not isinstance(forge, LocalForge):
        raise HTTPException(404, "the local forge's pages are served only on the local forge")
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
def pull_page(owner: str, name: str, number: Annotated[int, Path(ge=1, le=INT32_MAX)],
              caller: Annotated[Caller, Depends(current_caller)], forge: Forge,
              rt: Annotated[Runtime, Depends(runtime)]):
    prefix = rt.settings.aipm_followup_prefix
    repo = repo_name(forge, owner, name)
    pr = pull_view(forge, repo, number)
    e = html.escape
    state = "merged" if pr["merged"] else pr["state"]
    labels = "".join(f"<span class=label>{e(label)}</span>" for label in pr["labels"]) or "<span class=meta>none</span>"
    commits = "".join(
        f"<tr><td><a href='/forge/{e(repo)}/commit/{e(c['sha'])}'><code>{e(c['sha'][:10])}</code></a></td>"
        f"<td>{e(c.get('subject', ''))}</td><td class=meta>{e(c.get('author', ''))}</td></tr>"
        for c in pr["commits"]) or "<tr><td class=meta>no commits yet</td></tr>"
    comments = "".join(f"<div class='comment markdown'>{render(c['body'])}</div>" for c in pr["comments"]) \
        or "<p class=meta>No comments yet: the result appears here when the job ends.</p>"
    api = f"/api/forge/{e(repo)}/pulls/{pr['number']}"
    actions = (f"<p class=actions><button type=button class=merge data-url='{api}/merge'>Merge pull request</button>"
               f"<button type=button class=close data-url='{api}/close'>Close pull request</button>"
               "<span id=action-error class=error role=alert></span></p>") if state == "open" else ""
    body = (
        f"<nav class=meta><a href='/forge/{e(repo)}'>{e(repo)}</a><a href='/forge/{e(repo)}/pulls'>Pull requests</a>"
        "<span>local forge</span></nav>"
        f"<h1>{e(pr['title'])} <span class=meta>#{pr['number']}</span></h1>"
        f"<p><b class=state-{e(pr['state'])} id=pr-state>{e(state)}</b> · <code>{e(pr['head'])}</code> → "
        f"<code>{e(pr['base'])}</code></p><p>Labels: {labels}</p>{actions}"
        f"<h2>Description</h2><div class='markdown description'>{render(pr['body'])}</div>"
        f"<h2>Commits</h2><table>{commits}</table>"
        f"<h2>Comments</h2>{comments}{_comment_form(api, prefix) if state == 'open' else ''}"
        f"<h2>Changes against {e(pr['base'])}</h2>{_diff_html(pr['diff']) if pr['diff'] else '<p class=meta>none</p>'}"
    )
    return _page(f"{pr['title']} · {repo}#{number}", body,
                 script=_ACTIONS_JS + _COMMENT_JS if state == "open" else None)


@router.get("/forge/{owner}/{name}/commit/{sha}", response_class=HTMLResponse)
def commit_page(owner: str, name: str, sha: str, caller: Annotated[Caller, Depends(current_caller)], forge: Forge):
    repo = repo_name(forge, owner, name)
    if not _SHA_RE.match(sha):
        raise HTTPException(400, "not a commit sha")
    try:
        shown = forge.show_commit(repo, sha)
    except Exception as exc:
        raise HTTPException(404, f"commit {sha} not found in {repo}") from exc
    return _page(f"{sha[:10]} · {repo}", f"<p class=meta><a href='/forge/{html.escape(repo)}'>{html.escape(repo)}</a></p>"
                 f"<h1>Commit <code>{html.escape(sha[:12])}</code></h1>{_diff_html(shown)}")


@router.get("/forge/{owner}/{name}/pulls", response_class=HTMLResponse)
def pulls_page(owner: str, name: str, caller: Annotated[Caller, Depends(current_caller)], forge: Forge,
               state: str = "open"):
    """The pull requests, open ones by default as on GitHub (``?state=closed`` or ``all`` for the others)."""
    if state not in ("all", "open", "closed"):
        raise HTTPException(400, "state must be all, open or closed")
    repo = repo_name(forge, owner, name)
    e = html.escape
    counts = {s: len(forge.list_pulls(repo, s)) for s in ("open", "closed")}
    tabs = "".join(f"<a href='/forge/{e(repo)}/pulls?state={s}'{' aria-current=page' if s == state else ''}>"
                   f"{s.capitalize()}{f' ({counts[s]})' if s in counts else ''}</a>" for s in ("open", "closed", "all"))
    return _page(f"Pull requests · {repo}",
                 f"<nav class=meta><a href='/forge/{e(repo)}'>{e(repo)}</a><span>local forge</span></nav>"
                 f"<h1>Pull requests</h1><nav class=tabs>{tabs}</nav>"
                 f"<table id=pulls>{_pull_rows(repo, forge.list_pulls(repo, state))}</table>")


@router.get("/forge/{owner}/{name}", response_class=HTMLResponse)
def repo_page(owner: str, name: str, caller: Annotated[Caller, Depends(current_caller)], forge: Forge):
    repo = repo_name(forge, owner, name)
    e = html.escape
    return _page(repo, f"<h1>{e(repo)}</h1><p class=meta>local forge</p>"
                 f"<h2><a href='/forge/{e(repo)}/pulls?state=all'>Pull requests</a></h2>"
                 f"<table>{_pull_rows(repo, forge.list_pulls(repo))}</table>")
