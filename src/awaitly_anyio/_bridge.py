"""The one way asyncio-only drivers (asyncpg, redis.asyncio) are reached from any
event loop: `DriverLoop`.

On asyncio a store awaits its driver directly.  On trio it hands each coroutine to
a private asyncio loop and waits for the outcome without blocking trio (the trio
run's hosted loop, or a bridge thread where trio cannot wait on that loop's
selector; see `awaitly_anyio._loops._hosted`).  The caller's event loop says which
(`awaitly_anyio._loops.Loop.driver_runner`); this module names no loop.

Cancellation crosses over: if the caller is cancelled, the driver's task is
cancelled too and the caller waits (shielded, briefly) until the driver has
finished unwinding, so no operation outlives the scope that started it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from . import _loops

__all__ = ["DriverLoop"]

T = TypeVar("T")


class DriverLoop:
    """Where a store's asyncio driver runs: bound to the event loop of the store's
    first use.

    `call` awaits the driver directly where the loop drives asyncio code itself,
    else through the loop's driver runner.  Using one store from two kinds of loop,
    or from a trio run after the one it was opened in, is refused, since its
    connections belong to one asyncio loop.
    """

    __slots__ = ("_loop", "_owner", "_released", "_runner")

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._loop: _loops.Loop | None = None
        self._runner: _loops.DriverRunner | None = None
        self._released = False

    @property
    def bound(self) -> bool:
        """Whether the store has been used (and its driver loop chosen)."""
        return self._loop is not None

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` on the driver's loop and return its outcome.

        Raises what ``fn`` raises; ``RuntimeError`` if called from another kind of
        loop than the first call, from a later run than the one whose hosted loop
        it uses, or after `release`.  A cancelled caller's cancellation propagates
        once the driver's task has unwound.
        """
        loop = _loops.current()
        bound = self._loop
        if bound is None:
            if self._released:
                raise RuntimeError(f"{self._owner} has let go of its driver loop")
            self._loop = bound = loop
            self._runner = loop.driver_runner()
        elif loop is not bound:
            raise RuntimeError(
                f"{self._owner} was opened on {bound.name} and cannot be used from {loop.name}"
            )
        runner = self._runner
        if runner is None:
            if self._released:
                raise RuntimeError(f"{self._owner} has let go of its driver loop")
            return await fn(*args)
        if runner.ended:
            raise RuntimeError(
                f"{self._owner} was opened in a {bound.name} run that has ended, and its"
                f" connections ended with it; open the store in the run that uses it"
            )
        return await runner.run(fn, *args)

    def release(self) -> None:
        """Let go of the driver runner (after the driver's connections are closed);
        calls afterwards raise ``RuntimeError``."""
        runner, self._runner = self._runner, None
        self._released = True
        if runner is not None:
            runner.release()
