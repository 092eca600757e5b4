"""Markdown as the local forge's pages show it: rendered by markdown-it-py like GitHub's (CommonMark, tables,
strikethrough), and safe to put on a page.

Owns the sanitising: raw HTML in the text is escaped, not rendered (``html`` off), so no tag or script an agent or a
story wrote reaches the page; HTML comments (the result comments' ``<!-- aipm-job:… -->`` markers) are removed first,
as GitHub hides them; links keep markdown-it's check (no ``javascript:``, ``vbscript:``, ``file:`` or non-image
``data:`` URLs) and open without a referrer. Imported only with the local forge (markdown-it-py is not in the Lambda
bundle).
"""

from __future__ import annotations

import re
from functools import cache

_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)


@cache
def _renderer():
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])

    def link_open(renderer, tokens, idx, options, env):
        tokens[idx].attrSet("rel", "nofollow noopener noreferrer")
        return renderer.renderToken(tokens, idx, options, env)

    md.add_render_rule("link_open", link_open)
    return md


def without_comments(text: str) -> str:
    """``text`` with every HTML comment removed (an unclosed one runs to the end, as in a browser)."""
    return _COMMENT.sub("", text)


def render(text: str) -> str:
    """Safe HTML for ``text``."""
    return _renderer().render(without_comments(text))
