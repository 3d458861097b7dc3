"""The Redis-shared limiter and breaker when Redis is down, and their settings' errors.

Issue 16: with Redis down they raised redis-py's raw ``ConnectionError`` (item 15);
a bad ``redis=`` URL was echoed with its password (item 8); a huge
``reset_timeout`` made the shared breaker report ``retry_after=0.0`` (item 17).
"Down" here is a loopback port nobody listens on: the shared server is left alone.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
from collections.abc import Iterator

import anyio
import pytest

from awaitly_anyio import (
    CircuitOpenError,
    Err,
    Ok,
    SharedStateUnavailableError,
    create_circuit_breaker,
    create_rate_limiter,
)

from .redis_kit import URL, fresh_prefix, raw

pytestmark = pytest.mark.anyio

PASSWORD = "s3cret-Pa55"


def closed_port() -> int:
    """A loopback port that was free a moment ago (so nothing listens on it)."""
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def down_url() -> str:
    return f"redis://user:{PASSWORD}@127.0.0.1:{closed_port()}/0?password={PASSWORD}"


@pytest.fixture
def prefix() -> Iterator[str]:
    yield from fresh_prefix("shared-errors")


def assert_clear(error: object, name: str) -> None:
    assert isinstance(error, SharedStateUnavailableError), error
    assert error.name == name
    text = f"{error} {error!r}"
    assert "ConnectionError" in text
    assert "127.0.0.1" in text  # names the Redis it could not reach
    assert PASSWORD not in text


# ---- Redis down: the limiter ------------------------------------------------------------


async def test_a_shared_limiter_with_redis_down_refuses_with_a_typed_error(
    down_url: str,
) -> None:
    limiter = create_rate_limiter("api", max_requests=5, window=1, redis=down_url)
    called: list[int] = []
    try:
        result = await limiter(lambda: called.append(1))
        assert isinstance(result, Err)
        assert_clear(result.error, "api")
        assert called == []
        with pytest.raises(SharedStateUnavailableError) as raised:
            async with limiter:
                called.append(2)
        assert_clear(raised.value, "api")
        assert called == []
        assert limiter.stats()["unavailable"] == 2
        assert PASSWORD not in repr(limiter)
    finally:
        await limiter.aclose()


async def test_a_shared_limiter_can_fail_open(
    down_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = create_rate_limiter(
        "api", max_requests=1, window=60, redis=down_url, on_unavailable="allow"
    )
    try:
        with caplog.at_level(logging.WARNING):
            # Unlimited while Redis is down: more calls than max_requests go through.
            assert [await limiter(functools.partial(int, n)) for n in range(3)] == [
                Ok(0),
                Ok(1),
                Ok(2),
            ]
            async with limiter:
                pass
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1  # once per outage, not once per call
        assert "on_unavailable" in warnings[0]
        assert PASSWORD not in caplog.text
        assert limiter.stats()["unavailable"] == 4
    finally:
        await limiter.aclose()


# ---- Redis down: the breaker ------------------------------------------------------------


async def test_a_shared_breaker_with_redis_down_refuses_with_a_typed_error(
    down_url: str,
) -> None:
    breaker = create_circuit_breaker("pay", failure_threshold=1, reset_timeout=5, redis=down_url)
    called: list[int] = []
    try:
        result = await breaker(lambda: called.append(1))
        assert isinstance(result, Err)
        assert_clear(result.error, "pay")
        assert called == []
        with pytest.raises(SharedStateUnavailableError) as raised:
            await breaker.fetch_state()
        assert_clear(raised.value, "pay")
        assert PASSWORD not in repr(breaker)
    finally:
        await breaker.aclose()


async def test_a_shared_breaker_can_fail_open(
    down_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = create_circuit_breaker(
        "pay", failure_threshold=1, reset_timeout=5, redis=down_url, on_unavailable="allow"
    )
    try:
        with caplog.at_level(logging.WARNING):
            assert await breaker(lambda: "paid") == Ok("paid")
            # A failure cannot be recorded either: the call's own outcome comes back.
            assert await breaker(lambda: Err("DOWN")) == Err("DOWN")
            with pytest.raises(ZeroDivisionError):
                await breaker(lambda: 1 / 0)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert PASSWORD not in caplog.text
        assert breaker.unavailable_total == 3  # Redis is not asked again after the call
        assert (breaker.calls, breaker.failures_total) == (3, 2)
    finally:
        await breaker.aclose()


def test_on_unavailable_is_checked() -> None:
    with pytest.raises(ValueError, match='"error" or "allow"'):
        create_rate_limiter("x", max_requests=1, window=1, redis=URL, on_unavailable="open")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match='"error" or "allow"'):
        create_circuit_breaker(
            "x",
            failure_threshold=1,
            reset_timeout=1,
            redis=URL,
            on_unavailable="fail-open",  # type: ignore[call-overload]
        )


# ---- item 8: a bad redis= never shows its secrets ---------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"http://user:{PASSWORD}@host:6379/0",
        f"redis//:{PASSWORD}@host:6379/0",
        f"rediss:/{PASSWORD}@host?password={PASSWORD}",
        f"{PASSWORD}",
    ],
)
def test_a_bad_redis_url_is_refused_without_its_password(url: str) -> None:
    for make in (
        lambda: create_rate_limiter("x", max_requests=1, window=1, redis=url),
        lambda: create_circuit_breaker("x", failure_threshold=1, reset_timeout=1, redis=url),
    ):
        with pytest.raises(ValueError, match="starts with redis://") as raised:
            make()
        assert PASSWORD not in str(raised.value)


def test_a_redis_argument_of_the_wrong_type_is_named_by_its_type_only() -> None:
    secret = f"redis://:{PASSWORD}@host/0".encode()
    with pytest.raises(TypeError, match=r"not a builtins\.bytes") as raised:
        create_rate_limiter("x", max_requests=1, window=1, redis=secret)
    assert PASSWORD not in str(raised.value)


# ---- item 17: a huge reset_timeout --------------------------------------------------------


def test_a_reset_timeout_beyond_what_redis_holds_is_refused() -> None:
    with pytest.raises(ValueError, match=r"reset_timeout must be at most .* \(100 years\)"):
        create_circuit_breaker("x", failure_threshold=1, reset_timeout=1e13, redis=URL)
    with pytest.raises(ValueError, match=r"window must be at most .* \(100 years\)"):
        create_rate_limiter("x", max_requests=1, window=1e13, redis=URL)


async def test_a_long_reset_timeout_is_reported_whole(prefix: str) -> None:
    years = 99 * 365 * 24 * 3600.0
    breaker = create_circuit_breaker(
        "slow", failure_threshold=1, reset_timeout=years, redis=URL, key_prefix=prefix
    )
    try:
        assert await breaker(lambda: Err("DOWN")) == Err("DOWN")
        refused = await breaker(lambda: "never")
        assert isinstance(refused, Err)
        assert isinstance(refused.error, CircuitOpenError)
        assert years - 60 < refused.error.retry_after <= years
    finally:
        await breaker.aclose()


async def test_a_breaker_whose_redis_fails_after_the_call_returns_the_calls_outcome(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Redis answers the check before the call, then an error (its key is broken
    # meanwhile, a real WRONGTYPE reply): the call happened, so its result stands.
    breaker = create_circuit_breaker(
        "pay", failure_threshold=1, reset_timeout=5, redis=URL, key_prefix=prefix
    )

    def break_the_key() -> None:
        with contextlib.closing(raw()) as client:
            client.delete(breaker.key)
            client.set(breaker.key, "not a hash")

    async def charge() -> Err[str]:
        await anyio.to_thread.run_sync(break_the_key)
        return Err("DECLINED")

    try:
        with caplog.at_level(logging.WARNING):
            assert await breaker(charge) == Err("DECLINED")
        assert "was not recorded" in caplog.text
        assert "WRONGTYPE" in caplog.text or "ResponseError" in caplog.text
        # Redis still answers with an error before the next call: refused, typed.
        refused = await breaker(lambda: "never")
        assert isinstance(refused, Err)
        assert isinstance(refused.error, SharedStateUnavailableError)
        assert "ResponseError" in refused.error.reason
    finally:
        await breaker.aclose()
