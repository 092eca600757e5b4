"""Forges: where repositories, branches, pull requests, comments and labels live (GitHub, or the local forge).

``make_forge`` picks the one the settings name; everything else speaks the ``Forge`` protocol of ``base``.
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
