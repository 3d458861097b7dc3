"""Durable runs under leases, on every store: one executor per run, take-over after a
lost worker, waiting for a run in progress, and recovery by registered name."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from awaitly_anyio import (
    Deps,
    Err,
    LeaseLostError,
    Ok,
    RecoveredRun,
    RunInProgressError,
    WorkflowContext,
    WorkflowMismatchError,
    WorkflowRegistry,
    create_workflow,
    recover,
    recovery_loop,
)
from awaitly_anyio.testing import FakeClock

pytestmark = pytest.mark.anyio


class Counter:
    """Counts each keyed step's executions and proves no two ran at once."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self.active = 0
        self.most_at_once = 0

    async def do(self, key: str) -> str:
        self.active += 1
        self.most_at_once = max(self.most_at_once, self.active)
        try:
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
            self.runs[key] = self.runs.get(key, 0) + 1
            return f"{key}-done"
        finally:
            self.active -= 1


async def test_a_run_in_progress_elsewhere_is_not_executed_again(store: Any) -> None:
    counter = Counter()
    workflow = create_workflow("orders")
    inside, release = anyio.Event(), anyio.Event()

    async def body(ctx: WorkflowContext[Deps]) -> str:
        first = await ctx.step("a", lambda: counter.do("a"), key="a")
        inside.set()
        await release.wait()
        return first

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: workflow.run(body, workflow_id="o-1", store=store, owner="w1"))
        await inside.wait()
        second = await workflow.run(body, workflow_id="o-1", store=store, owner="w2")
        assert isinstance(second, Err)
        assert isinstance(second.error, RunInProgressError)
        assert second.error.owner == "w1"
        release.set()
    assert counter.runs == {"a": 1}


async def test_waiting_starts_get_the_result_without_executing_anything(store: Any) -> None:
    counter = Counter()
    waiting_clock = FakeClock()  # the waiters poll on it without real time passing
    workflow = create_workflow("orders", clock=waiting_clock)

    async def body(ctx: WorkflowContext[Deps]) -> list[str]:
        return [await ctx.step(k, lambda k=k: counter.do(k), key=k) for k in ("a", "b", "c")]

    results: list[Any] = []

    async def start(n: int) -> None:
        results.append(
            await workflow.run(
                body, workflow_id="hot", store=store, owner=f"w{n}", if_running="wait"
            )
        )

    async with anyio.create_task_group() as tg:
        for n in range(12):
            tg.start_soon(start, n)
    assert results == [Ok(["a-done", "b-done", "c-done"])] * 12
    assert counter.runs == {"a": 1, "b": 1, "c": 1}
    assert counter.most_at_once == 1


async def test_a_worker_that_lost_its_lease_stops_writing(store: Any, clock: FakeClock) -> None:
    workflow = create_workflow("orders")
    inside, release = anyio.Event(), anyio.Event()

    async def slow(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step("a", lambda: "a", key="a")
        inside.set()
        await release.wait()
        return await ctx.step("b", lambda: "b-by-zombie", key="b")

    async def fast(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.step("b", lambda: "b-by-successor", key="b")

    async with anyio.create_task_group() as tg:
        outcome: list[Any] = []

        async def zombie() -> None:
            outcome.append(
                await workflow.run(slow, workflow_id="z", store=store, owner="zombie", lease=1000)
            )

        tg.start_soon(zombie)
        await inside.wait()
        clock.advance(1000)  # the zombie's lease ran out while it was stuck
        assert await workflow.run(fast, workflow_id="z", store=store, owner="successor") == Ok(
            "b-by-successor"
        )
        release.set()
    assert outcome == [Err(LeaseLostError("z", "zombie"))]
    snapshot = await store.load("z")
    assert snapshot.status == "completed"
    assert snapshot.result == Ok("b-by-successor")
    assert snapshot.steps["b"].result == Ok("b-by-successor")


async def test_the_lease_is_renewed_while_the_run_works(store: Any) -> None:
    workflow = create_workflow("orders")
    renewed = anyio.Event()
    real_renew = store.renew

    async def renew(id: str, *, owner: str, lease: float) -> bool:
        held: bool = await real_renew(id, owner=owner, lease=lease)
        if held:
            renewed.set()
        return held

    store.renew = renew
    try:

        async def body(ctx: WorkflowContext[Deps]) -> str:
            await renewed.wait()  # a long step: the lease outlives it only by renewal
            return await ctx.step("a", lambda: "a", key="a")

        assert await workflow.run(body, workflow_id="long", store=store, lease=0.15) == Ok("a")
    finally:
        del store.renew


async def test_losing_the_lease_cancels_the_body(store: Any, clock: FakeClock) -> None:
    workflow = create_workflow("orders")
    inside = anyio.Event()
    finished_work = []

    async def body(ctx: WorkflowContext[Deps]) -> str:
        inside.set()
        await anyio.sleep_forever()
        finished_work.append(True)
        return "never"

    async def thief() -> None:
        await inside.wait()
        clock.advance(60)
        claim = await store.claim("stolen", "orders", owner="thief", lease=60)
        assert claim.outcome == "claimed"

    async with anyio.create_task_group() as tg:
        tg.start_soon(thief)
        result = await workflow.run(body, workflow_id="stolen", store=store, lease=0.15)
    assert result == Err(LeaseLostError("stolen", result.error.owner))
    assert finished_work == []
    snapshot = await store.load("stolen")
    assert snapshot.status == "running"  # the thief's run, untouched by the loser


async def test_a_run_of_another_workflow_is_refused(store: Any) -> None:
    orders, refunds = create_workflow("orders"), create_workflow("refunds")

    async def body(ctx: WorkflowContext[Deps]) -> int:
        return 1

    assert await orders.run(body, workflow_id="x", store=store) == Ok(1)
    assert await refunds.run(body, workflow_id="x", store=store) == Err(
        WorkflowMismatchError("x", "orders", "refunds")
    )


async def test_recover_resumes_abandoned_runs_with_their_input(
    store: Any, clock: FakeClock
) -> None:
    counter = Counter()
    registry = WorkflowRegistry()
    orders = create_workflow("orders")

    @registry.workflow(orders)
    async def order_body(ctx: WorkflowContext[Deps]) -> str:
        paid = await ctx.step("pay", lambda: counter.do(f"pay-{ctx.input}"), key="pay")
        shipped = await ctx.step("ship", lambda: counter.do(f"ship-{ctx.input}"), key="ship")
        return f"{paid}+{shipped}"

    # A worker started order 7, paid, and died; another is busy with order 8.
    inside, release = anyio.Event(), anyio.Event()

    async def dies(ctx: WorkflowContext[Deps]) -> None:
        await ctx.step("pay", lambda: counter.do(f"pay-{ctx.input}"), key="pay")
        inside.set()
        await anyio.sleep_forever()

    async def busy(ctx: WorkflowContext[Deps]) -> None:
        await release.wait()

    with anyio.CancelScope() as crash:
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: orders.run(dies, workflow_id="order-7", store=store, input=7, owner="dead")
            )
            await inside.wait()
            crash.cancel()
    # The cancelled run released its lease as a graceful stop does; make it look killed.
    await store.claim("order-7", "orders", owner="dead", lease=30)
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: orders.run(busy, workflow_id="order-8", store=store, owner="alive", lease=1000)
        )
        await anyio.wait_all_tasks_blocked()
        assert await recover(store, registry, owner="rescuer") == []  # order-7's lease is live
        clock.advance(30)
        recovered = await recover(store, registry, owner="rescuer")
        release.set()
    assert recovered == [RecoveredRun("order-7", "orders", Ok("pay-7-done+ship-7-done"))]
    assert counter.runs == {"pay-7": 1, "ship-7": 1}


