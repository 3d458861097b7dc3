"""Objects that live as long as one trio run (its timers, its hosted asyncio loop).

Apart from `awaitly_anyio._loops._trio` so that it imports no trio until a run asks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["found_in_trio_run", "per_trio_run", "run_vars"]

T = TypeVar("T")

run_vars: dict[str, Any] = {}
"""trio ``RunVar``s by name, made on first use (read it to look without making one)."""


def per_trio_run(name: str, make: Callable[[], T]) -> T:
    """The current trio run's ``name`` object, made by ``make()`` on first use; a trio
    ``RunVar`` holds it, so it ends with the run.  Call it from a trio task."""
    var = run_vars.get(name)
    if var is None:
        from trio.lowlevel import RunVar

        var = run_vars[name] = RunVar[Any](name)
    try:
        found: T = var.get()
    except LookupError:
        found = make()
        var.set(found)
    return found


def found_in_trio_run(name: str) -> Any:
    """The current trio run's ``name`` object if one was made, else ``None`` (makes
    nothing)."""
    var = run_vars.get(name)
    if var is None:
        return None
    try:
        return var.get()
    except LookupError:
        return None
