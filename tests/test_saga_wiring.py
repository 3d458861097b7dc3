"""The step path's side of compensation: what ``compensate=`` registers, when the run
rolls back, and a durable run recovered in the middle of its rollback.  The saga engine
itself (order, retries, records) is tested in test_saga.py; here a recording stand-in
takes its place, so these tests say what the steps hand it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import anyio
import pytest

from awaitly_anyio import Err, Ok, UnexpectedError, WorkflowContext, create_workflow
from awaitly_anyio import _step as step_module
from awaitly_anyio._run import RunState
from awaitly_anyio._saga import ROLLBACK_KEY
from awaitly_anyio.stores.memory import MemoryStore

from .kit_base import encoded

pytestmark = pytest.mark.anyio


class Recording:
    """Stands in for the run's Saga: remembers what was pushed and what was rolled back."""

    made: ClassVar[list[Recording]] = []

    def __init__(self) -> None:
        self.pushed: list[tuple[str, str | None, Any]] = []
        self.rolled_back: list[Err[Any]] = []
        Recording.made.append(self)

    def push(self, name: str, key: str | None, compensate: Any, value: Any) -> None:
        self.pushed.append((name, key, value))

    async def rollback(self, run: RunState, error: Err[Any]) -> Err[Any]:
        self.rolled_back.append(error)
        return Err(("rolled back", error.error))


@pytest.fixture(autouse=True)
def recording(monkeypatch: pytest.MonkeyPatch) -> None:
    Recording.made = []
    monkeypatch.setattr(step_module, "Saga", Recording)


def undo(_: object) -> None:
    pass


async def test_a_completed_step_registers_its_compensation_and_a_failure_rolls_back() -> None:
    async def body(ctx: WorkflowContext[Any]) -> int:
        await ctx.step("plain", lambda: 0)
        await ctx.step("charge", lambda: 10, compensate=undo)
        await ctx.step.try_("reserve", lambda: 20, error="no", compensate=undo)
        await ctx.step.retry("ship", lambda: 30, attempts=2, compensate=undo, key="ship:1")
        await ctx.step("fail", lambda: Err("boom"))
        return 1

    result = await create_workflow("saga").run(body)
    [saga] = Recording.made
    assert [(n, v) for n, _, v in saga.pushed] == [("charge", 10), ("reserve", 20), ("ship", 30)]
    assert saga.pushed[2][1] == "ship:1"
    assert saga.rolled_back == [Err("boom")]
    assert result == Err(("rolled back", "boom"))


async def test_an_unexpected_exception_and_a_returned_err_roll_back_too() -> None:
    async def raises(ctx: WorkflowContext[Any]) -> None:
        await ctx.step("charge", lambda: 1, compensate=undo)
        raise RuntimeError("bug")

    async def returns(ctx: WorkflowContext[Any]) -> Err[str]:
        await ctx.step("charge", lambda: 1, compensate=undo)
        return Err("declined")

    workflow = create_workflow("saga")
    raised = await workflow.run(raises)
    assert isinstance(raised, Err)
    assert await workflow.run(returns) == Err(("rolled back", "declined"))
    assert [len(s.rolled_back) for s in Recording.made] == [1, 1]


async def test_success_and_no_compensation_never_roll_back() -> None:
    async def fine(ctx: WorkflowContext[Any]) -> int:
        return int(await ctx.step("charge", lambda: 1, compensate=undo))

    async def plain_failure(ctx: WorkflowContext[Any]) -> None:
        await ctx.step("fail", lambda: Err("boom"))

    workflow = create_workflow("saga")
    assert await workflow.run(fine) == Ok(1)
    assert await workflow.run(plain_failure) == Err("boom")
    [saga] = Recording.made  # the second run never made one
    assert saga.rolled_back == []


async def test_a_cancelled_body_does_not_roll_back() -> None:
    async def body(ctx: WorkflowContext[Any]) -> None:
        await ctx.step("charge", lambda: 1, compensate=undo)
        await anyio.sleep_forever()

    with anyio.move_on_after(0.01):
        await create_workflow("saga").run(body)
    [saga] = Recording.made
    assert saga.pushed
    assert saga.rolled_back == []


async def test_a_compensation_that_is_not_callable_is_refused_naming_the_step() -> None:
    async def body(ctx: WorkflowContext[Any]) -> None:
        await ctx.step("charge", lambda: 1, compensate="refund")  # type: ignore[arg-type]

    result = await create_workflow("saga").run(body)
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    assert isinstance(result.error.cause, TypeError)
    assert "step 'charge': compensate must be a callable" in str(result.error.cause)


async def test_a_replayed_step_registers_its_compensation_again() -> None:
    store = MemoryStore()
    calls: list[str] = []

    async def body(ctx: WorkflowContext[Any]) -> None:
        await ctx.step("charge", lambda: calls.append("charge") or 5, compensate=undo, key="c")
        await ctx.step("ship", lambda: Err("down") if len(calls) == 1 else Ok(1))

    workflow = create_workflow("saga")
    assert isinstance(await workflow.run(body, store=store, workflow_id="r"), Err)
    await workflow.run(body, store=store, workflow_id="r")
    assert calls == ["charge"]  # replayed, not run again
    first, second = Recording.made
    assert [p[2] for p in second.pushed] == [5]
    assert first.pushed[0][1] == second.pushed[0][1]  # the same key both times


async def test_a_run_recovered_mid_rollback_replays_then_rolls_back_without_new_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = MemoryStore()
    ran: list[str] = []

    async def body(ctx: WorkflowContext[Any]) -> None:
        await ctx.step("charge", lambda: ran.append("charge") or 5, compensate=undo, key="c")
        await ctx.step("pure", lambda: ran.append("pure"), checkpoint=False)
        await ctx.step("reserve", lambda: ran.append("reserve") or 6, compensate=undo, key="r")
        await ctx.step("ship", lambda: ran.append("ship"), key="s")

    workflow = create_workflow("saga")

    # A first run that completed charge and reserve, then began rolling back (the engine
    # records ROLLBACK_KEY first) and died.
    async def first(ctx: WorkflowContext[Any]) -> None:
        await ctx.step("charge", lambda: 5, key="c")
        await ctx.step("reserve", lambda: 6, key="r")
        await anyio.sleep_forever()

    with anyio.move_on_after(0.01):
        await workflow.run(first, store=store, workflow_id="m")
    await store.checkpoint("m", encoded(ROLLBACK_KEY, "boom"))
    seen: list[Mapping[str, Any]] = []

    def recorded_rollback(completed: Mapping[str, Ok[Any]]) -> Err[Any] | None:
        seen.append(completed)
        return Err("boom")

    from awaitly_anyio import _workflow

    monkeypatch.setattr(_workflow, "recorded_rollback", recorded_rollback)
    result = await workflow.run(body, store=store, workflow_id="m")
    assert ran == ["pure"]  # charge and reserve replayed, ship never ran
    [saga] = Recording.made
    assert [p[0] for p in saga.pushed] == ["charge", "reserve"]
    assert saga.rolled_back == [Err("boom")]
    assert result == Err(("rolled back", "boom"))
    assert seen
    assert ROLLBACK_KEY in seen[0]
