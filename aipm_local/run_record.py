"""``<state>/run.json``: what a running ``make run`` started — its own PID, and each service's name, port and PID.

Written by ``aipm_local.run`` once the three services answer, removed when it stops; read by ``make status``
(``aipm_local.status``), which then needs no port variables and can say which processes are the stack's. A record
left by a runner that was killed (no chance to remove it) is recognised by its runner PID no longer running. It holds
no secret; it must not be trusted to name a process to signal (a PID may be reused).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

RUN_FILE = "run.json"


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    pid: int | None


@dataclass(frozen=True)
class RunRecord:
    runner_pid: int
    started_at: float
    api_url: str
    services: list[Service]

    def port(self, name: str) -> int | None:
        return next((s.port for s in self.services if s.name == name), None)


def pid_alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, though not ours
    try:  # a zombie (exited, not yet reaped) is not running
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def write(state_dir: Path, record: RunRecord) -> Path:
    """Atomically (a reader never sees half a file), mode 600."""
    path = state_dir / RUN_FILE
    tmp = path.with_name(f".{RUN_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(asdict(record), out, indent=2)
    os.replace(tmp, path)
    return path


def read(state_dir: Path) -> RunRecord | None:
    """The record, or None when there is none or it cannot be read as one."""
    try:
        data = json.loads((state_dir / RUN_FILE).read_text(encoding="utf-8"))
        return RunRecord(runner_pid=int(data["runner_pid"]), started_at=float(data["started_at"]),
                         api_url=str(data["api_url"]),
                         services=[Service(str(s["name"]), int(s["port"]), s.get("pid")) for s in data["services"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove(state_dir: Path, runner_pid: int) -> None:
    """Remove the record if this runner wrote it (a newer runner's record is left alone)."""
    record = read(state_dir)
    if record is not None and record.runner_pid == runner_pid:
        with contextlib.suppress(FileNotFoundError):
            (state_dir / RUN_FILE).unlink()


def now() -> float:
    return time.time()
