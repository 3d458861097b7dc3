"""Every step is a cancellation point, and a cancelled run is never reported as a success.

A step checks for cancellation before it runs its function, as trio's checkpoints
do, so a run inside a cancelled scope (or one whose deadline passed while a step
ran without yielding) stops at its next step instead of running it.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from awaitly_anyio import Deps, Ok, WorkflowContext, create_workflow, events, run
from awaitly_anyio.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio


def listened() -> tuple[list[str], Any]:
    seen: list[str] = []
    return seen, lambda event: seen.append(event.type)


async def test_a_step_in_an_already_cancelled_scope_does_not_run() -> None:
    calls: list[str] = []
    types, on_event = listened()
    outcome: list[object] = []
    with anyio.CancelScope() as scope:
        scope.cancel()
        outcome.append(
            await run(
                lambda ctx: ctx.step("charge", lambda: calls.append("charged") or "charged"),
                on_event=on_event,
            )
        )
    assert calls == []
    assert outcome == []
    assert scope.cancelled_caught
    assert "workflow_complete" not in types
    assert types[-1] == "workflow_cancelled"


@pytest.mark.parametrize("variant", ["plain", "evented", "keyed", "retry", "try_", "timeout"])
async def test_a_deadline_that_passes_during_a_step_stops_the_next_one(variant: str) -> None:
    calls: list[str] = []
    scope = anyio.CancelScope()

    def first() -> str:
        # The deadline passes while this step runs, and it never yields.
        scope.deadline = anyio.current_time() - 1
        calls.append("first")
        return "one"

    def second() -> str:
        calls.append("second")
        return "two"

    async def body(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step("first", first)
        if variant == "retry":
            return str(await ctx.step.retry("second", second, attempts=3, delay=0.0))
        if variant == "try_":
            return str(await ctx.step.try_("second", second, error="failed"))
        if variant == "timeout":
            return str(await ctx.step.with_timeout("second", second, seconds=10.0))
        if variant == "keyed":
            return str(await ctx.step("second", second, key="second"))
        return str(await ctx.step("second", second))

    workflow = create_workflow("w", on_event=(lambda e: None) if variant == "evented" else None)
    with scope:
        await workflow.run(body)
    assert scope.cancelled_caught
    assert calls == ["first"]


async def test_a_cancellation_during_the_last_step_is_not_reported_as_success() -> None:
    types, on_event = listened()
    results: list[object] = []
    with anyio.CancelScope() as scope:

        def last() -> str:
            scope.cancel()  # arrives while the last step runs; the step never yields
            return "done"

        results.append(await run(lambda ctx: ctx.step("last", last), on_event=on_event))
    assert results == []
    assert scope.cancelled_caught
    assert "workflow_complete" not in types
    assert types[-1] == "workflow_cancelled"


async def test_group_children_do_not_run_once_the_group_is_cancelled() -> None:
    calls: list[int] = []
    scope = anyio.CancelScope()

    def child(index: int) -> Any:
        def fn() -> int:
            if index == 0:
                scope.cancel()
            calls.append(index)
            return index

        return fn

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.for_each("each", [0, 1, 2], lambda i: child(i)())

    with scope:
        await run(body)
    assert scope.cancelled_caught
    assert calls == [0]


async def test_a_durable_run_cancelled_in_its_last_step_is_recorded_cancelled() -> None:
    async with MemoryStore() as store:
        with anyio.CancelScope() as scope:

            def charge() -> str:
                scope.cancel()
                return "charged"

            await create_workflow("w").run(
                lambda ctx: ctx.step("charge", charge, key="charge"),
                store=store,
                workflow_id="order-1",
            )
        assert scope.cancelled_caught
        snapshot = await store.load("order-1")
        assert snapshot is not None
        assert snapshot.status == "cancelled"
        assert snapshot.result is None
        assert list(snapshot.steps) == ["charge"]  # its work was done and is kept


async def test_steps_outside_a_cancelled_scope_run_as_before() -> None:
    calls: list[str] = []
    types, on_event = listened()
    result = await run(
        lambda ctx: ctx.step("charge", lambda: calls.append("charged") or "charged"),
        on_event=on_event,
    )
    assert result == Ok("charged")
    assert calls == ["charged"]
    assert (
        types[-1]
        == events.WorkflowComplete(
            workflow_id="x", workflow_name="w", ts=0.0, duration_ms=0.0, value=None
        ).type
    )
