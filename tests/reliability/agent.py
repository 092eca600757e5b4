#!/usr/bin/env python3
"""The Kiro double, reading its directives from the TASK.md the prompt names as well as from the prompt.

The PR processor's prompt names the task file by absolute path but does not quote it, so directives written into a
story's description (``[[crash]]``, ``[[hang]]``, ``[[write PATH TEXT]]``…) reach the double only through the file.
Two directives of its own, counted across respawns in ``--state-dir`` (one counter file per TASK.md text):

    [[crashfirst N]]   crash (exit 3, mid-answer) on the first N answers for this task file, then work normally
    [[hangfirst N]]    hang (silent, Ctrl+C ignored) on the first N answers for this task file
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.kiro_double import kiro_double  # noqa: E402

TASK_PATH = re.compile(r"(/[^\s'\"`]*TASK\.md)")


class TaskFileDouble(kiro_double.Double):
    state_dir: Path | None = None

    def _count(self, task: str) -> int:
        """How many answers for this task (by its text: each attempt has a work tree of its own) this or an earlier
        session has begun, this one included."""
        assert self.state_dir is not None
        counter = self.state_dir / hashlib.sha256(task.encode()).hexdigest()[:16]
        with open(counter, "a") as fh:
            fh.write("x")
        return counter.stat().st_size

    def answer(self, message: str) -> None:
        match = TASK_PATH.search(message)
        extra = ""
        if match:
            try:
                extra = Path(match.group(1)).read_text(errors="replace")
            except OSError:
                extra = ""
        if extra and self.state_dir is not None:
            first = {name: int(arg or 1) for name, arg in kiro_double.DIRECTIVE.findall(extra)
                     if name in ("crashfirst", "hangfirst")}
            if first:
                seen = self._count(extra)
                self.work(self.args.work_seconds)
                if seen <= first.get("crashfirst", 0):
                    kiro_double.out(f"{kiro_double.ANSWER_MARK}starting\nthread 'main' panicked (crashfirst {seen})\n")
                    os._exit(3)
                if seen <= first.get("hangfirst", 0):
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                    while True:
                        time.sleep(3600)
        super().answer(message + "\n" + extra if extra else message)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state-dir", default=None)
    args, rest = parser.parse_known_args()
    TaskFileDouble.state_dir = Path(args.state_dir) if args.state_dir else None
    kiro_double.Double = TaskFileDouble  # main() builds Double(args)
    return kiro_double.main(rest)


if __name__ == "__main__":
    sys.exit(main())
