"""asyncio's `Loop`.

Cancel scopes are anyio's (asyncio has none of its own that shields): subclasses of
anyio's asyncio class (`_scope_classes`), made directly, which skips the look-up of
the running backend that ``anyio.CancelScope(...)`` does each time (a quarter of a
shielded scope's cost).  Their ``with`` does anyio's bookkeeping itself in the
common case (a fresh scope with no deadline, left without an exception or a
cancellation) and hands every other case to anyio's own methods.

A shielded scope needs a bound, and on asyncio a deadline is a timer: pushed onto
the loop's heap on entry and popped from it later, each step of either a Python-level
comparison, so with a hundred runs in flight a shielded write's timer cost a tenth
of its checkpoint.  Shielded scopes share their timers instead: bounds fall into
buckets `TICK` wide, one asyncio timer per bucket, and a scope joins and leaves
its bucket (a set) in constant time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
import types
import weakref
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, ClassVar, cast

import anyio

from ._base import Answer, CoarseTimers, DriverRunner, Loop, Scope

__all__ = ["TICK", "AsyncioLoop", "buckets_of", "cancel_due"]

_get_running_loop = asyncio._get_running_loop  # the C function: no exception when none runs


def _task_reader() -> Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None]:
    """``asyncio.current_task``, or where that is a Python function (3.11) around the
    dict of current tasks, that dict's ``get`` (no frame)."""
    tasks: Any = asyncio.tasks
    current: Any = getattr(tasks, "_current_tasks", None)
    if isinstance(asyncio.current_task, types.FunctionType) and type(current) is dict:
        by_loop = cast("dict[asyncio.AbstractEventLoop, asyncio.Task[Any]]", current)
        return by_loop.get
    return asyncio.current_task


_current_task = _task_reader()
_monotonic = time.monotonic
_base_time = asyncio.BaseEventLoop.time


TICK = 0.1
"""The width of a bucket of bounds: a shielded scope's bound is kept to within this."""

Buckets = dict[int, set[Scope]]
"""One asyncio loop's bounds: the scopes to cancel at the end of each tick."""

_buckets: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Buckets] = (
    weakref.WeakKeyDictionary()
)
_last: tuple[Callable[[], object], Buckets] = (lambda: None, {})
"""The last loop's buckets, kept at hand (a process mostly has one loop)."""


def buckets_of(loop: asyncio.AbstractEventLoop) -> Buckets:
    """``loop``'s buckets of shielded scopes' bounds (made on first use)."""
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


_ANYIO_SCOPE_FIELDS = (
    "_active",
    "_cancel_called",
    "_cancelling_at_enter",
    "_child_scopes",
    "_deadline",
    "_host_task",
    "_parent_scope",
    "_pending_uncancellations",
    "_restart_cancellation_in_parent",
    "_shield",
    "_tasks",
    "_timeout_handle",
)
"""What the fast ``with`` of `_scope_classes` reads and writes of anyio's scope."""


def _task_states_of(base: type[Any]) -> dict[Any, Any] | None:
    """anyio's asyncio table of task states (what the fast ``with`` of
    `_scope_classes` reads), or ``None`` if this anyio keeps them otherwise (then
    its own ``__enter__`` and ``__exit__`` run)."""
    backend: Any = sys.modules[base.__module__]
    states: Any = getattr(backend, "_task_states", None)
    if not isinstance(states, weakref.WeakKeyDictionary):
        return None
    if not all(hasattr(base, name) for name in _ANYIO_SCOPE_FIELDS):
        return None
    data: dict[Any, Any] = cast(Any, states).data  # its dict, by weak reference to the task
    return data


