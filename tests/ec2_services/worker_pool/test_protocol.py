"""One task through the service, end to end over real HTTP on loopback: the answer, approvals, cwd, environment,
"having trouble" retries. Tests taking ``server``/``pool_server`` run under both drivers; ``pty_server`` /
``pty_pool_server`` ones check what only the terminal has (echo, the coloured `> `, spinner, Credits, bare prompt)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kiro_double import replay_command


@pytest.fixture
def server(pool_server):
    return pool_server(double_args=("--credits", "0.37"))


@pytest.fixture
def pty_server(pty_pool_server):
    return pty_pool_server(double_args=("--credits", "0.37"))


def test_several_approvals_in_one_task_are_all_answered_and_counted(server):
    r = server.execute("Use three tools [[tool shell]] [[tool read]] [[tool grep]]", "t-approvals")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "completed"
    assert body["approvals"] == 3 and body["denials"] == 0
    assert body["worker_id"] == 1
    # How a tool use shows: the CLI's own line (PTY), the tool call's title (ACP).
    shown = "(using tool: {})" if server.driver == "pty" else "● Running {}"
    for tool in ("shell", "read", "grep"):
        assert shown.format(tool) in body["output"]
        assert f"Tool {tool} finished." in body["output"]
    assert "Allow this action" not in body["output"]
    # Neither a question (PTY: the idle prompt under it) nor a permission request ended the turn early.
    assert body["output"].endswith("Done.")


def test_output_leaves_out_echo_marker_spinner_prompts_and_credits(pty_server):
    body = pty_server.execute("Say hello [[say hello world]] [[tool shell]]", "t-clean").json()
    output = body["output"]
    assert output.splitlines()[0] == "Working on your message (1 lines)."
    assert "hello world" in output
    for leftover in ("Say hello", "Thinking", "[aipm]", "λ", "▸ Credits", "\x1b", "\r"):
        assert leftover not in output
    assert body["credits"] == 0.37
    assert body["duration_s"] > 0


def test_multi_line_prompt_is_sent_as_one_message(server):
    prompt = "first line\nsecond line\n\nfourth line [[say one message]]"
    body = server.execute(prompt, "t-multiline").json()
    assert body["status"] == "completed"
    assert body["output"].splitlines()[0] == "Working on your message (4 lines)."
    assert "first line" not in body["output"] and "fourth line" not in body["output"]


def test_the_answers_coloured_leading_gt_does_not_end_the_task(pty_server):
    # The double prints the coloured `> ` alone, pauses 0.6 s, then the text: a prompt look-alike on the screen.
    body = pty_server.execute("Trap [[slowmarker]] [[say after the trap]]", "t-marker").json()
    assert body["status"] == "completed"
    assert "this text follows the coloured marker after a pause" in body["output"]
    assert "after the trap" in body["output"]
    assert body["output"].endswith("Done.")


def test_a_literal_answer_line_starting_with_gt_is_kept_and_does_not_end_the_task(server):
    body = server.execute("Quote [[quote to be or not]] [[say still going]]", "t-quote").json()
    assert "> to be or not" in body["output"].splitlines()
    assert "still going" in body["output"]


def test_task_with_cwd_writes_its_file_there(server):
    workspace = server.root / "job-1"
    workspace.mkdir()
    body = server.execute("Create it [[write notes/hello.txt hi from the agent]]", "t-cwd", cwd=str(workspace)).json()
    assert body["status"] == "completed", body
    assert body["approvals"] == 1
    assert (workspace / "notes" / "hello.txt").read_text() == "hi from the agent\n"
    assert not (server.root / "notes").exists()


def test_no_context_is_carried_from_one_task_to_the_next(server):
    assert server.execute("Remember the word banana [[say noted]]", "t-ctx-1").json()["status"] == "completed"
    body = server.execute("What did I say? [[recall]]", "t-ctx-2").json()
    assert "I remember 0 earlier message(s) in this conversation" in body["output"]
    assert "banana" not in body["output"]


def test_agent_environment_has_none_of_the_services_secrets(pool_server, monkeypatch):
    monkeypatch.setenv("AIPM_SHARED_SECRET", "do-not-leak-0123456789")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_notarealtoken000000000000000000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "abc")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    server = pool_server()
    prompt = "[[env AIPM_SHARED_SECRET]] [[env GITHUB_TOKEN]] [[env AWS_SECRET_ACCESS_KEY]] [[env AWS_REGION]] [[env TERM]]"
    output = server.execute(prompt, "t-env").json()["output"]
    assert "AIPM_SHARED_SECRET is not set" in output
    assert "GITHUB_TOKEN is not set" in output
    assert "AWS_SECRET_ACCESS_KEY is not set" in output
    assert "AWS_REGION is set" in output
    assert "TERM is set" in output


def test_denied_tool_is_answered_n_and_counted(pool_server):
    server = pool_server(kiro_deny_tools="use_aws, shell")
    body = server.execute("[[tool use_aws]] [[tool read]] [[tool shell]]", "t-deny").json()
    assert body["status"] == "completed"
    assert (body["approvals"], body["denials"]) == (1, 2)
    assert "Tool use was rejected: use_aws" in body["output"]
    assert "Tool read finished." in body["output"]
    assert "Tool shell finished." not in body["output"]


def test_having_trouble_is_retried_and_then_succeeds(server):
    body = server.execute("Flaky [[trouble 2]] [[say finally]]", "t-trouble-ok").json()
    assert body["status"] == "completed"
    assert body["trouble_retries"] == 2
    assert "finally" in body["output"]
    assert "having trouble" not in body["output"]


def test_still_having_trouble_after_the_retries_is_503(pool_server):
    server = pool_server(kiro_trouble_retries=2)
    r = server.execute("Broken [[trouble 9]]", "t-trouble-bad")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "agent_error"
    assert body["trouble_retries"] == 2
    assert "having trouble" in body["output"]
    assert body["worker_id"] == 1 and "detail" in body and body["duration_s"] >= 0.1


def test_output_flood_is_bounded_and_the_log_condensed(pty_server, caplog):
    caplog.set_level("INFO", logger="ec2_services.worker_pool.agent")
    body = pty_server.execute("[[flood 30000]]", "t-flood").json()
    assert body["status"] == "completed"
    assert body["output"].endswith("Done.")
    assert len(body["output"]) <= 1_100_000
    assert "earlier lines omitted" in body["output"].splitlines()[0]
    agent_lines = [r.getMessage() for r in caplog.records if r.name == "ec2_services.worker_pool.agent"]
    assert any("lines omitted (output flood)" in line for line in agent_lines)
    assert len(agent_lines) < 3000


def test_a_bare_prompt_ends_the_task_only_after_a_quiet_period(pty_pool_server):
    server = pty_pool_server(double_args=("--bare-prompt",))
    body = server.execute("Trap [[slowmarker]] [[tool shell]] [[say the end]]", "t-bare").json()
    assert body["status"] == "completed"
    assert body["approvals"] == 1
    assert "this text follows the coloured marker after a pause" in body["output"]
    assert body["output"].endswith("Done.")
    # A bare `> ` could be the answer's first characters: it is believed only after the quiet period (0.3 s).
    assert body["duration_s"] >= 0.3 + 0.6


def test_a_tool_whose_name_cannot_be_read_is_denied_when_a_deny_list_is_set(pool_server):
    # PTY: no `(using tool: NAME)` line before the question; ACP: no tool name in the tool call's _meta.
    strict = pool_server(kiro_deny_tools="use_aws")
    body = strict.execute("[[tool -]] [[tool read]]", "t-unnamed").json()
    assert (body["approvals"], body["denials"]) == (1, 1)
    assert "Tool use was rejected: -" in body["output"]


def test_a_tool_whose_name_cannot_be_read_is_approved_without_a_deny_list(server):
    body = server.execute("[[tool -]]", "t-unnamed-ok").json()
    assert (body["approvals"], body["denials"]) == (1, 0)


def test_the_longest_prompt_is_typed_whole_without_blocking(server):
    prompt = ("lorem ipsum > dolor\n>\n" * 2900)[:65000] + "\nend [[say got the long one]]"
    assert len(prompt) <= 65536
    body = server.execute(prompt, "t-long", timeout_s=30).json()
    assert body["status"] == "completed", body
    assert body["output"].splitlines()[0] == f"Working on your message ({len(prompt.splitlines())} lines)."
    assert "got the long one" in body["output"]
    assert "lorem" not in body["output"]


# --- the real captures, replayed byte for byte -------------------------------------------------------------------

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "kiro"


def test_captured_answers_end_on_their_prompt_even_with_a_newline_after_it(pty_pool_server):
    """The captures are replayed as the agent's output: the start screen (Q's `[developer]>` prompt), then an answer
    that ends `[cao-workspace-expert] 22% λ > ` + newline (the prompt on the last non-blank line, the cursor's line
    blank), then one ending on the prompt itself. Both end their task at once, with the answer's text."""
    command = replay_command(FIXTURES / "kiro_cli_idle_output.txt", FIXTURES / "kiro_cli_permission_stale_answered.txt",
                             FIXTURES / "kiro_cli_completed_output.txt")
    server = pty_pool_server(kiro_command=command, kiro_task_timeout=8)
    first = server.execute("Update both files", "t-replay-1").json()
    assert first["status"] == "completed", first
    assert "Done! Updated both files." in first["output"].splitlines(), "the answer's own `> ` is left out"
    assert "Now let me update the onEnd callback:" in first["output"].splitlines()
    assert first["duration_s"] < 5, "ended by its prompt, not by a timeout"
    second = server.execute("Explain", "t-replay-2").json()
    assert second["status"] == "completed", second
    assert "Here is a comprehensive response to your query." in second["output"]
    assert "[developer]" not in second["output"]


def test_a_coloured_bare_prompt_is_the_idle_prompt_after_its_quiet_period(pty_pool_server):
    """`q chat` without an agent draws only `> `, in magenta with the space inside the colour — not the answer's
    green `> `: the worker becomes idle (it used to stay `starting` until its start limit) and tasks end."""
    server = pty_pool_server(double_args=("--bare-prompt",))
    assert [w["state"] for w in server.health()["workers"]] == ["idle"]
    body = server.execute("Hello [[say hi]]", "t-bare-magenta").json()
    assert body["status"] == "completed" and body["output"].endswith("Done.")


def test_a_plain_gt_in_the_answer_does_not_end_a_task_once_the_prompt_has_shown_its_agent(pty_server):
    """With the `[aipm] 20% λ > ` prompt seen, a bare `> ` (here an uncoloured quote, then a 0.6 s pause — longer
    than the quiet period) is the answer's, never the idle prompt."""
    body = pty_server.execute("Quote it [[barequote]] [[say still answering]]", "t-barequote").json()
    assert body["status"] == "completed"
    assert "> the quoted text, after a pause" in body["output"].splitlines()
    assert "still answering" in body["output"]
    assert body["output"].endswith("Done.")
