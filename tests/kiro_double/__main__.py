"""``python -m tests.kiro_double``: the same program as ``python tests/kiro_double/kiro_double.py``."""

import sys

from tests.kiro_double.kiro_double import main

sys.exit(main())
