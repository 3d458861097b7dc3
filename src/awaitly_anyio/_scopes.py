"""The cancel scopes a durable run enters on every step and at its end, the cheapest
each event loop has.

anyio's ``CancelScope`` works everywhere, but on trio it wraps trio's own and costs
about three times as much; a one-step durable run enters three of them (the body's
scope, which lease loss cancels, and a shielded one around each final write).
On trio these are trio's scopes; on asyncio, anyio's (asyncio has none of its own
that shields), made from anyio's asyncio class directly, which skips the look-up of
the running backend that ``anyio.CancelScope(...)`` does each time (a quarter of a
shielded scope's cost there).  Both kinds cancel and shield the same way for the
code inside.

A shielded scope needs a bound, and on asyncio a deadline is a timer: pushed onto
the loop's heap on entry and popped from it later, each step of either a Python-level
comparison, so with a hundred runs in flight a shielded write's timer cost a tenth
of its checkpoint.  Shielded writes share their timers instead: bounds fall into
buckets a tenth of a second wide, one asyncio timer per bucket, and a write joins
and leaves its bucket (a set) in constant time.
"""

from __future__ import annotations

import asyncio
import math
import sys
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, Self

import anyio

from ._bridge import current_async_library

__all__ = [
    "Scope",
    "cancel_due",
    "cancel_scope",
    "deliver_cancellation",
    "shielded",
]


class Scope(Protocol):
    """What both kinds of cancel scope offer here."""

    @property
    def cancelled_caught(self) -> bool: ...

    def cancel(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...  # `bool`: a scope may swallow its own cancellation (type checkers know)


def _trio() -> Any:
    """The trio module if the caller runs on trio, else ``None`` (asyncio)."""
    return sys.modules["trio"] if current_async_library() == "trio" else None


_asyncio_scope: Any = None
_asyncio_backend: Any = None


def _asyncio_scope_class() -> Any:
    """The class ``anyio.CancelScope(...)`` gives on asyncio (learnt from the first one)."""
    global _asyncio_scope
    if _asyncio_scope is None:
        _asyncio_scope = type(anyio.CancelScope())
    return _asyncio_scope


def cancel_scope() -> Scope:
    """A new cancel scope for the current event loop."""
    trio = _trio()
    if trio is not None:
        return trio.CancelScope()  # type: ignore[no-any-return]
    return _asyncio_scope_class()()  # type: ignore[no-any-return]


def shielded(seconds: float) -> Scope:
    """A scope that keeps outside cancellation from its body for ``seconds`` (on
    asyncio, up to a tenth of a second more), then cancels it: for short, bounded
    clean-up that must not be cut off (check ``cancelled_caught`` afterwards to
    learn whether the bound was hit)."""
    trio = _trio()
    if trio is not None:
        return trio.CancelScope(shield=True, deadline=trio.current_time() + seconds)  # type: ignore[no-any-return]
    if seconds <= 0:
        return _asyncio_scope_class()(shield=True, deadline=-math.inf)  # type: ignore[no-any-return]
    return _BoundedShield(seconds)


TICK = 0.1
"""The width of a bucket of bounds on asyncio: a bound is kept to within this."""

Buckets = dict[int, set[Scope]]
"""One asyncio loop's bounds: the scopes to cancel at the end of each tick."""

_buckets: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Buckets] = (
    weakref.WeakKeyDictionary()
)
_last: tuple[Callable[[], object], Buckets] = (lambda: None, {})
"""The last loop's buckets, kept at hand (a process mostly has one loop)."""


def _buckets_of(loop: asyncio.AbstractEventLoop) -> Buckets:
    global _last
    found = _buckets.get(loop)
    if found is None:
        found = _buckets[loop] = {}
    _last = (weakref.ref(loop), found)
    return found


def _new_bucket(loop: asyncio.AbstractEventLoop, buckets: Buckets, slot: int) -> set[Scope]:
    """Start bucket ``slot``, with the one timer that cancels what is left in it."""

    def expire() -> None:
        for scope in tuple(buckets.pop(slot)):
            scope.cancel()

    bucket = buckets[slot] = set()
    loop.call_at(slot * TICK, expire)
    return bucket


