"""trio's `Loop`.

Cancel scopes are trio's own: anyio's ``CancelScope`` wraps trio's and costs about
three times as much, and a one-step durable run enters three.  Timers
(`TrioLoop.call_later`) are one system task per run keeping a heap, since trio has
no timer callbacks and a task per timer would cost more than a short durable run's
other bookkeeping.  asyncio-only drivers run on the run's hosted asyncio loop
(`awaitly_anyio._loops._hosted`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
from collections.abc import Callable, Coroutine, Generator
from typing import Any, ClassVar, Generic, TypeVar

import trio
import trio.lowlevel

from ._base import Answer, CoarseTimers, DriverRunner, Loop, Scope
from ._hosted import HostedLoop, pollable, shared_bridge
from ._per_run import found_in_trio_run, per_trio_run

__all__ = ["TrioLoop"]

R = TypeVar("R")

logger = logging.getLogger("awaitly_anyio")

_CancelScope = trio.CancelScope

_TIMERS = "awaitly_timers"
_COARSE_TIMERS = "awaitly_coarse_timers"
_HOSTED_LOOP = "awaitly_hosted_loop"

# Cancelled timers stay in the heap until due; it is rebuilt without them once they
# are more than half of it (as asyncio does with its cancelled timers).
_COMPACT_AFTER = 64


class _Timers:
    """The timers of one trio run (made by `TrioLoop.call_later` on first use)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, list[Callable[[], object] | None]]] = []
        self._count = 0
        self._cancelled = 0
        self._waiting = trio.CancelScope()
        trio.lowlevel.spawn_system_task(self._run, name="awaitly-timers")

    def call_later(self, delay: float, fn: Callable[[], object]) -> Callable[[], None]:
        return self.call_at(trio.current_time() + delay, fn)

    def call_at(self, when: float, fn: Callable[[], object]) -> Callable[[], None]:
        """Call ``fn()`` once trio's clock reads ``when``; returns the cancel function."""
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


_last_coarse: tuple[object, CoarseTimers] = (None, CoarseTimers(lambda when, fn: None))
"""The last trio run's runner and coarse timers (a process mostly runs one at a time)."""


def _coarse_timers() -> CoarseTimers:
    """The current trio run's coarse timers, on its timers' heap."""
    return CoarseTimers(per_trio_run(_TIMERS, _Timers).call_at)


class _TrioAnswer(Generic[R]):
    """asyncio's ``Future`` as far as `Answer` goes, on a trio event."""

    __slots__ = ("_error", "_event", "_value")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._value: R | None = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        return self._event.is_set()

    def set_result(self, result: R, /) -> None:
        if self._event.is_set():
            raise RuntimeError("the answer was already given")
        self._value = result
        self._event.set()

    def set_exception(self, exception: BaseException, /) -> None:
        if self._event.is_set():
            raise RuntimeError("the answer was already given")
        self._error = exception
        self._event.set()

    async def _wait(self) -> R:
        try:
            await self._event.wait()
        except BaseException:
            self._event.set()  # its waiter stopped waiting: done, so a setter skips it
            raise
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set_result set it

    def __await__(self) -> Generator[Any, None, R]:
        return self._wait().__await__()


def _public_due() -> bool:
    return trio.current_effective_deadline() <= trio.current_time()


def _learn_run_context() -> Any:
    """trio's run context, if its internals are the ones `TrioLoop.cancel_due` reads,
    else ``False``."""
    try:
        from trio._core._run import GLOBAL_RUN_CONTEXT as context

        context.task._cancel_status.effectively_cancelled  # noqa: B018
        context.runner.deadlines.next_deadline  # noqa: B018
        context.runner.clock.current_time  # noqa: B018
    except (ImportError, AttributeError):  # another trio: the public, slower way
        return False
    return context


_context: Any = None
"""trio's run context (`_learn_run_context`), learnt on first use."""


