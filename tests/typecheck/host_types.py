"""Static checks: the value type flows through WorkflowHost, RunHandle and WorkflowLifespan.

Checked with ``mypy --strict tests/typecheck`` and ``pyright`` (strict); nothing here is
executed by pytest.  Loosening host.py's annotations (an ``Any`` in ``start``, ``run`` or
``RunHandle.result``) fails these checks.
"""

# pyright: reportUnnecessaryTypeIgnoreComment=error

from __future__ import annotations

from typing import Any, assert_type

import attrs

from awaitly_anyio import (
    Deps,
    Err,
    Ok,
    Result,
    WorkflowContext,
    WorkflowHost,
    WorkflowLifespan,
    create_workflow,
    err,
    ok,
)
from awaitly_anyio._host import RunHandle


@attrs.frozen
class Receipt:
    id: str


@attrs.frozen
class Declined:
    reason: str


async def returns_a_result(ctx: WorkflowContext[Deps]) -> Result[Receipt, Declined]:
    if ctx.workflow_id:
        return ok(Receipt(ctx.workflow_id))
    return err(Declined("no id"))


async def returns_a_value(ctx: WorkflowContext[Deps]) -> int:
    return 3


async def returns_nothing(ctx: WorkflowContext[Deps]) -> None:
    return None


async def host_runs(host: WorkflowHost) -> None:
    workflow = create_workflow("orders")
    # run: the body's value type (or its Result's Ok type) flows to the Result.
    assert_type(await host.run(workflow, returns_a_result), Ok[Receipt] | Err[Any])
    assert_type(await host.run(workflow, returns_a_value), Ok[int] | Err[Any])
    assert_type(await host.run(workflow, returns_nothing), Ok[None] | Err[Any])
    assert_type(
        await host.run(workflow, returns_a_value, workflow_id="o-1", input={"cents": 5}),
        Ok[int] | Err[Any],
    )
    # start: a typed handle, whose result() keeps the type.
    receipt = host.start(workflow, returns_a_result, workflow_id="o-2")
    assert_type(receipt, RunHandle[Receipt])
    assert_type(await receipt.result(), Ok[Receipt] | Err[Any])
    count = host.start(workflow, returns_a_value)
    assert_type(count, RunHandle[int])
    assert_type(await count.result(), Ok[int] | Err[Any])
    outcome = await count.result()
    if isinstance(outcome, Ok):
        assert_type(outcome.value, int)
    assert_type(count.workflow_id, str | None)
    assert_type(count.done, bool)
    # A lambda around a body, the docs' idiom.
    assert_type(await host.run(workflow, lambda ctx: returns_a_value(ctx)), Ok[int] | Err[Any])


async def through_a_lifespan(lifespan: WorkflowLifespan) -> None:
    workflow = create_workflow("orders")
    assert_type(lifespan.host, WorkflowHost)
    handle = lifespan.host.start(workflow, returns_a_result, workflow_id="o-3")
    assert_type(handle, RunHandle[Receipt])
    async with lifespan as host:
        assert_type(host, WorkflowHost)
        assert_type(await host.run(workflow, returns_a_value), Ok[int] | Err[Any])


def wrong_arguments(host: WorkflowHost) -> None:
    workflow = create_workflow("orders")
    host.start(workflow, returns_a_value, workflow_id=3)  # type: ignore[call-overload]
    host.start("orders", returns_a_value)  # type: ignore[call-overload]
