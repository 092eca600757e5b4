"""Run every benchmark module in bench/ (or those named on the command line), each printing its own table."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    names = argv or sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("p"))
    failed = 0
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"\n=== bench.{name}: {(module.__doc__ or '').strip().splitlines()[0] if module.__doc__ else ''}", flush=True)
        start = time.perf_counter()
        try:
            module.main()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            failed += 1
            print(f"bench.{name} FAILED: {exc!r}", flush=True)
        print(f"(bench.{name} took {time.perf_counter() - start:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
