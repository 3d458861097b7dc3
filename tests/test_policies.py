"""Dependency policies: ``policy(dep, retry=..., timeout=..., limiter=..., breaker=...)``
inherited by every ``ctx.steps.<dep>(...)`` call, overridable per call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from awaitly_anyio import (
    CircuitOpenError,
    CircuitState,
    Deps,
    Err,
    Ok,
    Policy,
    RateLimitExceededError,
    Result,
    RetryPolicy,
    StepTimeoutError,
    UnexpectedError,
    WithPolicy,
    WorkflowContext,
    create_circuit_breaker,
    create_rate_limiter,
    create_workflow,
    events,
    policy,
)
from awaitly_anyio.testing import FakeClock

from .store_kits import MEMORY, SQLITE, StoreKit

pytestmark = pytest.mark.anyio


def step_events(seen: list[events.WorkflowEvent]) -> list[tuple[str, str | None]]:
    return [(e.type, getattr(e, "name", None)) for e in seen if e.type.startswith("step_")]


class Flaky:
    """A dependency that fails ``failures`` times (raising), then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[str] = []

    async def __call__(self, card: str) -> str:
        self.calls.append(card)
        if len(self.calls) <= self.failures:
            raise ConnectionError("payments down")
        return f"charged {card}"


# ---- the policy travels with the dependency ----------------------------------------------


async def test_every_bound_call_inherits_the_retry_policy_with_events() -> None:
    flaky = Flaky(failures=2)
    clock = FakeClock()
    seen: list[events.WorkflowEvent] = []
    workflow = create_workflow(
        "checkout",
        {"charge": policy(flaky, retry=RetryPolicy(3, delay=1.0, backoff="constant"))},
        on_event=seen.append,
        clock=clock,
    )

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.steps.charge("visa")

    assert await workflow.run(body) == Ok("charged visa")
    assert flaky.calls == ["visa", "visa", "visa"]
    assert step_events(seen) == [
        ("step_start", "charge"),
        ("step_retry", "charge"),
        ("step_retry", "charge"),
        ("step_complete", "charge"),
    ]
    # the waits between attempts were on the workflow's clock
    assert clock.monotonic() == pytest.approx(2.0)


async def test_without_a_policy_a_bound_step_is_a_plain_step() -> None:
    flaky = Flaky(failures=1)
    workflow = create_workflow("checkout", {"charge": flaky})

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.steps.charge("visa")

    result = await workflow.run(body)
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    assert flaky.calls == ["visa"]


async def test_the_timeout_cancels_the_call_and_ends_the_workflow_with_step_timeout() -> None:
    cancelled: list[bool] = []
    seen: list[events.WorkflowEvent] = []

    async def slow(card: str) -> str:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.append(True)
        raise AssertionError("unreachable")

    workflow = create_workflow(
        "checkout", {"charge": policy(slow, timeout=0.01)}, on_event=seen.append
    )

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.steps.charge("visa")

    assert await workflow.run(body) == Err(StepTimeoutError("charge", 0.01))
    assert cancelled == [True]
    assert ("step_timeout", "charge") in step_events(seen)


async def test_the_breaker_counts_timeouts_and_failures_and_then_fails_fast() -> None:
    clock = FakeClock()
    breaker = create_circuit_breaker("payments", failure_threshold=2, reset_timeout=30, clock=clock)
    calls: list[str] = []

    async def hangs(card: str) -> str:
        calls.append(card)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    workflow = create_workflow(
        "checkout", {"charge": policy(hangs, timeout=0.01, breaker=breaker)}, clock=clock
    )

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.steps.charge("visa")

    assert await workflow.run(body) == Err(StepTimeoutError("charge", 0.01))
    assert await workflow.run(body) == Err(StepTimeoutError("charge", 0.01))
    assert breaker.state is CircuitState.OPEN
    result = await workflow.run(body)
    assert isinstance(result, Err)
    assert isinstance(result.error, CircuitOpenError)
    assert calls == ["visa", "visa"]  # the open circuit did not call the dependency


