"""What a run returns and what its events say always agree, on every store.

Every run that returns emits exactly one terminal event, and it matches the
Result: a durable run whose final write fails returns ``Err(StoreError)`` and
says ``workflow_error`` (health counts a failure); a run whose claim fails is
seen at all.  And ``catch_unexpected`` that raises propagates once, whether
the step or the body raised.
"""

from __future__ import annotations

from typing import Any

import pytest

from awaitly_anyio import (
    Deps,
    Err,
    Ok,
    StoreError,
    WorkflowContext,
    create_health_tracker,
    create_workflow,
    events,
)

pytestmark = pytest.mark.anyio

TERMINAL = ("workflow_complete", "workflow_error", "workflow_cancelled")


class Seen:
    """The events a run emitted, and a health tracker fed by them."""

    def __init__(self) -> None:
        self.events: list[events.WorkflowEvent] = []
        self.health = create_health_tracker()

    def __call__(self, event: events.WorkflowEvent) -> None:
        self.events.append(event)
        self.health.handle_event(event)

    def terminal(self) -> list[events.WorkflowEvent]:
        return [event for event in self.events if event.type in TERMINAL]


async def test_a_failed_final_write_is_a_workflow_error_not_a_completion(store: Any) -> None:
    seen = Seen()
    workflow = create_workflow("order", on_event=seen)

    async def body(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step("charge", lambda: "charged", key="charge")
        await store.close()  # the store goes away before the run's end is written
        return "done"

    result = await workflow.run(body, store=store, workflow_id="order-1")
    assert isinstance(result, Err)
    assert isinstance(result.error, StoreError)
    [terminal] = seen.terminal()
    assert isinstance(terminal, events.WorkflowFailed)
    assert terminal.error is result.error
    assert seen.health.get_stats()["failed"] == 1
    assert seen.health.get_stats()["successful"] == 0


async def test_a_failed_claim_is_seen_by_every_listener(store: Any) -> None:
    seen = Seen()
    await store.close()
    result = await create_workflow("order", on_event=seen).run(
        lambda ctx: ctx.step("charge", lambda: "charged", key="charge"),
        store=store,
        workflow_id="order-1",
    )
    assert isinstance(result, Err)
    assert isinstance(result.error, StoreError)
    assert [event.type for event in seen.events] == ["workflow_start", "workflow_error"]
    assert seen.terminal()[0].error is result.error  # type: ignore[attr-defined]
    assert seen.health.get_stats()["failed"] == 1


async def test_each_durable_outcome_has_one_matching_terminal_event(store: Any) -> None:
    seen = Seen()
    workflow = create_workflow("order", on_event=seen)

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return str(await ctx.step("charge", lambda: "charged", key="charge"))

    first = await workflow.run(body, store=store, workflow_id="order-1")
    again = await workflow.run(body, store=store, workflow_id="order-1")  # stored result
    other = await create_workflow("refund", on_event=seen).run(
        body, store=store, workflow_id="order-1"
    )
    assert first == again == Ok("charged")
    assert isinstance(other, Err)
    outcomes = [(event.type, getattr(event, "value", None)) for event in seen.terminal()]
    assert outcomes == [
        ("workflow_complete", "charged"),
        ("workflow_complete", "charged"),
        ("workflow_error", None),
    ]
    starts = [event for event in seen.events if event.type == "workflow_start"]
    assert len(starts) == 3


class MapperBrokeError(LookupError):
    pass


def broken_mapper(calls: list[BaseException]) -> Any:
    def mapper(exc: Exception) -> object:
        calls.append(exc)
        raise MapperBrokeError(f"cannot map {type(exc).__name__}")

    return mapper


def boom() -> str:
    raise ValueError("boom")


@pytest.mark.parametrize("where", ["step", "body", "group child", "retried step"])
async def test_a_raising_catch_unexpected_propagates_once(where: str) -> None:
    calls: list[BaseException] = []
    seen = Seen()
    workflow = create_workflow("w", catch_unexpected=broken_mapper(calls), on_event=seen)

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        if where == "step":
            return await ctx.step("s", boom)
        if where == "group child":
            return await ctx.step.all("g", [lambda: 1, boom])
        if where == "retried step":
            return await ctx.step.retry("s", boom, attempts=2, delay=0.0)
        return boom()

    with pytest.raises(MapperBrokeError, match="cannot map ValueError"):
        await workflow.run(body)
    assert [type(exc) for exc in calls] == [ValueError]
    assert "workflow_complete" not in [event.type for event in seen.events]


@pytest.mark.parametrize("key", ["nul\x00key", "lone \ud800 surrogate", ""])
async def test_a_bad_step_key_fails_the_same_way_on_every_store(store: Any, key: str) -> None:
    calls: list[str] = []

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step("charge", lambda: calls.append("charged"), key=key)

    durable = await create_workflow("w").run(body, store=store, workflow_id="order-1")
    plain = await create_workflow("w").run(body)
    for result in (durable, plain):
        assert isinstance(result, Err)
        cause = result.error.cause
        assert isinstance(cause, ValueError)
        assert "step key" in str(cause)
    assert calls == []  # refused before the step's work
