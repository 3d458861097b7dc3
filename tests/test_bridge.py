"""The asyncio bridge that lets asyncio-only drivers serve trio callers."""

from __future__ import annotations

import asyncio
import threading

import anyio
import pytest

from awaitly_anyio._bridge import AsyncioBridge, DriverLoop, current_async_library

pytestmark = pytest.mark.anyio


def bridge_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("awaitly-asyncio-bridge")]


class Boom(Exception):
    pass


async def on_asyncio(value: int) -> tuple[int, str]:
    await asyncio.sleep(0)
    return value * 2, current_async_library()


async def fails() -> None:
    await asyncio.sleep(0)
    raise Boom("driver said no")


async def test_a_driver_loop_runs_calls_on_asyncio_whatever_the_caller(anyio_backend: str) -> None:
    loop = DriverLoop("test store")
    try:
        assert await loop.call(on_asyncio, 21) == (42, "asyncio")
        # Only trio callers need the bridge's thread.
        assert (len(bridge_threads()) == 1) == (anyio_backend == "trio")
        with pytest.raises(Boom, match="driver said no"):
            await loop.call(fails)
        assert await loop.call(on_asyncio, 1) == (2, "asyncio")
    finally:
        loop.release()
    assert bridge_threads() == []


async def test_cancelling_the_caller_cancels_the_driver_task_first(anyio_backend: str) -> None:
    loop = DriverLoop("test store")
    started, unwound = threading.Event(), threading.Event()

    async def hangs() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            if anyio_backend == "trio":
                # On the bridge the driver's own loop is not cancelled, so its
                # clean-up may await; the trio caller waits for it to finish.
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


async def test_many_concurrent_calls_all_come_back() -> None:
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
        current_async_library()
