"""Calls that arrive while one is in flight go out together: the mechanism behind the
PostgreSQL store's group commit and the Redis script runner's pipelining.

A call made when nothing is in flight goes out alone, at once.  Calls made while it
(or a batch) is in flight wait in a queue; when it ends they are sent in batches by
a task of their own, so the caller that went alone returns as soon as its own answer
is in.  Each batch costs one round trip however many calls it holds.

It runs on its callers' event loop, asyncio or trio (whichever calls it first).
Under trio, that keeps the queue on trio's side: a queued call waits on a trio
event instead of handing its own work to the hosted asyncio loop, and only the
calls that go out (alone, or a batch) cross over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from ._bridge import current_async_library

__all__ = ["Grouped", "Pending"]

Item = TypeVar("Item")
R = TypeVar("R")


class Pending(Generic[Item, R]):
    """A queued call: what to send, and how its answer gets back to its caller.

    Its methods mirror an asyncio future's (``done``, ``set_result``,
    ``set_exception``); ``done()`` is also true once the caller has stopped
    waiting (it was cancelled), so a batch can skip it.
    """

    __slots__ = ("_error", "_event", "_future", "_value", "item")

    def __init__(self, item: Item, trio: bool) -> None:
        self.item = item
        if trio:
            import trio as trio_module

            self._future: asyncio.Future[R] | None = None
            self._event: Any = trio_module.Event()
            self._value: R | None = None
            self._error: BaseException | None = None
        else:
            self._future = asyncio.get_running_loop().create_future()

    def done(self) -> bool:
        """Whether it was answered, or its caller stopped waiting."""
        if self._future is not None:
            return self._future.done()
        return bool(self._event.is_set())

    def set_result(self, value: R) -> None:
        if self._future is not None:
            self._future.set_result(value)
        else:
            self._value = value
            self._event.set()

    def set_exception(self, error: BaseException) -> None:
        if self._future is not None:
            self._future.set_exception(error)
        else:
            self._error = error
            self._event.set()

    async def answer(self) -> R:
        """Wait for the answer (its caller's side)."""
        if self._future is not None:
            return await self._future
        try:
            await self._event.wait()
        except BaseException:
            self._event.set()  # the caller stopped waiting: done, so a batch skips it
            raise
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


class Grouped(Generic[Item, R]):
    """One call in flight at a time; the others queue and go in batches.

    ``alone(item)`` sends a call by itself; ``together(batch)`` sends a batch and
    answers each call.  ``take(queue)`` says how many calls from the front of the
    queue the next batch holds (at least one); it may reorder the queue first, to
    bring forward calls that can go together.  ``stopped`` is the error queued
    callers get if the sending task is cancelled before answering them (their own
    cancellation is theirs alone: a call cancelled while queued stays in the queue,
    and ``together`` decides whether to send it).
    """

    def __init__(
        self,
        alone: Callable[[Item], Awaitable[R]],
        together: Callable[[list[Pending[Item, R]]], Awaitable[None]],
        take: Callable[[list[Pending[Item, R]]], int],
        stopped: str,
    ) -> None:
        self._alone = alone
        self._together = together
        self._take = take
        self._stopped = stopped
        self._busy = False
        self._queue: list[Pending[Item, R]] = []
        self._trio: bool | None = None  # learnt from the first caller
        self._sender: asyncio.Task[None] | None = None  # asyncio keeps only weak references

    async def __call__(self, item: Item) -> R:
        """Send ``item`` alone if nothing is in flight, else in the next batch."""
        if self._busy:
            trio = self._trio
            if trio is None:
                trio = self._trio = current_async_library() == "trio"
            pending: Pending[Item, R] = Pending(item, trio)
            self._queue.append(pending)
            return await pending.answer()
        self._busy = True
        try:
            return await self._alone(item)
        finally:
            if self._queue:
                self._start_sender()
            else:
                self._busy = False

    def _start_sender(self) -> None:
        if self._trio:
            import trio

            trio.lowlevel.spawn_system_task(self._send_queued, name="awaitly-grouped-sender")
        else:
            self._sender = asyncio.get_running_loop().create_task(self._send_queued())

    async def _send_queued(self) -> None:
        """Send the queue, a batch at a time, until it is empty."""
        batch: list[Pending[Item, R]] = []
        try:
            while self._queue:
                count = self._take(self._queue)
                batch = self._queue[:count]
                del self._queue[:count]
                try:
                    await self._together(batch)
                except Exception as exc:
                    for pending in batch:
                        if not pending.done():
                            pending.set_exception(exc)
                batch = []
        finally:
            self._busy = False
            for pending in (*batch, *self._queue):  # only if this task itself was cancelled
                if not pending.done():
                    pending.set_exception(RuntimeError(self._stopped))
            self._queue.clear()
