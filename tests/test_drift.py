"""Drift: a resumed run whose code no longer reaches its recorded steps in the same place
(renamed, reordered, removed) ends with ``Err(WorkflowDriftError)`` and executes
nothing; ``on_drift="accept"`` goes on.  Patches: ``ctx.patched``.  Over every store,
on both backends.

A resume is a second ``workflow.run(..., store=, workflow_id=)`` of a run whose first
execution failed at its last step."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from awaitly_anyio import (
    Deps,
    Err,
    Ok,
    WorkflowContext,
    WorkflowDriftError,
    create_workflow,
)

pytestmark = pytest.mark.anyio

Body = Callable[[WorkflowContext[Deps]], Awaitable[Any]]


class Work:
    """Records every piece of work that executed; ``ship`` fails until ``up``."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.up = False

    def __call__(self, name: str) -> Callable[[], Any]:
        def run() -> Any:
            self.done.append(name)
            return f"{name}-done"

        return run

    def ship(self) -> Any:
        self.done.append("ship")
        return Ok("shipped") if self.up else Err("WAREHOUSE_DOWN")


async def first_run(store: Any, work: Work, run_id: str) -> None:
    """fetch, charge, audit (recorded), then ship fails: the run stops there."""

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        await ctx.step("fetch", work("fetch"))
        await ctx.step("charge", work("charge"))
        await ctx.step("audit", work("audit"), key="audit:1")
        return await ctx.step("ship", work.ship)

    assert await create_workflow("order").run(body, store=store, workflow_id=run_id) == Err(
        "WAREHOUSE_DOWN"
    )
    work.done.clear()
    work.up = True


def drift_of(result: Any) -> WorkflowDriftError:
    assert isinstance(result, Err), result
    assert isinstance(result.error, WorkflowDriftError), result.error
    return result.error


async def test_the_same_code_resumes_without_drift(store: Any) -> None:
    work = Work()
    await first_run(store, work, "same")

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        await ctx.step("fetch", work("fetch"))
        await ctx.step("charge", work("charge"))
        await ctx.step("audit", work("audit"), key="audit:1")
        return await ctx.step("ship", work.ship)

    assert await create_workflow("order").run(body, store=store, workflow_id="same") == Ok(
        "shipped"
    )
    assert work.done == ["ship"]


async def test_a_renamed_step_is_drift_naming_it_and_nothing_runs(store: Any) -> None:
    work = Work()
    await first_run(store, work, "renamed")

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        await ctx.step("fetch", work("fetch"))
        await ctx.step("charge_card", work("charge_card"))
        await ctx.step("audit", work("audit"), key="audit:1")
        return await ctx.step("ship", work.ship)

    result = await create_workflow("order").run(body, store=store, workflow_id="renamed")
    drift = drift_of(result)
    assert (drift.step, drift.key, drift.position) == ("charge", "awaitly.step:charge#1", 2)
    assert "ran step 'charge_card'" in drift.instead
    assert "step 'charge' (recorded #2" in str(drift)
    assert work.done == []  # nothing executed
    snapshot = await store.load("renamed")
    assert snapshot.status == "failed"
    assert "awaitly.step:charge_card#1" not in snapshot.steps


async def test_reordered_steps_are_drift(store: Any) -> None:
    work = Work()
    await first_run(store, work, "reordered")

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        await ctx.step("charge", work("charge"))
        await ctx.step("fetch", work("fetch"))
        await ctx.step("audit", work("audit"), key="audit:1")
        return await ctx.step("ship", work.ship)

    drift = drift_of(await create_workflow("order").run(body, store=store, workflow_id="reordered"))
    assert (drift.step, drift.position) == ("fetch", 1)
    assert "reached step 'charge' (recorded #2) before it" in drift.instead
    assert work.done == []


async def test_a_removed_step_is_drift_even_when_the_body_returns(store: Any) -> None:
    work = Work()
    await first_run(store, work, "removed")

    async def returns_early(ctx: WorkflowContext[Deps]) -> Any:
        await ctx.step("fetch", work("fetch"))
        return "done"

    drift = drift_of(
        await create_workflow("order").run(returns_early, store=store, workflow_id="removed")
    )
    assert (drift.step, drift.position) == ("charge", 2)
    assert drift.instead == "returned without reaching it"

    async def skips_one(ctx: WorkflowContext[Deps]) -> Any:
        await ctx.step("fetch", work("fetch"))
        await ctx.step("audit", work("audit"), key="audit:1")
        return await ctx.step("ship", work.ship)

    drift = drift_of(
        await create_workflow("order").run(skips_one, store=store, workflow_id="removed")
    )
    assert drift.step == "charge"
    assert work.done == []


