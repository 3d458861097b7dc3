"""The rate limiter: exact windows, FIFO turns, max_wait, max_concurrent, cancellation."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from awaitly_anyio import (
    Deps,
    Err,
    LimiterQueueFullError,
    Ok,
    RateLimitExceededError,
    WorkflowContext,
    create_rate_limiter,
    create_workflow,
)
from awaitly_anyio.testing import FakeClock, ManualClock

pytestmark = pytest.mark.anyio


def assert_exact(admitted: list[float], max_requests: int, window: float) -> None:
    """No half-open window [t, t + window) holds more than max_requests admissions."""
    times = sorted(admitted)
    for i in range(len(times) - max_requests):
        assert times[i + max_requests] - times[i] >= window - 1e-9, (i, times[i : i + 3])


@settings(max_examples=200, deadline=None)
@given(
    max_requests=st.integers(1, 6),
    window=st.floats(0.1, 10, allow_nan=False),
    gaps=st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=60),
)
def test_admissions_are_exact_and_never_late(
    max_requests: int, window: float, gaps: list[float]
) -> None:
    """Arrivals at any times: every window holds at most max_requests admissions, and each
    call is admitted as early as that allows (no slot is wasted)."""

    async def main() -> None:
        clock = FakeClock()
        limiter = create_rate_limiter("p", max_requests=max_requests, window=window, clock=clock)
        admitted: list[float] = []
        for gap in gaps:
            clock.advance(gap)
            arrival = clock.monotonic()
            await limiter.acquire()
            now = clock.monotonic()
            earliest = arrival
            if len(admitted) >= max_requests:
                earliest = max(arrival, admitted[-max_requests] + window)
            assert now == pytest.approx(earliest)
            admitted.append(now)
        assert_exact(admitted, max_requests, window)

    anyio.run(main)


async def test_ten_thousand_concurrent_callers_take_their_turns_in_order() -> None:
    clock = FakeClock()
    limiter = create_rate_limiter("burst", max_requests=100, window=1.0, clock=clock)
    arrivals: list[int] = []
    admissions: list[tuple[int, float]] = []

    async def caller(n: int) -> None:
        arrivals.append(n)  # acquire enqueues before its first await
        result = await limiter(lambda: n)
        admissions.append((result.unwrap(), clock.monotonic()))

    async with anyio.create_task_group() as tg:
        for n in range(10_000):
            tg.start_soon(caller, n)
    assert [n for n, _ in admissions] == arrivals
    assert_exact([t for _, t in admissions], 100, 1.0)
    assert clock.monotonic() == pytest.approx(99.0)  # 100 windows, the first at once
    assert limiter.stats()["admitted"] == 10_000


async def test_a_cancelled_waiter_frees_its_place_and_takes_no_slot() -> None:
    clock = ManualClock()
    limiter = create_rate_limiter("one", max_requests=1, window=10, clock=clock)
    await limiter.acquire()  # t=0
    admitted: list[tuple[str, float]] = []
    scopes: dict[str, anyio.CancelScope] = {}

    async def waiter(name: str) -> None:
        with anyio.CancelScope() as scope:
            scopes[name] = scope
            await limiter.acquire()
            admitted.append((name, clock.monotonic()))

    async with anyio.create_task_group() as tg:
        for name in ("a", "b", "c", "d"):
            tg.start_soon(waiter, name)
            await anyio.wait_all_tasks_blocked()
        scopes["b"].cancel()  # in the middle of the queue
        scopes["a"].cancel()  # the head, asleep until its slot
        await anyio.wait_all_tasks_blocked()
        assert clock.sleeping == 1  # "c" moved up and sleeps until t=10
        clock.advance(10)
        await anyio.wait_all_tasks_blocked()
        clock.advance(10)
    assert admitted == [("c", 10.0), ("d", 20.0)]
    assert limiter.stats()["waiting"] == 0


async def test_max_wait_refuses_calls_that_would_wait_too_long() -> None:
    clock = ManualClock()
    limiter = create_rate_limiter("stripe", max_requests=2, window=10, max_wait=15, clock=clock)
    calls: list[int] = []

    async def charge(n: int) -> str:
        calls.append(n)
        return f"charge-{n}"

    results: dict[int, object] = {}

    async def caller(n: int) -> None:
        results[n] = await limiter(lambda: charge(n))

    async with anyio.create_task_group() as tg:
        for n in range(7):
            tg.start_soon(caller, n)
            await anyio.wait_all_tasks_blocked()
        # Two now, two queued for t=10; the rest would wait 20 > 15 and are refused.
        assert sorted(results) == [0, 1, 4, 5, 6]
        clock.advance(10)
    assert [n for n in range(7) if isinstance(results[n], Ok)] == [0, 1, 2, 3]
    assert results[4] == Err(RateLimitExceededError("stripe", 20.0))
    assert calls == [0, 1, 2, 3]
    tight = create_rate_limiter("tight", max_requests=1, window=10, max_wait=0, clock=clock)
    async with tight:
        pass
    with pytest.raises(RateLimitExceededError, match="tight"):
        async with tight:
            pass


async def test_max_concurrent_bounds_calls_in_flight() -> None:
    limiter = create_rate_limiter("db", max_requests=1000, window=1, max_concurrent=2)
    running, most = 0, 0
    release = anyio.Event()

    async def query() -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        return 1

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(limiter, query)
        await anyio.wait_all_tasks_blocked()
        assert running == 2
        release.set()
    assert most == 2


async def test_inside_a_step_as_in_the_deployment_guide() -> None:
    clock = FakeClock()
    stripe_limit = create_rate_limiter("stripe", max_requests=1, window=1, max_wait=0, clock=clock)
    workflow = create_workflow("checkout")

    async def charge_card(card: str) -> str:
        return f"charged {card}"

    async def body(ctx: WorkflowContext[Deps]) -> str:
        payment: str = await ctx.step("charge", lambda: stripe_limit(lambda: charge_card("4242")))
        return payment

    assert await workflow.run(body) == Ok("charged 4242")
    # The next call within the second would have to wait, and max_wait=0 refuses it.
    result = await workflow.run(body)
    assert result == Err(RateLimitExceededError("stripe", 1.0))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_requests": 0, "window": 1}, "max_requests"),
        ({"max_requests": 1, "window": 0}, "window"),
        ({"max_requests": 1, "window": float("inf")}, "window"),
        ({"max_requests": 1, "window": 1, "max_wait": -1}, "max_wait"),
        ({"max_requests": 1, "window": 1, "max_concurrent": 0}, "max_concurrent"),
        ({"max_requests": 1, "window": 1, "max_waiters": -1}, "max_waiters"),
        ({"max_requests": 1, "window": 1, "max_waiters": 1.5}, "max_waiters"),
    ],
)
def test_bad_options_are_refused(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_rate_limiter("x", **options)  # type: ignore[arg-type]


# ---- issue 22: weighted calls and a bounded wait queue ----------------------------------


@settings(max_examples=150, deadline=None)
@given(
    max_requests=st.integers(1, 8),
    window=st.floats(0.1, 10, allow_nan=False),
    calls=st.lists(
        st.tuples(st.floats(0, 5, allow_nan=False), st.integers(1, 8)), min_size=1, max_size=40
    ),
)
def test_weighted_admissions_are_exact_and_never_late(
    max_requests: int, window: float, calls: list[tuple[float, int]]
) -> None:
    """A call of cost n takes n units: no window holds more than max_requests units, and
    each call is admitted as soon as that allows."""

    async def main() -> None:
        clock = FakeClock()
        limiter = create_rate_limiter("w", max_requests=max_requests, window=window, clock=clock)
        units: list[float] = []  # one admission time per unit taken
        for gap, cost in calls:
            cost = min(cost, max_requests)
            clock.advance(gap)
            arrival = clock.monotonic()
            await limiter.acquire(cost)
            now = clock.monotonic()
            earliest = arrival
            if len(units) + cost > max_requests:
                earliest = max(arrival, units[len(units) + cost - max_requests - 1] + window)
            assert now == pytest.approx(earliest)
            units.extend([now] * cost)
        assert_exact(units, max_requests, window)

    anyio.run(main)


async def test_a_call_with_a_cost_takes_that_many_units() -> None:
    clock = FakeClock()
    tokens = create_rate_limiter("llm-tokens", max_requests=10, window=60, clock=clock)
    assert await tokens(lambda: "a", cost=6) == Ok("a")
    assert clock.monotonic() == 0  # admitted at once
    assert await tokens(lambda: "b", cost=4) == Ok("b")
    assert await tokens(lambda: "c", cost=3) == Ok("c")
    assert clock.monotonic() == 60  # waited for the first call's 6 units to leave
    assert tokens.stats()["admitted"] == 3


async def test_a_heavy_call_keeps_its_turn() -> None:
    clock = ManualClock()
    limiter = create_rate_limiter("fifo", max_requests=4, window=10, clock=clock)
    await limiter.acquire(3)  # t=0; one unit left
    order: list[tuple[str, float]] = []

    async def call(name: str, cost: int) -> None:
        await limiter.acquire(cost)
        order.append((name, clock.monotonic()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, "heavy", 4)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(call, "light", 1)  # a free unit now, but the heavy call is first
        await anyio.wait_all_tasks_blocked()
        assert order == []
        clock.advance(10)
        await anyio.wait_all_tasks_blocked()
        assert order == [("heavy", 10.0)]
        clock.advance(10)
    assert order == [("heavy", 10.0), ("light", 20.0)]


async def test_max_wait_counts_the_costs_queued_ahead() -> None:
    clock = ManualClock()
    limiter = create_rate_limiter("q", max_requests=4, window=10, max_wait=15, clock=clock)
    await limiter.acquire(4)  # t=0
    results: dict[str, object] = {}

    async def call(name: str, cost: int) -> None:
        results[name] = await limiter(lambda: name, cost=cost)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, "a", 3)  # at t=10
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(call, "b", 2)  # needs 2 units: a's 3 and this leave 1 -> t=20
        await anyio.wait_all_tasks_blocked()
        assert results == {"b": Err(RateLimitExceededError("q", 20.0))}
        clock.advance(10)
    assert results["a"] == Ok("a")


async def test_a_full_wait_queue_refuses_at_once() -> None:
    clock = ManualClock()
    limiter = create_rate_limiter("bounded", max_requests=1, window=10, max_waiters=2, clock=clock)
    results: dict[int, object] = {}

    async def call(n: int) -> None:
        results[n] = await limiter(lambda: n)

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(call, n)
            await anyio.wait_all_tasks_blocked()
        # 0 ran; 1 and 2 wait; 3 and 4 found two waiting and were refused at once
        # (retry_after: the wait they would have had, their turn at t=30).
        assert results == {
            0: Ok(0),
            3: Err(LimiterQueueFullError("bounded", 30.0, 2)),
            4: Err(LimiterQueueFullError("bounded", 30.0, 2)),
        }
        assert isinstance(results[3].error, RateLimitExceededError)  # type: ignore[union-attr]
        assert "queue is full" in str(results[3].error)  # type: ignore[union-attr]
        clock.advance(10)
        await anyio.wait_all_tasks_blocked()
        clock.advance(10)
    assert [results[n] for n in (1, 2)] == [Ok(1), Ok(2)]
    assert limiter.stats()["rejected"] == 2
    never = create_rate_limiter("never", max_requests=1, window=10, max_waiters=0, clock=clock)
    async with never:
        pass
    with pytest.raises(LimiterQueueFullError, match="never"):
        async with never:
            pass


async def test_bad_costs_are_refused() -> None:
    limiter = create_rate_limiter("c", max_requests=5, window=1, clock=FakeClock())
    for cost, message in (
        (0, "positive integer"),
        (True, "positive integer"),
        (6, "max_requests=5"),
    ):
        with pytest.raises(ValueError, match=message):
            await limiter(lambda: 1, cost=cost)
        with pytest.raises(ValueError, match=message):
            await limiter.acquire(cost)
    assert limiter.stats()["admitted"] == 0
