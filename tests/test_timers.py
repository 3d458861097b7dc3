"""Timers (`Loop.call_later`): a durable run's lease renewal waits on one, so a short
run costs no task of its own.  trio has no timer callbacks, so its loop keeps a heap
in one system task per run; these tests drive that with trio's mock clock, and the
contract shared with asyncio's ``loop.call_later`` on both loops."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
import trio
import trio.testing

from awaitly_anyio import _loops


def trio_call_later(delay: float, fn: Callable[[], object]) -> Callable[[], None]:
    return _loops.current().call_later(delay, fn)


def test_timers_fire_when_due_in_order_and_cancelled_ones_never() -> None:
    fired: list[tuple[object, float]] = []

    async def main() -> None:
        start = trio.current_time()

        def note(label: object) -> None:
            fired.append((label, trio.current_time() - start))

        cancel_two = None
        for delay in (3.0, 1.0, 2.0, 5.0):  # an earlier one after later ones wakes sooner
            cancel = trio_call_later(delay, lambda delay=delay: note(delay))
            if delay == 2.0:
                cancel_two = cancel
        assert cancel_two is not None
        cancel_two()
        cancel_two()  # twice is harmless
        for _ in range(500):  # enough cancelled ones to have the heap rebuilt
            trio_call_later(4.0, lambda: note("cancelled"))()
        trio_call_later(4.0, lambda: note(4.0))
        await trio.sleep(1.5)
        trio_call_later(0.5, lambda: note("later"))  # while the others wait
        await trio.sleep(10)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert fired == [(1.0, 1.0), ("later", 2.0), (3.0, 3.0), (4.0, 4.0), (5.0, 5.0)]


def test_each_trio_run_has_its_own_timers() -> None:
    fired: list[int] = []

    async def main(n: int) -> None:
        trio_call_later(1.0, lambda: fired.append(n))
        await trio.sleep(2)

    for n in range(2):
        trio.run(main, n, clock=trio.testing.MockClock(autojump_threshold=0))
    assert fired == [0, 1]


def test_a_failing_callback_is_logged_and_the_run_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    fired: list[str] = []

    def fail() -> None:
        raise ValueError("boom")

    async def main() -> None:
        trio_call_later(1.0, fail)
        trio_call_later(2.0, lambda: fired.append("after"))
        await trio.sleep(3)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert fired == ["after"]
    assert "timer callback" in caplog.text
    assert "boom" in caplog.text


@pytest.mark.anyio
async def test_call_later_calls_once_and_cancelled_calls_never_on_every_loop() -> None:
    loop = _loops.current()
    fired: list[str] = []
    done = anyio.Event()
    # Due at once (no test waits for time): each fires on the loop's next turn.
    loop.call_later(0.0, lambda: fired.append("once"))
    cancel = loop.call_later(0.0, lambda: fired.append("cancelled"))
    cancel()
    loop.call_later(0.0, done.set)
    with anyio.fail_after(5):  # only a failure waits this long
        await done.wait()
    cancel()  # after its time: harmless
    assert fired == ["once"]


def test_coarse_calls_are_never_early_nor_late_by_more_than_a_sixteenth() -> None:
    fired: list[tuple[str, float, float]] = []

    async def main() -> None:
        loop = _loops.current()
        start = trio.current_time()
        for delay in (0.05, 0.051, 1.0, 1.03, 10.0, 33.3):
            loop.call_later_coarse(
                delay,
                lambda delay=delay: fired.append(("due", delay, trio.current_time() - start)),
            )
        for delay in (0.05, 1.0):
            loop.call_later_coarse(delay, lambda: fired.append(("cancelled", 0.0, 0.0)))()
        await trio.sleep(40)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert [delay for _, delay, _ in fired] == [0.05, 0.051, 1.0, 1.03, 10.0, 33.3]
    for label, delay, at in fired:
        assert label == "due"
        assert delay <= at <= delay * (1 + 1 / 16), (delay, at)


def test_a_failing_coarse_call_is_logged_and_its_bucket_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fired: list[str] = []

    def fail() -> None:
        raise ValueError("boom")

    async def main() -> None:
        loop = _loops.current()
        loop.call_later_coarse(1.0, fail)
        loop.call_later_coarse(1.0, lambda: fired.append("same bucket"))
        await trio.sleep(3)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert fired == ["same bucket"]
    assert "timer callback" in caplog.text
    assert "boom" in caplog.text


@pytest.mark.anyio
async def test_coarse_calls_fire_once_not_early_and_cancelled_ones_never_on_every_loop() -> None:
    loop = _loops.current()
    fired: list[str] = []
    done = anyio.Event()
    now = anyio.current_time
    due = now() + 0.002

    def once() -> None:
        fired.append("once" if now() >= due else "early")

    loop.call_later_coarse(0.002, once)
    cancel = loop.call_later_coarse(0.002, lambda: fired.append("cancelled"))
    cancel()
    loop.call_later_coarse(0.003, done.set)
    with anyio.fail_after(5):  # only a failure waits this long
        await done.wait()
    cancel()  # after its time: harmless
    assert fired == ["once"]
