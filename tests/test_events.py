"""Events: order, fields, handler failures, and no cost without listeners."""

from __future__ import annotations

import logging
from typing import Any

import attrs
import pytest

from awaitly_anyio import Deps, Err, Ok, WorkflowContext, create_workflow, events, run
from awaitly_anyio import _step as step
from awaitly_anyio.testing import FakeClock

pytestmark = pytest.mark.anyio


class TickingClock(FakeClock):
    """A fake clock that advances 5 ms every time it is read, so durations are exact."""

    def monotonic(self) -> float:
        self.now += 0.005
        return self.now


async def test_event_order_and_fields_for_a_successful_run() -> None:
    seen: list[events.WorkflowEvent] = []
    clock = TickingClock()
    workflow = create_workflow("checkout", on_event=seen.append, clock=clock)

    async def body(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step("fetch_user", lambda: Ok("ada"), key="user:1")
        await ctx.step("fetch_user_again", lambda: "never", key="user:1")
        return "receipt"

    assert await workflow.run(body, workflow_id="run-1") == Ok("receipt")
    assert [(e.type, getattr(e, "name", None)) for e in seen] == [
        ("workflow_start", None),
        ("step_start", "fetch_user"),
        ("step_complete", "fetch_user"),
        ("step_start", "fetch_user_again"),
        ("step_complete", "fetch_user_again"),
        ("workflow_complete", None),
    ]
    assert {(e.workflow_id, e.workflow_name) for e in seen} == {("run-1", "checkout")}
    assert all(e.ts >= clock.wall for e in seen)
    first, cached = (e for e in seen if isinstance(e, events.StepComplete))
    assert (first.step_key, first.value, first.cached, first.attempt) == ("user:1", "ada", False, 1)
    assert first.duration_ms == pytest.approx(5.0)
    assert (cached.value, cached.cached, cached.duration_ms) == ("ada", True, 0.0)
    complete = seen[-1]
    assert isinstance(complete, events.WorkflowComplete)
    assert complete.value == "receipt"
    assert complete.duration_ms > 0


async def test_event_order_for_a_failing_run() -> None:
    seen: list[events.WorkflowEvent] = []

    async def body(ctx: WorkflowContext[Deps]) -> None:
        await ctx.step("charge", lambda: Err("DECLINED"), key="charge")

    assert await run(body, on_event=seen.append, name="pay") == Err("DECLINED")
    assert [e.type for e in seen] == [
        "workflow_start",
        "step_start",
        "step_error",
        "workflow_error",
    ]
    step_error, workflow_error = seen[2], seen[3]
    assert isinstance(step_error, events.StepFailed)
    assert (step_error.name, step_error.step_key) == ("charge", "charge")
    assert step_error.error == "DECLINED"
    assert isinstance(workflow_error, events.WorkflowFailed)
    assert workflow_error.error == "DECLINED"


def test_every_event_is_a_frozen_value_with_its_type() -> None:
    expected = {
        events.WorkflowStart: "workflow_start",
        events.WorkflowComplete: "workflow_complete",
        events.WorkflowFailed: "workflow_error",
        events.WorkflowCancelled: "workflow_cancelled",
        events.WorkflowResumed: "workflow_resumed",
        events.WorkflowParked: "workflow_parked",
        events.StepStart: "step_start",
        events.StepComplete: "step_complete",
        events.StepFailed: "step_error",
        events.StepRetry: "step_retry",
        events.StepTimeout: "step_timeout",
        events.StepSkipped: "step_skipped",
        events.StepCancelled: "step_cancelled",
        events.StepCacheHit: "step_cache_hit",
        events.StepCacheMiss: "step_cache_miss",
        events.StepFallback: "step_fallback",
    }
    for cls, type_name in expected.items():
        assert cls.type == type_name
        assert attrs.has(cls)
        assert "__slots__" in cls.__dict__
    assert set(expected) | {events.StepWaiting} == {
        getattr(events, name)
        for name in events.__all__
        if name.startswith(("Step", "Workflow")) and name != "WorkflowEvent"
    }
    parked = events.WorkflowParked(
        workflow_id="w", workflow_name="n", ts=1.0, duration_ms=2.0, waiting_for="k"
    )
    assert (parked.type, parked.waiting_for, parked.duration_ms) == ("workflow_parked", "k", 2.0)
    assert (
        events.WorkflowParked(
            workflow_id="w", workflow_name="n", ts=1.0, duration_ms=0.0
        ).waiting_for
        is None
    )
    event = events.StepStart(workflow_id="w", workflow_name="n", ts=1.0, name="s")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.name = "other"  # type: ignore[misc]


async def test_handlers_are_called_in_order_and_a_failing_one_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def broken(event: events.WorkflowEvent) -> None:
        calls.append(f"broken:{event.type}")
        raise RuntimeError("handler bug")

    def healthy(event: events.WorkflowEvent) -> None:
        calls.append(f"healthy:{event.type}")

    async def body(ctx: WorkflowContext[Deps]) -> int:
        return await ctx.step("one", lambda: 1)

    with caplog.at_level(logging.ERROR, logger="awaitly_anyio"):
        result = await run(body, on_event=[broken, healthy])
    assert result == Ok(1)
    assert calls[:2] == ["broken:workflow_start", "healthy:workflow_start"]
    assert len(calls) == 8
    failures = [r for r in caplog.records if "handler bug" in str(r.exc_info)]
    assert len(failures) == 4
    assert "workflow_start" in failures[0].getMessage()


async def test_no_events_are_built_when_nobody_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(**fields: Any) -> None:
        raise AssertionError(f"an event was built: {fields}")

    for name in ("StepStart", "StepComplete", "StepFailed", "StepRetry", "StepSkipped"):
        monkeypatch.setattr(step, name, forbidden)
    workflow_module = __import__("awaitly_anyio._workflow", fromlist=["x"])
    for name in ("WorkflowStart", "WorkflowComplete", "WorkflowFailed"):
        monkeypatch.setattr(workflow_module, name, forbidden)
    clock = FakeClock()

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        await ctx.step("a", lambda: 1, key="k")
        await ctx.step("a-again", lambda: 1, key="k")
        await ctx.step.retry("b", lambda: 2, attempts=2)
        ctx.step.skip("c")
        await ctx.step("d", lambda: Err("E"))

    assert await run(body, clock=clock) == Err("E")
