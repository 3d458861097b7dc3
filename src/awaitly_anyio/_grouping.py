"""Calls that arrive while one is in flight go out together: the mechanism behind the
PostgreSQL store's group commit and the Redis script runner's pipelining.

A call made when nothing is in flight goes out alone, at once.  Calls made while it
(or a batch) is in flight wait in a queue; when it ends they are sent in batches by
a task of their own, so the caller that went alone returns as soon as its own answer
is in.  Each batch costs one round trip however many calls it holds.  Runs on one
asyncio loop: the driver's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Grouped", "Pending"]

Item = TypeVar("Item")
R = TypeVar("R")


class Pending(Generic[Item, R]):
    """A queued call: what to send, and where its answer goes."""

    __slots__ = ("future", "item")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.future: asyncio.Future[R] = asyncio.get_running_loop().create_future()


class Grouped(Generic[Item, R]):
    """One call in flight at a time; the others queue and go in batches.

    ``alone(item)`` sends a call by itself; ``together(batch)`` sends a batch and
    answers each call's future.  ``take(queue)`` says how many calls from the front
    of the queue the next batch holds (at least one); it may reorder the queue first,
    to bring forward calls that can go together.  ``stopped`` is the error
    queued callers get if the sending task is cancelled before answering them (their
    own cancellation is theirs alone: a call cancelled while queued stays in the
    queue, and ``together`` decides whether to send it).
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
        self._sender: asyncio.Task[None] | None = None  # the loop keeps weak references

    async def __call__(self, item: Item) -> R:
        """Send ``item`` alone if nothing is in flight, else in the next batch."""
        if self._busy:
            pending: Pending[Item, R] = Pending(item)
            self._queue.append(pending)
            return await pending.future
        self._busy = True
        try:
            return await self._alone(item)
        finally:
            if self._queue:
                self._sender = asyncio.get_running_loop().create_task(self._send_queued())
            else:
                self._busy = False

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
                        if not pending.future.done():
                            pending.future.set_exception(exc)
                batch = []
        finally:
            self._busy = False
            for pending in (*batch, *self._queue):  # only if this task itself was cancelled
                if not pending.future.done():
                    pending.future.set_exception(RuntimeError(self._stopped))
            self._queue.clear()
