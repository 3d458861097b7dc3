"""Durable waiting in a `WorkflowHost` (issue 19): a waiting run holds no capacity; a
host parks runs that wait past ``park_after`` (their coroutine dropped, their lease
released, the run left ``waiting`` in the store), and its recovery brings them back
when their value arrives or their deadline passes; parking frees the worker's memory."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from awaitly_anyio import (
    Deps,
    Err,
    Ok,
    RecoveredRun,
    Result,
    RunParkedError,
    WaitTimeoutError,
    WorkflowContext,
    WorkflowHost,
    WorkflowRegistry,
    create_workflow,
    send,
)
from awaitly_anyio.events import WorkflowEvent, WorkflowParked
from awaitly_anyio.stores import MemoryStore
from awaitly_anyio.testing import FakeClock, ManualClock

from .kit_base import StoreKit

pytestmark = pytest.mark.anyio


class Waits:
    """Which runs have begun waiting (their ``step_waiting`` events)."""

    def __init__(self) -> None:
        self.seen: dict[str, anyio.Event] = {}

    def __call__(self, event: WorkflowEvent) -> None:
        if event.type == "step_waiting":
            self.seen.setdefault(event.workflow_id, anyio.Event()).set()

    async def until(self, run_id: str) -> None:
        with anyio.fail_after(20):
            await self.seen.setdefault(run_id, anyio.Event()).wait()


class Recovered:
    """What a host's recovery resumed (``on_recovered``)."""

    def __init__(self) -> None:
        self.runs: list[RecoveredRun] = []
        self.one = anyio.Event()

    def __call__(self, run: RecoveredRun) -> None:
        self.runs.append(run)
        self.one.set()


async def waits_for_payment(ctx: WorkflowContext[Deps]) -> Any:
    return await ctx.step.wait_for("payment", key="paid", timeout=60)


async def test_a_waiting_run_holds_no_capacity() -> None:
    waits = Waits()
    workflow = create_workflow("orders", on_event=waits)

    async def quick(ctx: WorkflowContext[Deps]) -> str:
        return "quick"

    async with MemoryStore() as store, WorkflowHost(max_active=1, store=store) as host:
        waiting = host.start(workflow, waits_for_payment, workflow_id="w1")
        await waits.until("w1")
        assert host.active == 0
        assert host.readiness()["ready"] is True
        # Its slot is free for another run.
        assert await host.run(workflow, quick, workflow_id="q1") == Ok("quick")
        await send(store, "w1", "paid", 12)
        with anyio.fail_after(20):
            assert await waiting.result() == Ok(12)
        assert host.active == 0


async def test_shutdown_with_a_run_waiting_in_memory_ends_and_leaves_it_waiting() -> None:
    waits = Waits()
    workflow = create_workflow("orders", on_event=waits)
    async with MemoryStore() as store:
        with anyio.fail_after(5):
            async with WorkflowHost(store=store, grace=0) as host:
                handle = host.start(workflow, waits_for_payment, workflow_id="w1")
                await waits.until("w1")
        assert handle.done
        info = await store.info("w1")
        assert info is not None
        assert (info.status, info.waiting_for, info.lease_owner) == ("waiting", "paid", None)


def parked_registry(clock: FakeClock, waits: Waits) -> tuple[WorkflowRegistry, Any]:
    registry = WorkflowRegistry()
    workflow = create_workflow("orders", clock=clock, on_event=waits)
    registry.register(workflow, waits_for_payment)
    return registry, workflow


async def test_a_parked_run_is_brought_back_by_a_send(kit: StoreKit, tmp_path: Path) -> None:
    clock, waits = FakeClock(), Waits()
    registry, workflow = parked_registry(clock, waits)
    recovered = Recovered()
    passes = ManualClock()
    async with kit.open(tmp_path, clock) as store:
        async with WorkflowHost(store=store, park_after=0) as host:
            handle = host.start(workflow, waits_for_payment, workflow_id="p1")
            with anyio.fail_after(20):
                result = await handle.result()
            assert result == Err(RunParkedError("p1"))
            assert host.active == 0
            info = await store.info("p1")
            assert info is not None
            assert (info.status, info.waiting_for, info.lease_owner) == ("waiting", "paid", None)

            host.start_recovery(registry, clock=passes, on_recovered=recovered, lease=30)
            with anyio.fail_after(20):
                while passes.sleeping == 0:  # the first pass found nothing due
                    await anyio.lowlevel.checkpoint()
            assert recovered.runs == []
            await send(store, "p1", "paid", "cash")  # wakes the next pass at once
            with anyio.fail_after(20):
                await recovered.one.wait()
        assert recovered.runs == [RecoveredRun("p1", "orders", Ok("cash"))]
        snapshot = await store.load("p1")
        assert snapshot is not None
        assert snapshot.status == "completed"
        assert snapshot.steps["paid"].result == Ok("cash")


