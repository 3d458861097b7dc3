"""Random ids for runs.

``str(uuid.uuid4())`` builds a ``UUID`` object only to format it, which is half
of what an empty workflow run costs; this makes the same text from the same
``os.urandom`` bytes directly.
"""

from __future__ import annotations

import os

# The variant nibble of a version 4 UUID is 8, 9, a or b; two random bits pick it.
_VARIANT = dict(zip("0123456789abcdef", "89ab" * 4, strict=True))


def uuid4_text() -> str:
    """A random (version 4) UUID in its usual text form, like ``str(uuid.uuid4())``."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"
