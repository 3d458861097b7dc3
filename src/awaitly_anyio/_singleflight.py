"""Singleflight: identical concurrent calls in one process share one execution.

``await flight.do(key, fn)`` runs ``fn`` once for every caller that asks for ``key``
while it runs; each gets its value (the same object, an ``Err`` included) or its
exception.  The execution runs in the task of the caller that started it, never in a
task of its own, so nothing outlives the scope that started it (structured
concurrency): a waiter that is cancelled stops waiting and the work goes on for the
others; if the caller that runs the work is cancelled, the work is cancelled with it
and one of the remaining waiters runs it again (the others wait for that one).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from inspect import isawaitable
from typing import Any, TypeVar, overload

import anyio

__all__ = ["Singleflight"]

T = TypeVar("T")

_RUNNING, _OK, _FAILED, _ABANDONED = range(4)


class _Flight:
    """One execution: its outcome, and the event its waiters wait on."""

    __slots__ = ("done", "outcome", "state", "waiters")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.state = _RUNNING
        self.outcome: Any = None
        self.waiters = 0


class Singleflight:
    """Share one execution among identical concurrent calls (same ``key``).

    Usable inside and outside workflows; inside, wrap it in a step:
    ``await ctx.step("rates", lambda: flight.do("rates:EUR", fetch_rates))``.  One
    `Singleflight` belongs to one event loop (it waits on ``anyio.Event``).  Only calls
    that overlap share: a call after the execution ended runs ``fn`` again (pair it
    with a cache, `MemoryCache` or ``ctx.step.cached``, to keep values longer).
    """

    __slots__ = ("_flights",)

    def __init__(self) -> None:
        self._flights: dict[Hashable, _Flight] = {}

    def __repr__(self) -> str:
        return f"Singleflight({len(self._flights)} in flight)"

    def __len__(self) -> int:
        """How many keys are executing now."""
        return len(self._flights)

    def waiting(self, key: Hashable) -> int:
        """How many callers wait for ``key``'s execution (not counting the one running
        it); 0 when none runs."""
        flight = self._flights.get(key)
        return 0 if flight is None else flight.waiters

    @overload
    async def do(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T: ...
    @overload
    async def do(self, key: Hashable, fn: Callable[[], T]) -> T: ...
    async def do(self, key: Hashable, fn: Callable[[], Any]) -> Any:
        """Return what ``fn()`` (awaited if it returns an awaitable) returns, running it
        only if no call with ``key`` is executing now; else wait for that execution and
        return its value, or raise its exception (the same object for every caller).

        Cancellation: a waiting caller that is cancelled stops waiting (the execution
        goes on for the others); the caller running ``fn`` that is cancelled cancels
        ``fn`` (it runs in that caller's task) and the callers still waiting run it
        again, one of them executing for the rest.  A ``BaseException`` that is not
        an ``Exception`` (a cancellation, a workflow's early exit) is never shared.
        ``TypeError`` for an unhashable key or an ``fn`` that is not callable."""
        if not callable(fn):
            raise TypeError(f"fn must be a zero-argument callable, not {fn!r}")
        flights = self._flights
        while True:
            flight = flights.get(key)  # TypeError for an unhashable key
            if flight is None:
                return await self._lead(key, fn)
            flight.waiters += 1
            try:
                await flight.done.wait()
            finally:
                flight.waiters -= 1
            state = flight.state
            if state == _OK:
                return flight.outcome
            if state == _FAILED:
                raise flight.outcome
            # Abandoned (its runner was cancelled): look again, and run it if nobody does.

    async def _lead(self, key: Hashable, fn: Callable[[], Any]) -> Any:
        flights = self._flights
        flight = flights[key] = _Flight()
        try:
            out = fn()
            if isawaitable(out):
                out = await out
        except Exception as exc:
            flight.state, flight.outcome = _FAILED, exc
            raise
        except BaseException:
            flight.state = _ABANDONED
            raise
        else:
            flight.state, flight.outcome = _OK, out
            return out
        finally:
            if flights.get(key) is flight:
                del flights[key]
            flight.done.set()
