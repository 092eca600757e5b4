"""One comment per marker on a pull request — a job's result, a job's start problem — kept to one across containers.

Owns writing a marked comment (the marker is its first line, exactly). Two Lambda containers answering at once can
each find no comment and each create one, and no lock spans containers; so after a create the comments are read
again, the oldest marked one is kept with this write's text and every later one is deleted. All writers agree on
the oldest, and its creator always keeps it, so the pull request ends with exactly one, whatever the interleaving.
Never touches a comment whose first line is not the marker.
"""

from __future__ import annotations

from lambda_fn.forge.base import Comment, Forge


def marked(comments: list[Comment], marker: str) -> list[Comment]:
    """The comments whose first line is exactly ``marker``, oldest first."""
    return sorted((c for c in comments if c.body.split("\n", 1)[0].strip() == marker), key=lambda c: c.id)


def write_marked(forge: Forge, repo: str, number: int, marker: str, body: str, *,
                 only_if_present: bool = False) -> tuple[Comment | None, str]:
    """Make the one ``marker`` comment on #``number`` say ``body``: ``(comment, "created" | "updated" | "unchanged")``,
    or ``(None, "absent")`` when ``only_if_present`` and there is none."""
    found = marked(forge.list_comments(repo, number), marker)
    action = "unchanged"
    if not found:
        if only_if_present:
            return None, "absent"
        mine = forge.create_comment(repo, number, body)
        found = marked(forge.list_comments(repo, number), marker)
        if all(c.id != mine.id for c in found):  # a listing that lags behind our own write
            found = sorted([*found, mine], key=lambda c: c.id)
        if found[0].id == mine.id:
            action = "created"
    keep, later = found[0], found[1:]
    if keep.body != body:
        keep, action = forge.update_comment(repo, keep.id, body), "updated"
    for duplicate in later:
        forge.delete_comment(repo, duplicate.id)
    return keep, action
