"""Durable queues (issue 20): `enqueue`, the `QueuedRun` handle and the host serving
queues, on every store, both backends.

Time is a `ManualClock` for the hosts' polls (nothing sleeps for real): `drain`
lets every task run, then moves the clock by one poll interval, until the runs
asked for have ended.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from awaitly_anyio import (
    Deps,
    Err,
    InputConflictError,
    Ok,
    RunStateError,
    WorkflowContext,
    WorkflowMismatchError,
    WorkflowRegistry,
    create_workflow,
)
from awaitly_anyio._host import WorkflowHost
from awaitly_anyio._queues import Queue, QueuedRun, claim_from_queue, enqueue
from awaitly_anyio.stores import MemoryStore
from awaitly_anyio.testing import FakeClock, ManualClock

from .kit_base import StoreKit
from .store_kits import KITS, kit_ids

pytestmark = pytest.mark.anyio
POLL = 1.0

all_stores = pytest.mark.parametrize("kit", KITS, ids=kit_ids())


class Probe:
    """What the workload sees: its runs in the order they started, how many ran at
    once (its own count), and a gate that holds them while closed."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.done: Counter[str] = Counter()
        self.active = 0
        self.most = 0
        self.by_partition: Counter[str] = Counter()
        self.most_by_partition: Counter[str] = Counter()
        self.gate: anyio.Event | None = None

    def registry(self, name: str = "jobs") -> WorkflowRegistry:
        registry = WorkflowRegistry()
        workflow = create_workflow(name)

        @registry.workflow(workflow)
        async def body(ctx: WorkflowContext[Deps, Any]) -> Any:
            given = ctx.input
            part = str(given.get("part")) if isinstance(given, dict) else "-"
            self.started.append(ctx.workflow_id)
            self.active += 1
            self.by_partition[part] += 1
            self.most = max(self.most, self.active)
            self.most_by_partition[part] = max(
                self.most_by_partition[part], self.by_partition[part]
            )
            try:
                for _ in range(3):
                    await anyio.lowlevel.checkpoint()
                if self.gate is not None:
                    await self.gate.wait()
            finally:
                self.active -= 1
                self.by_partition[part] -= 1
            self.done[ctx.workflow_id] += 1
            return {"id": ctx.workflow_id, "input": ctx.input}

        return registry


async def drain(clock: ManualClock, done: Any) -> None:
    """Let the hosts work, moving their poll clock on whenever they are all idle,
    until ``done()`` holds.  (A task waiting for a store's thread counts as idle, so
    the number of rounds says nothing; the bound is only against a hang.)"""
    with anyio.fail_after(120):
        while True:
            await anyio.wait_all_tasks_blocked()
            if done():
                return
            clock.advance(POLL)


# ---- Queue and enqueue: arguments ---------------------------------------------------------


def test_queue_options_are_checked_with_clear_errors() -> None:
    assert Queue("emails", concurrency=5, rate=(10, 2)).rate == (10, 2.0)
    with pytest.raises(ValueError, match="queue name"):
        Queue("")
    with pytest.raises(ValueError, match="queue name"):
        Queue("a\x00b")
    with pytest.raises(ValueError, match="queue name"):
        Queue(3)  # type: ignore[arg-type]
    for option in ("concurrency", "worker_concurrency", "partition_concurrency"):
        with pytest.raises(ValueError, match=option):
            Queue("q", **{option: 0})
        with pytest.raises(ValueError, match=option):
            Queue("q", **{option: -2})
        with pytest.raises(TypeError, match=option):
            Queue("q", **{option: 1.5})
        with pytest.raises(TypeError, match=option):
            Queue("q", **{option: True})
    with pytest.raises(ValueError, match="max_starts"):
        Queue("q", rate=(0, 1.0))
    with pytest.raises(ValueError, match="window"):
        Queue("q", rate=(1, 0))
    with pytest.raises(ValueError, match="window"):
        Queue("q", rate=(1, float("inf")))
    with pytest.raises(TypeError, match="rate"):
        Queue("q", rate=5)  # type: ignore[arg-type]


