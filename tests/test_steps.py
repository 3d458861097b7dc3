"""Step variants: retry and backoff, timeouts, try_, sleep, skip, all, race and for_each."""

from __future__ import annotations

from typing import Any

import anyio
import attrs
import pytest

from awaitly_anyio import (
    Deps,
    Err,
    Ok,
    RetryPolicy,
    StepTimeoutError,
    UnexpectedError,
    WorkflowContext,
    create_workflow,
    events,
    run,
)
from awaitly_anyio.testing import FakeClock

pytestmark = pytest.mark.anyio


def flaky(failures: int, error: object = None) -> tuple[list[int], Any]:
    """A step function failing ``failures`` times (raising, or returning Err(error)), then Ok."""
    calls: list[int] = []

    async def fn() -> Any:
        calls.append(1)
        if len(calls) <= failures:
            if error is None:
                raise ConnectionError(f"attempt {len(calls)}")
            return Err(error)
        return Ok(f"succeeded on {len(calls)}")

    return calls, fn


# ---- retry -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        ("exponential", [1.0, 2.0, 4.0, 8.0]),
        ("linear", [1.0, 2.0, 3.0, 4.0]),
        ("constant", [1.0, 1.0, 1.0, 1.0]),
    ],
)
async def test_retry_waits_by_the_backoff_schedule(backoff: Any, expected: list[float]) -> None:
    clock = FakeClock()
    calls, fn = flaky(4)

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.retry("call", fn, attempts=5, backoff=backoff, delay=1.0)

    assert await run(body, clock=clock) == Ok("succeeded on 5")
    assert len(calls) == 5
    assert clock.sleeps == expected


async def test_retry_gives_up_after_attempts_with_the_last_error() -> None:
    clock = FakeClock()
    calls, fn = flaky(10, error="UPSTREAM_DOWN")
    seen: list[events.WorkflowEvent] = []

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.retry("call", fn, attempts=3, delay=0.5, max_delay=0.75)

    assert await run(body, clock=clock, on_event=seen.append) == Err("UPSTREAM_DOWN")
    assert len(calls) == 3
    assert clock.sleeps == [0.5, 0.75]
    retries = [e for e in seen if isinstance(e, events.StepRetry)]
    assert [(e.attempt, e.delay, e.error) for e in retries] == [
        (1, 0.5, "UPSTREAM_DOWN"),
        (2, 0.75, "UPSTREAM_DOWN"),
    ]
    (error_event,) = [e for e in seen if isinstance(e, events.StepFailed)]
    assert error_event.attempt == 3


async def test_retry_on_decides_which_failures_are_retried() -> None:
    clock = FakeClock()
    calls, fn = flaky(10)
    seen_failures: list[object] = []

    def only_timeouts(failure: object) -> bool:
        seen_failures.append(failure)
        return isinstance(failure, TimeoutError)

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.retry("call", fn, attempts=5, retry_on=only_timeouts)

    result = await run(body, clock=clock)
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    assert isinstance(result.error.cause, ConnectionError)
    assert len(calls) == 1
    assert clock.sleeps == []
    assert [type(f) for f in seen_failures] == [ConnectionError]


async def test_retry_through_the_step_option_and_exceptions_are_retried() -> None:
    clock = FakeClock()
    calls, fn = flaky(2)

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step("call", fn, retry=RetryPolicy(attempts=3, delay=0.25))

    assert await run(body, clock=clock) == Ok("succeeded on 3")
    assert len(calls) == 3
    assert clock.sleeps == [0.25, 0.5]


async def test_retry_with_a_timeout_per_attempt_retries_timeouts() -> None:
    clock = FakeClock()
    attempts: list[int] = []

    async def slow_then_fast() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            await anyio.sleep_forever()
        return "fast"

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.retry("call", slow_then_fast, attempts=3, delay=0, timeout=0.005)

    assert await run(body, clock=clock) == Ok("fast")
    assert len(attempts) == 3


def test_jitter_spreads_the_delay_within_its_fraction() -> None:
    policy = RetryPolicy(attempts=3, backoff="constant", delay=10.0, jitter=0.2)
    assert policy.delay_for(1, rand=lambda: 0.0) == pytest.approx(8.0)
    assert policy.delay_for(1, rand=lambda: 0.5) == pytest.approx(10.0)
    assert policy.delay_for(1, rand=lambda: 1.0) == pytest.approx(12.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, "attempts must be an integer >= 1"),
        ({"attempts": 2.5}, "attempts must be an integer >= 1"),
        ({"attempts": 2, "backoff": "fibonacci"}, "backoff must be one of 'exponential'"),
        ({"attempts": 2, "delay": -1}, "delay must be a finite number >= 0"),
        ({"attempts": 2, "delay": float("nan")}, "delay must be a finite number >= 0"),
        ({"attempts": 2, "max_delay": -1}, "max_delay must be a finite number >= 0"),
        ({"attempts": 2, "jitter": 1.5}, "jitter must be a fraction"),
        ({"attempts": 2, "retry_on": "yes"}, "retry_on"),
        ({"attempts": 2, "timeout": 0}, "timeout must be a number of seconds > 0"),
    ],
)
def test_bad_retry_policies_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        RetryPolicy(**kwargs)


