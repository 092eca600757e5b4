"""The PTY driver against today's Kiro (issue 15): `/clear` confirmed at its yellow `> `, a turn's end read from the
`▸ Credits` line Kiro prints before its prompt, throttling read only in Kiro's own error form, `ESC[s`/`ESC[u`,
and a kiro-cli version (or screen) the driver cannot read refused at start with a message naming the fix."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ec2_services.worker_pool.drivers.kiro_version import kiro_cli_prefix, parse_version, pty_argv
from ec2_services.worker_pool.drivers.pty.screen import RecentScreen
from tests.kiro_double import SCRIPT, kiro_cli, replay_command

FIXTURES = Path(__file__).resolve().parents[4] / "fixtures" / "kiro"


def test_clear_is_confirmed_at_its_yellow_prompt_so_no_task_restarts_the_agent(pty_pool_server):
    server = pty_pool_server()
    for n in range(6):
        body = server.execute(f"Task {n} [[recall]]", f"t-clear-{n}").json()
        assert body["status"] == "completed", body
        # /clear really ran between tasks: the agent remembers nothing of the one before.
        assert "I remember 0 earlier message(s)" in body["output"]
    health = server.wait_all_idle()
    assert health["workers"][0]["restarts"] == 0
    assert health["workers"][0]["tasks_completed"] == 6


def test_an_answer_quoting_the_prompt_and_pausing_is_not_cut(pty_pool_server):
    # `[aipm] 20% λ > ` in the answer's last line, 1.5 s of silence, then more answer: no Credits line came before
    # that prompt-like line, so it is not taken for the end.
    server = pty_pool_server(double_args=("--credits", "0.5"))
    body = server.execute("Tell the story [[fakeprompt]] [[say the end]]", "t-fake-prompt").json()
    assert body["status"] == "completed", body
    assert "and the story goes on after the pause." in body["output"]
    assert body["output"].endswith("Done.")
    assert body["credits"] == 0.5
    # The task was not cut: no /clear keystrokes went into the still-running answer, so no restart either.
    assert server.wait_all_idle()["workers"][0]["restarts"] == 0


def test_without_any_credits_line_the_prompt_still_ends_the_turn(pty_pool_server):
    server = pty_pool_server(double_args=("--no-credits",))
    body = server.execute("[[say no credits on this plan]]", "t-no-credits").json()
    assert body["status"] == "completed" and body["credits"] is None
    assert "no credits on this plan" in body["output"]


def test_prose_about_throttling_is_the_answer_not_a_retry(pty_pool_server):
    server = pty_pool_server()
    prose = "[[say Too many requests hit the API; rate limit exceeded; a ThrottlingException was logged]]"
    body = server.execute(f"Explain {prose}", "t-prose").json()
    assert body["status"] == "completed", body
    assert body["trouble_retries"] == 0
    assert "rate limit exceeded" in body["output"]


def test_kiros_own_throttling_error_is_waited_out_and_sent_again(pty_pool_server):
    server = pty_pool_server()
    body = server.execute("[[throttled 1]] [[say made it]]", "t-throttled").json()
    assert body["status"] == "completed", body
    assert body["trouble_retries"] == 1
    assert "made it" in body["output"] and "ThrottlingException" not in body["output"]


def test_save_and_restore_cursor_are_honoured_so_the_prompt_is_found():
    screen = RecentScreen(columns=40, rows=6)
    screen.feed("answer line\r\n\x1b[s\x1b[1;1Hstatus at the top\x1b[u\r\n[aipm] 20% λ > ")
    assert screen.bottom_lines(1) == ["[aipm] 20% λ >"]


def test_a_screen_that_saves_the_cursor_does_not_hang_the_task(pty_pool_server):
    server = pty_pool_server()
    body = server.execute("[[say before]] [[savecursor]] [[say after]]", "t-savecursor").json()
    assert body["status"] == "completed", body
    assert "after" in body["output"]


@pytest.mark.parametrize(
    ("version", "argv", "adapt", "expected", "problem"),
    [
        ((2, 19, 1), ["kiro-cli", "chat", "--legacy-ui", "--agent", "aipm"], True, None, None),
        ((1, 23, 0), ["kiro-cli", "chat", "--legacy-ui", "--agent", "aipm"], True,
         ["kiro-cli", "chat", "--agent", "aipm"], None),
        ((2, 4, 0), ["sudo", "/x/kiro-cli", "chat", "--agent", "aipm"], True,
         ["sudo", "/x/kiro-cli", "chat", "--legacy-ui", "--agent", "aipm"], None),
        ((2, 4, 0), ["kiro-cli", "chat", "--agent", "aipm"], False, None, "TUI"),
        ((3, 0, 0), ["kiro-cli", "chat", "--legacy-ui", "--agent", "aipm"], True, None, "KIRO_DRIVER=acp"),
        (None, ["kiro-cli", "chat"], True, None, None),
    ],
)
def test_the_pty_command_fits_the_installed_version(version, argv, adapt, expected, problem):
    got, why = pty_argv(argv, version, adapt=adapt)
    assert got == (expected or argv)
    assert (why is None) if problem is None else (problem in why)


def test_versions_and_the_kiro_cli_word_are_read():
    assert parse_version("kiro-cli 2.19.1\n") == (2, 19, 1)
    assert parse_version("nothing") is None
    assert kiro_cli_prefix(["setpriv", "--", "/usr/local/bin/kiro-cli", "chat"]) == ["setpriv", "--",
                                                                                      "/usr/local/bin/kiro-cli"]
    assert kiro_cli_prefix(["python", "double.py"]) is None


def test_kiro_3_is_refused_at_start_with_the_fix_and_no_restart_loop(pty_pool_server, tmp_path):
    fake = kiro_cli(tmp_path / "bin", "3.0.2", sys.executable, str(SCRIPT))  # never started: refused first
    server = pty_pool_server(kiro_command=f"{fake} chat --legacy-ui --agent aipm", wait=False)
    health = server.wait_health(lambda h: h["status"] == "degraded" and h["workers"][0]["state"] == "restarting")
    r = server.execute("[[say hi]]", "t-v3")
    assert r.status_code == 503
    assert "KIRO_DRIVER=acp" in r.json()["detail"] and "3.0.2" in r.json()["detail"]
    assert health["workers"][0]["restarts"] == 0 and server.health()["workers"][0]["restarts"] == 0


def test_a_full_screen_tui_is_refused_at_start_not_waited_out(pty_pool_server):
    # The 2.x TUI (a real capture): its footer shows before any prompt the driver knows.
    server = pty_pool_server(kiro_command=replay_command(FIXTURES / "kiro_cli_tui_idle_output.txt"), wait=False)
    server.wait_health(lambda h: h["workers"][0]["state"] == "restarting", timeout=10)
    r = server.execute("[[say hi]]", "t-tui")
    assert r.status_code == 503
    assert "full-screen" in r.json()["detail"] and "--legacy-ui" in r.json()["detail"]
    assert server.health()["workers"][0]["restarts"] == 0


def test_health_shows_each_pty_workers_kiro_cli_version(pty_pool_server, tmp_path):
    fake = kiro_cli(tmp_path / "bin", "2.19.1", sys.executable, str(SCRIPT))
    server = pty_pool_server(size=2, kiro_command=f"{fake} chat --legacy-ui --agent aipm")
    workers = server.health()["workers"]
    # The version is kiro-cli's own `--version`; the classic chat names no engine, so none is claimed.
    assert [(w["agent_version"], w["agent_engine"]) for w in workers] == [("2.19.1", None)] * 2
    assert server.execute("[[say hi]]", "t-version").json()["status"] == "completed"
