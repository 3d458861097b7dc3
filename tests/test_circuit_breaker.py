"""The circuit breaker: exact transitions, failures as the caller defines them,
half-open trials, cancellation, listeners, and use inside steps."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import attrs
import pytest

from awaitly_anyio import (
    BreakerStats,
    CircuitOpenError,
    CircuitState,
    Deps,
    Err,
    Ok,
    WorkflowContext,
    create_circuit_breaker,
    create_workflow,
)
from awaitly_anyio.events import CircuitStateChange
from awaitly_anyio.testing import FakeClock

pytestmark = pytest.mark.anyio


def failing() -> Err[str]:
    return Err("SERVICE_DOWN")


def working() -> str:
    return "ok"


async def test_failures_in_a_row_open_it_and_time_lets_trials_close_it() -> None:
    clock = FakeClock()
    changes: list[tuple[str, str]] = []
    breaker = create_circuit_breaker(
        "payment-service",
        failure_threshold=3,
        reset_timeout=30,
        half_open_requests=2,
        listeners=[lambda event: changes.append((event.previous, event.state))],
        clock=clock,
    )
    # Two failures, then a success: the count starts again.
    for fn in (failing, failing, working, failing, failing):
        await breaker(fn)
    assert breaker.state is CircuitState.CLOSED
    assert await breaker(failing) == Err("SERVICE_DOWN")  # the third in a row
    assert breaker.state is CircuitState.OPEN
    assert breaker.state == "OPEN"  # a str enum: compares with the name JSON shows

    calls: list[int] = []
    clock.advance(10)
    refused = await breaker(lambda: calls.append(1))
    assert refused == Err(CircuitOpenError("payment-service", 20.0))
    assert calls == []

    clock.advance(20)
    assert breaker.state is CircuitState.HALF_OPEN
    assert await breaker(working) == Ok("ok")
    assert breaker.state is CircuitState.HALF_OPEN  # one of two trials
    assert await breaker(working) == Ok("ok")
    assert breaker.state is CircuitState.CLOSED

    for _ in range(3):
        await breaker(failing)
    clock.advance(30)
    assert await breaker(failing) == Err("SERVICE_DOWN")  # a failed trial reopens it
    assert breaker.state is CircuitState.OPEN
    assert changes == [
        ("CLOSED", "OPEN"),
        ("OPEN", "HALF_OPEN"),
        ("HALF_OPEN", "CLOSED"),
        ("CLOSED", "OPEN"),
        ("OPEN", "HALF_OPEN"),
        ("HALF_OPEN", "OPEN"),
    ]
    stats = breaker.stats()
    assert (stats.state, stats.rejected, stats.retry_after) == (CircuitState.OPEN, 1, 30.0)
    assert stats.as_dict()["state"] == "OPEN"


async def test_exceptions_count_and_propagate_and_is_failure_decides() -> None:
    breaker = create_circuit_breaker(
        "cards",
        failure_threshold=2,
        reset_timeout=60,
        is_failure=lambda error: error != "CARD_DECLINED",
        clock=FakeClock(),
    )

    def declined() -> Err[str]:
        return Err("CARD_DECLINED")

    def boom() -> None:
        raise ConnectionError("gateway reset")

    for _ in range(5):
        assert await breaker(declined) == Err("CARD_DECLINED")  # the service is fine
    assert breaker.state is CircuitState.CLOSED
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await breaker(boom)
    assert breaker.state is CircuitState.OPEN


async def test_cancellation_is_not_a_failure() -> None:
    breaker = create_circuit_breaker(
        "slow", failure_threshold=1, reset_timeout=1, clock=FakeClock()
    )
    for _ in range(3):
        with anyio.move_on_after(0):
            await breaker(lambda: anyio.sleep_forever())
    assert breaker.state is CircuitState.CLOSED
    assert breaker.stats().failures == 0


async def test_half_open_never_runs_more_trials_than_allowed() -> None:
    clock = FakeClock()
    breaker = create_circuit_breaker(
        "search", failure_threshold=1, reset_timeout=5, half_open_requests=2, clock=clock
    )
    await breaker(failing)
    clock.advance(5)
    release = anyio.Event()
    running, most = 0, 0
    outcomes: list[object] = []

    async def trial() -> str:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        return "found"

    async def call() -> None:
        outcomes.append(await breaker(trial))

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        assert running == 2
        release.set()
    assert most == 2
    assert outcomes.count(Ok("found")) == 2
    assert outcomes.count(Err(CircuitOpenError("search", 0.0))) == 4
    assert breaker.state is CircuitState.CLOSED


async def test_a_cancelled_trial_gives_its_place_back() -> None:
    clock = FakeClock()
    breaker = create_circuit_breaker("api", failure_threshold=1, reset_timeout=5, clock=clock)
    await breaker(failing)
    clock.advance(5)
    with anyio.move_on_after(0):
        await breaker(lambda: anyio.sleep_forever())
    assert breaker.state is CircuitState.HALF_OPEN
    assert await breaker(working) == Ok("ok")
    assert breaker.state is CircuitState.CLOSED


async def test_a_failing_listener_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[CircuitStateChange] = []

    def broken(event: CircuitStateChange) -> None:
        raise RuntimeError("dashboard down")

    breaker = create_circuit_breaker(
        "x", failure_threshold=1, reset_timeout=1, listeners=[broken], clock=FakeClock()
    )
    breaker.add_listener(seen.append)
    with caplog.at_level(logging.ERROR, logger="awaitly_anyio"):
        await breaker(failing)
    assert "a state listener failed" in caplog.text
    assert [event.state for event in seen] == ["OPEN"]
    assert seen[0].type == "circuit_state_change"


async def test_inside_steps_an_open_circuit_ends_the_workflow() -> None:
    clock = FakeClock()
    payment_breaker = create_circuit_breaker(
        "payment-service", failure_threshold=1, reset_timeout=30, clock=clock
    )
    workflow = create_workflow("checkout")

    async def body(ctx: WorkflowContext[Deps]) -> str:
        paid: str = await ctx.step("charge", lambda: payment_breaker(failing))
        return paid

    assert await workflow.run(body) == Err("SERVICE_DOWN")
    assert await workflow.run(body) == Err(CircuitOpenError("payment-service", 30.0))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"failure_threshold": 0, "reset_timeout": 1}, "failure_threshold"),
        ({"failure_threshold": 1, "reset_timeout": -1}, "reset_timeout"),
        ({"failure_threshold": 1, "reset_timeout": 1, "half_open_requests": 0}, "half_open"),
    ],
)
def test_bad_options_are_refused(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_circuit_breaker("x", **options)  # type: ignore[arg-type]


def test_states_serialize_as_the_guide_shows() -> None:
    import json

    assert json.dumps({"payment": CircuitState.HALF_OPEN}) == '{"payment": "HALF_OPEN"}'


# ---- issue 22: manual control, a failure-rate window, typed statistics -----------------


async def test_reset_and_force_open_by_hand() -> None:
    clock = FakeClock()
    changes: list[tuple[str, str]] = []
    breaker = create_circuit_breaker(
        "ledger",
        failure_threshold=2,
        reset_timeout=30,
        listeners=[lambda event: changes.append((event.previous, event.state))],
        clock=clock,
    )
    await breaker(failing)
    await breaker.reset()  # forgets the failure counted so far
    await breaker(failing)
    assert breaker.state is CircuitState.CLOSED
    await breaker(failing)
    assert breaker.state is CircuitState.OPEN
    await breaker.reset()
    assert breaker.state is CircuitState.CLOSED
    assert await breaker(working) == Ok("ok")

    await breaker.force_open()
    calls: list[int] = []
    clock.advance(3600)  # no half-open while forced, however long
    refused = await breaker(lambda: calls.append(1))
    assert refused == Err(CircuitOpenError("ledger", 30.0))
    assert calls == []
    assert breaker.state is CircuitState.OPEN
    stats = breaker.stats()
    assert (stats.forced, stats.opened_at) == (True, clock.time() - 3600)
    await breaker.reset()
    assert breaker.stats().forced is False
    assert await breaker(working) == Ok("ok")
    assert changes == [
        ("CLOSED", "OPEN"),
        ("OPEN", "CLOSED"),
        ("CLOSED", "OPEN"),
        ("OPEN", "CLOSED"),
    ]


async def test_a_failure_rate_window_opens_the_circuit() -> None:
    clock = FakeClock()
    breaker = create_circuit_breaker(
        "search", failure_rate=0.5, window=60, min_calls=10, reset_timeout=30, clock=clock
    )
    # Alternating outcomes never make 2 failures in a row, but half of them fail.
    for n in range(9):
        await breaker(failing if n % 2 else working)
        clock.advance(1)
    assert breaker.state is CircuitState.CLOSED  # 9 calls: fewer than min_calls
    stats = breaker.stats()
    assert (stats.window_calls, stats.window_failures) == (9, 4)
    await breaker(failing)  # the 10th call: 5 of 10 failed
    assert breaker.state is CircuitState.OPEN
    assert breaker.stats().window_calls == 0  # the window starts again once opened


async def test_the_failure_rate_counts_only_the_window() -> None:
    clock = FakeClock()
    breaker = create_circuit_breaker(
        "feed", failure_rate=0.5, window=10, min_calls=4, reset_timeout=5, clock=clock
    )
    for _ in range(3):
        await breaker(failing)
    clock.advance(10)  # those failures have left the window
    for _ in range(3):
        await breaker(working)
    await breaker(failing)
    assert breaker.state is CircuitState.CLOSED  # 1 of 4 in the window
    assert breaker.stats().failure_rate == 0.25
    await breaker(failing)
    assert breaker.state is CircuitState.CLOSED  # 2 of 5
    await breaker(failing)
    assert breaker.state is CircuitState.OPEN  # 3 of 6


async def test_failures_in_a_row_and_a_rate_together_whichever_first() -> None:
    clock = FakeClock()
    breaker = create_circuit_breaker(
        "both",
        failure_threshold=3,
        failure_rate=0.9,
        window=60,
        min_calls=100,
        reset_timeout=5,
        clock=clock,
    )
    for _ in range(3):
        await breaker(failing)
    assert breaker.state is CircuitState.OPEN


async def test_stats_are_typed_and_count_every_outcome() -> None:
    clock = FakeClock()
    breaker = create_circuit_breaker("stats", failure_threshold=2, reset_timeout=10, clock=clock)
    await breaker(working)
    await breaker(failing)
    await breaker(failing)
    clock.advance(4)
    await breaker(working)  # refused
    stats = breaker.stats()
    assert stats == BreakerStats(
        name="stats",
        state=CircuitState.OPEN,
        forced=False,
        consecutive_failures=0,
        window_calls=0,
        window_failures=0,
        failure_rate=0.0,
        calls=3,
        successes=1,
        failures=2,
        rejected=1,
        opened_at=clock.time() - 4,
        retry_after=6.0,
    )
    assert stats.as_dict()["state"] == "OPEN"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.calls = 0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "needs failure_threshold"),
        ({"failure_threshold": 0}, "failure_threshold must be a positive integer"),
        ({"failure_rate": 0.5}, "needs window="),
        ({"failure_rate": 0, "window": 1}, "failure_rate must be a fraction"),
        ({"failure_rate": 1.5, "window": 1}, "failure_rate must be a fraction"),
        ({"failure_rate": True, "window": 1}, "failure_rate must be a fraction"),
        ({"failure_rate": 0.5, "window": 0}, "window must be a positive number"),
        ({"failure_rate": 0.5, "window": float("inf")}, "window must be a positive number"),
        ({"failure_rate": 0.5, "window": 1, "min_calls": 0}, "min_calls must be a positive"),
        ({"failure_threshold": 1, "window": 1}, "window= only applies with failure_rate="),
        ({"failure_threshold": 1, "min_calls": 3}, "min_calls= only applies"),
    ],
)
def test_bad_opening_rules_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_circuit_breaker("bad", reset_timeout=1, **options)
