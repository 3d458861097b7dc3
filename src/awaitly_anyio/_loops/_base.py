"""What the library asks of an event loop: the abstract `Loop` and the small protocols
of the objects it hands out.

Each supported event loop has one subclass (`AsyncioLoop`, `TrioLoop`), made once
and cached by `awaitly_anyio._loops.current`; nothing outside this package names a
loop or branches on one.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, Generator
from functools import partial
from types import TracebackType
from typing import Any, ClassVar, Protocol, TypeVar

import anyio
from typing_extensions import Self

__all__ = ["Answer", "CoarseTimers", "DriverRunner", "Loop", "Scope"]

logger = logging.getLogger("awaitly_anyio")

T = TypeVar("T")
R = TypeVar("R")


class Scope(Protocol):
    """A cancel scope, whichever loop made it: entered with ``with``; `cancel` cancels
    its body; ``cancelled_caught`` says afterwards whether the scope itself stopped
    a cancellation (its own, or its bound's)."""

    @property
    def cancelled_caught(self) -> bool: ...

    def cancel(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> bool: ...  # `bool`: a scope may swallow its own cancellation (type checkers know)


class Answer(Protocol[R]):
    """A value (or an exception) that one task sets and another awaits: asyncio's
    ``Future`` and its trio counterpart.

    ``done()`` is true once it was set, and also once the task awaiting it stopped
    waiting (it was cancelled), so a setter can skip it; setting it twice raises.
    Awaiting it returns the value or raises the exception; a cancelled waiter's
    cancellation propagates.
    """

    def done(self) -> bool: ...

    def set_result(self, result: R, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...

    def __await__(self) -> Generator[Any, None, R]: ...


class DriverRunner(Protocol):
    """Where an asyncio-only driver's coroutines run for a caller on another loop
    (the hosted asyncio loop, or a thread running one)."""

    @property
    def ended(self) -> bool:
        """Whether the runner has ended with the run that made it (its connections
        with it): it cannot be used again."""
        ...

    def acquire(self) -> None:
        """Count one more user (a store that will call `run`)."""

    def release(self) -> None:
        """Count one user less; the runner may stop when none is left."""

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``fn(*args)`` on the runner's asyncio loop and return its outcome;
        raises what ``fn`` raises; a cancelled caller has the driver's task cancelled
        and waits (shielded) for it to unwind before its cancellation propagates."""
        ...


class Loop(abc.ABC):
    """One event loop's way of doing what the library needs, so that code above this
    package asks instead of branching on the loop's name.

    One instance per kind of loop, made on first use and cached
    (`awaitly_anyio._loops.current`); instances hold no per-run state themselves
    (what belongs to one run, such as trio's timers, is kept per run).  Every method
    must be called from a task running on this loop.
    """

    __slots__ = ()

    name: ClassVar[str]
    """The loop's name as anyio spells it (``anyio.run(..., backend=name)``)."""

    drives_asyncio: ClassVar[bool]
    """Whether asyncio-only drivers (asyncpg, redis.asyncio) run on this loop directly;
    if not, they run on `driver_runner`'s asyncio loop, and driver objects made by
    the caller's own loop (a pool, a client) cannot be used."""

    @abc.abstractmethod
    def cancel_scope(self) -> Scope:
        """A new cancel scope, the cheapest this loop has; it cancels and shields the
        code inside as ``anyio.CancelScope`` does."""

    @abc.abstractmethod
    def shielded(self, seconds: float) -> Scope:
        """A scope that keeps outside cancellation from its body for ``seconds``, then
        cancels it: for short, bounded clean-up that must not be cut off (check
        ``cancelled_caught`` afterwards to learn whether the bound was hit).  A loop
        may round the bound up a little (asyncio: by up to `TICK`), never down."""

    reuses_open_scopes: ClassVar[bool] = False
    """Whether re-arming a scope that is already open as a bounded shield
    (`shield_open`) is cheaper here than entering a fresh one (`shielded`)."""

    def shield_open(self, scope: Scope, seconds: float) -> None:
        """Make ``scope`` (one of this loop's, entered and never cancelled) a shield
        that keeps outside cancellation from its body for ``seconds`` from now, then
        cancels it, as `shielded` would.  Worth it where `reuses_open_scopes`."""
        open_scope: Any = scope  # (the loops' scopes, whose settings `Scope` does not name)
        open_scope.shield = True
        open_scope.deadline = self._now() + seconds

    def _now(self) -> float:
        """The loop's clock, as deadlines read it."""
        return anyio.current_time()

    @abc.abstractmethod
    def cancel_due(self, /) -> bool:  # `/`: asyncio's is a plain function (see there)
        """Whether the caller's cancellation is due, without yielding (a sync check, so
        a step pays no coroutine for it).

        Due means a scope around the caller was cancelled, or its deadline has passed
        although the loop has not noticed yet, or (asyncio) ``task.cancel()`` was
        called.  It may say due when another task's deadline has passed; delivering
        then only yields.  Never raises.
        """

    @abc.abstractmethod
    async def deliver_cancellation(self) -> None:
        """Yield to the loop so that a due cancellation (see `cancel_due`) is raised
        here; raises that cancellation, or returns if none was due."""

    @abc.abstractmethod
    def call_later(self, delay: float, fn: Callable[[], object]) -> Callable[[], None]:
        """Call ``fn()`` synchronously from the loop ``delay`` seconds from now (at the
        earliest); returns a function that cancels the call if it has not happened
        (calling it again, or after the call, does nothing).  An exception from
        ``fn`` is logged, never raised into the loop.  The call does not outlive the
        run: pending calls are dropped when it ends."""

    def call_later_coarse(self, delay: float, fn: Callable[[], object]) -> Callable[[], object]:
        """`call_later`, but up to a sixteenth of ``delay`` late: calls due at about the
        same time share one of the loop's timers (`CoarseTimers`), which costs a
        fraction of a timer of their own, for timers that are mostly cancelled before
        they are due (a durable run's first lease renewal).  Never early; returns a
        function that cancels the call (harmless to call again, or after the call)."""
        return self.call_later(delay, fn)

    @abc.abstractmethod
    def start_system_task(
        self, fn: Callable[[], Coroutine[Any, Any, object]], name: str
    ) -> Callable[[], None]:
        """Start ``await fn()`` in a task of its own that belongs to no caller's task
        group (a system task, ended at the latest when the run ends); returns a
        function that cancels it.  ``fn`` must not raise (on trio an exception would
        crash the run): it catches what it does not mean to propagate."""

    @abc.abstractmethod
    def call_soon_threadsafe(self) -> Callable[[Callable[[], object]], None]:
        """A function that, from any thread, has this loop call ``fn()`` soon (in its own
        thread): how a driver callback fired on the hosted asyncio loop reaches the
        caller's loop.  Calls after the loop ended are dropped."""

    @abc.abstractmethod
    def answer(self) -> Answer[Any]:
        """A new `Answer` awaited by a task of this loop."""

    @abc.abstractmethod
    def driver_runner(self) -> DriverRunner | None:
        """Where an asyncio-only driver used from this loop runs: ``None`` (directly,
        on this loop) or a runner, already acquired (release it when the store that
        uses it closes)."""

    def driver_tasks(self) -> list[asyncio.Task[Any]]:
        """The driver tasks still pending on this run's own driver loop (a hosted
        asyncio loop) if one was started, for tests to check that closed stores
        left nothing behind; none where drivers run directly.  Starts nothing."""
        return []


class CoarseTimers:
    """Calls due at about the same time, sharing one timer of the loop per bucket.

    A call ``delay`` seconds from now joins the bucket that ends at the first multiple
    of its width after that time, the width a power of two between a 32nd and a 16th
    of ``delay`` (so calls of similar delays share buckets, and none is late by more
    than a 16th of its delay, nor early).  Each bucket has one timer of the loop (set
    through ``call_at``, on the clock ``now`` reads); joining and leaving a bucket are
    dict operations.  A call that raises is logged; the others in its bucket still run.
    """

    __slots__ = ("_buckets", "_call_at", "_keys")

    def __init__(self, call_at: Callable[[float, Callable[[], object]], object]) -> None:
        self._buckets: dict[float, dict[int, Callable[[], object]]] = {}
        self._call_at = call_at
        self._keys = itertools.count()

    def call(self, now: float, delay: float, fn: Callable[[], object]) -> Callable[[], object]:
        """Call ``fn()`` at the end of the bucket ``now + delay`` falls in; returns a
        function that cancels the call."""
        width = math.ldexp(1.0, math.frexp(delay)[1] - 5)
        end = ((now + delay) // width + 1.0) * width  # the bucket's end: never early
        bucket = self._buckets.get(end)
        if bucket is None:
            bucket = self._buckets[end] = {}
            self._call_at(end, partial(self._expire, end))
        key = next(self._keys)
        bucket[key] = fn
        return partial(bucket.pop, key, None)

    def _expire(self, end: float) -> None:
        for fn in tuple(self._buckets.pop(end).values()):
            try:
                fn()
            except Exception:  # the loop's callback must not raise (on trio: end the run)
                logger.exception("timer callback %r failed", fn)
