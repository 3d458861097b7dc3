"""Static checks that the value type flows through the public API, under both checkers.

Run by ``.ci/run`` with ``mypy --strict tests/typecheck`` and ``pyright`` (strict, see
``[tool.pyright]`` in pyproject.toml).  Nothing here is executed by pytest.  Each
``assert_type`` pins one case of issue #17 where a type used to collapse to ``Any``
(or to be rejected); loosening the library's annotations fails the check.
"""

# Each `# type: ignore` here marks an error both checkers must report (mypy warns about an
# unused one by itself; this makes pyright do the same).
# pyright: reportUnnecessaryTypeIgnoreComment=error

from __future__ import annotations

from typing import Any, assert_type

import attrs

from awaitly_anyio import (
    CircuitOpenError,
    Deps,
    Err,
    Ok,
    RateLimitExceededError,
    Result,
    ResumeState,
    SharedStateUnavailableError,
    WorkflowContext,
    WorkflowHost,
    WorkflowRegistry,
    WorkflowSnapshot,
    create_circuit_breaker,
    create_rate_limiter,
    create_workflow,
    open_store,
    recover,
    recovery_loop,
)
from awaitly_anyio._circuit_breaker import CircuitBreaker, RedisCircuitBreaker
from awaitly_anyio._host import RunHandle
from awaitly_anyio._ratelimit import RateLimiter, RedisRateLimiter
from awaitly_anyio._store import QueueStore


@attrs.frozen
class Receipt:
    id: str


class Declined(Exception):
    pass


async def charge() -> Result[Receipt, Declined]:
    return Ok(Receipt("r1"))


def charge_now() -> Result[Receipt, Declined]:
    return Ok(Receipt("r1"))


async def total() -> int:
    return 3


# ---- narrowing: the forms both checkers accept -----------------------------------------------


def narrow_with_is(result: Result[int, str]) -> int:
    if result.ok is True:
        assert_type(result, Ok[int])
        return result.value
    assert_type(result, Err[str])
    return len(result.error)


def narrow_with_is_false(result: Result[int, str]) -> str:
    if result.ok is False:
        assert_type(result, Err[str])
        return result.error
    assert_type(result, Ok[int])
    return str(result.value)


# ---- the rate limiter and the circuit breaker keep the value type --------------------------


async def limiter_and_breaker(
    limiter: RateLimiter,
    shared_limiter: RedisRateLimiter,
    breaker: CircuitBreaker,
    shared_breaker: RedisCircuitBreaker,
) -> None:
    assert_type(await limiter(charge), Ok[Receipt] | Err[Declined | RateLimitExceededError])
    assert_type(await limiter(charge_now), Ok[Receipt] | Err[Declined | RateLimitExceededError])
    assert_type(await limiter(total), Ok[int] | Err[RateLimitExceededError])
    assert_type(await limiter(lambda: "text"), Ok[str] | Err[RateLimitExceededError])
    assert_type(
        await shared_limiter(total),
        Ok[int] | Err[RateLimitExceededError | SharedStateUnavailableError],
    )
    assert_type(await breaker(charge), Ok[Receipt] | Err[Declined | CircuitOpenError])
    assert_type(await breaker(lambda: 2.5), Ok[float] | Err[CircuitOpenError])
    assert_type(
        await shared_breaker(total), Ok[int] | Err[CircuitOpenError | SharedStateUnavailableError]
    )


async def created_limiter_and_breaker() -> None:
    limiter = create_rate_limiter("api", max_requests=10, window=1.0)
    breaker = create_circuit_breaker("api", failure_threshold=3, reset_timeout=30.0)
    # A thunk returning the limiter's Result: the breaker passes it through, adding its own.
    assert_type(
        await breaker(lambda: limiter(charge)),
        Ok[Receipt] | Err[Declined | RateLimitExceededError | CircuitOpenError],
    )


# ---- steps: try_'s error mapper and race ---------------------------------------------------


async def steps(ctx: WorkflowContext[Deps]) -> None:
    receipt = await ctx.step.try_(
        "charge", lambda: charge(), error=lambda exc: Declined(f"declined: {exc}")
    )
    # pyright strict fails on that lambda if `exc` is not known (reportUnknownLambdaType);
    # it is an Exception.  (mypy gives a lambda in an overloaded call an Any parameter.)
    assert_type(receipt, Receipt)

    def to_declined(exc: Exception) -> Declined:
        return Declined(str(exc))

    assert_type(await ctx.step.try_("charge2", charge_now, error=to_declined), Receipt)
    assert_type(await ctx.step.race("fastest", [charge, charge]), Receipt)
    assert_type(await ctx.step.race("first_total", [total, total]), int)
    assert_type(await ctx.step.race("plain", [charge_now, charge_now]), Receipt)


# ---- workflow.run: resume states, lambdas ---------------------------------------------------


async def body(ctx: WorkflowContext[Deps]) -> Result[Receipt, Declined]:
    return await charge()


async def plain_body(ctx: WorkflowContext[Deps]) -> int:
    return 1


async def runs(snapshot: WorkflowSnapshot, maybe: WorkflowSnapshot | None) -> None:
    workflow = create_workflow("checkout")
    state = ResumeState({"charge:1": Ok(Receipt("r1"))})
    assert_type(await workflow.run(body, resume_state=state), Ok[Receipt] | Err[Any])
    assert_type(await workflow.run(body, resume_state=snapshot), Ok[Receipt] | Err[Any])
    assert_type(await workflow.run(body, resume_state=maybe), Ok[Receipt] | Err[Any])
    # The docs' idiom: a lambda around a body that returns a Result.
    assert_type(await workflow.run(lambda ctx: body(ctx)), Ok[Receipt] | Err[Any])
    assert_type(await workflow.run(lambda ctx: plain_body(ctx)), Ok[int] | Err[Any])


# ---- stores: what open_store returns is a QueueStore -------------------------------------


async def stores(registry: WorkflowRegistry) -> None:
    for url in ("memory://", "sqlite:///runs.db", "postgresql://db/app", "redis://cache:6379/0"):
        async with open_store(url) as store:
            assert_type(store, QueueStore)
            await recover(store, registry)
            await recovery_loop(store, registry, interval=5.0)


# ---- the host and its handles --------------------------------------------------------------


async def host(host: WorkflowHost) -> None:
    workflow = create_workflow("checkout")
    assert_type(await host.run(workflow, body), Ok[Receipt] | Err[Any])
    assert_type(await host.run(workflow, plain_body), Ok[int] | Err[Any])
    handle = host.start(workflow, body, workflow_id="order-1")
    assert_type(handle, RunHandle[Receipt])
    assert_type(await handle.result(), Ok[Receipt] | Err[Any])


# ---- ctx.input: typed by the body's WorkflowContext[D, I] ----------------------------------


@attrs.frozen
class Order:
    id: str
    cents: int


async def with_input(ctx: WorkflowContext[Deps, Order]) -> int:
    assert_type(ctx.input, Order)
    return ctx.input.cents


async def without_input_type(ctx: WorkflowContext[Deps]) -> None:
    assert_type(ctx.input, Any)


async def inputs() -> None:
    workflow = create_workflow("orders")
    assert_type(await workflow.run(with_input, input=Order("o1", 100)), Ok[int] | Err[Any])
    assert_type(await workflow.run(without_input_type, input="anything"), Ok[None] | Err[Any])
    # The wrong input for the body's declared type is refused.
    await workflow.run(with_input, input="o1")  # type: ignore[arg-type]