# ---- timeouts --------------------------------------------------------------------------


async def test_timeout_cancels_the_work_and_returns_step_timeout_error() -> None:
    side_effects: list[str] = []
    finally_ran: list[bool] = []
    seen: list[events.WorkflowEvent] = []

    async def charge() -> str:
        try:
            await anyio.sleep_forever()
            side_effects.append("charged")
        finally:
            finally_ran.append(True)
        return "unreachable"

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.with_timeout("charge", charge, seconds=0.005)

    result = await run(body, on_event=seen.append)
    assert result == Err(StepTimeoutError("charge", 0.005))
    assert finally_ran == [True]
    assert side_effects == []
    assert [e.type for e in seen] == [
        "workflow_start",
        "step_start",
        "step_timeout",
        "step_error",
        "workflow_error",
    ]


async def test_fast_work_under_a_timeout_returns_its_value() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step("quick", lambda: Ok(5), timeout=30)

    assert await run(body) == Ok(5)


async def test_outer_cancellation_of_a_step_with_timeout_is_not_a_timeout() -> None:
    returned: list[object] = []
    with anyio.CancelScope() as scope:

        async def cancel_then_wait() -> None:
            scope.cancel()
            await anyio.sleep_forever()

        async def body(ctx: WorkflowContext[Deps]) -> None:
            await ctx.step("wait", cancel_then_wait, timeout=30)

        returned.append(await run(body))
    assert scope.cancelled_caught
    assert returned == []


async def test_step_without_timeout_opens_no_cancel_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cancel scope was opened")

    monkeypatch.setattr(anyio, "move_on_after", forbidden)
    monkeypatch.setattr(anyio, "CancelScope", forbidden)

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step("plain", lambda: 1) + await ctx.step.retry(
            "retried", lambda: 2, attempts=2
        )

    assert await run(body, on_event=lambda e: None) == Ok(3)


# ---- try_, sleep, skip -----------------------------------------------------------------


@attrs.frozen
class PaymentDeclined:
    reason: str


