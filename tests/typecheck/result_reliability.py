"""Static checks of issue 22's breaker and limiter additions: run ``mypy --strict
tests/typecheck``.  Nothing here is executed by pytest."""

# pyright: reportUnnecessaryTypeIgnoreComment=error

from __future__ import annotations

from typing import Any, assert_type

from awaitly_anyio import (
    BreakerStats,
    CircuitOpenError,
    CircuitState,
    Err,
    LimiterQueueFullError,
    Ok,
    RateLimitExceededError,
    Result,
    create_circuit_breaker,
    create_rate_limiter,
)


async def fetch() -> Result[bytes, str]:
    return Ok(b"")


async def reliability() -> None:
    breaker = create_circuit_breaker("b", failure_rate=0.5, window=60, reset_timeout=30)
    stats = breaker.stats()
    assert_type(stats, BreakerStats)
    assert_type(stats.state, CircuitState)
    assert_type(stats.opened_at, float | None)
    assert_type(stats.as_dict(), dict[str, Any])
    assert_type(await breaker.reset(), None)
    assert_type(await breaker.force_open(), None)
    assert_type(await breaker(fetch), Ok[bytes] | Err[str | CircuitOpenError])

    limiter = create_rate_limiter("l", max_requests=10, window=1, max_waiters=5)
    assert_type(await limiter(fetch, cost=3), Ok[bytes] | Err[str | RateLimitExceededError])
    assert_type(await limiter.acquire(3), None)
    refused = LimiterQueueFullError("l", 1.0, 5)
    assert_type(refused.max_waiters, int)
    error: RateLimitExceededError = refused  # a subclass: handled where its parent is
    del error
    await limiter(fetch, cost="3")  # type: ignore[call-overload]
