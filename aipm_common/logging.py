"""Logging for every part: JSON lines to stdout (CloudWatch), human lines on a terminal, secrets redacted.

Owns the record format, the per-task context (job_id, task_id, worker) and redaction. Every record passes
the redaction filter, whatever logger emitted it. Nothing here writes anywhere but the given stream.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

_CONTEXT: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("aipm_log_context", default={})  # noqa: B039
_CONTEXT_KEYS = ("job_id", "task_id", "worker")

# Token shapes that must never reach a log, a record or a response, whatever their source.
_TOKEN_PATTERNS = [
    (re.compile(r"github_pat_[A-Za-z0-9_]{20,}"), "github_pat_***"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), "gh*_***"),
    (re.compile(r"x-access-token:[^@\s/]+@", re.IGNORECASE), "x-access-token:***@"),
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)(?!x-access-token:\*\*\*@)[^/\s:@]+:[^/\s@]+@"), r"\1***@"),
    (re.compile(r"(?i)\b(authorization:\s*(?:bearer|token|basic)\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "AKIA***"),
]
REDACTED = "***"

_secrets_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Add a value (shared secret, token read from Secrets Manager…) that must be removed from every record."""
    if value and len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """``text`` with every known secret and token-like string replaced."""
    if not text:
        return text
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _TOKEN_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


_NONPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NONPRINTABLE_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def _escaped(match: re.Match) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def escape_nonprintable(text: str) -> str:
    """Control characters as visible escapes, so a log line stays one line and cannot move a terminal."""
    return _NONPRINTABLE.sub(_escaped, text)


def log_lines(logger: logging.Logger, lines: list[str], level: int = logging.INFO) -> None:
    """Log ``lines`` (an agent's output) as one record that the formatters here write as one line each, with the
    same time and context: one record, one redaction pass and one write for a block of lines instead of one per
    line. Any other formatter sees the lines joined by newlines."""
    if lines and logger.isEnabledFor(level):
        record = logger.makeRecord(logger.name, level, "(lines)", 0, "\n".join(lines), None, None)
        record.lines = lines
        logger.handle(record)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach job_id / task_id / worker to every record logged inside this block (thread- and task-local)."""
    token = _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class RedactionFilter(logging.Filter):
    """Renders each record's message once, redacted and escaped; the formatters only arrange it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_aipm_clean", False):
            return True
        lines = getattr(record, "lines", None)
        if lines is not None:  # log_lines: redacted and escaped in one pass, each line still one line
            record.msg = _NONPRINTABLE_BUT_NEWLINE.sub(_escaped, redact("\n".join(lines)))
            record.lines = record.msg.split("\n")
        else:
            try:
                message = record.getMessage()
            except Exception:  # a bad format string must not lose the record
                message = f"{record.msg!r} {record.args!r}"
            record.msg = escape_nonprintable(redact(message))
        record.args = None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        for key in _CONTEXT_KEYS:
            if not hasattr(record, key):
                value = _CONTEXT.get().get(key)
                if value is not None:
                    setattr(record, key, value)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = json.loads(redact(json.dumps(fields, default=str)))
        record._aipm_clean = True
        return True


def _utc(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, logger, job_id/task_id/worker, message, fields (a record of
    ``log_lines``: one object per line, each with one of its lines as the message)."""

    def __init__(self, service: str):
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _utc(record),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
        }
        for key in _CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        out["message"] = record.getMessage()
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update({k: v for k, v in fields.items() if k not in out})
        if record.exc_text:
            out["exception"] = record.exc_text
        lines = getattr(record, "lines", None)
        if lines is None:
            return json.dumps(out, ensure_ascii=False, default=str)
        shown = []
        for line in lines:
            out["message"] = line
            shown.append(json.dumps(out, ensure_ascii=False, default=str))
        return "\n".join(shown)


class HumanFormatter(logging.Formatter):
    """For a terminal: ``12:00:01 INFO  worker-pool [job j-1] message`` (a record of ``log_lines``: that per line)."""

    def __init__(self, service: str):
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        ctx = " ".join(f"{k}={getattr(record, k)}" for k in _CONTEXT_KEYS if getattr(record, k, None) is not None)
        head = f"{when} {record.levelname:<5} {self._service}{' [' + ctx + ']' if ctx else ''} "
        lines = getattr(record, "lines", None)
        line = head + record.getMessage() if lines is None else "\n".join(head + line for line in lines)
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


def setup_logging(
    service: str,
    *,
    level: str = "INFO",
    secrets: Iterable[str | None] = (),
    stream: TextIO | None = None,
    json_lines: bool | None = None,
) -> None:
    """Configure the root logger once for a service process (uvicorn's loggers included)."""
    for secret in secrets:
        register_secret(secret)
    stream = stream or sys.stdout
    if json_lines is None:
        json_lines = not (hasattr(stream, "isatty") and stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactionFilter())
    handler.setFormatter(JsonFormatter(service) if json_lines else HumanFormatter(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # At DEBUG, botocore logs whole requests and answers: SQS message bodies and receipt handles (AIPM_DISPATCH=sqs).
    for name in ("boto3", "botocore", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