async def test_a_limiter_refusal_fails_the_step_but_is_not_a_breaker_failure() -> None:
    clock = FakeClock()
    limiter = create_rate_limiter("payments", max_requests=1, window=60, max_wait=0, clock=clock)
    breaker = create_circuit_breaker("payments", failure_threshold=1, reset_timeout=30, clock=clock)
    calls: list[str] = []

    async def charge(card: str) -> str:
        calls.append(card)
        return f"charged {card}"

    workflow = create_workflow(
        "checkout",
        {"charge": policy(charge, limiter=limiter, breaker=breaker, timeout=5)},
        clock=clock,
    )

    async def body(ctx: WorkflowContext[Deps]) -> list[str]:
        return [await ctx.steps.charge("a"), await ctx.steps.charge("b")]

    result = await workflow.run(body)
    assert isinstance(result, Err)
    assert isinstance(result.error, RateLimitExceededError)
    assert calls == ["a"]
    # a threshold of one failure: a refusal counted as a failure would have opened it
    assert breaker.state is CircuitState.CLOSED
    assert limiter.rejected_total == 1


async def test_limiter_only_admits_in_turn() -> None:
    clock = FakeClock()
    limiter = create_rate_limiter("api", max_requests=2, window=60, max_wait=0, clock=clock)
    workflow = create_workflow("w", {"get": policy(lambda n: n * 2, limiter=limiter)}, clock=clock)

    async def body(ctx: WorkflowContext[Deps]) -> list[int]:
        return [await ctx.steps.get(1), await ctx.steps.get(2)]

    assert await workflow.run(body) == Ok([2, 4])
    third = await workflow.run(body)
    assert isinstance(third, Err)
    assert isinstance(third.error, RateLimitExceededError)


async def test_retries_go_through_the_guards_again() -> None:
    clock = FakeClock()
    breaker = create_circuit_breaker("payments", failure_threshold=5, reset_timeout=30, clock=clock)
    flaky = Flaky(failures=2)
    workflow = create_workflow(
        "checkout",
        {"charge": policy(flaky, retry=RetryPolicy(3, delay=0), breaker=breaker, timeout=5)},
        clock=clock,
    )

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.steps.charge("visa")

    assert await workflow.run(body) == Ok("charged visa")
    assert breaker.calls == 3
    assert breaker.failures_total == 2


async def test_the_retry_policys_own_timeout_bounds_each_call_inside_the_guards() -> None:
    clock = FakeClock()
    breaker = create_circuit_breaker("slow", failure_threshold=1, reset_timeout=30, clock=clock)

    async def hangs() -> str:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    workflow = create_workflow(
        "w",
        {"call": policy(hangs, retry=RetryPolicy(1, timeout=0.01), breaker=breaker)},
        clock=clock,
    )

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.steps.call()

    assert await workflow.run(body) == Err(StepTimeoutError("call", 0.01))
    assert breaker.state is CircuitState.OPEN  # the timeout was the breaker's failure


async def test_outside_cancellation_propagates_and_is_not_a_breaker_failure() -> None:
    clock = FakeClock()
    breaker = create_circuit_breaker("payments", failure_threshold=1, reset_timeout=30, clock=clock)
    limiter = create_rate_limiter("payments", max_requests=5, window=60, clock=clock)
    started = anyio.Event()
    seen: list[events.WorkflowEvent] = []

    async def hangs(card: str) -> str:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    workflow = create_workflow(
        "checkout",
        {
            "charge": policy(
                hangs, retry=RetryPolicy(3), timeout=60, limiter=limiter, breaker=breaker
            )
        },
        on_event=seen.append,
        clock=clock,
    )

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.steps.charge("visa")

    async with anyio.create_task_group() as tg:

        async def run_it() -> None:
            await workflow.run(body)
            raise AssertionError("the run should have been cancelled")

        tg.start_soon(run_it)
        await started.wait()
        tg.cancel_scope.cancel()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.failures_total == 0
    assert [e.type for e in seen][-2:] == ["step_cancelled", "workflow_cancelled"]


# ---- per call ----------------------------------------------------------------------------


async def test_options_change_the_policy_for_one_call_only() -> None:
    clock = FakeClock()
    seen: list[events.WorkflowEvent] = []
    flaky = Flaky(failures=1)
    workflow = create_workflow(
        "checkout",
        {"charge": policy(flaky, retry=RetryPolicy(2, delay=0))},
        on_event=seen.append,
        clock=clock,
    )

    async def body(ctx: WorkflowContext[Deps]) -> str:
        first = await ctx.steps.charge("a")  # retried once by the dependency's policy
        flaky.failures = 3  # the next call (the third) fails
        return first + " / " + await ctx.steps.charge.options(retry=None)("b")

    result = await workflow.run(body)
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    assert flaky.calls == ["a", "a", "b"]  # no retry for the call without one
    assert ("step_error", "charge#2") in step_events(seen)