async def test_gracefully_cancelled_runs_are_recovered_at_once(store: Any) -> None:
    registry = WorkflowRegistry()
    jobs = create_workflow("jobs")
    counter = Counter()
    started = anyio.Event()
    stop_first_time = [True]

    @registry.workflow(jobs)
    async def job(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step("one", lambda: counter.do("one"), key="one")
        if stop_first_time.pop() if stop_first_time else False:
            started.set()
            await anyio.sleep_forever()
        return await ctx.step("two", lambda: counter.do("two"), key="two")

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: registry.start("jobs", store, workflow_id="j-1"))
        await started.wait()
        tg.cancel_scope.cancel()  # a shutdown: the run records itself cancelled
    snapshot = await store.load("j-1")
    assert snapshot.status == "cancelled"
    recovered = await recover(store, registry)
    assert recovered == [RecoveredRun("j-1", "jobs", Ok("two-done"))]
    assert counter.runs == {"one": 1, "two": 1}


async def test_the_recovery_loop_keeps_recovering_until_cancelled(store: Any) -> None:
    registry = WorkflowRegistry()
    jobs = create_workflow("jobs")

    @registry.workflow(jobs)
    async def job(ctx: WorkflowContext[Deps]) -> int:
        return await ctx.step("n", lambda: ctx.input * 10, key="n")

    for n in range(3):
        await store.mark_running(f"job-{n}", "jobs", metadata={"input": n})
    seen: list[RecoveredRun] = []
    all_done = anyio.Event()

    def on_recovered(run: RecoveredRun) -> None:
        seen.append(run)
        if len(seen) == 3:
            all_done.set()

    loop_clock = FakeClock()
    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: recovery_loop(
                store,
                registry,
                interval=5,
                limit=1,
                clock=loop_clock,
                on_recovered=on_recovered,
                task_status=task_status,
            )
        )
        await all_done.wait()
        tg.cancel_scope.cancel()
    assert sorted((run.id, run.result) for run in seen) == [
        (f"job-{n}", Ok(n * 10)) for n in range(3)
    ]
    assert loop_clock.sleeps[:2] == [5, 5]


def test_the_registry_refuses_mistakes() -> None:
    registry = WorkflowRegistry()
    orders = create_workflow("orders")

    async def body(ctx: WorkflowContext[Deps]) -> None:
        return None

    async def other(ctx: WorkflowContext[Deps]) -> None:
        return None

    registry.register(orders, body)
    registry.register(orders, body)  # the same pair again is fine
    with pytest.raises(ValueError, match="already registered"):
        registry.register(create_workflow("orders"), other)
    with pytest.raises(TypeError, match="Workflow"):
        registry.register("orders", body)  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="refunds"):
        registry.get("refunds")
    assert "orders" in registry
    assert list(registry) == ["orders"]
