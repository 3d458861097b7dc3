"""``call_later`` for trio, which has no timer callbacks of its own.

asyncio's ``loop.call_later`` is the cheapest way to act later on asyncio; on
trio the equivalent would be a task per timer, which costs more than a short
durable run's other bookkeeping.  Here one system task per trio run keeps a
heap of callbacks and sleeps until the earliest is due.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

from ._bridge import per_trio_run
from ._run import logger

__all__ = ["trio_call_later"]

# Cancelled entries stay in the heap until due; it is rebuilt without them once they
# are more than half of it (as asyncio does with its cancelled timers).
_COMPACT_AFTER = 64


class _Timers:
    """The timers of one trio run (made by `trio_call_later` on first use)."""

    def __init__(self) -> None:
        import trio

        self._heap: list[tuple[float, int, list[Callable[[], object] | None]]] = []
        self._count = 0
        self._cancelled = 0
        self._waiting = trio.CancelScope()
        trio.lowlevel.spawn_system_task(self._run, name="awaitly-timers")

    def call_later(self, delay: float, fn: Callable[[], object]) -> Callable[[], None]:
        import trio

        when = trio.current_time() + delay
        entry: list[Callable[[], object] | None] = [fn]
        self._count += 1
        heapq.heappush(self._heap, (when, self._count, entry))
        if when < self._waiting.deadline:
            self._waiting.deadline = when

        def cancel() -> None:
            if entry[0] is not None:
                entry[0] = None
                self._cancelled += 1
                if self._cancelled > _COMPACT_AFTER and self._cancelled * 2 > len(self._heap):
                    self._heap = [item for item in self._heap if item[2][0] is not None]
                    heapq.heapify(self._heap)
                    self._cancelled = 0

        return cancel

    async def _run(self) -> None:
        import trio

        while True:
            with self._waiting:
                await trio.sleep_forever()
            now = trio.current_time()
            heap = self._heap
            while heap and heap[0][0] <= now:
                _, _, entry = heapq.heappop(heap)
                fn = entry[0]
                if fn is None:
                    self._cancelled -= 1
                else:
                    entry[0] = None
                    try:
                        fn()
                    except Exception:  # a system task must not raise: it would end the run
                        logger.exception("timer callback %r failed", fn)
            # An if, not a conditional expression: with one, pyright (1.1.414) deems the
            # rest of this loop unreachable.
            deadline = math.inf
            if heap:
                deadline = heap[0][0]
            self._waiting = trio.CancelScope(deadline=deadline)


def trio_call_later(delay: float, fn: Callable[[], object]) -> Callable[[], None]:
    """Call ``fn()`` (synchronously, from a system task) ``delay`` seconds from now in
    the current trio run; returns a function that cancels the call."""
    return per_trio_run("awaitly_timers", _Timers).call_later(delay, fn)