async def test_options_can_add_a_timeout_and_a_key() -> None:
    seen: list[events.WorkflowEvent] = []

    async def slow() -> str:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    workflow = create_workflow("w", {"slow": slow}, on_event=seen.append)

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.steps.slow.options(timeout=0.01, key="slow:1")()

    assert await workflow.run(body) == Err(StepTimeoutError("slow", 0.01))
    keys = {getattr(e, "step_key", None) for e in seen if e.type.startswith("step_")}
    assert keys == {"slow:1"}


async def test_options_are_checked_where_they_are_written() -> None:
    workflow = create_workflow("w", {"charge": policy(Flaky(0), timeout=1)})
    problems: list[str] = []

    async def body(ctx: WorkflowContext[Deps]) -> None:
        for bad in (
            {"timeout": -1},
            {"timeout": "soon"},
            {"retry": 3},
            {"limiter": "fast"},
            {"key": ""},
            {"timout": 1},
        ):
            with pytest.raises((TypeError, ValueError)) as info:
                ctx.steps.charge.options(**bad)  # type: ignore[arg-type]
            problems.append(str(info.value))

    assert await workflow.run(body) == Ok(None)
    assert "policy timeout" in problems[0]
    assert "policy timeout" in problems[1]
    assert "RetryPolicy" in problems[2]
    assert "limiter" in problems[3]
    assert "key" in problems[4]
    assert "'timout'" in problems[5]
    assert "retry, timeout, limiter, breaker, key" in problems[5]


async def test_bound_steps_are_still_numbered_with_policies_and_options() -> None:
    seen: list[events.WorkflowEvent] = []
    workflow = create_workflow("w", {"get": policy(lambda x: x, timeout=5)}, on_event=seen.append)

    async def body(ctx: WorkflowContext[Deps]) -> list[int]:
        return [
            await ctx.steps.get(1),
            await ctx.steps.get.options(timeout=None)(2),
            await ctx.steps.get(3),
        ]

    assert await workflow.run(body) == Ok([1, 2, 3])
    names = [e.name for e in seen if isinstance(e, events.StepComplete)]
    assert names == ["get", "get#2", "get#3"]


# ---- outside a workflow, and the wrapper itself -------------------------------------------


async def test_the_wrapped_dependency_is_the_plain_function_outside_a_step() -> None:
    flaky = Flaky(failures=1)
    wrapped = policy(flaky, retry=RetryPolicy(3, delay=0))
    with pytest.raises(ConnectionError):
        await wrapped("a")  # a plain call: no retry
    assert await wrapped("b") == "charged b"
    assert wrapped.__wrapped__ is flaky
    assert wrapped.policy == Policy(retry=RetryPolicy(3, delay=0))

    workflow = create_workflow("w", {"charge": wrapped})

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.deps.charge("c")  # ctx.deps is the plain dependency too

    assert await workflow.run(body) == Ok("charged c")


def test_the_decorator_form_keeps_the_functions_name_and_signature() -> None:
    @policy(timeout=2.0)
    def fetch_user(user_id: int) -> Result[str, str]:
        """Fetch a user."""
        return Ok(f"user-{user_id}")

    assert isinstance(fetch_user, WithPolicy)
    assert fetch_user.__name__ == "fetch_user"
    assert fetch_user.__doc__ == "Fetch a user."
    assert fetch_user(1) == Ok("user-1")
    assert fetch_user.policy.timeout == 2.0


def test_wrapping_again_puts_the_new_settings_over_the_old() -> None:
    limiter = create_rate_limiter("x", max_requests=1, window=1)
    inner = policy(Flaky(0), retry=RetryPolicy(2), timeout=1)
    outer = Policy(timeout=3, limiter=limiter).wrap(inner)
    assert outer.__wrapped__ is inner.__wrapped__
    assert outer.policy == Policy(retry=RetryPolicy(2), timeout=3.0, limiter=limiter)
    shared = Policy(timeout=1)
    assert shared.replace(timeout=None) == Policy()


