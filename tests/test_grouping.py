"""Calls that arrive while one is in flight go together (`WriteBatcher`: PostgreSQL's
group commit and Redis pipelining stand on this).  It runs on its callers' loop:
these tests drive it with asyncio and trio directly."""

from __future__ import annotations

import asyncio

import pytest
import trio
import trio.lowlevel
import trio.testing

from awaitly_anyio._grouping import Pending, WriteBatcher


class Sender:
    """Sends alone or in batches, recording what went out; a batch waits for ``gate``."""

    def __init__(self, batch_size: int = 100) -> None:
        self.sent: list[list[int]] = []
        self.gate = asyncio.Event()
        self.grouped: WriteBatcher[int, int] = WriteBatcher(
            self.alone, self.together, lambda queue: min(len(queue), batch_size), "stopped"
        )

    async def alone(self, item: int) -> int:
        self.sent.append([item])
        await asyncio.sleep(0)
        return item * 10

    async def together(self, batch: list[Pending[int, int]]) -> None:
        self.sent.append([pending.item for pending in batch])
        await self.gate.wait()
        for pending in batch:
            pending.set_result(pending.item * 10)


def test_calls_made_meanwhile_go_in_batches_and_each_gets_its_answer() -> None:
    async def main() -> None:
        sender = Sender(batch_size=3)
        sender.gate.set()
        answers = await asyncio.gather(*(sender.grouped(n) for n in range(7)))
        assert answers == [n * 10 for n in range(7)]
        assert sender.sent == [[0], [1, 2, 3], [4, 5, 6]]
        assert await sender.grouped(7) == 70  # idle again: alone
        assert sender.sent[-1] == [7]

    asyncio.run(main())


def test_a_cancelled_sender_fails_its_batch_and_the_queue_instead_of_leaving_them_waiting() -> None:
    async def main() -> None:
        sender = Sender(batch_size=2)
        callers = [asyncio.ensure_future(sender.grouped(n)) for n in range(5)]
        assert await callers[0] == 0
        await asyncio.sleep(0)  # the sending task takes its first batch and waits
        assert sender.sent == [[0], [1, 2]]
        stop = sender.grouped._stop_sender
        assert stop is not None
        stop()
        outcomes = await asyncio.gather(*callers[1:], return_exceptions=True)
        assert all(
            isinstance(outcome, RuntimeError) and str(outcome) == "stopped" for outcome in outcomes
        ), outcomes
        assert await sender.grouped(9) == 90  # and it is usable afterwards

    asyncio.run(main())


def test_a_failed_batch_fails_only_its_own_calls() -> None:
    async def main() -> None:
        failures = iter([True, False])

        async def together(batch: list[Pending[int, int]]) -> None:
            if next(failures):
                raise ValueError("the server said no")
            for pending in batch:
                pending.set_result(pending.item)

        async def alone(item: int) -> int:
            await asyncio.sleep(0)
            return item

        grouped: WriteBatcher[int, int] = WriteBatcher(alone, together, lambda queue: 2, "stopped")
        outcomes = await asyncio.gather(*(grouped(n) for n in range(5)), return_exceptions=True)
        assert outcomes[0] == 0
        assert [type(o) for o in outcomes[1:3]] == [ValueError, ValueError]
        assert outcomes[3:] == [3, 4]

    asyncio.run(main())


@pytest.mark.parametrize("size", [1, 4])
def test_take_bounds_every_batch(size: int) -> None:
    async def main() -> None:
        sender = Sender(batch_size=size)
        sender.gate.set()
        await asyncio.gather(*(sender.grouped(n) for n in range(9)))
        assert all(len(batch) <= size for batch in sender.sent)
        assert sorted(n for batch in sender.sent for n in batch) == list(range(9))

    asyncio.run(main())


def test_under_trio_the_queue_waits_on_trio_and_batches_go_as_on_asyncio() -> None:
    sent: list[list[int]] = []
    skipped: list[int] = []
    gate = trio.Event()

    async def alone(item: int) -> int:
        sent.append([item])
        await gate.wait()
        return item * 10

    async def together(batch: list[Pending[int, int]]) -> None:
        sent.append([pending.item for pending in batch])
        await trio.lowlevel.checkpoint()
        for pending in batch:
            if pending.done():  # its caller stopped waiting
                skipped.append(pending.item)
            else:
                pending.set_result(pending.item * 10)

    async def main() -> None:
        grouped: WriteBatcher[int, int] = WriteBatcher(
            alone, together, lambda queue: min(len(queue), 3), "stopped"
        )
        answers: dict[int, int] = {}

        async def call(n: int, scope: trio.CancelScope) -> None:
            with scope:
                answers[n] = await grouped(n)

        given_up = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, 0, trio.CancelScope())
            await trio.testing.wait_all_tasks_blocked()  # 0 is in flight, alone
            for n in range(1, 7):
                nursery.start_soon(call, n, given_up if n == 5 else trio.CancelScope())
            await trio.testing.wait_all_tasks_blocked()  # the others are queued
            given_up.cancel()  # call 5 stops waiting while it is queued
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
        assert answers == {n: n * 10 for n in range(7) if n != 5}
        assert sent[0] == [0]
        assert sorted(n for batch in sent[1:] for n in batch) == list(range(1, 7))
        assert [len(batch) for batch in sent[1:]] == [3, 3]
        assert skipped == [5]
        assert await grouped(8) == 80  # idle again: alone
        assert sent[-1] == [8]

    trio.run(main)


def test_under_trio_a_failed_batch_fails_its_callers() -> None:
    gate = trio.Event()

    async def alone(item: int) -> int:
        await gate.wait()
        return item

    async def together(batch: list[Pending[int, int]]) -> None:
        raise ValueError("the server said no")

    async def main() -> None:
        grouped: WriteBatcher[int, int] = WriteBatcher(alone, together, len, "stopped")
        outcomes: dict[int, object] = {}

        async def call(n: int) -> None:
            try:
                outcomes[n] = await grouped(n)
            except ValueError as exc:
                outcomes[n] = str(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, 0)
            await trio.testing.wait_all_tasks_blocked()
            for n in (1, 2):
                nursery.start_soon(call, n)
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
        assert outcomes == {0: 0, 1: "the server said no", 2: "the server said no"}

    trio.run(main)
