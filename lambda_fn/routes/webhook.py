"""``POST /api/github/webhook``: GitHub's ``issue_comment`` deliveries, for follow-ups from a pull request.

GitHub signs each delivery with the webhook's secret (``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw
body>``); a missing or wrong signature is 401, and so is a comment older than ``STALE_S`` (a captured delivery sent
again). Only a new comment on a pull request whose text starts with ``AIPM_FOLLOWUP_PREFIX`` does anything
(``lambda_fn.followup``); every other delivery is answered 200 ``{"ignored": why}``, so GitHub does not retry it.
Without a webhook secret the route answers 404: nothing can be triggered on a deployment that did not ask for it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from datetime import datetime
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from lambda_fn import naming
from lambda_fn.followup import FollowUp, FollowUps, parse
from lambda_fn.routes.deps import callback_url, runtime
from lambda_fn.runtime import Runtime

log = logging.getLogger(__name__)

STALE_S = 600
MAX_BODY = 1 << 20


def verify(secret: bytes, body: bytes, header: str | None) -> None:
    if not header or not header.startswith("sha256="):
        raise HTTPException(401, "X-Hub-Signature-256 is missing: GitHub signs every delivery with the webhook secret")
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, header.strip()):
        raise HTTPException(401, "X-Hub-Signature-256 does not match the body: wrong webhook secret, or a changed body")


def _age_s(stamp: object) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        return time.time() - datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


router = APIRouter(prefix="/api/github", tags=["github"])


@router.post("/webhook")
async def github_webhook(request: Request, rt: Annotated[Runtime, Depends(runtime)]):
    secret = rt.webhook_secret
    if secret is None:
        raise HTTPException(404, "the GitHub webhook is not configured here (AIPM_GITHUB_WEBHOOK_SECRET[_ARN])")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(413, "a webhook delivery over 1 MiB")
    verify(secret, body, request.headers.get("x-hub-signature-256"))
    event = request.headers.get("x-github-event", "")
    if event == "ping":
        return {"ignored": "ping"}
    if event != "issue_comment":
        return {"ignored": f"event {event or '(none)'} is not a comment"}
    try:
        form = "application/x-www-form-urlencoded" in request.headers.get("content-type", "")
        delivery = json.loads(parse_qs(body.decode())["payload"][0] if form else body)
        comment, issue = delivery["comment"], delivery["issue"]
        repo = delivery["repository"]["full_name"]
        action, text, author = delivery.get("action"), comment.get("body") or "", comment["user"]["login"]
        comment_id, number = int(comment["id"]), int(issue["number"])
    except (ValueError, KeyError, TypeError) as exc:
        raise HTTPException(400, f"not an issue_comment delivery GitHub sends: {type(exc).__name__}") from None
    age = _age_s(comment.get("created_at"))
    if age is None or age > STALE_S:
        raise HTTPException(401, f"stale delivery: the comment is older than {STALE_S} s (or has no created_at)")
    if action != "created":
        return {"ignored": f"comment {action}"}
    if not issue.get("pull_request"):
        return {"ignored": "a comment on an issue, not on a pull request"}
    if (comment.get("user") or {}).get("type") == "Bot":
        return {"ignored": "a comment by a bot"}
    follow_up_text = parse(text, rt.settings.aipm_followup_prefix)
    if follow_up_text is None:
        return {"ignored": f"the comment does not start with {rt.settings.aipm_followup_prefix.strip()!r}"}
    if not naming.valid_repo(repo) or not naming.repo_allowed(repo, rt.allowed_repos):
        return {"ignored": f"repository {repo} is not in AIPM_ALLOWED_REPOS"}
    follow_up = FollowUp(repo=repo, number=number, comment_id=comment_id, author=author, text=follow_up_text,
                         comment_url=comment.get("html_url") if isinstance(comment.get("html_url"), str) else None)
    followups = FollowUps(rt.forge, rt.processor, rt.queue)
    return await run_in_threadpool(followups.start, follow_up, callback_url=callback_url(request, rt))