async def test_accepting_drift_goes_on(store: Any) -> None:
    work = Work()
    await first_run(store, work, "accepted")

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        await ctx.step("fetch", work("fetch"))
        await ctx.step("charge_card", work("charge_card"))
        await ctx.step("audit", work("audit"), key="audit:1")
        return await ctx.step("ship", work.ship)

    workflow = create_workflow("order", on_drift="accept")
    assert await workflow.run(body, store=store, workflow_id="accepted") == Ok("shipped")
    assert work.done == ["charge_card", "ship"]


async def test_a_drifted_run_does_not_roll_back(store: Any) -> None:
    work = Work()
    undone: list[str] = []
    await first_run(store, work, "no-undo")

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        await ctx.step("fetch", work("fetch"), compensate=lambda _: undone.append("fetch"))
        await ctx.step("charge_card", work("charge_card"))
        return "unreachable"

    drift_of(await create_workflow("order").run(body, store=store, workflow_id="no-undo"))
    assert undone == []


async def test_concurrent_children_replay_in_any_order(store: Any) -> None:
    """Children of a group have no order among themselves: resuming them in another
    order is not drift."""
    work = Work()

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        async def child(name: str) -> Any:
            return await ctx.step(name, work(name))

        async def failing() -> Any:
            await ctx.step("c", work("c"))
            return await ctx.step("ship", work.ship)

        return await ctx.step.all("fan_out", [lambda: child("a"), lambda: child("b"), failing])

    workflow = create_workflow("order")
    assert await workflow.run(body, store=store, workflow_id="kids") == Err("WAREHOUSE_DOWN")
    work.done.clear()
    work.up = True
    assert await workflow.run(body, store=store, workflow_id="kids") == Ok(
        ["a-done", "b-done", "shipped"]
    )
    assert work.done == ["ship"]


async def test_patched_is_false_for_a_run_that_had_passed_the_point(store: Any) -> None:
    work = Work()
    await first_run(store, work, "old")
    seen: list[bool] = []

    async def patched_body(ctx: WorkflowContext[Deps]) -> Any:
        await ctx.step("fetch", work("fetch"))
        new_path = ctx.patched("fraud-check")
        seen.append(new_path)
        if new_path:
            await ctx.step("fraud_check", work("fraud_check"))
        await ctx.step("charge", work("charge"))
        await ctx.step("audit", work("audit"), key="audit:1")
        return await ctx.step("ship", work.ship)

    workflow = create_workflow("order")
    # The old run had gone past the patch point: it keeps its old path.
    assert await workflow.run(patched_body, store=store, workflow_id="old") == Ok("shipped")
    assert seen == [False]
    assert work.done == ["ship"]
    # A new run takes the new path, and keeps it when resumed.
    work.done.clear()
    work.up = False
    assert await workflow.run(patched_body, store=store, workflow_id="new") == Err("WAREHOUSE_DOWN")
    work.up = True
    assert await workflow.run(patched_body, store=store, workflow_id="new") == Ok("shipped")
    assert seen == [False, True, True]
    assert work.done.count("fraud_check") == 1
    assert "awaitly.patch:fraud-check" in (await store.load("new")).steps


async def test_patched_is_true_for_a_run_that_had_not_reached_the_point(store: Any) -> None:
    work = Work()
    await first_run(store, work, "early")
    seen: list[bool] = []

    async def patched_body(ctx: WorkflowContext[Deps]) -> Any:
        await ctx.step("fetch", work("fetch"))
        await ctx.step("charge", work("charge"))
        await ctx.step("audit", work("audit"), key="audit:1")
        seen.append(ctx.patched("insured-shipping"))
        if seen[-1]:
            await ctx.step("insure", work("insure"))
        return await ctx.step("ship", work.ship)

    assert await create_workflow("order").run(patched_body, store=store, workflow_id="early") == Ok(
        "shipped"
    )
    assert seen == [True]
    assert work.done == ["insure", "ship"]


async def test_patched_without_a_store_is_true_and_a_bad_name_is_refused() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return ctx.patched("x")

    assert await create_workflow("plain").run(body) == Ok(True)

    async def bad(ctx: WorkflowContext[Deps]) -> Any:
        return ctx.patched("")

    result = await create_workflow("plain").run(bad)
    assert isinstance(result, Err)
    assert "non-empty string" in str(result.error)


def test_a_bad_on_drift_is_refused_at_definition() -> None:
    with pytest.raises(ValueError, match="on_drift must be 'error' or 'accept', not 'ignore'"):
        create_workflow("order", on_drift="ignore")  # type: ignore[call-overload]
