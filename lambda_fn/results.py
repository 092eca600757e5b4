"""The comment a finished job leaves on its pull request, and the label that says how it ended.

Owns the comment's format, its hidden marker (how a repeated callback finds the comment to edit) and the
neutralising of the agent's text: it goes in a code fence longer than any backtick run in it, with mentions,
HTML comments and secrets made harmless, so nothing the agent printed can ping people, inject markup or forge
the marker.
"""

from __future__ import annotations

import re

from aipm_common.logging import redact

IN_PROGRESS = "aipm:in-progress"
STATUS_LABELS = {
    "succeeded": "aipm:succeeded",
    "failed": "aipm:failed",
    "no_changes": "aipm:no-changes",
    "cancelled": "aipm:cancelled",
}
ALL_LABELS = (IN_PROGRESS, *STATUS_LABELS.values())
_HEADLINES = {
    "succeeded": "✅ The agent finished this task",
    "failed": "❌ The agent could not finish this task",
    "no_changes": "➖ The agent finished without changing anything",
    "cancelled": "⏹️ The job was cancelled",
}
TAIL_CHARS = 4000
TESTS_TAIL_CHARS = 2000
_ZWSP = "\u200b"


def job_marker(job_id: str) -> str:
    """The first line of the job's result comment: invisible on GitHub, stable across callbacks."""
    return f"<!-- aipm-job:{job_id} -->"


def dispatch_marker(job_id: str) -> str:
    """The first line of the "job was not started" comment."""
    return f"<!-- aipm-dispatch:{job_id} -->"


def neutralise(text: str) -> str:
    """Redacted, with mentions, HTML comments and tags made inert even outside a code block."""
    text = redact(text)
    text = re.sub(r"@(?=[A-Za-z0-9_-])", "@" + _ZWSP, text)
    text = text.replace("<", "<" + _ZWSP)
    return text


def fenced(text: str, lang: str = "text") -> str:
    """``text`` in a backtick fence longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 10:  # as the UI says it: "0.5 s", not "0s"
        return f"{max(0.0, seconds):.1f} s"
    seconds = round(seconds)
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else (f"{minutes}m {secs:02d}s" if minutes else f"{secs} s")


def render_result(
    *,
    job_id: str,
    status: str,
    commit: str | None,
    commit_url: str | None,
    duration_s: float | None,
    credits: float | None,
    attempts: int | None,
    error: str | None,
    output_tail: str | None,
    tests: dict | None = None,
    tokens: dict | None = None,
) -> str:
    """The result comment; ``commit`` must already be a validated hex sha."""
    rows = [
        ("Job", f"`{job_id}`"),
        ("Status", f"`{status}`"),
        ("Commit", f"[`{commit[:12]}`]({commit_url})" if commit and commit_url else (f"`{commit[:12]}`" if commit else "—")),
        ("Duration", _duration(duration_s)),
        ("Credits", f"{credits:g}" if credits is not None else "—"),
        ("Attempts", str(attempts) if attempts is not None else "—"),
    ]
    if tokens:
        rows.append(("Tokens", f"{tokens['input']:,} in / {tokens['output']:,} out"))
    if tests:
        rows.append(("Tests", _tests_cell(tests)))
    parts = [
        job_marker(job_id),
        f"### {_HEADLINES.get(status, status)}",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in rows),
    ]
    if error:
        parts += ["", "**Error**", "", fenced(neutralise(error[-TAIL_CHARS:]))]
    if tests and _tests_failed(tests) and tests.get("output_tail"):
        tail = tests["output_tail"][-TESTS_TAIL_CHARS:]
        parts += ["", f"**The tests' output** (last {len(tail)} characters)", "", fenced(neutralise(tail))]
    if output_tail:
        tail = output_tail[-TAIL_CHARS:]
        parts += ["", f"**The agent's answer** (last {len(tail)} characters)", "", fenced(neutralise(tail))]
    return "\n".join(parts) + "\n"


def _tests_failed(tests: dict) -> bool:
    return bool(tests.get("failed")) or bool(tests.get("timed_out")) or tests.get("exit_code") not in (0, None)


def _tests_cell(tests: dict) -> str:
    """``✅ 12 passed / 0 failed`` with the command, in a table cell (no pipe or newline from the data)."""
    summary = str(tests.get("summary") or "")
    mark = "⚠️" if summary.startswith("not run") else ("❌" if _tests_failed(tests) else "✅")
    command = re.sub(r"[`|\r\n]", " ", str(tests.get("command") or ""))[:120]
    text = neutralise(re.sub(r"[|\r\n]", " ", summary))
    return f"{mark} {text}" + (f" (`{command}`)" if command else "")


def render_not_started(*, job_id: str, reason: str) -> str:
    """The comment left when the PR processor could not be given the job."""
    return (
        f"{dispatch_marker(job_id)}\n"
        "### ⚠️ The job was not started\n\n"
        f"Job `{job_id}` could not be handed to the PR processor, so no agent is working on this pull request.\n\n"
        f"{fenced(neutralise(reason))}\n\n"
        "Click **Generate Code & PR** again for the same story to retry: this pull request and job are used again.\n"
    )


def render_started_late(*, job_id: str) -> str:
    """What the "not started" comment becomes once a retry has handed the job over."""
    return (
        f"{dispatch_marker(job_id)}\n"
        "### ▶️ The job has started\n\n"
        f"An earlier attempt could not hand job `{job_id}` to the PR processor; a retry did. "
        "The result will be posted here when the agent finishes.\n"
    )