def test_the_host_checks_its_queue_options() -> None:
    registry = Probe().registry()
    with pytest.raises(ValueError, match="registry"):
        WorkflowHost(store=MemoryStore(), queues=[Queue("q")])
    with pytest.raises(ValueError, match="store"):
        WorkflowHost(registry=registry, queues=[Queue("q")])
    with pytest.raises(ValueError, match="twice"):
        WorkflowHost(store=MemoryStore(), registry=registry, queues=[Queue("q"), Queue("q")])
    with pytest.raises(TypeError, match="Queue"):
        WorkflowHost(store=MemoryStore(), registry=registry, queues=["q"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="WorkflowRegistry"):
        WorkflowHost(store=MemoryStore(), registry="jobs")  # type: ignore[arg-type]


async def test_enqueue_refuses_bad_arguments_and_stores_nothing() -> None:
    async with MemoryStore() as store:
        with pytest.raises(ValueError, match="priority"):
            await enqueue(store, "jobs", 1, id="a", priority=-1)
        with pytest.raises(ValueError, match="priority"):
            await enqueue(store, "jobs", 1, id="a", priority=2**31)
        with pytest.raises(TypeError, match="priority"):
            await enqueue(store, "jobs", 1, id="a", priority=1.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="queue name"):
            await enqueue(store, "jobs", 1, id="a", queue="")
        with pytest.raises(ValueError, match="partition"):
            await enqueue(store, "jobs", 1, id="a", partition="")
        with pytest.raises(ValueError, match="run id"):
            await enqueue(store, "jobs", 1, id="")
        with pytest.raises(TypeError, match="workflow"):
            await enqueue(store, 3, 1, id="a")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="reserved"):
            await enqueue(store, "jobs", 1, id="a", metadata={"awaitly.input": 2})
        assert await store.info("a") is None


# ---- enqueue and the handle, on every store -----------------------------------------------


@all_stores
async def test_enqueue_stores_a_pending_run_and_dedups_by_id(kit: StoreKit, tmp_path: Path) -> None:
    workflow = create_workflow("jobs")
    async with kit.open(tmp_path, FakeClock()) as store:
        run = await enqueue(
            store, workflow, {"n": 1}, id="job-1", queue="emails", priority=3, partition="acme"
        )
        assert (run.id, run.workflow_name, run.queue) == ("job-1", "jobs", "emails")
        assert await run.status() == "pending"
        info = await store.info("job-1")
        assert info is not None
        assert (info.queue, info.priority, info.partition) == ("emails", 3, "acme")
        snapshot = await store.load("job-1")
        assert snapshot is not None
        assert snapshot.steps == {}
        # The same id and input: the same run, nothing written.
        again = await enqueue(store, "jobs", {"n": 1}, id="job-1", queue="emails")
        assert again.id == "job-1"
        assert again.queue == "emails"
        assert await store.info("job-1") == info
        # Another input: a conflict, nothing written.
        with pytest.raises(InputConflictError, match="job-1"):
            await enqueue(store, "jobs", {"n": 2}, id="job-1", queue="emails")
        with pytest.raises(WorkflowMismatchError):
            await enqueue(store, "other", {"n": 1}, id="job-1", queue="emails")
        assert await store.info("job-1") == info
        page = await store.list(status="pending")
        assert [entry.id for entry in page] == ["job-1"]


@all_stores
async def test_a_pending_run_cancelled_never_starts(kit: StoreKit, tmp_path: Path) -> None:
    probe = Probe()
    clock = ManualClock()
    async with kit.open(tmp_path, FakeClock()) as store:
        doomed = await enqueue(store, "jobs", {"n": 1}, id="doomed")
        kept = await enqueue(store, "jobs", {"n": 2}, id="kept")
        assert await doomed.cancel() == "pending"
        assert await doomed.status() == "cancelled"
        with pytest.raises(RunStateError):
            await doomed.cancel()
        async with WorkflowHost(store=store) as host:
            host.serve_queues(
                probe.registry(), [Queue("default")], clock=clock, recovery_interval=None
            )
            await drain(clock, lambda: probe.done["kept"] == 1)
        assert probe.started == ["kept"]
        assert await kept.result(clock=clock) == Ok({"id": "kept", "input": {"n": 2}})
        result = await doomed.result(clock=clock)
        assert isinstance(result, Err)
        assert isinstance(result.error, RunStateError)
        with pytest.raises(LookupError):
            await QueuedRun(store, "nobody").cancel()


@all_stores
async def test_a_handle_on_another_store_object_gets_the_result(
    kit: StoreKit, tmp_path: Path
) -> None:
    probe = Probe()
    clock = ManualClock()
    async with (
        kit.open(tmp_path, FakeClock()) as worker_store,
        kit.open(tmp_path, FakeClock()) as client_store,
    ):
        run = await enqueue(client_store, "jobs", [1, 2], id="far")
        results: list[Any] = []

        async def wait_for_it() -> None:
            results.append(await QueuedRun(client_store, run.id).result(clock=clock))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_for_it)
            async with WorkflowHost(store=worker_store) as host:
                host.serve_queues(
                    probe.registry(), [Queue("default")], clock=clock, recovery_interval=None
                )
                await drain(clock, lambda: bool(results))
        assert results == [Ok({"id": "far", "input": [1, 2]})]


