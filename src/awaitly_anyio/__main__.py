"""Command line: ``python -m awaitly_anyio demo`` and ``python -m awaitly_anyio runs ...``."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
