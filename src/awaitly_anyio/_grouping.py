"""Calls that arrive while one is in flight go out together: the mechanism behind the
PostgreSQL store's group commit and the Redis script runner's pipelining.

A call made when nothing is in flight goes out alone, at once.  Calls made while it
(or a batch) is in flight wait in a queue; when it ends they are sent in batches by
a task of their own, so the caller that went alone returns as soon as its own answer
is in.  Each batch costs one round trip however many calls it holds.

It runs on its callers' event loop (whichever calls it first; see
`awaitly_anyio._loops`): a queued call waits on that loop's `Answer`, and the
batches go from one of its system tasks.  Under trio that keeps the queue on trio's
side: only the calls that go out (alone, or a batch) cross over to the hosted
asyncio loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from . import _loops

__all__ = ["Pending", "WriteBatcher"]

Item = TypeVar("Item")
R = TypeVar("R")


class Pending(Generic[Item, R]):
    """A queued call: what to send (``item``), and how its answer gets back to its
    caller.

    Its methods mirror an asyncio future's (``done``, ``set_result``,
    ``set_exception``); ``done()`` is also true once the caller has stopped waiting
    (it was cancelled), so a batch skips it; answering a done call raises.
    """

    __slots__ = ("_answer", "item")

    def __init__(self, item: Item, answer: _loops.Answer[R]) -> None:
        self.item = item
        self._answer = answer

    def done(self) -> bool:
        """Whether it was answered, or its caller stopped waiting."""
        return self._answer.done()

    def set_result(self, value: R) -> None:
        """Answer the call with ``value``."""
        self._answer.set_result(value)

    def set_exception(self, error: BaseException) -> None:
        """Answer the call by raising ``error`` in its caller."""
        self._answer.set_exception(error)


class WriteBatcher(Generic[Item, R]):
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
        self._loop: _loops.Loop | None = None  # learnt from the first queued caller
        self._stop_sender: Callable[[], None] | None = None

    async def __call__(self, item: Item) -> R:
        """Send ``item`` alone if nothing is in flight, else in the next batch, and
        return its answer.

        Raises what ``alone`` raises, or what ``together`` raised for the batch, or
        ``RuntimeError(stopped)`` if the sending task was cancelled first.  A
        caller cancelled while queued stops waiting (its cancellation propagates);
        its call may still go out.
        """
        if self._busy:
            loop = self._loop
            if loop is None:
                loop = self._loop = _loops.current()
            pending: Pending[Item, R] = Pending(item, loop.answer())
            self._queue.append(pending)
            return await pending._answer  # pyright: ignore[reportPrivateUsage]
        self._busy = True
        try:
            return await self._alone(item)
        finally:
            if self._queue:
                self._start_sender()
            else:
                self._busy = False

    def _start_sender(self) -> None:
        loop = self._loop
        if loop is None:  # only queued callers set it, and there are some
            loop = self._loop = _loops.current()
        self._stop_sender = loop.start_system_task(self._send_queued, "awaitly-write-batcher")

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
            self._stop_sender = None
            for pending in (*batch, *self._queue):  # only if this task itself was cancelled
                if not pending.done():
                    pending.set_exception(RuntimeError(self._stopped))
            self._queue.clear()
