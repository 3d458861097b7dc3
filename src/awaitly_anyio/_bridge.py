"""The one way asyncio-only drivers (asyncpg, redis.asyncio) are reached from trio.

Under asyncio a store awaits its driver directly.  Under trio it hands each
coroutine to a private asyncio event loop running in a daemon thread and waits
for the outcome without blocking trio.  The loop is shared by every store in the
process and stops (its thread joined) when the last store using it closes.

Cancellation crosses over: if the trio caller is cancelled, the asyncio task is
cancelled too and the caller waits (shielded, briefly) until the driver has
finished unwinding, so no operation outlives the scope that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

__all__ = [
    "AsyncioBridge",
    "DriverLoop",
    "current_async_library",
    "runner_for_current_loop",
    "shared_bridge",
]

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
        try:
            loop.run_forever()
            # Anything still pending was abandoned by a store that did not close: cancel it.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

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
        task = holder["task"]
        if task.cancelled():
            # Cancelled from the asyncio side (the bridge shutting down under us).
            raise anyio.BrokenResourceError("the asyncio bridge stopped during the operation")
        return task.result()


async def _call(fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
    return await fn(*args)


_shared = AsyncioBridge()


def shared_bridge() -> AsyncioBridge:
    """The process-wide bridge every store uses under trio."""
    return _shared


def runner_for_current_loop() -> tuple[str, AsyncioBridge | None]:
    """Which event loop the caller is on, and the bridge to use from it (``None`` on asyncio).

    The bridge is acquired; release it when the store closes.
    """
    library = current_async_library()
    if library == "asyncio":
        return library, None
    _shared.acquire()
    return library, _shared


def current_async_library() -> str:
    """``"asyncio"`` or ``"trio"``: the event loop running the caller."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return "asyncio"
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return "trio"
    raise RuntimeError("awaitly-anyio stores must be used from asyncio or trio code")


class DriverLoop:
    """Where a store's asyncio driver runs: bound to the event loop of the store's first use.

    On asyncio, :meth:`call` awaits the driver directly; on trio it goes through
    the shared bridge.  Using one store from both kinds of loop is refused, since
    its connections belong to one asyncio loop.
    """

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._library: str | None = None
        self._bridge: AsyncioBridge | None = None

    @property
    def bound(self) -> bool:
        """Whether the store has been used (and its driver loop chosen)."""
        return self._library is not None

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` on the driver's loop."""
        library = current_async_library()
        if self._library is None:
            self._library, self._bridge = runner_for_current_loop()
        elif library != self._library:
            raise RuntimeError(
                f"{self._owner} was opened on {self._library} and cannot be used from {library}"
            )
        if self._bridge is None:
            return await fn(*args)
        return await self._bridge.run(fn, *args)

    def release(self) -> None:
        """Let go of the bridge (after the driver's connections are closed)."""
        bridge, self._bridge = self._bridge, None
        if bridge is not None:
            bridge.release()