def _scope_classes(base: type[Any]) -> tuple[Callable[[], Scope], Callable[[], Any]]:
    """Subclasses of anyio's asyncio scope (``base``): a plain scope, and a bounded
    shield that leaves its bucket (its ``_bucket``, set by `AsyncioLoop.shielded`) on
    exit.

    Subclasses rather than wrappers: the ``with`` statement reads anyio's own
    ``cancelled_caught``, with no frame of ours between (a wrapper's three frames
    were a third of a shielded write's cost).  Both are made by ``object.__new__``
    itself, with no arguments (anyio's ``__new__`` is a Python function), so the
    shield's settings are written after it is made.

    Their ``with`` does what anyio's does for a scope with no deadline that is
    entered uncancelled and left without an exception (every durable write and
    most run bodies): the same fields set the same way, without anyio's look-ups
    through Python frames (``asyncio.current_task`` on 3.11, the weak table of
    task states, the deadline check).  Any other case (an exception, a
    cancellation, misuse) is anyio's own ``__enter__``/``__exit__``, and so is
    every case if this anyio's scope lacks the fields read here.
    """
    base_enter: Any = base.__enter__
    base_exit: Any = base.__exit__
    found = _task_states_of(base)
    states: dict[Any, Any] = {} if found is None else found
    ref = weakref.ref

    class PlainScope(base):  # type: ignore[misc]  # anyio's class, learnt at run time
        __slots__ = ()
        __new__ = object.__new__

        if found is not None:

            def __enter__(self) -> Any:
                scope: Any = self  # (anyio's fields, unknown to the type checkers here)
                loop = _get_running_loop()
                host = None if loop is None else _current_task(loop)
                state = None if host is None else states.get(ref(host))
                if (
                    state is None
                    or scope._active
                    or scope._cancel_called
                    or scope._deadline != math.inf  # set by hand: anyio starts its timer
                ):
                    return base_enter(self)
                # anyio's __enter__ for a fresh, uncancelled scope with no deadline.
                scope._host_task = host
                scope._tasks.add(host)
                parent = state.cancel_scope
                scope._parent_scope = parent
                state.cancel_scope = self
                if parent is not None:
                    parent._child_scopes.add(self)
                    parent._tasks.discard(host)
                scope._active = True
                if scope._pending_uncancellations is not None:
                    scope._cancelling_at_enter = host.cancelling()  # type: ignore[union-attr]  # a state: a task
                return self

            def __exit__(
                self,
                exc_type: type[BaseException] | None,
                exc: BaseException | None,
                tb: TracebackType | None,
            ) -> bool:
                scope: Any = self  # (anyio's fields, unknown to the type checkers here)
                host = scope._host_task
                if (
                    exc_type is not None
                    or host is None
                    or scope._cancel_called
                    or scope._pending_uncancellations
                    or scope._timeout_handle is not None
                    or not scope._active
                ):
                    exited: bool = base_exit(self, exc_type, exc, tb)
                    return exited
                loop = _get_running_loop()
                state = states.get(ref(host))
                if (
                    loop is None
                    or _current_task(loop) is not host
                    or state is None
                    or state.cancel_scope is not self
                ):
                    exited = base_exit(self, exc_type, exc, tb)  # raises anyio's error
                    return exited
                # anyio's __exit__ for an uncancelled scope left without an exception.
                scope._active = False
                scope._tasks.remove(host)
                parent = scope._parent_scope
                if parent is not None:
                    parent._child_scopes.remove(self)
                    parent._tasks.add(host)
                state.cancel_scope = parent
                # A scope around this one may have been cancelled meanwhile (this one
                # shielded it): its delivery starts again, as anyio's exit does (the
                # walk up to the nearest shield spelt out: mostly nothing is found).
                while parent is not None:
                    if parent._cancel_called:
                        scope._restart_cancellation_in_parent()
                        break
                    if parent._shield:
                        break
                    parent = parent._parent_scope
                scope._host_task = None
                return False

    class BoundedShield(PlainScope):
        __slots__ = ("_bucket",)

        def __exit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> bool:
            self._bucket.discard(self)
            exited: bool = PlainScope.__exit__(self, exc_type, exc, tb)
            return exited

    return PlainScope, BoundedShield


def _anyio_scope_class() -> Callable[..., Scope]:
    """The class ``anyio.CancelScope(...)`` gives on asyncio (call it on an asyncio loop)."""
    made: Callable[..., Scope] = type(anyio.CancelScope())
    return made