# ---- serving: order and limits ------------------------------------------------------------


@all_stores
async def test_runs_start_by_priority_then_in_enqueue_order(kit: StoreKit, tmp_path: Path) -> None:
    probe = Probe()
    clock = ManualClock()
    async with kit.open(tmp_path, FakeClock()) as store:
        for id, priority in [("late", 9), ("b", 1), ("c", 1), ("first", 0), ("d", 5)]:
            await enqueue(store, "jobs", id, id=id, queue="q", priority=priority)
        async with WorkflowHost(store=store) as host:
            host.serve_queues(
                probe.registry(),
                [Queue("q", worker_concurrency=1)],
                clock=clock,
                recovery_interval=None,
            )
            await drain(clock, lambda: len(probe.done) == 5)
        assert probe.started == ["first", "b", "c", "d", "late"]


@all_stores
async def test_limits_hold_across_several_hosts(kit: StoreKit, tmp_path: Path) -> None:
    probe = Probe()
    clock = ManualClock()
    # Three partitions, the first twice as busy: at most one run of each at once, three
    # in all, two per host.
    queue = Queue("q", concurrency=3, partition_concurrency=1, worker_concurrency=2)
    runs = 24
    parts = {f"r-{n:02d}": "aabc"[n % 4] for n in range(runs)}
    async with kit.open(tmp_path, FakeClock()) as store:
        for n in range(runs):
            part = parts[f"r-{n:02d}"]
            await enqueue(
                store, "jobs", {"part": part, "n": n}, id=f"r-{n:02d}", queue="q", partition=part
            )
        async with (
            kit.open(tmp_path, FakeClock()) as second,
            kit.open(tmp_path, FakeClock()) as third,
        ):
            hosts = [WorkflowHost(store=s, max_active=5, grace=0) for s in (store, second, third)]
            async with hosts[0], hosts[1], hosts[2]:
                for host in hosts:
                    host.serve_queues(
                        probe.registry(), [queue], clock=clock, recovery_interval=None
                    )
                with anyio.fail_after(120):
                    while len(probe.done) < runs:
                        # A wave: the runs the limits allow gather at the gate; however
                        # many polls pass, no more start.
                        probe.gate = anyio.Event()
                        left = {parts[id] for id in parts if id not in probe.done}
                        expected = min(3, len(left))
                        while probe.active < expected:
                            await anyio.wait_all_tasks_blocked()
                            clock.advance(POLL)
                        for _ in range(3):
                            await anyio.wait_all_tasks_blocked()
                            clock.advance(POLL)
                            assert probe.active == expected
                            assert max(probe.by_partition.values()) <= 1
                            assert all(host.active <= 2 for host in hosts)
                        probe.gate.set()
                        done = len(probe.done) + expected
                        while len(probe.done) < done:
                            await anyio.wait_all_tasks_blocked()
        assert probe.done == Counter({f"r-{n:02d}": 1 for n in range(runs)})
        assert probe.most == 3
        assert max(probe.most_by_partition.values()) == 1
        statuses = {(await store.info(f"r-{n:02d}")).status for n in range(runs)}  # type: ignore[union-attr]
        assert statuses == {"completed"}


@all_stores
async def test_worker_concurrency_caps_one_host(kit: StoreKit, tmp_path: Path) -> None:
    probe = Probe()
    probe.gate = anyio.Event()
    clock = ManualClock()
    async with kit.open(tmp_path, FakeClock()) as store:
        for n in range(6):
            await enqueue(store, "jobs", n, id=f"w-{n}", queue="q")
        async with WorkflowHost(store=store, max_active=10, grace=0) as host:
            host.serve_queues(
                probe.registry(),
                [Queue("q", worker_concurrency=2)],
                clock=clock,
                recovery_interval=None,
            )
            await drain(clock, lambda: probe.active == 2)
            for _ in range(3):  # however many polls pass, no more start
                await anyio.wait_all_tasks_blocked()
                clock.advance(POLL)
                assert host.active == 2
            assert host.readiness()["queues"] == {"q": 2}
            assert len((await store.list(status="pending")).items) == 4
            probe.gate.set()
            await drain(clock, lambda: len(probe.done) == 6)
        assert probe.most == 2


