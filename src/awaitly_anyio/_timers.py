"""The former home of trio's ``call_later`` (now `awaitly_anyio._loops.Loop.call_later`,
which every event loop has), kept until every caller imports from there."""

from __future__ import annotations

from collections.abc import Callable

from ._loops import current

__all__ = ["trio_call_later"]


def trio_call_later(delay: float, fn: Callable[[], object]) -> Callable[[], None]:
    """Call ``fn()`` ``delay`` seconds from now on the caller's loop; returns a function
    that cancels the call (`awaitly_anyio._loops.Loop.call_later`)."""
    return current().call_later(delay, fn)