@pytest.mark.parametrize(
    ("options", "kind", "words"),
    [
        ({"retry": 3}, TypeError, "retry must be a RetryPolicy"),
        ({"timeout": 0}, ValueError, "policy timeout must be a number of seconds > 0"),
        ({"timeout": float("inf")}, ValueError, "finite"),
        ({"timeout": True}, TypeError, "policy timeout"),
        ({"breaker": 42}, TypeError, "breaker must be awaitable around a thunk"),
        ({"limiter": object()}, TypeError, "limiter must be awaitable"),
        ({"retries": 2}, TypeError, "no option 'retries'"),
    ],
)
def test_bad_policy_options_are_refused_when_the_policy_is_made(
    options: dict[str, Any], kind: type[Exception], words: str
) -> None:
    with pytest.raises(kind, match=words):
        policy(Flaky(0), **options)


def test_only_a_callable_can_be_wrapped() -> None:
    with pytest.raises(TypeError, match="wraps a callable dependency"):
        policy("not a function")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="must be a Policy"):
        WithPolicy(print, {"timeout": 1})  # type: ignore[arg-type]


# ---- durable runs ------------------------------------------------------------------------


@pytest.fixture(params=[MEMORY, SQLITE], ids=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    kit: StoreKit = request.param
    async with kit.open(tmp_path, FakeClock()) as opened:
        yield opened


async def test_a_keyed_policy_step_of_a_durable_run_is_not_called_again(store: Any) -> None:
    clock = FakeClock()
    flaky = Flaky(failures=1)
    fail_after = [True]
    workflow = create_workflow(
        "checkout", {"charge": policy(flaky, retry=RetryPolicy(2, delay=0), timeout=5)}, clock=clock
    )

    async def body(ctx: WorkflowContext[Deps]) -> str:
        receipt = await ctx.steps.charge.options(key="charge:1")("visa")
        if fail_after[0]:
            fail_after[0] = False
            return await ctx.step("ship", lambda: Err("NO_COURIER"))
        return receipt

    assert await workflow.run(body, workflow_id="order-1", store=store) == Err("NO_COURIER")
    assert flaky.calls == ["visa", "visa"]
    assert await workflow.run(body, workflow_id="order-1", store=store) == Ok("charged visa")
    assert flaky.calls == ["visa", "visa"]  # answered from its checkpoint


async def test_a_dependency_named_like_a_mapping_method_is_the_dependency() -> None:
    workflow = create_workflow("w", {"get": lambda key: f"got {key}", "items": lambda: [1]})

    async def body(ctx: WorkflowContext[Deps]) -> tuple[str, list[int]]:
        return await ctx.steps.get("a"), await ctx.steps.items()

    assert await workflow.run(body) == Ok(("got a", [1]))

    async def unknown(ctx: WorkflowContext[Deps]) -> None:
        with pytest.raises(AttributeError, match="no dependency named 'nope'"):
            ctx.steps.nope  # noqa: B018

    assert await workflow.run(unknown) == Ok(None)


async def test_timeouts_inside_the_guards_are_numbered_by_attempt() -> None:
    clock = FakeClock()
    seen: list[events.WorkflowEvent] = []
    breaker = create_circuit_breaker("slow", failure_threshold=5, reset_timeout=30, clock=clock)
    limiter = create_rate_limiter("slow", max_requests=10, window=60, clock=clock)

    async def hangs() -> str:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    workflow = create_workflow(
        "w",
        {
            "call": policy(
                hangs,
                retry=RetryPolicy(3, delay=0),
                timeout=0.01,
                limiter=limiter,
                breaker=breaker,
            )
        },
        on_event=seen.append,
        clock=clock,
    )

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.steps.call()

    assert await workflow.run(body) == Err(StepTimeoutError("call", 0.01))
    timeouts = [e for e in seen if isinstance(e, events.StepTimeout)]
    assert [(e.attempt, e.seconds, e.name) for e in timeouts] == [
        (1, 0.01, "call"),
        (2, 0.01, "call"),
        (3, 0.01, "call"),
    ]
    failed = [e for e in seen if isinstance(e, events.StepFailed)]
    assert [e.attempt for e in failed] == [3]
    assert breaker.failures_total == 3