class _BoundedShield:
    """anyio's shielded scope on asyncio, its bound kept in the loop's buckets."""

    __slots__ = ("_bucket", "_scope", "_seconds")

    def __init__(self, seconds: float) -> None:
        self._scope = _asyncio_scope_class()(shield=True)
        self._seconds = seconds
        self._bucket: set[Scope] | None = None

    @property
    def cancelled_caught(self) -> bool:
        return self._scope.cancelled_caught  # type: ignore[no-any-return]

    def cancel(self) -> None:
        self._scope.cancel()

    def __enter__(self) -> Self:
        scope = self._scope
        scope.__enter__()
        loop = asyncio.get_running_loop()
        loop_of_last, buckets = _last
        if loop_of_last() is not loop:
            buckets = _buckets_of(loop)
        slot = int((loop.time() + self._seconds) / TICK) + 1  # the tick's end: never early
        bucket = buckets.get(slot)
        if bucket is None:
            bucket = _new_bucket(loop, buckets, slot)
        bucket.add(scope)
        self._bucket = bucket
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if self._bucket is not None:
            self._bucket.discard(self._scope)
        return self._scope.__exit__(exc_type, exc, tb)  # type: ignore[no-any-return]


def _asyncio_effective_deadline() -> Callable[[], float]:
    """anyio's asyncio backend's ``current_effective_deadline`` (``-inf`` once a scope
    around the task is cancelled), taken from its class directly: the public
    ``anyio.current_effective_deadline()`` looks the backend up on every call."""
    global _asyncio_backend
    if _asyncio_backend is None:
        _asyncio_backend = sys.modules[_asyncio_scope_class().__module__].AsyncIOBackend
    return _asyncio_backend.current_effective_deadline  # type: ignore[no-any-return]


def _trio_public_due() -> bool:
    trio = sys.modules["trio"]
    return trio.current_effective_deadline() <= trio.current_time()  # type: ignore[no-any-return]


def _learn_trio_context() -> Any:
    """trio's run context, if its internals are the ones `cancel_due` reads."""
    try:
        from trio._core._run import GLOBAL_RUN_CONTEXT as context

        context.task._cancel_status.effectively_cancelled  # noqa: B018
        context.runner.deadlines.next_deadline  # noqa: B018
        context.runner.clock.current_time  # noqa: B018
    except (ImportError, AttributeError):  # another trio: the public, slower way
        return False
    return context


_trio_context: Any = None


def cancel_due() -> bool:
    """Whether the caller's cancellation is due, without yielding.

    Due means a scope around the caller was cancelled, or its deadline has
    passed although the loop has not noticed yet (the caller ran without
    yielding), or, on asyncio, ``task.cancel()`` was called.  A sync check, so a
    step pays no coroutine for it; `deliver_cancellation` then raises it.
    It may say due when another task's deadline has passed; delivering then only
    yields once.
    """
    global _trio_context
    loop = asyncio._get_running_loop()
    if loop is not None:
        task = asyncio.current_task(loop)
        if task is None:
            return False
        if task.cancelling():  # task.cancel() was called: the next yield raises
            return True
        # anyio delivers a cancellation through the loop: a callback in its ready
        # queue (a scope cancelled from the task itself) or a timer that is due (a
        # deadline).  With neither pending nothing can be due, and the walk up
        # anyio's scopes (most of the cost) is skipped.  Loops without these queues
        # (uvloop) always walk.
        base: Any = loop  # BaseEventLoop's own queues, read directly (no getattr call)
        try:
            ready: Any = base._ready
            scheduled: Any = base._scheduled
        except AttributeError:
            ready = scheduled = True
        if not ready and (not scheduled or scheduled[0]._when > loop.time()):
            return False
        return _asyncio_effective_deadline()() <= loop.time()
    # On trio the public current_effective_deadline() walks every cancel status up
    # to the root (2 us a step); the task's own status says at once whether it is
    # cancelled, and the runner's deadline heap whether any deadline has passed
    # unprocessed (then the checkpoint lets trio's scheduler sort it out).
    context = _trio_context
    if context is None:
        context = _trio_context = _learn_trio_context()
    if context is False:
        return _trio_public_due()
    if context.task._cancel_status.effectively_cancelled:
        return True
    runner = context.runner
    return runner.deadlines.next_deadline() <= runner.clock.current_time()  # type: ignore[no-any-return]


async def deliver_cancellation() -> None:
    """Yield to the loop so that a due cancellation (see `cancel_due`) is raised."""
    if asyncio._get_running_loop() is not None:
        # anyio delivers a passed deadline from a timer that runs after the task
        # resumes from its first yield, so the second yield is the one that raises.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    else:
        await sys.modules["trio"].lowlevel.checkpoint()
