"""The asyncio loops that asyncio-only drivers (asyncpg, redis.asyncio) run on when
their caller's loop is not asyncio (trio).

A `HostedLoop` lives in trio's own thread, one per trio run, and a trio system
task runs it whenever it has work, waiting on its selector's file descriptor in
between.  No thread is crossed, so a driver call costs about what it costs on
asyncio.  Where the selector cannot be waited on from trio (Windows' select), an
`AsyncioBridge` runs the loop in a daemon thread instead, shared by every store
and stopped (its thread joined) when the last store using it closes.

Cancellation crosses over: if the trio caller is cancelled, the asyncio task is
cancelled too and the caller waits (shielded, briefly) until the driver has
finished unwinding, so no operation outlives the scope that started it.

trio is imported inside the methods: this module is imported (through
`awaitly_anyio._bridge`) by stores that may never meet trio.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import selectors
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

__all__ = ["AsyncioBridge", "HostedLoop", "pollable", "shared_bridge"]

T = TypeVar("T")


class AsyncioBridge:
    """A private asyncio loop in a daemon thread, started by the first user and
    stopped by the last (``acquire`` / ``release``)."""

    def __init__(self, name: str = "awaitly-asyncio-bridge") -> None:
        self._name = name
        self._mutex = threading.Lock()
        self._users = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def ended(self) -> bool:
        """Never: a released bridge starts again for its next user."""
        return False

    @property
    def running(self) -> bool:
        """Whether the loop thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The bridge's event loop (only while acquired)."""
        if self._loop is None:
            raise RuntimeError("the asyncio bridge is not running (acquire it first)")
        return self._loop

    def acquire(self) -> None:
        """Count one more user, starting the loop thread for the first."""
        with self._mutex:
            if self._users == 0:
                ready = threading.Event()
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._serve, args=(loop, ready), name=self._name, daemon=True
                )
                self._loop = loop
                self._thread.start()
                ready.wait()
            self._users += 1

    def release(self) -> None:
        """Count one user less; the last one stops the loop and joins its thread."""
        with self._mutex:
            if self._users == 0:
                raise RuntimeError("the asyncio bridge was released more often than acquired")
            self._users -= 1
            if self._users:
                return
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        assert loop is not None
        assert thread is not None
        loop.call_soon_threadsafe(loop.stop)
        thread.join()

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()
        _wind_down(loop)

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``fn(*args)`` on the bridge loop from a trio task and return its outcome.

        Raises what ``fn`` raises.  If the caller is cancelled, the asyncio task is
        cancelled, awaited to its end (shielded), and the cancellation re-raised.
        """
        import trio

        loop = self.loop
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        holder: dict[str, asyncio.Task[T]] = {}

        def deliver(_: object) -> None:
            # The caller waits (shielded) for this, so its run cannot have finished.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        def start() -> None:
            task = loop.create_task(_call(fn, args))
            task.add_done_callback(deliver)
            holder["task"] = task

        loop.call_soon_threadsafe(start)
        try:
            await done.wait()
        except trio.Cancelled:
            loop.call_soon_threadsafe(lambda: holder["task"].cancel())
            with trio.CancelScope(shield=True):
                await done.wait()
            raise
        return _outcome(holder["task"])


def _outcome(task: asyncio.Task[T]) -> T:
    """A finished driver task's result (or its exception)."""
    if task.cancelled():
        # Cancelled from the asyncio side (its loop shutting down under the caller).
        raise anyio.BrokenResourceError("the asyncio loop stopped during the operation")
    return task.result()