async def test_try_maps_exceptions_to_a_typed_error_value() -> None:
    def charge() -> None:
        raise ValueError("insufficient funds")

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.try_("charge", charge, error="PAYMENT_FAILED")

    assert await run(body) == Err("PAYMENT_FAILED")

    async def mapped(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.try_("charge", charge, error=lambda exc: PaymentDeclined(str(exc)))

    assert await run(mapped) == Err(PaymentDeclined("insufficient funds"))

    async def fine(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.try_("charge", lambda: "ok", error="PAYMENT_FAILED")

    assert await run(fine) == Ok("ok")


async def test_sleep_waits_on_the_workflow_clock() -> None:
    clock = FakeClock()

    async def body(ctx: WorkflowContext[Deps]) -> float:
        await ctx.step.sleep("cool-down", 90)
        return clock.monotonic()

    assert await run(body, clock=clock) == Ok(90)
    assert clock.sleeps == [90]


async def test_skip_records_a_step_that_was_not_run() -> None:
    seen: list[events.WorkflowEvent] = []

    async def body(ctx: WorkflowContext[Deps]) -> None:
        ctx.step.skip("new-payment-flow", reason="flag off")

    await run(body, on_event=seen.append)
    (skipped,) = [e for e in seen if isinstance(e, events.StepSkipped)]
    assert (skipped.name, skipped.reason) == ("new-payment-flow", "flag off")


# ---- all, race, for_each ---------------------------------------------------------------


async def test_all_returns_every_value_by_label_or_position() -> None:
    async def slow(value: int) -> int:
        await anyio.lowlevel.checkpoint()
        return value

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        by_label = await ctx.step.all("fetch", {"user": lambda: slow(1), "cart": lambda: Ok(2)})
        in_order = await ctx.step.all("fetch-list", [lambda: slow(3), lambda: 4])
        return by_label, in_order

    assert await run(body) == Ok(({"user": 1, "cart": 2}, [3, 4]))


async def test_all_first_err_cancels_the_siblings() -> None:
    sibling_effects: list[str] = []
    sibling_finally: list[bool] = []

    async def slow_sibling() -> str:
        try:
            await anyio.sleep_forever()
            sibling_effects.append("wrote")
        finally:
            sibling_finally.append(True)
        return "unreachable"

    async def failing() -> Err[str]:
        await anyio.lowlevel.checkpoint()
        return Err("INVENTORY_EMPTY")

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.all("both", {"slow": slow_sibling, "fail": failing})

    assert await run(body) == Err("INVENTORY_EMPTY")
    assert sibling_finally == [True]
    assert sibling_effects == []


async def test_all_child_exception_becomes_unexpected_error() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.all("both", [lambda: 1, lambda: 1 / 0])

    result = await run(body)
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    assert isinstance(result.error.cause, ZeroDivisionError)


async def test_race_returns_the_first_and_cancels_the_rest() -> None:
    cancelled: list[str] = []
    gate = anyio.Event()

    async def loser() -> str:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.append("loser")
        return "unreachable"

    async def winner() -> str:
        await gate.wait()
        return "winner"

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        gate.set()
        return await ctx.step.race("fastest", [loser, winner])

    assert await run(body) == Ok("winner")
    assert cancelled == ["loser"]


async def test_race_ends_the_workflow_when_the_first_to_finish_fails() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.race("fastest", [anyio.sleep_forever, lambda: Err("FIRST")])

    assert await run(body) == Err("FIRST")


async def test_for_each_keeps_order_and_respects_concurrency() -> None:
    in_flight = 0
    peak = 0

    async def work(item: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
        in_flight -= 1
        return item * item

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        sequential = await ctx.step.for_each("seq", range(5), work)
        parallel = await ctx.step.for_each("par", range(20), work, concurrency=4)
        return sequential, parallel

    assert await run(body) == Ok(([i * i for i in range(5)], [i * i for i in range(20)]))
    assert peak == 4


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_for_each_stops_at_the_first_err(concurrency: int) -> None:
    processed: list[int] = []

    async def work(item: int) -> Any:
        await anyio.lowlevel.checkpoint()
        if item == 2:
            return Err(f"BAD_ITEM_{item}")
        processed.append(item)
        return item

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.for_each("items", range(10), work, concurrency=concurrency)

    assert await run(body) == Err("BAD_ITEM_2")
    assert 2 not in processed
    assert len(processed) < 9


async def test_group_steps_are_keyed_like_any_step() -> None:
    calls: list[int] = []

    def count() -> int:
        calls.append(1)
        return len(calls)

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        first = await ctx.step.all("pair", [count, count], key="pair")
        second = await ctx.step.all("pair", [count, count], key="pair")
        return sorted(first), second is first or second == first

    assert await run(body) == Ok(([1, 2], True))
    assert len(calls) == 2


# ---- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda ctx: ctx.step("", lambda: 1), "non-empty string name"),
        (lambda ctx: ctx.step("s", 42), "fn must be a zero-argument callable"),
        (lambda ctx: ctx.step("s", lambda: 1, timeout=-1), "timeout must be a number"),
        (lambda ctx: ctx.step("s", lambda: 1, retry=3), "retry must be a RetryPolicy"),
        (lambda ctx: ctx.step.all("g", "abc"), "expected a mapping or a list"),
        (lambda ctx: ctx.step.race("g", []), "race needs at least one child"),
        (lambda ctx: ctx.step.for_each("g", [1], print, concurrency=0), "concurrency must"),
        (lambda ctx: ctx.step.sleep("nap", -1), "seconds must be a number >= 0"),
    ],
)
async def test_bad_step_arguments_end_the_run_with_a_clear_error(call: Any, message: str) -> None:
    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await call(ctx)

    result = await create_workflow("bad").run(body)
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    assert message in str(result.error.cause)


async def test_ctx_step_is_the_step_object_and_keeps_the_run_to_itself() -> None:
    from awaitly_anyio import Step

    seen: list[Any] = []

    async def body(ctx: WorkflowContext[Deps]) -> None:
        seen.append(ctx.step)
        assert type(ctx.step) is Step
        # The variants are its own methods, bound to it (no copies per run).
        assert ctx.step.retry.__self__ is ctx.step
        assert ctx.step.all.__func__ is Step.all
        # The run's state stays behind it: nothing of it is an attribute of ctx.step.
        for name in ("completed", "emit", "clock", "checkpoint", "remember", "workflow_id"):
            assert not hasattr(ctx.step, name), name
        assert await ctx.step("one", lambda: 1) == 1

    workflow = create_workflow("shape")
    assert (await workflow.run(body)).ok
    assert (await workflow.run(body)).ok
    assert seen[0] is not seen[1]  # one per run


@attrs.frozen
class _Approved(Ok[str]):
    pass


@attrs.frozen
class _Refused(Err[str]):
    pass


@pytest.mark.parametrize("keyed", [False, True])
async def test_subclasses_of_ok_and_err_count_as_ok_and_err(keyed: bool) -> None:
    key = {"key": "k"} if keyed else {}

    async def approved(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.step("approve", lambda: _Approved("yes"), **key)

    async def refused(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.step("refuse", lambda: _Refused("no"), **key)

    workflow = create_workflow("subclasses")
    assert await workflow.run(approved) == Ok("yes")
    result = await workflow.run(refused)
    assert result.ok is False
    assert result.error == "no"