@all_stores
async def test_shutdown_stops_claiming_and_gives_running_runs_the_grace(
    kit: StoreKit, tmp_path: Path
) -> None:
    probe = Probe()
    probe.gate = anyio.Event()
    clock = ManualClock()
    async with kit.open(tmp_path, FakeClock()) as store:
        for n in range(4):
            await enqueue(store, "jobs", n, id=f"s-{n}", queue="q")
        async with WorkflowHost(store=store, grace=3600) as host:
            host.serve_queues(
                probe.registry(),
                [Queue("q", worker_concurrency=1)],
                clock=clock,
                recovery_interval=None,
            )
            await drain(clock, lambda: probe.active == 1)
            assert probe.started == ["s-0"]
            async with anyio.create_task_group() as tg:
                tg.start_soon(host.shutdown)
                await anyio.wait_all_tasks_blocked()
                assert host.readiness()["ready"] is False
                probe.gate.set()  # the run in flight finishes within the grace period
                await anyio.wait_all_tasks_blocked()
                clock.advance(POLL)
                await anyio.wait_all_tasks_blocked()
        # Nothing was claimed during the drain: the others are still pending.
        assert probe.started == ["s-0"]
        assert (await store.info("s-0")).status == "completed"  # type: ignore[union-attr]
        pending = sorted(info.id for info in await store.list(status="pending"))
        assert pending == ["s-1", "s-2", "s-3"]


@all_stores
async def test_a_run_of_an_unregistered_workflow_is_never_claimed(
    kit: StoreKit, tmp_path: Path
) -> None:
    probe = Probe()
    clock = ManualClock()
    async with kit.open(tmp_path, FakeClock()) as store:
        await enqueue(store, "unknown-here", 1, id="stray", queue="q")
        await enqueue(store, "jobs", 2, id="mine", queue="q")
        async with WorkflowHost(store=store) as host:
            host.serve_queues(probe.registry(), [Queue("q")], clock=clock, recovery_interval=None)
            await drain(clock, lambda: probe.done["mine"] == 1)
        info = await store.info("stray")
        assert info is not None
        # Passed over, not taken and handed back: still pending (not "running" with no
        # holder, counting against the queue's limit), for a worker that knows it.
        assert (info.status, info.lease_owner, info.started_at) == ("pending", None, None)
        assert probe.started == ["mine"]


async def test_claim_from_queue_asks_for_the_registrys_workflows_only() -> None:
    probe = Probe()
    async with MemoryStore() as store:
        await enqueue(store, "unknown-here", 1, id="stray", queue="q")
        await enqueue(store, "jobs", 2, id="mine", queue="q")
        runnable, unknown = await claim_from_queue(
            store, Queue("q", concurrency=1), probe.registry(), owner="w", lease=30.0, limit=5
        )
        assert ([info.id for info in runnable], unknown) == (["mine"], [])
        # An empty registry claims nothing.
        await store.finish("mine", "completed", None, None, owner="w")
        assert await claim_from_queue(
            store, Queue("q"), WorkflowRegistry(), owner="w", lease=30.0, limit=5
        ) == ([], [])
        assert (await store.info("stray")).status == "pending"  # type: ignore[union-attr]


async def test_queues_given_to_the_host_are_served_when_it_is_entered() -> None:
    probe = Probe()
    async with MemoryStore() as store:
        run = await enqueue(store, "jobs", "x", id="auto", queue="q")
        async with WorkflowHost(store=store, registry=probe.registry(), queues=[Queue("q")]):
            assert await run.result() == Ok({"id": "auto", "input": "x"})


@all_stores
async def test_a_running_run_cancelled_ends_its_handle_with_the_cancel(
    kit: StoreKit, tmp_path: Path
) -> None:
    probe = Probe()
    probe.gate = anyio.Event()  # never opened: only the cancel ends the run
    clock = ManualClock()
    async with kit.open(tmp_path, FakeClock()) as store:
        run = await enqueue(store, "jobs", 1, id="busy", queue="q")
        async with WorkflowHost(store=store, grace=0) as host:
            host.serve_queues(probe.registry(), [Queue("q")], clock=clock, recovery_interval=None)
            await drain(clock, lambda: probe.active == 1)
            assert await run.cancel() == "running"
            await drain(clock, lambda: host.active == 0)
        result = await run.result(clock=clock)
        assert isinstance(result, Err)
        assert isinstance(result.error, RunStateError)
        assert await run.status() == "cancelled"
        assert probe.done == Counter()