def _learn_effective_deadline() -> Callable[[], float]:
    """anyio's asyncio backend's ``current_effective_deadline`` (``-inf`` once a scope
    around the task is cancelled), taken from its class directly: the public
    ``anyio.current_effective_deadline()`` looks the backend up on every call."""
    global _effective_deadline
    backend: Any = sys.modules[_anyio_scope_class().__module__]
    reader: Callable[[], float] = backend.AsyncIOBackend.current_effective_deadline
    _effective_deadline = reader
    return reader


_effective_deadline: Callable[[], float] | None = None


def _no_loop_due() -> bool:
    raise RuntimeError("awaitly-anyio must be used from asyncio or trio code")


elsewhere_due: Callable[[], bool] = _no_loop_due
"""What `cancel_due` asks when no asyncio loop runs: the caller's other loop's
check (`awaitly_anyio._loops` sets it)."""


def cancel_due(_self: object = None, /) -> bool:
    """asyncio's `Loop.cancel_due`; where no asyncio loop runs, `elsewhere_due`.

    Asking asyncio first is how the caller's loop is found (asyncio answers without
    raising), so this one function serves every loop with no frame more on asyncio.
    It is also `AsyncioLoop.cancel_due` itself (the loop object arrives as
    ``_self``, unused): one body, called as a plain function or as a method at the
    cost of either.
    """
    loop = _get_running_loop()
    if loop is None:
        return elsewhere_due()
    task = _current_task(loop)
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
    timer_due = bool(scheduled) and scheduled[0]._when <= loop.time()
    if not ready and not timer_due:
        return False
    states = _scope_states
    if states is None:
        states = _learn_scope_states()
        if states is False:  # an anyio whose scopes this walk does not know
            reader = _effective_deadline
            if reader is None:
                reader = _learn_effective_deadline()
            return reader() <= loop.time()
    # anyio's own walk (current_effective_deadline), without its calls: with many
    # tasks the ready queue is never empty, so every step of every run walks.  A
    # deadline can only have passed if a timer is due (anyio sets one per deadline,
    # and cancels at once a deadline set in the past), so without one only
    # cancelled scopes are looked for.
    state = states.data.get(weakref.ref(task))
    if state is None:
        return False
    scope = state.cancel_scope
    now = loop.time() if timer_due else -math.inf
    while scope is not None:
        if scope._cancel_called or scope._deadline <= now:
            return True
        if scope._shield:
            return False
        scope = scope._parent_scope
    return False


_scope_states: Any = None
"""anyio's asyncio task states (task -> its innermost cancel scope), once checked to
hold scopes with the fields `cancel_due` reads; ``False`` if they do not."""


def _holds(value: object, kind: type) -> bool:
    # isinstance without the narrowing: what anyio keeps stays typed Any.
    return isinstance(value, kind)


def _learn_scope_states() -> Any:
    global _scope_states
    backend: Any = sys.modules[_anyio_scope_class().__module__]
    states: Any = getattr(backend, "_task_states", None)
    probe: Any = anyio.CancelScope()
    fields = ("_cancel_called", "_deadline", "_shield", "_parent_scope")
    if not _holds(states, weakref.WeakKeyDictionary) or not all(
        hasattr(probe, name) for name in fields
    ):
        states = False
    _scope_states = states
    return states


_coarse_timers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CoarseTimers] = (
    weakref.WeakKeyDictionary()
)
_last_coarse: tuple[Callable[[], object], CoarseTimers | None] = (lambda: None, None)
"""The last loop's coarse timers, kept at hand as `_last` is."""


def _coarse_of(loop: asyncio.AbstractEventLoop) -> CoarseTimers:
    """``loop``'s coarse timers (made on first use)."""
    global _last_coarse
    found = _coarse_timers.get(loop)
    if found is None:
        found = _coarse_timers[loop] = CoarseTimers(loop.call_at)
    _last_coarse = (weakref.ref(loop), found)
    return found


_system_tasks: set[asyncio.Task[Any]] = set()
"""System tasks still running: asyncio keeps only weak references to tasks."""


