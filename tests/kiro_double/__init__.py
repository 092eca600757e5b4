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
