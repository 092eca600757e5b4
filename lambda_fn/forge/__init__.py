"""Forges: where repositories, branches, pull requests, comments and labels live (GitHub here; the local forge of
``make run`` and the tests is ``aipm_local.forge``, handed in by the local stack).

Everything speaks the ``Forge`` protocol of ``base``.
"""

from __future__ import annotations

from lambda_fn.forge.base import (
    AlreadyExists,
    Comment,
    Forge,
    ForgeError,
    NotFound,
    PullRequest,
    RateLimited,
    Repo,
)

__all__ = ["AlreadyExists", "Comment", "Forge", "ForgeError", "NotFound", "PullRequest", "RateLimited", "Repo"]
