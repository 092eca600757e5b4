"""What the API writes for people and for the agent: TASK.md and the pull request's body.

Owns the wording. User text is put in as given (it is the story); nothing here reads or writes a forge.
"""

from __future__ import annotations

TASK_FILE = "TASK.md"

AGENT_INSTRUCTIONS = (
    "Work only inside this repository; do not read or change anything outside it.",
    "Keep the change focused on this task: no unrelated refactoring, renaming or reformatting.",
    "Add or update tests that show each acceptance criterion is met, and make sure the whole test suite passes.",
    "Do not edit or delete this TASK.md file.",
    "Never put secrets, tokens or credentials in the code, the tests or a commit message.",
)


def inline_code(text: str) -> str:
    """``text`` as one inline code span that nothing in it can break out of."""
    return "`" + " ".join(text.replace("`", "'").split()) + "`"


def _criteria(criteria: list[str]) -> str:
    items = [" ".join(c.split()) for c in criteria if c.strip()]
    return "\n".join(f"- [ ] {item}" for item in items) if items else "_No acceptance criteria were given._"


def render_task(*, title: str, description: str, acceptance_criteria: list[str], story_id: str | None,
                branch: str, job_id: str) -> str:
    """TASK.md: title, the run it belongs to, description, acceptance criteria as a checklist, the agent's instructions.

    The run line (branch and job) makes each run's TASK.md its own: a story run again after its pull request was
    merged starts from a main that already holds the earlier TASK.md, and without a change there would be no commit
    for the new pull request (GitHub refuses one whose head has no commits over its base)."""
    story = f"Story: {inline_code(story_id)} · " if story_id else ""
    rules = "\n".join(f"{i}. {rule}" for i, rule in enumerate(AGENT_INSTRUCTIONS, 1))
    return (
        f"# {' '.join(title.split())}\n\n"
        f"_{story}Branch: {inline_code(branch)} · Job: {inline_code(job_id)}_\n\n"
        f"## Description\n\n{description.strip() or '_No description was given._'}\n\n"
        f"## Acceptance criteria\n\n{_criteria(acceptance_criteria)}\n\n"
        f"## Instructions for the agent\n\n{rules}\n"
    )


def render_pr_body(
    *,
    description: str,
    acceptance_criteria: list[str],
    story_id: str | None,
    job_id: str,
    ui_url: str | None,
    requested_by: str | None,
) -> str:
    """The pull request's body: the story, a link back to the UI, the job id and who asked."""
    lines = [
        "This pull request was opened by **AIPM Generate Code & PR**. A coding agent implements "
        f"`{TASK_FILE}` on this branch and reports back here in a comment.",
        "",
        "## Story",
        "",
        description.strip() or "_No description was given._",
        "",
        "## Acceptance criteria",
        "",
        _criteria(acceptance_criteria),
        "",
        "---",
        "",
        f"- Job: `{job_id}`",
    ]
    if story_id:
        lines.append(f"- Story: {inline_code(story_id)}")
    if requested_by:
        lines.append(f"- Requested by: {inline_code(requested_by)}")
    if ui_url:
        lines.append(f"- [Open in AIPM]({ui_url}#/jobs/{job_id})")  # the job's page: transcript, timeline, re-run
    return "\n".join(lines) + "\n"
