"""A durable run's last write (its end) is shielded from outside cancellation, on every
loop: on trio the body's own scope is re-armed as that shield (one scope fewer a run),
on asyncio a fresh bounded shield is used; both must keep the write."""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest

from awaitly_anyio import Deps, Ok, WorkflowContext, create_workflow
from awaitly_anyio.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio


class HeldEnd(MemoryStore):
    """A memory store whose end-of-run write waits for the test's word."""

    def __init__(self) -> None:
        super().__init__()
        self.ending = anyio.Event()
        self.go_on = anyio.Event()

    async def finish(self, *args: Any, **kwargs: Any) -> None:
        self.ending.set()
        await self.go_on.wait()
        await super().finish(*args, **kwargs)


async def one_step(ctx: WorkflowContext[Deps]) -> int:
    return await ctx.step("s", lambda: 1, key="k")


async def test_a_cancellation_during_the_end_write_does_not_cut_it_off() -> None:
    workflow = create_workflow("held")
    async with HeldEnd() as store:
        results: list[Any] = []

        async def run() -> None:
            results.append(await workflow.run(one_step, workflow_id="r", store=store))

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await store.ending.wait()
            tg.cancel_scope.cancel()  # the run is inside its end write now
            store.go_on.set()  # (no await first: this task is cancelled too)
        snapshot = await store.load("r")
        assert snapshot is not None
        assert snapshot.status == "completed"
        assert snapshot.result == Ok(1)
        # A second start finds the stored result: the run is not executed again.
        assert await workflow.run(one_step, workflow_id="r", store=store) == Ok(1)


async def test_a_completed_run_leaves_no_scope_open() -> None:
    """The body's scope, left open by its block, is closed by the end write: the
    caller's scopes afterwards are its own (no bound left over, cancellation works)."""
    workflow = create_workflow("scopes")
    async with MemoryStore() as store:
        assert await workflow.run(one_step, workflow_id="a", store=store) == Ok(1)
        assert anyio.current_effective_deadline() == math.inf
        with anyio.CancelScope() as scope:
            scope.cancel()
            await anyio.lowlevel.checkpoint()
            pytest.fail("the caller's cancelled scope did not cancel")  # pragma: no cover
        assert scope.cancelled_caught
