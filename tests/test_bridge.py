"""How asyncio-only drivers serve trio callers: the hosted loop in trio's thread, and
the bridge thread where trio cannot wait on the loop's selector."""

from __future__ import annotations

import asyncio
import threading

import anyio
import pytest

from awaitly_anyio import _loops
from awaitly_anyio._bridge import DriverLoop
from awaitly_anyio._loops import _trio
from awaitly_anyio._loops._hosted import AsyncioBridge

from .kit_base import bridge_threads

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["hosted", "thread"])
def runner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a trio test once with the hosted loop and once with the bridge thread (the
    fallback where the selector has no file descriptor); on asyncio both are direct."""
    if request.param == "thread":
        monkeypatch.setattr(_trio, "pollable", lambda: False)
    return str(request.param)


class Boom(Exception):
    pass


async def on_asyncio(value: int) -> tuple[int, str]:
    await asyncio.sleep(0)
    return value * 2, _loops.current_name()


async def fails() -> None:
    await asyncio.sleep(0)
    raise Boom("driver said no")


async def test_a_driver_loop_runs_calls_on_asyncio_whatever_the_caller(
    anyio_backend: str, runner: str
) -> None:
    loop = DriverLoop("test store")
    try:
        assert await loop.call(on_asyncio, 21) == (42, "asyncio")
        # Only trio callers on the fallback need the bridge's thread.
        uses_thread = anyio_backend == "trio" and runner == "thread"
        assert len(bridge_threads()) == int(uses_thread)
        with pytest.raises(Boom, match="driver said no"):
            await loop.call(fails)
        assert await loop.call(on_asyncio, 1) == (2, "asyncio")
    finally:
        loop.release()
    assert bridge_threads() == []


async def test_cancelling_the_caller_cancels_the_driver_task_first(
    anyio_backend: str, runner: str
) -> None:
    loop = DriverLoop("test store")
    started, unwound = threading.Event(), threading.Event()

    async def hangs() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            if anyio_backend == "trio":
                # Under trio the driver's own loop is not cancelled, so its clean-up
                # may await; the trio caller waits for it to finish.
                for _ in range(10):
                    await asyncio.sleep(0)
            unwound.set()

    try:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(loop.call, hangs)
                await anyio.to_thread.run_sync(started.wait)
                scope.cancel()
        assert scope.cancelled_caught
        assert unwound.is_set()
        # The loop is still usable after a cancellation.
        assert await loop.call(on_asyncio, 2) == (4, "asyncio")
    finally:
        loop.release()
    assert bridge_threads() == []


async def test_many_concurrent_calls_all_come_back(runner: str) -> None:
    loop = DriverLoop("test store")
    results: dict[int, int] = {}

    async def one(n: int) -> None:
        results[n] = (await loop.call(on_asyncio, n))[0]

    try:
        async with anyio.create_task_group() as tg:
            for n in range(200):
                tg.start_soon(one, n)
    finally:
        loop.release()
    assert results == {n: 2 * n for n in range(200)}


def test_the_bridge_thread_starts_with_the_first_user_and_stops_with_the_last() -> None:
    bridge = AsyncioBridge(name="awaitly-asyncio-bridge-test")
    assert not bridge.running
    bridge.acquire()
    bridge.acquire()
    first = bridge.loop
    assert bridge.running
    bridge.release()
    assert bridge.running
    bridge.release()
    assert not bridge.running
    assert bridge_threads() == []
    with pytest.raises(RuntimeError, match="released more often"):
        bridge.release()
    with pytest.raises(RuntimeError, match="not running"):
        _ = bridge.loop
    bridge.acquire()
    assert bridge.loop is not first  # a fresh loop each time
    bridge.release()


def test_a_store_used_from_both_kinds_of_loop_is_refused() -> None:
    loop = DriverLoop("the store")

    async def use() -> None:
        await loop.call(on_asyncio, 1)

    try:
        anyio.run(use, backend="asyncio")
        with pytest.raises(RuntimeError, match="opened on asyncio and cannot be used from trio"):
            anyio.run(use, backend="trio")
    finally:
        loop.release()


def test_outside_an_event_loop_there_is_no_library() -> None:
    with pytest.raises(RuntimeError, match="asyncio or trio"):
        _loops.current()


async def test_timers_and_other_threads_wake_the_hosted_loop(
    anyio_backend: str, runner: str
) -> None:
    """Driver code waits on asyncio timers and on executor threads (asyncpg resolves
    host names in one); both must wake a loop that trio is waiting on."""

    async def waits() -> tuple[int, int]:
        running = asyncio.get_running_loop()
        await asyncio.sleep(0.01)
        from_thread = await running.run_in_executor(None, lambda: 7)
        return from_thread, threading.get_ident()

    loop = DriverLoop("test store")
    try:
        value, thread = await loop.call(waits)
    finally:
        loop.release()
    assert value == 7
    # The hosted loop runs in the caller's thread; the fallback in its own.
    in_callers_thread = anyio_backend == "asyncio" or runner == "hosted"
    assert (thread == threading.get_ident()) == in_callers_thread


def test_the_hosted_loop_ends_with_its_trio_run() -> None:
    """Whatever a store left running is cancelled when the run ends, the loop is
    closed, and using the store from a later run is refused with a clear error."""
    import trio

    loop = DriverLoop("the store")
    left: list[asyncio.Task[None]] = []
    cleaned = threading.Event()

    async def leaves_a_task() -> None:
        async def forever() -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                cleaned.set()

        left.append(asyncio.get_running_loop().create_task(forever()))

    trio.run(loop.call, leaves_a_task)
    assert cleaned.is_set()
    assert left[0].cancelled()
    assert bridge_threads() == []
    with pytest.raises(RuntimeError, match="the store was opened in a trio run that has ended"):
        trio.run(loop.call, leaves_a_task)


async def test_a_released_driver_loop_is_not_used_again(runner: str) -> None:
    loop = DriverLoop("the store")
    assert await loop.call(on_asyncio, 1) == (2, "asyncio")
    loop.release()
    loop.release()  # twice is harmless
    assert bridge_threads() == []
    with pytest.raises(RuntimeError, match="the store has let go of its driver loop"):
        await loop.call(on_asyncio, 1)
