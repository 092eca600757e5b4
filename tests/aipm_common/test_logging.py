"""Logging: JSON lines with context, every token form redacted, non-printables escaped."""

from __future__ import annotations

import io
import json
import logging

import pytest

from aipm_common.logging import log_context, log_lines, redact, register_secret, setup_logging

TOKENS = [
    "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMN",
    "ghs_" + "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp",
]


@pytest.fixture
def captured():
    stream = io.StringIO()
    setup_logging("test-service", secrets=["the-shared-secret-value"], stream=stream, json_lines=True)
    yield stream
    logging.getLogger().handlers.clear()


def records(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize("token", TOKENS)
def test_github_tokens_are_redacted(captured, token):
    logging.getLogger("x").info("pushing with token %s now", token)
    out = captured.getvalue()
    assert token not in out
    assert "pushing with token" in out


def test_access_token_url_is_redacted(captured):
    logging.getLogger("x").warning("remote https://x-access-token:abc123SECRET@github.com/o/r.git failed")
    out = captured.getvalue()
    assert "abc123SECRET" not in out
    assert "x-access-token:***@github.com" in out


def test_shared_secret_is_redacted_everywhere(captured):
    log = logging.getLogger("x")
    log.error("secret in message the-shared-secret-value", extra={"fields": {"k": "the-shared-secret-value"}})
    try:
        raise RuntimeError("boom the-shared-secret-value")
    except RuntimeError:
        log.exception("failed")
    assert "the-shared-secret-value" not in captured.getvalue()


def test_registered_secret_later_is_redacted(captured):
    register_secret("late-token-value-xyz")
    logging.getLogger("x").info("x late-token-value-xyz y")
    assert "late-token-value-xyz" not in captured.getvalue()


def test_json_record_has_time_level_service_and_context(captured):
    with log_context(job_id="j-123", worker=2):
        logging.getLogger("x").info("hello")
    (rec,) = records(captured)
    assert rec["service"] == "test-service"
    assert rec["level"] == "INFO"
    assert rec["job_id"] == "j-123" and rec["worker"] == 2
    assert rec["message"] == "hello"
    assert rec["time"].endswith("Z")


def test_nonprintable_characters_are_escaped(captured):
    logging.getLogger("x").info("a\x1b[31mred\x00\nnext")
    (rec,) = records(captured)
    assert rec["message"] == "a\\x1b[31mred\\x00\\nnext"
    assert len(captured.getvalue().strip().splitlines()) == 1


def test_log_lines_writes_one_record_per_line_each_redacted_and_escaped(captured):
    with log_context(task_id="t-9", worker=3):
        log_lines(logging.getLogger("x"), ["[Worker 3] first", f"[Worker 3] token {TOKENS[0]} here",
                                           "[Worker 3] a\x1b[31mred\x00", "[Worker 3] the-shared-secret-value"])
    recs = records(captured)
    assert [r["message"] for r in recs] == [
        "[Worker 3] first", "[Worker 3] token gh*_*** here", "[Worker 3] a\\x1b[31mred\\x00", "[Worker 3] ***",
    ]
    assert all(r["task_id"] == "t-9" and r["worker"] == 3 and r["logger"] == "x" for r in recs)
    assert len({r["time"] for r in recs}) == 1  # one record, written as four lines


def test_log_lines_on_a_terminal_prefixes_every_line():
    stream = io.StringIO()
    setup_logging("test-service", stream=stream, json_lines=False)
    try:
        log_lines(logging.getLogger("x"), ["[Worker 1] one", "[Worker 1] two"])
    finally:
        logging.getLogger().handlers.clear()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert all(" INFO  test-service " in line for line in lines)
    assert lines[0].endswith("[Worker 1] one") and lines[1].endswith("[Worker 1] two")


def test_redact_function_for_other_outputs():
    assert "ghp_" + "A" * 36 not in redact("token ghp_" + "A" * 36)
