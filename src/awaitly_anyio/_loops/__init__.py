"""The event-loop layer: one `Loop` per kind of event loop (asyncio, trio), so that
nothing above it names a loop or branches on one.

`current()` gives the caller's loop: one object per kind of loop, made on first use
and cached.  It offers cancel scopes and bounded shields, ``call_later`` timers,
system tasks, the `Answer` (future) a batcher hands to its callers, and where
asyncio-only drivers run (`Loop.driver_runner`).  `cancel_due` and
`deliver_cancellation` are the same as module functions, for callers that do not
hold the loop object: `cancel_due` is asyncio's own check, which finds the loop by
asking asyncio first and otherwise asks the other loop's (so it costs asyncio no
frame more, trio one; a caller that makes many checks keeps ``current()`` and calls
its methods).  Call them from a task of an event loop.

`NAMES` are the loops anyio can run (``anyio.run(..., backend=name)``) and
`DEFAULT` the one a command line runs on when not told.

trio is imported only once a trio run asks (the package does not require trio).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Final

from . import _asyncio
from ._asyncio import AsyncioLoop, cancel_due
from ._base import Answer, DriverRunner, Loop, Scope

__all__ = [
    "DEFAULT",
    "NAMES",
    "Answer",
    "DriverRunner",
    "Loop",
    "Scope",
    "cancel_due",
    "current",
    "current_name",
    "current_task",
    "deliver_cancellation",
]

NAMES: Final = ("asyncio", "trio")
"""The event loops the library runs on, by anyio's names for them."""

DEFAULT: Final = "asyncio"
"""The event loop a command line runs on unless told otherwise."""

_get_running_loop = asyncio._get_running_loop  # the C function: no exception when none runs

_ASYNCIO: Final[Loop] = AsyncioLoop()
_trio_loop: Loop | None = None


def _current_trio() -> Loop:
    """trio's `Loop` if the caller runs in a trio task (made on first use), else raise
    ``RuntimeError``."""
    global _trio_loop
    trio = sys.modules.get("trio")  # not imported: no trio run can be going on
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            found = _trio_loop
            if found is None:
                from . import _trio
                from ._trio import TrioLoop

                found = _trio_loop = TrioLoop()
                # From now on `cancel_due` off asyncio asks trio's check straight away.
                _asyncio.elsewhere_due = _trio.cancel_due
            return found
    raise RuntimeError("awaitly-anyio must be used from asyncio or trio code")


def current() -> Loop:
    """The `Loop` of the event loop running the caller.

    asyncio is asked first, which answers without raising (trio code never sees a
    running asyncio loop: the hosted one runs only inside its driver calls).  Raises
    ``RuntimeError`` outside any event loop (or on a loop the library does not
    support).
    """
    if _get_running_loop() is not None:
        return _ASYNCIO
    return _current_trio()


_current_asyncio_task = asyncio.current_task


def current_task() -> object:
    """An identity object for the task running the caller (asyncio's task or trio's),
    ``None`` outside any.  Cheaper than ``anyio.get_current_task()``, which builds a
    `TaskInfo`: a durable run's steps ask it once each, to tell a group's children
    (tasks of their own) from sequential calls."""
    if _get_running_loop() is not None:
        return _current_asyncio_task()
    trio = sys.modules.get("trio")  # not imported: no trio task can be running
    if trio is None:
        return None
    try:
        return trio.lowlevel.current_task()
    except RuntimeError:
        return None


def current_name() -> str:
    """The name (one of `NAMES`) of the event loop running the caller; raises
    ``RuntimeError`` as `current` does."""
    return current().name


def _first_elsewhere_due() -> bool:
    """`cancel_due` where no asyncio loop runs, until trio's loop object is made."""
    return _current_trio().cancel_due()


_asyncio.elsewhere_due = _first_elsewhere_due


async def deliver_cancellation() -> None:
    """`Loop.deliver_cancellation` of the caller's loop: yield so that a due
    cancellation is raised (it propagates from here)."""
    await current().deliver_cancellation()
