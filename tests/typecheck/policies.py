"""Static checks of dependency policies, per-run deps and context and ``validate_input``:
the wrapped dependency keeps the function's signature, the limiter and the breaker are
`Guard`s, a misspelt option or one of the wrong type is an error under both checkers.
Nothing here is executed by pytest.
"""

# Each `# type: ignore` here marks an error both checkers must report (mypy warns about an
# unused one by itself; this makes pyright do the same).
# pyright: reportUnnecessaryTypeIgnoreComment=error

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, assert_type

import attrs

from awaitly_anyio import (
    BoundStep,
    Deps,
    Guard,
    Ok,
    Policy,
    Result,
    RetryPolicy,
    WithPolicy,
    WorkflowContext,
    create_circuit_breaker,
    create_rate_limiter,
    create_workflow,
    policy,
)


async def charge(card: str, cents: int) -> Result[str, str]:
    return Ok(f"{card}:{cents}")


@attrs.frozen
class Order:
    sku: str


async def wrapping() -> None:
    limiter = create_rate_limiter("payments", max_requests=10, window=1.0)
    breaker = create_circuit_breaker("payments", failure_threshold=3, reset_timeout=5.0)
    # Both are Guards: a policy takes them through that Protocol.
    guards: list[Guard] = [limiter, breaker]
    assert_type(guards, list[Guard])
    wrapped = policy(charge, retry=RetryPolicy(3), timeout=2.0, limiter=limiter, breaker=breaker)
    assert isinstance(wrapped, WithPolicy)
    assert_type(await wrapped("visa", 5), Result[str, str])  # a plain call, typed
    await wrapped("visa", "five")  # type: ignore[arg-type]
    policy(charge, timout=2.0)  # type: ignore[call-overload]
    policy(charge, retry=3)  # type: ignore[call-overload]
    shared = Policy(timeout=1.0)
    assert_type(shared.replace(timeout=None), Policy)
    assert_type(shared.wrap(charge).policy, Policy)


async def per_call(ctx: WorkflowContext[Deps]) -> None:
    step = ctx.steps.charge
    assert_type(step, BoundStep)
    assert_type(step.options(timeout=5.0, key="charge:1", retry=None), BoundStep)
    step.options(timout=5.0)  # type: ignore[call-arg]
    assert_type(ctx.context, Mapping[str, Any])


async def per_run() -> None:
    workflow = create_workflow("checkout", {"charge": policy(charge)}, validate_input=Order)

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return "done"

    await workflow.run(body, deps={"charge": charge}, context={"request_id": "r-1"})

    def to_int(value: object) -> int:
        return int(str(value))

    create_workflow("w", validate_input=to_int)
    create_workflow("w", validate_input="Order")  # type: ignore[call-overload]