class AsyncioLoop(Loop):
    """asyncio (and loops that implement its API, such as uvloop)."""

    __slots__ = ("_plain_class", "_scope_class", "_shield_class")

    name: ClassVar[str] = "asyncio"
    drives_asyncio: ClassVar[bool] = True

    def __init__(self) -> None:
        # Learnt from anyio on first use (it knows its asyncio backend's classes only
        # once a loop runs).
        self._scope_class: Callable[..., Scope] | None = None
        self._plain_class: Callable[[], Scope] | None = None
        self._shield_class: Callable[[], Any] | None = None

    def _learn_classes(self) -> tuple[Callable[[], Scope], Callable[[], Any]]:
        plain, shield = _scope_classes(type(self._scopes()()))
        self._plain_class, self._shield_class = plain, shield
        return plain, shield

    def _scopes(self) -> Callable[..., Scope]:
        """The class ``anyio.CancelScope(...)`` gives on asyncio (learnt from the first one)."""
        made = self._scope_class
        if made is None:
            made = self._scope_class = _anyio_scope_class()
        return made

    def cancel_scope(self) -> Scope:
        plain = self._plain_class
        if plain is None:
            plain = self._learn_classes()[0]
        return plain()

    def shielded(self, seconds: float) -> Scope:
        if seconds <= 0:
            return self._scopes()(shield=True, deadline=-math.inf)
        shield_class = self._shield_class
        if shield_class is None:
            shield_class = self._learn_classes()[1]
        loop = asyncio.get_running_loop()
        loop_of_last, buckets = _last
        if loop_of_last() is not loop:
            buckets = buckets_of(loop)
        # asyncio's own loops read time.monotonic(): read it here without the frame.
        now = _monotonic() if type(loop).time is _base_time else loop.time()
        slot = int((now + seconds) / TICK) + 1  # the tick's end: never early
        bucket = buckets.get(slot)
        if bucket is None:
            bucket = _new_bucket(loop, buckets, slot)
        shield = shield_class()
        shield._shield = True  # anyio's own attribute (its __init__ was given no arguments)
        shield._bucket = bucket
        # Joined now, not on entry (the scope is entered at once): a bucket that expires
        # first only makes the scope enter cancelled, as anyio does with a deadline
        # already passed.
        bucket.add(shield)
        shielded: Scope = shield
        return shielded

    # The module's function itself (not a staticmethod, which a method call on the
    # object pays for): `awaitly_anyio._loops.cancel_due` asks asyncio with no frame
    # more, and so does a caller that holds this object.
    cancel_due = cancel_due

    async def deliver_cancellation(self) -> None:
        # anyio delivers a passed deadline from a timer that runs after the task
        # resumes from its first yield, so the second yield is the one that raises.
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    def call_later(self, delay: float, fn: Callable[[], object]) -> Callable[[], None]:
        # asyncio logs a failing callback through the loop's exception handler.
        return asyncio.get_running_loop().call_later(delay, fn).cancel

    def call_later_coarse(self, delay: float, fn: Callable[[], object]) -> Callable[[], object]:
        loop = asyncio.get_running_loop()
        loop_of_last, timers = _last_coarse
        if timers is None or loop_of_last() is not loop:
            timers = _coarse_of(loop)
        return timers.call(loop.time(), delay, fn)

    def start_system_task(
        self, fn: Callable[[], Coroutine[Any, Any, object]], name: str
    ) -> Callable[[], None]:
        task = asyncio.get_running_loop().create_task(fn(), name=name)
        _system_tasks.add(task)
        task.add_done_callback(_system_tasks.discard)

        def cancel() -> None:
            task.cancel()

        return cancel

    def call_soon_threadsafe(self) -> Callable[[Callable[[], object]], None]:
        loop = asyncio.get_running_loop()

        def call(fn: Callable[[], object]) -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to wake
                loop.call_soon_threadsafe(fn)

        return call

    def answer(self) -> Answer[Any]:
        return asyncio.get_running_loop().create_future()

    def driver_runner(self) -> DriverRunner | None:
        return None
