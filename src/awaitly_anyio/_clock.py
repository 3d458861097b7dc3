"""The clock that retries, backoff and ``step.sleep`` read and wait on.

Injecting a clock (``create_workflow(..., clock=FakeClock())``) lets tests run
backoff schedules instantly; see `awaitly_anyio.testing.FakeClock`.
Step timeouts are anyio cancel scopes and therefore follow the event loop's
own clock, not this one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, runtime_checkable

import anyio
import anyio.lowlevel

__all__ = ["Clock", "SystemClock", "sleep_until_woken"]


@runtime_checkable
class Clock(Protocol):
    """What the library needs to know about time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; only differences matter."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the epoch, for event timestamps and records."""
        ...

    def sleep(self, seconds: float) -> Awaitable[None]:
        """Wait ``seconds``.  Must be a cancellation point.  ``async def sleep`` fits."""
        ...


class SystemClock:
    """The real clock: `time.monotonic`, `time.time` and `anyio.sleep`."""

    __slots__ = ()

    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)

    def sleep(self, seconds: float) -> Coroutine[Any, Any, None]:
        """Wait ``seconds`` on the event loop; cancellable.  Zero is a checkpoint.

        Returns anyio's coroutine itself rather than wrapping it in one more: a
        waiting run keeps a frame less (which counts with thousands of runs).
        """
        if seconds == 0:
            return anyio.lowlevel.checkpoint()
        return anyio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


async def sleep_until_woken(
    clock: Clock, seconds: float, woken: Callable[[], Awaitable[object]]
) -> None:
    """Return after ``seconds`` on ``clock``, or as soon as ``woken()`` returns, whichever
    comes first; the other is cancelled.  A cancellation point; what ``woken()`` raises
    propagates (the service loops that use it catch their store's errors inside it)."""
    async with anyio.create_task_group() as group:

        async def ring() -> None:
            await clock.sleep(seconds)
            group.cancel_scope.cancel()

        group.start_soon(ring)
        await woken()
        group.cancel_scope.cancel()
