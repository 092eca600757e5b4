"""A scripted double of the Kiro CLI's terminal protocol, for the worker pool's tests and benchmarks."""

import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("kiro_double.py")
REPLAY = Path(__file__).with_name("replay.py")
HEADLESS = Path(__file__).with_name("headless_double.py")


def command(*args: str) -> str:
    """A ``KIRO_COMMAND`` that runs the double with this interpreter."""
    import shlex

    return shlex.join([sys.executable, str(SCRIPT), *args])


def replay_command(*fixtures: Path) -> str:
    """A ``KIRO_COMMAND`` that replays captured screens (``replay.py``): the first at start, one per message."""
    import shlex

    return shlex.join([sys.executable, str(REPLAY), *map(str, fixtures)])


def headless_command(*args: str) -> str:
    """A ``KIRO_HEADLESS_COMMAND`` that runs the headless double (``chat`` as the real CLI's subcommand)."""
    import shlex

    return shlex.join([sys.executable, str(HEADLESS), "chat", *args])


def kiro_cli(directory: Path, version: str, *target: str) -> Path:
    """An executable named ``kiro-cli`` in DIRECTORY: ``--version`` prints ``kiro-cli VERSION``, anything else runs
    TARGET (a double's argv) with the same arguments — so a driver takes it for the real CLI of that version."""
    import shlex
    import stat

    directory.mkdir(parents=True, exist_ok=True)
    fake = directory / "kiro-cli"
    fake.write_text(f"#!/bin/sh\n[ \"$1\" = --version ] && echo 'kiro-cli {version}' && exit 0\n"
                    f"exec {shlex.join(target)} \"$@\"\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return fake