def _learn_context() -> Any:
    """`_context`, learnt now."""
    global _context
    _context = _learn_run_context()
    return _context


def cancel_due(_self: object = None, /) -> bool:
    """trio's `Loop.cancel_due`, also `TrioLoop.cancel_due` itself (the loop object
    arrives as ``_self``, unused).  Call it from a trio task."""
    global _context
    # The public current_effective_deadline() walks every cancel status up to the
    # root (2 us a step); the task's own status says at once whether it is
    # cancelled, and the runner's deadline heap whether any deadline has passed
    # unprocessed (then the checkpoint lets trio's scheduler sort it out).
    context = _context
    if context is None:
        context = _context = _learn_run_context()
    if context is False:
        return _public_due()
    if context.task._cancel_status.effectively_cancelled:
        return True
    runner = context.runner
    return runner.deadlines.next_deadline() <= runner.clock.current_time()  # type: ignore[no-any-return]


class TrioLoop(Loop):
    """trio."""

    __slots__ = ()

    name: ClassVar[str] = "trio"
    drives_asyncio: ClassVar[bool] = False

    def cancel_scope(self) -> Scope:
        return _CancelScope()

    # A native trio scope is costly to enter and cheap to re-arm.
    reuses_open_scopes: ClassVar[bool] = True

    def shielded(self, seconds: float) -> Scope:
        return _CancelScope(shield=True, deadline=self._now() + seconds)

    def _now(self) -> float:
        # The run's clock read directly: trio.current_time() is two frames more.
        context = _context
        if context is None:
            context = _learn_context()
        if context is False:
            return trio.current_time()
        now: float = context.runner.clock.current_time()
        return now

    # The module's function itself, as on asyncio: `awaitly_anyio._loops.cancel_due`
    # off asyncio calls it with no bound method between.
    cancel_due = cancel_due

    async def deliver_cancellation(self) -> None:
        await trio.lowlevel.checkpoint()

    def call_later(self, delay: float, fn: Callable[[], object]) -> Callable[[], None]:
        return per_trio_run(_TIMERS, _Timers).call_later(delay, fn)

    def call_later_coarse(self, delay: float, fn: Callable[[], object]) -> Callable[[], object]:
        global _last_coarse
        # The run's coarse timers, from the last call's if this is the same run: the
        # look-up of a run variable costs as much as the timer itself.
        context = _context
        if context is None:
            context = _learn_context()
        runner = context.runner if context is not False else None
        last_runner, timers = _last_coarse
        if runner is None or runner is not last_runner:
            timers = per_trio_run(_COARSE_TIMERS, _coarse_timers)
            _last_coarse = (runner, timers)
        now = trio.current_time() if runner is None else runner.clock.current_time()
        return timers.call(now, delay, fn)

    def start_system_task(
        self, fn: Callable[[], Coroutine[Any, Any, object]], name: str
    ) -> Callable[[], None]:
        scope = trio.CancelScope()

        async def run() -> None:
            with scope:
                await fn()

        trio.lowlevel.spawn_system_task(run, name=name)
        return scope.cancel

    def call_soon_threadsafe(self) -> Callable[[Callable[[], object]], None]:
        token = trio.lowlevel.current_trio_token()

        def call(fn: Callable[[], object]) -> None:
            with contextlib.suppress(trio.RunFinishedError):  # nobody is left to wake
                token.run_sync_soon(fn)

        return call

    def answer(self) -> Answer[Any]:
        return _TrioAnswer[Any]()

    def driver_runner(self) -> DriverRunner | None:
        runner: DriverRunner = (
            per_trio_run(_HOSTED_LOOP, HostedLoop) if pollable() else shared_bridge()
        )
        runner.acquire()
        return runner

    def driver_tasks(self) -> list[asyncio.Task[Any]]:
        hosted: HostedLoop | None = found_in_trio_run(_HOSTED_LOOP)
        if hosted is None or hosted.ended:
            return []
        return list(asyncio.all_tasks(hosted.loop))
