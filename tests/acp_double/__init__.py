"""A scripted double of ``kiro-cli acp`` (the Agent Client Protocol on stdio), for the worker pool's tests and benchmarks."""

import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("acp_double.py")


def command(*args: str) -> str:
    """A ``KIRO_ACP_COMMAND`` that runs the double with this interpreter."""
    import shlex

    return shlex.join([sys.executable, str(SCRIPT), *args])
