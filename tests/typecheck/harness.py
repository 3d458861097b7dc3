"""The workflow harness keeps the body's value type, and its scripts accept outcomes only
(a plain value is refused by the type checker as it is at runtime)."""

from __future__ import annotations

from typing import Any, assert_type

from awaitly_anyio import Deps, Err, Ok, Result, WorkflowContext, create_workflow
from awaitly_anyio.testing import (
    REAL,
    Delay,
    HarnessRun,
    Replace,
    StepCall,
    StepScript,
    WorkflowHarness,
)


async def charge(ctx: WorkflowContext[Deps, int]) -> Result[str, str]:
    cents = ctx.input
    return Ok(f"receipt-{cents}")


async def plain(ctx: WorkflowContext[Deps]) -> int:
    return 1


async def check() -> None:
    harness = WorkflowHarness(create_workflow("w"))
    assert_type(harness, WorkflowHarness[Deps])
    assert_type(await harness.run(charge, input=5), Result[str, Any])
    assert_type(await harness.run(plain), Result[int, Any])

    assert_type(harness.script("a", Ok(1)), StepScript)
    assert_type(harness.script("a", [TimeoutError(), Delay(1.0, REAL), Err("no")]), StepScript)
    assert_type(harness.script(key="k", outcome=Replace(lambda: 1)), StepScript)
    assert_type(harness.script_compensation("a", Err("undo failed")), StepScript)
    harness.script("a", 42)  # type: ignore[call-overload]

    assert_type(harness.last, HarnessRun)
    assert_type(harness.steps, tuple[StepCall, ...])
    assert_type(harness.step("a").outcome, Result[Any, Any] | None)
    assert_type(harness.attempts("a"), int)
    assert_type(harness.compensations, list[str])
