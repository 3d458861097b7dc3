"""Issue 22's breaker and limiter controls on the Redis-shared variants, against the
real Redis under a key prefix of the test's own."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from awaitly_anyio import (
    CircuitOpenError,
    CircuitState,
    Err,
    LimiterQueueFullError,
    Ok,
    RateLimitExceededError,
    SharedStateUnavailableError,
    create_circuit_breaker,
    create_rate_limiter,
)
from awaitly_anyio.events import CircuitStateChange
from awaitly_anyio.testing import ManualClock

from .redis_kit import URL, fresh_prefix

pytestmark = pytest.mark.anyio


@pytest.fixture
def prefix() -> Iterator[str]:
    yield from fresh_prefix("extras")


async def test_force_open_and_reset_hold_for_every_process(prefix: str) -> None:
    seen: list[CircuitStateChange] = []
    admin = create_circuit_breaker(
        "billing",
        failure_threshold=5,
        reset_timeout=0.001,  # would be half-open at once, were it not forced
        redis=URL,
        key_prefix=prefix,
        listeners=[seen.append],
    )
    worker = create_circuit_breaker(
        "billing", failure_threshold=5, reset_timeout=0.001, redis=URL, key_prefix=prefix
    )
    try:
        assert await worker(lambda: "ok") == Ok("ok")
        await admin.force_open()
        assert admin.state is CircuitState.OPEN
        assert admin.stats().forced is True
        called: list[int] = []
        for _ in range(3):
            refused = await worker(lambda: called.append(1))
            assert refused == Err(CircuitOpenError("billing", 0.001))
        assert called == []
        assert await worker.fetch_state() is CircuitState.OPEN  # no half-open while forced
        await admin.reset()
        assert await worker.fetch_state() is CircuitState.CLOSED
        assert await worker(lambda: "ok") == Ok("ok")
        assert [(e.previous, e.state) for e in seen] == [("CLOSED", "OPEN"), ("OPEN", "CLOSED")]
    finally:
        await admin.aclose()
        await worker.aclose()


async def test_reset_forgets_the_shared_failures(prefix: str) -> None:
    one = create_circuit_breaker(
        "svc", failure_threshold=2, reset_timeout=60, redis=URL, key_prefix=prefix
    )
    try:
        await one(lambda: Err("DOWN"))
        await one.reset()
        await one(lambda: Err("DOWN"))
        assert await one.fetch_state() is CircuitState.CLOSED  # 1 in a row, not 2
        await one(lambda: Err("DOWN"))
        assert await one.fetch_state() is CircuitState.OPEN
    finally:
        await one.aclose()


def shared_rate_pair(name: str, prefix: str, *, min_calls: int) -> tuple[Any, Any]:
    """Two breakers ``name`` on one shared failure-rate window in Redis, as two processes
    would hold them (rate 0.5 over 60 s, ``min_calls``, a 60 s reset timeout)."""
    options = {
        "failure_rate": 0.5,
        "window": 60.0,
        "min_calls": min_calls,
        "reset_timeout": 60.0,
        "redis": URL,
        "key_prefix": prefix,
    }
    one = create_circuit_breaker(name, **options)  # type: ignore[call-overload]
    two = create_circuit_breaker(name, **options)  # type: ignore[call-overload]
    return one, two


async def test_a_shared_failure_rate_opens_for_all(prefix: str) -> None:
    one, two = shared_rate_pair("feed", prefix, min_calls=6)
    try:
        # Never two failures in a row, but half of the calls fail, across two processes.
        for n in range(5):
            await (one if n % 2 else two)(lambda n=n: Err("DOWN") if n % 2 else "ok")
        assert await two.fetch_state() is CircuitState.CLOSED  # 5 calls < min_calls
        await one(lambda: Err("DOWN"))  # 3 of 6
        result = await two(lambda: "never")
        assert isinstance(result, Err)
        assert isinstance(result.error, CircuitOpenError)
    finally:
        await one.aclose()
        await two.aclose()


async def test_shared_weighted_calls(prefix: str) -> None:
    one = create_rate_limiter(
        "tokens", max_requests=5, window=60, max_wait=0, redis=URL, key_prefix=prefix
    )
    two = create_rate_limiter(
        "tokens", max_requests=5, window=60, max_wait=0, redis=URL, key_prefix=prefix
    )
    try:
        assert await one(lambda: "a", cost=3) == Ok("a")
        refused = await two(lambda: "b", cost=3)  # 3 + 3 > 5 in the shared window
        assert isinstance(refused, Err)
        assert type(refused.error) is RateLimitExceededError
        assert 59 < refused.error.retry_after <= 60
        assert await two(lambda: "c", cost=2) == Ok("c")
        assert isinstance(await one(lambda: "d"), Err)  # all 5 units taken
        with pytest.raises(ValueError, match="max_requests=5"):
            await one(lambda: "e", cost=6)
    finally:
        await one.aclose()
        await two.aclose()


async def test_shared_limiter_bounds_its_waiters(prefix: str) -> None:
    clock = ManualClock()  # the waiter sleeps on it until cancelled
    limiter = create_rate_limiter(
        "q", max_requests=1, window=60, max_waiters=1, redis=URL, key_prefix=prefix, clock=clock
    )
    try:
        await limiter.acquire()
        async with anyio.create_task_group() as tg:
            tg.start_soon(limiter.acquire)
            await anyio.wait_all_tasks_blocked()
            while clock.sleeping == 0:  # noqa: ASYNC110  (the waiter is asking Redis)
                await anyio.sleep(0.001)
            result = await limiter(lambda: "late")
            assert isinstance(result, Err)
            assert isinstance(result.error, LimiterQueueFullError)
            assert result.error.max_waiters == 1
            tg.cancel_scope.cancel()
        assert limiter.stats()["waiting"] == 0
    finally:
        await limiter.aclose()


async def test_manual_control_without_redis_is_a_typed_error() -> None:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])  # nothing listens there once closed
    password = "s3cret-Pa55"
    breaker = create_circuit_breaker(
        "down",
        failure_threshold=1,
        reset_timeout=1,
        redis=f"redis://user:{password}@127.0.0.1:{port}/0",
    )
    try:
        for control in (breaker.reset, breaker.force_open):
            with pytest.raises(SharedStateUnavailableError) as info:
                await control()
            assert password not in str(info.value)
        assert breaker.state is CircuitState.CLOSED  # nothing changed here either
    finally:
        await breaker.aclose()


async def test_fetch_stats_reads_the_shared_window_and_state(prefix: str) -> None:
    one, two = shared_rate_pair("api", prefix, min_calls=4)
    try:
        await one(lambda: "ok")
        await two(lambda: Err("DOWN"))
        await two(lambda: "ok")
        stats = await one.fetch_stats()  # every process's calls, this process's counters
        assert (stats.state, stats.window_calls, stats.window_failures) == (
            CircuitState.CLOSED,
            3,
            1,
        )
        assert (stats.calls, stats.successes, stats.failures) == (1, 1, 0)
        assert stats.opened_at is None
        assert stats.retry_after == 0.0
        await two(lambda: Err("DOWN"))  # 2 of 4: opens
        stats = await one.fetch_stats()
        assert stats.state is CircuitState.OPEN
        assert stats.window_calls == 0  # the window starts again once opened
        assert stats.opened_at is not None
        assert stats.opened_at > 1_600_000_000
        assert 59 < stats.retry_after <= 60
        await one.force_open()
        forced = await two.fetch_stats()
        assert (forced.forced, forced.retry_after) == (True, 60.0)
    finally:
        await one.aclose()
        await two.aclose()