async def test_a_parked_run_is_brought_back_at_its_deadline(kit: StoreKit, tmp_path: Path) -> None:
    clock, waits = FakeClock(), Waits()
    registry, workflow = parked_registry(clock, waits)
    recovered = Recovered()
    passes = ManualClock()
    start = clock.time()
    async with kit.open(tmp_path, clock) as store:
        async with WorkflowHost(store=store, park_after=0) as host:
            handle = host.start(workflow, waits_for_payment, workflow_id="p1")
            with anyio.fail_after(20):
                assert await handle.result() == Err(RunParkedError("p1"))
            host.start_recovery(
                registry, clock=passes, interval=10, on_recovered=recovered, lease=30
            )
            with anyio.fail_after(20):
                while passes.sleeping == 0:
                    await anyio.lowlevel.checkpoint()
            assert recovered.runs == []
            clock.advance(30)  # not due yet
            passes.advance(10)
            with anyio.fail_after(20):
                while passes.sleeping == 0:
                    await anyio.lowlevel.checkpoint()
            assert recovered.runs == []
            clock.advance(31)  # past the deadline: the next pass resumes it
            passes.advance(10)
            with anyio.fail_after(20):
                await recovered.one.wait()
        assert recovered.runs == [
            RecoveredRun("p1", "orders", Err(WaitTimeoutError("payment", "paid", start + 60)))
        ]
        snapshot = await store.load("p1")
        assert snapshot is not None
        assert snapshot.status == "failed"


async def test_a_parked_run_emits_workflow_parked_and_no_cancelled_pair() -> None:
    seen: list[WorkflowEvent] = []
    clock = FakeClock()
    workflow = create_workflow("orders", clock=clock, on_event=seen.append)
    async with MemoryStore(clock=clock) as store, WorkflowHost(store=store, park_after=0) as host:
        handle = host.start(workflow, waits_for_payment, workflow_id="p1")
        with anyio.fail_after(20):
            assert await handle.result() == Err(RunParkedError("p1"))
    assert [event.type for event in seen] == [
        "workflow_start",
        "step_start",
        "step_waiting",
        "workflow_parked",
    ]
    parked = seen[-1]
    assert isinstance(parked, WorkflowParked)
    assert (parked.workflow_id, parked.workflow_name, parked.waiting_for) == (
        "p1",
        "orders",
        "paid",
    )
    assert parked.duration_ms >= 0
    assert parked.ts == clock.time()


RUNS = 1000


async def test_parking_a_thousand_waiting_runs_frees_the_worker_s_memory() -> None:
    clock = ManualClock()
    waits = Waits()
    workflow = create_workflow("orders", clock=clock, on_event=waits)
    done: list[Result[Any, Any]] = []

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        # What a real run holds while it waits: its frames and some working data.
        order = {"lines": [{"sku": f"sku-{n}", "qty": n} for n in range(8)]}
        await ctx.step("priced", lambda: None, key="priced")
        paid = await ctx.step.wait_for("payment", key="paid")
        return order, paid

    async with MemoryStore(clock=clock) as store:
        store.poll_interval = 3600  # no polling wake-ups during the test
        async with WorkflowHost(store=store, max_active=10, park_after=60) as host:
            gc.collect()
            tracemalloc.start()
            try:
                idle = tracemalloc.get_traced_memory()[0]
                handles = []
                for n in range(RUNS):
                    handles.append(host.start(workflow, body, workflow_id=f"run-{n:04d}"))
                    await waits.until(f"run-{n:04d}")
                assert host.active == 0  # a thousand waiting runs, max_active=10
                gc.collect()
                waiting = tracemalloc.get_traced_memory()[0] - idle
                with anyio.fail_after(60):
                    while clock.sleeping < RUNS:  # each run's park timer is set
                        await anyio.lowlevel.checkpoint()
                clock.advance(60)  # every run has waited park_after: they are parked
                with anyio.fail_after(60):
                    for handle in handles:
                        done.append(await handle.result())
                del handles
                gc.collect()
                parked = tracemalloc.get_traced_memory()[0] - idle
            finally:
                tracemalloc.stop()
            assert done == [Err(RunParkedError(f"run-{n:04d}")) for n in range(RUNS)]
            page = await store.list(status="waiting", limit=RUNS)
            assert len(page.items) == RUNS
            assert all(info.lease_owner is None for info in page.items)
    # The store's rows stay (they are in this process: a memory store); the runs'
    # coroutines, scopes and tasks are gone.
    assert parked < waiting / 4, (waiting, parked)


@pytest.mark.parametrize(
    ("park_after", "error"),
    [(-1, ValueError), (float("inf"), ValueError), (float("nan"), ValueError), ("5", TypeError)],
)
def test_a_bad_park_after_is_refused_naming_it(park_after: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="park_after"):
        WorkflowHost(park_after=park_after)


def test_park_after_takes_seconds_or_a_timedelta() -> None:
    from datetime import timedelta

    assert WorkflowHost(park_after=timedelta(minutes=2)).park_after == 120.0
    assert WorkflowHost(park_after=0).park_after == 0.0