def _wind_down(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what a store left running on ``loop`` (one that was never closed), let it
    unwind, and close the loop."""
    try:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


async def _call(fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
    return await fn(*args)


class _YieldingSelector(selectors.DefaultSelector):
    """The hosted loop's selector: it never blocks.

    When asyncio would block (nothing ready and no I/O), it stops the loop instead
    and notes how long asyncio meant to wait, so that trio does the waiting.  It
    polls once per run of the loop: I/O that arrives after that poll is seen by
    trio's wait, which is the next thing to happen.  While
    callbacks are ready it does not poll (the poll when they run out sees the same
    I/O), and after `TURNS` such iterations it stops the loop anyway, so a
    busy driver cannot hold trio's thread.  With ``poll_io`` off it does not poll
    at all: the loop only runs what is ready, and I/O waits for the task that
    trio wakes when the selector has events.
    """

    TURNS = 64

    def __init__(self) -> None:
        super().__init__()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.hosted = True
        self.wait: float | None = None
        self.turns = 0
        self.poll_io = True
        self.polled = False

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if not self.hosted:
            return super().select(timeout)
        assert self.loop is not None
        if timeout == 0:
            self.turns += 1
            if self.turns < self.TURNS:
                return []
            self.wait = 0.0
            self.loop.stop()
        elif not self.poll_io or self.polled:
            self.wait = timeout
            self.loop.stop()
            return []
        ready: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        self.polled = True
        if not ready and timeout != 0:
            self.wait = timeout
            self.loop.stop()  # run_forever() returns after this iteration
        return ready


def pollable() -> bool:
    """Whether trio can wait on the default selector's file descriptor (epoll, kqueue)."""
    return hasattr(selectors.DefaultSelector, "fileno")


class HostedLoop:
    """A private asyncio loop run in trio's own thread, one per trio run.

    The loop is run until it would block, by the caller that gives it work (so a
    driver call starts at once) and by a trio system task that waits, between
    runs, for the loop's selector to have events or its next timer to be due.
    Made by `TrioLoop.driver_runner`; closed when the trio run ends, after
    cancelling whatever a store left behind.
    """

    def __init__(self) -> None:
        import trio

        self._selector = _YieldingSelector()
        self.loop = asyncio.SelectorEventLoop(self._selector)
        self._selector.loop = self.loop
        self._waiting = trio.CancelScope()
        trio.lowlevel.spawn_system_task(self._drive, name="awaitly-hosted-asyncio-loop")

    @property
    def ended(self) -> bool:
        """Whether the trio run that made it has ended (and the loop is closed)."""
        return self.loop.is_closed()

    def acquire(self) -> None:
        """Nothing to count: the loop lives as long as the trio run."""

    def release(self) -> None:
        """Nothing to stop: the loop ends with the trio run."""

    def _step(self, poll_io: bool = False) -> None:
        """Run the loop until it would block, then have the waiting task wait only as
        long as asyncio's next timer allows.

        Callers handing work over run only what is ready (their new task, which
        sends its request at once) and leave the I/O to the waiting task, which
        polls once per trio batch: when many callers hand work over in one batch,
        their requests meet in the driver's queues (a group commit gets them all)
        instead of each caller's poll letting a reply split them up.
        """
        import trio

        self._selector.turns = 0
        self._selector.poll_io = poll_io
        self._selector.polled = False
        self.loop.run_forever()
        wait = self._selector.wait
        if wait is not None:
            # Only ever brought forward: a later timer is found when the task wakes
            # early and runs the loop again, and moving trio's deadlines is not free.
            deadline = trio.current_time() + wait
            if deadline < self._waiting.deadline:
                self._waiting.deadline = deadline

    async def _drive(self) -> None:
        import trio

        fd = self._selector.fileno()
        try:
            while True:
                # One scope for as long as the loop's I/O wakes it; a new one after a
                # timer (asyncio's next timer is the scope's deadline).
                with self._waiting:
                    while True:
                        self._step(poll_io=True)
                        await trio.lowlevel.wait_readable(fd)
                self._waiting = trio.CancelScope()
        finally:
            self._close()

    def _close(self) -> None:
        """The trio run is ending: let the selector block again, and wind the loop down."""
        self._selector.hosted = False
        _wind_down(self.loop)

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``fn(*args)`` on the hosted loop and return its outcome.

        Raises what ``fn`` raises.  If the caller is cancelled, the asyncio task is
        cancelled, awaited to its end (shielded), and the cancellation re-raised.
        """
        import trio

        done = trio.Event()
        # A fresh context: the driver's code must not see the trio caller's context
        # variables (sniffio's among them would call this asyncio code trio).
        task = self.loop.create_task(_call_then(fn, args, done.set), context=contextvars.Context())
        self._step()
        try:
            await done.wait()
        except trio.Cancelled:
            task.cancel()
            self._step()
            with trio.CancelScope(shield=True):
                await done.wait()
            raise
        return _outcome(task)


async def _call_then(
    fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], then: Callable[[], object]
) -> T:
    """``await fn(*args)``, then call ``then`` (however it ended)."""
    try:
        return await fn(*args)
    finally:
        then()


_shared = AsyncioBridge()


def shared_bridge() -> AsyncioBridge:
    """The process-wide bridge every store uses where a `HostedLoop` cannot be."""
    return _shared
