"""A scripted double of ``kiro-cli acp`` (the Agent Client Protocol on stdio), for the worker pool's tests and benchmarks."""

import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("acp_double.py")
REPLAY = Path(__file__).with_name("replay.py")
CAPTURES = Path(__file__).parents[1] / "fixtures" / "kiro-acp"


def command(*args: str) -> str:
    """A ``KIRO_ACP_COMMAND`` that runs the double with this interpreter."""
    import shlex

    return shlex.join([sys.executable, str(SCRIPT), *args])


def replay_command(capture: str, log: Path) -> str:
    """A ``KIRO_ACP_COMMAND`` that replays ``tests/fixtures/kiro-acp/CAPTURE``, logging the client's side to ``log``."""
    import shlex

    return shlex.join([sys.executable, str(REPLAY), str(CAPTURES / capture), "--log", str(log)])
