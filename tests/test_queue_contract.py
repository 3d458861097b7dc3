"""The store side of durable queues, run control and schedules (issue 20), on every
store: enqueue and its dedup, claim_queued's order and caps (also between two store
objects on one database), cancel, resume, fork, schedules and the wake-ups they push.

Each test opens its store through the shared kits (``tests/store_kits.py``), runs on
asyncio and trio, and moves a `FakeClock` instead of sleeping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from awaitly_anyio import (
    Err,
    Ok,
    QueueStore,
    RunStateError,
    StoredSchedule,
)
from awaitly_anyio._resume import StepRecord
from awaitly_anyio._store import EncodedStep
from awaitly_anyio.serialization import default_registry, encode_step_record
from awaitly_anyio.testing import FakeClock

from .kit_base import encoded
from .store_kits import StoreKit

pytestmark = pytest.mark.anyio

NAME = "orders"
Q = "emails"


def failed(key: str) -> EncodedStep:
    """Step ``key``'s failed record."""
    record = StepRecord(Err("boom"), attempts=1)
    return EncodedStep(key, record, encode_step_record(key, record, default_registry))


async def statuses(store: Any) -> dict[str, str]:
    page = await store.list(limit=1000)
    return {info.id: info.status for info in page}


async def ended(store: Any, id: str, status: str = "completed") -> None:
    """Run ``id`` (claimed or running) ends with ``status``."""
    await store.finish(id, status, None, None)


# ---- enqueue ---------------------------------------------------------------------------


async def test_every_store_is_a_queue_store(store: Any) -> None:
    assert isinstance(store, QueueStore)


async def test_enqueue_stores_a_pending_run_once(store: Any, clock: FakeClock) -> None:
    assert await store.enqueue("r1", NAME, queue=Q, metadata={"in": 1}, priority=3) is None
    info = await store.info("r1")
    assert info.status == "pending"
    assert (info.queue, info.priority, info.partition) == (Q, 3, None)
    assert info.started_at is None
    assert not info.cancel_requested
    assert info.lease_owner is None
    clock.advance(5)
    # The id is taken: its entry comes back and nothing is written.
    again = await store.enqueue("r1", "other", queue="q2", metadata={"in": 2}, partition="p")
    assert again is not None
    assert (again.id, again.workflow_name, again.status, again.queue) == ("r1", NAME, "pending", Q)
    snapshot = await store.load("r1")
    assert snapshot.metadata == {"in": 1}
    assert snapshot.steps == {}
    assert (await store.info("r1")).updated_at == info.updated_at
    # Only runs that are pending are listed as such.
    await store.mark_running("plain", NAME)
    page = await store.list(status="pending")
    assert [i.id for i in page] == ["r1"]


async def test_enqueue_of_a_live_run_of_any_status_returns_it(store: Any) -> None:
    await store.mark_running("r", NAME)
    found = await store.enqueue("r", NAME, queue=Q)
    assert found is not None
    assert found.status == "running"
    assert found.queue is None
    await ended(store, "r")
    found = await store.enqueue("r", NAME, queue=Q)
    assert found is not None
    assert found.status == "completed"


async def test_enqueue_replaces_an_expired_run(store: Any, clock: FakeClock) -> None:
    await store.mark_running("r", NAME)
    await store.checkpoint("r", encoded("a", 1))
    await store.send("r", "k", "stale")
    await store.finish("r", "completed", None, None, ttl=5)
    clock.advance(10)
    assert await store.enqueue("r", NAME, queue=Q) is None
    assert (await store.info("r")).status == "pending"
    assert (await store.load("r")).steps == {}
    # Its old messages went with it.
    await store.claim_queued(Q, owner="w", lease=30.0)
    assert await store.receive("r", "k", step="s", name="s", owner="w") is None


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"id": ""}, "run id"),
        ({"id": "a\x00b"}, "run id"),
        ({"workflow_name": ""}, "workflow name"),
        ({"queue": ""}, "queue name"),
        ({"queue": 5}, "queue name"),
        ({"priority": -1}, "priority"),
        ({"priority": 2**31}, "priority"),
        ({"priority": True}, "priority"),
        ({"priority": 1.5}, "priority"),
        ({"partition": ""}, "partition"),
        ({"partition": "a\x00"}, "partition"),
    ],
)
async def test_enqueue_refuses_bad_arguments(store: Any, args: dict[str, Any], match: str) -> None:
    call: dict[str, Any] = {"id": "r", "workflow_name": NAME, "queue": Q, **args}
    with pytest.raises(ValueError, match=match):
        await store.enqueue(call.pop("id"), call.pop("workflow_name"), **call)
    assert len(await store.list()) == 0


# ---- claim_queued ----------------------------------------------------------------------


async def test_claim_queued_takes_runs_by_priority_then_age(store: Any, clock: FakeClock) -> None:
    await store.enqueue("late-low", NAME, queue=Q, priority=5)
    clock.advance(1)
    await store.enqueue("b", NAME, queue=Q, priority=1)
    clock.advance(1)
    await store.enqueue("a", NAME, queue=Q, priority=1)
    await store.enqueue("other-queue", NAME, queue="other", priority=0)
    await store.mark_running("not-queued", NAME)
    clock.advance(1)
    taken = await store.claim_queued(Q, owner="w", lease=30.0, limit=10)
    assert [i.id for i in taken] == ["b", "a", "late-low"]
    now = clock.time()
    for info in taken:
        assert info.status == "running"
        assert info.lease_owner == "w"
        assert info.lease_expires_at.timestamp() == pytest.approx(now + 30)
        assert info.started_at.timestamp() == pytest.approx(now)
        assert info.queue == Q
        stored = await store.info(info.id)
        assert (stored.status, stored.lease_owner) == ("running", "w")
        assert stored.started_at.timestamp() == pytest.approx(now)
    assert await store.claim_queued(Q, owner="w2", lease=30.0, limit=10) == []
    assert [i.id for i in await store.claim_queued("other", owner="w", lease=30.0)] == [
        "other-queue"
    ]


async def test_claim_queued_takes_only_runs_of_the_workflows_named(
    store: Any, clock: FakeClock
) -> None:
    await store.enqueue("theirs-1", "elsewhere", queue=Q, priority=0)
    clock.advance(1)
    await store.enqueue("mine-1", NAME, queue=Q, priority=1)
    clock.advance(1)
    await store.enqueue("theirs-2", "elsewhere", queue=Q, priority=1)
    clock.advance(1)
    await store.enqueue("mine-2", NAME, queue=Q, priority=2)
    assert await store.claim_queued(Q, owner="w", lease=30.0, workflow_names=[]) == []
    taken = await store.claim_queued(Q, owner="w", lease=30.0, limit=10, workflow_names=[NAME])
    assert [i.id for i in taken] == ["mine-1", "mine-2"]
    # The others stay pending, in their order, for a worker that has their workflow.
    assert await store.claim_queued(Q, owner="w", lease=30.0, workflow_names=[NAME]) == []
    assert (await store.info("theirs-1")).status == "pending"
    later = await store.claim_queued(
        Q, owner="v", lease=30.0, limit=10, workflow_names=("elsewhere", "third")
    )
    assert [i.id for i in later] == ["theirs-1", "theirs-2"]


async def test_the_workflow_filter_holds_under_caps(store: Any, clock: FakeClock) -> None:
    await store.enqueue("theirs", "elsewhere", queue=Q, partition="p")
    clock.advance(1)
    await store.enqueue("mine-1", NAME, queue=Q, partition="p")
    clock.advance(1)
    await store.enqueue("mine-2", NAME, queue=Q, partition="p")
    taken = await store.claim_queued(
        Q,
        owner="w",
        lease=30.0,
        limit=10,
        concurrency=5,
        partition_concurrency=1,
        rate=(5, 60.0),
        workflow_names=[NAME],
    )
    assert [i.id for i in taken] == ["mine-1"]  # the partition cap: one at a time
    assert (await store.info("theirs")).status == "pending"
    assert (
        await store.claim_queued(Q, owner="w", lease=30.0, concurrency=5, workflow_names=["nobody"])
        == []
    )


async def test_claim_queued_refuses_workflow_names_that_are_not_a_list_of_names(
    store: Any,
) -> None:
    with pytest.raises(TypeError, match="workflow_names"):
        await store.claim_queued(Q, owner="w", lease=30.0, workflow_names=NAME)
    with pytest.raises(TypeError, match="workflow_names"):
        await store.claim_queued(Q, owner="w", lease=30.0, workflow_names=[1])


async def test_claim_queued_ties_break_by_id(store: Any) -> None:
    for id in ("c", "a", "b"):
        await store.enqueue(id, NAME, queue=Q)  # same time, same priority
    first = await store.claim_queued(Q, owner="w", lease=30.0, limit=2)
    assert [i.id for i in first] == ["a", "b"]
    assert [i.id for i in await store.claim_queued(Q, owner="w", lease=30.0)] == ["c"]


async def test_a_claimed_queued_run_is_written_through_the_lease(store: Any) -> None:
    await store.enqueue("r", NAME, queue=Q, metadata={"x": 1})
    (info,) = await store.claim_queued(Q, owner="w", lease=30.0)
    await store.checkpoint("r", encoded("a", 1), owner="w")
    assert await store.renew("r", owner="w", lease=30.0)
    await store.finish("r", "completed", Ok(1), '{"ok":true,"value":1}', owner="w")
    done = await store.info("r")
    # The end keeps the queue fields.
    assert (done.status, done.queue, done.started_at) == ("completed", Q, info.started_at)
    assert (await store.load("r")).metadata == {"x": 1}


async def test_the_global_cap_counts_every_workers_running_runs(
    store: Any, clock: FakeClock
) -> None:
    for n in range(5):
        await store.enqueue(f"r{n}", NAME, queue=Q)
    await store.enqueue("x", NAME, queue="other")
    assert len(await store.claim_queued("other", owner="w9", lease=30.0)) == 1
    taken = await store.claim_queued(Q, owner="w1", lease=30.0, limit=10, concurrency=2)
    assert [i.id for i in taken] == ["r0", "r1"]
    assert await store.claim_queued(Q, owner="w2", lease=30.0, limit=10, concurrency=2) == []
    # A lease that ran out still counts: the run is running until recovered or ended.
    clock.advance(60)
    assert await store.claim_queued(Q, owner="w2", lease=30.0, concurrency=2) == []
    await ended(store, "r0")
    taken = await store.claim_queued(Q, owner="w2", lease=30.0, limit=10, concurrency=2)
    assert [i.id for i in taken] == ["r2"]
    # Without the cap the rest go.
    rest = await store.claim_queued(Q, owner="w2", lease=30.0, limit=10)
    assert [i.id for i in rest] == ["r3", "r4"]


async def test_the_partition_cap_skips_full_partitions(store: Any) -> None:
    for id, partition in [("a", "p1"), ("b", "p1"), ("c", "p2"), ("d", None), ("e", None)]:
        await store.enqueue(id, NAME, queue=Q, partition=partition)
    first = await store.claim_queued(Q, owner="w", lease=30.0, limit=10, partition_concurrency=1)
    assert [i.id for i in first] == ["a", "c", "d"]
    assert [i.partition for i in first] == ["p1", "p2", None]
    assert await store.claim_queued(Q, owner="w", lease=30.0, partition_concurrency=1) == []
    await ended(store, "d")
    again = await store.claim_queued(Q, owner="w", lease=30.0, limit=10, partition_concurrency=1)
    assert [i.id for i in again] == ["e"]
    await ended(store, "a", "failed")
    again = await store.claim_queued(Q, owner="w", lease=30.0, limit=10, partition_concurrency=1)
    assert [i.id for i in again] == ["b"]


async def test_the_rate_cap_counts_starts_in_the_window(store: Any, clock: FakeClock) -> None:
    for n in range(6):
        await store.enqueue(f"r{n}", NAME, queue=Q)
    rate = (2, 10.0)
    assert len(await store.claim_queued(Q, owner="w", lease=30.0, limit=10, rate=rate)) == 2
    clock.advance(5)
    assert await store.claim_queued(Q, owner="w", lease=30.0, limit=10, rate=rate) == []
    # Ended runs still count: a start is a start.
    await ended(store, "r0")
    await ended(store, "r1")
    assert await store.claim_queued(Q, owner="w", lease=30.0, limit=10, rate=rate) == []
    clock.advance(5.5)
    taken = await store.claim_queued(Q, owner="w", lease=30.0, limit=10, rate=rate)
    assert [i.id for i in taken] == ["r2", "r3"]
    clock.advance(10.5)
    both = await store.claim_queued(Q, owner="w", lease=30.0, limit=10, rate=rate, concurrency=3)
    assert [i.id for i in both] == ["r4"]  # two running: the global cap leaves one


async def test_caps_are_never_exceeded_by_two_stores_taking_turns(
    kit: StoreKit, tmp_path: Path, clock: FakeClock
) -> None:
    async with kit.open(tmp_path, clock) as one, kit.open(tmp_path, clock) as two:
        partitions = ["p0", "p1", "p2", None]
        for n in range(30):
            await one.enqueue(f"r{n:02}", NAME, queue=Q, partition=partitions[n % 4])
        running: dict[str, str | None] = {}
        seen: set[str] = set()
        for turn in range(40):
            store = (one, two)[turn % 2]
            taken = await store.claim_queued(
                Q,
                owner=f"w{turn % 2}",
                lease=30.0,
                limit=3,
                concurrency=4,
                partition_concurrency=2,
            )
            for info in taken:
                assert info.id not in seen
                seen.add(info.id)
                running[info.id] = info.partition
            assert len(running) <= 4
            for partition in partitions:
                assert list(running.values()).count(partition) <= 2
            # Every third turn the oldest running run ends.
            if turn % 3 == 2 and running:
                first = sorted(running)[0]
                await ended(store, first)
                del running[first]
            clock.advance(1)
        page = await one.list(status="running", limit=100)
        assert len(page) == len(running)


async def test_claim_queued_is_atomic_between_two_stores(
    kit: StoreKit, tmp_path: Path, clock: FakeClock
) -> None:
    async with kit.open(tmp_path, clock) as one, kit.open(tmp_path, clock) as two:
        for n in range(24):
            await one.enqueue(f"r{n:02}", NAME, queue=Q, partition=f"p{n % 3}")
        takers: list[list[str]] = []

        async def take(store: Any, owner: str, concurrency: int | None) -> None:
            got = await store.claim_queued(
                Q, owner=owner, lease=30.0, limit=4, concurrency=concurrency
            )
            takers.append([info.id for info in got])

        # With a cap: at most 5 running, whoever claims.
        async with anyio.create_task_group() as tg:
            for n in range(8):
                tg.start_soon(take, (one, two)[n % 2], f"w{n}", 5)
        taken = [id for ids in takers for id in ids]
        assert len(taken) == len(set(taken)) == 5
        takers.clear()
        async with anyio.create_task_group() as tg:
            for n in range(8):
                tg.start_soon(take, (one, two)[n % 2], f"v{n}", None)
        more = [id for ids in takers for id in ids]
        assert len(more) == len(set(more)) == 19
        assert not set(more) & set(taken)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"queue": ""}, "queue name"),
        ({"owner": ""}, "owner"),
        ({"lease": 0}, "lease"),
        ({"limit": 0}, "limit"),
        ({"limit": True}, "limit"),
        ({"limit": 10_001}, "limit"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 1.0}, "concurrency"),
        ({"partition_concurrency": -1}, "partition_concurrency"),
        ({"rate": (0, 1.0)}, "rate"),
        ({"rate": (1, 0.0)}, "rate"),
        ({"rate": (1, float("inf"))}, "rate"),
        ({"rate": (1,)}, "rate"),
        ({"rate": [1, 1.0]}, "rate"),
    ],
)
async def test_claim_queued_refuses_bad_arguments(
    store: Any, args: dict[str, Any], match: str
) -> None:
    await store.enqueue("r", NAME, queue=Q)
    call: dict[str, Any] = {"queue": Q, "owner": "w", "lease": 30.0, **args}
    with pytest.raises(ValueError, match=match):
        await store.claim_queued(call.pop("queue"), **call)
    assert (await store.info("r")).status == "pending"


# ---- cancel ----------------------------------------------------------------------------


async def test_cancel_of_a_pending_run_ends_it_before_it_starts(store: Any) -> None:
    await store.enqueue("r", NAME, queue=Q)
    assert await store.cancel("r") == "pending"
    info = await store.info("r")
    assert info.status == "cancelled"
    assert info.cancel_requested  # cancelled on request: final, never recovered
    assert await store.claim_queued(Q, owner="w", lease=30.0) == []
    assert await store.claim_expired(owner="w", lease=30.0) == []
    with pytest.raises(RunStateError, match="cannot cancel run 'r': it is cancelled"):
        await store.cancel("r")


async def test_cancel_of_a_running_run_asks_its_worker_to_stop(
    store: Any, clock: FakeClock
) -> None:
    await store.enqueue("r", NAME, queue=Q)
    await store.claim_queued(Q, owner="w", lease=30.0)
    assert await store.cancel("r") == "running"
    info = await store.info("r")
    assert (info.status, info.lease_owner, info.cancel_requested) == ("running", "w", True)
    # The lease keeper learns at renew; the worker still ends the run under its lease.
    assert await store.renew("r", owner="w", lease=30.0) is False
    assert await store.cancel("r") == "running"  # asking twice is harmless
    # Nobody recovers it, nor ends it, while its worker holds it.
    clock.advance(20)
    assert await store.claim_expired(owner="w2", lease=30.0) == []
    assert (await store.info("r")).status == "running"
    await store.finish("r", "cancelled", None, None, owner="w")
    assert (await store.info("r")).status == "cancelled"
    clock.advance(60)
    assert await store.claim_expired(owner="w2", lease=30.0) == []


async def test_cancel_of_a_plain_running_run(store: Any) -> None:
    claim = await store.claim("r", NAME, owner="w", lease=30.0)
    assert claim.outcome == "claimed"
    assert await store.cancel("r") == "running"
    assert await store.renew("r", owner="w", lease=30.0) is False
    assert (await store.info("r")).cancel_requested


async def test_cancel_of_a_waiting_run_makes_it_due(store: Any, clock: FakeClock) -> None:
    await store.claim("r", NAME, owner="w", lease=30.0)
    ready, _ = await store.begin_wait(
        "r", step="s", key="k", kind="message", wake_at=clock.time() + 1000, owner="w"
    )
    assert not ready
    assert await store.cancel("r") == "waiting"
    info = await store.info("r")
    assert (info.status, info.cancel_requested) == ("waiting", True)
    assert info.wake_at is not None
    assert info.wake_at.timestamp() <= clock.time()
    clock.advance(20)
    # Not recovered while its worker holds it: that worker ends it as cancelled.
    assert await store.claim_expired(owner="w2", lease=30.0) == []
    assert (await store.info("r")).status == "waiting"
    # Its worker gone (the lease ran out), the sweep ends it.
    clock.advance(20)
    assert await store.claim_expired(owner="w2", lease=30.0) == []
    info = await store.info("r")
    assert (info.status, info.cancel_requested, info.lease_owner) == ("cancelled", True, None)
    assert (info.waiting_for, info.wake_at) == (None, None)


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
async def test_cancel_of_an_ended_run_is_refused(store: Any, status: str) -> None:
    await store.mark_running("r", NAME)
    await ended(store, "r", status)
    with pytest.raises(RunStateError) as raised:
        await store.cancel("r")
    assert (raised.value.run_id, raised.value.status, raised.value.action) == (
        "r",
        status,
        "cancel",
    )
    info = await store.info("r")
    assert (info.status, info.cancel_requested) == (status, False)


async def test_cancel_of_an_unknown_run(store: Any) -> None:
    with pytest.raises(LookupError, match="'nobody'"):
        await store.cancel("nobody")
    with pytest.raises(ValueError, match="run id"):
        await store.cancel("")


async def test_claim_expired_skips_pending_and_cancel_requested_runs(
    store: Any, clock: FakeClock
) -> None:
    await store.enqueue("queued", NAME, queue=Q)
    await store.mark_running("abandoned", NAME)
    await store.claim("asked", NAME, owner="dead", lease=5.0)
    await store.cancel("asked")
    clock.advance(10)
    taken = await store.claim_expired(owner="w", lease=30.0)
    assert [i.id for i in taken] == ["abandoned"]
    assert (await store.info("queued")).status == "pending"
    assert (await store.info("asked")).status == "cancelled"  # ended, not recovered


# ---- a cancel whose worker died --------------------------------------------------------


async def test_claim_expired_ends_a_cancel_requested_run_whose_worker_died(
    store: Any, clock: FakeClock
) -> None:
    await store.claim("r", NAME, owner="dead", lease=5.0)
    await store.checkpoint("r", encoded("a", 1), owner="dead")
    before = (await store.info("r")).updated_at
    assert await store.cancel("r") == "running"
    # Still held: left alone.
    assert await store.claim_expired(owner="w", lease=30.0) == []
    assert (await store.info("r")).status == "running"
    clock.advance(10)  # the lease lapses: its worker died
    assert await store.claim_expired(owner="w", lease=30.0) == []
    info = await store.info("r")
    assert (info.status, info.cancel_requested) == ("cancelled", True)
    assert (info.lease_owner, info.lease_expires_at) == (None, None)
    assert info.updated_at.timestamp() == pytest.approx(clock.time())
    assert info.updated_at > before
    assert sorted((await store.load("r")).steps) == ["a"]  # its steps are kept
    # Ended for good: never recovered, not cancelled again, renewals refused.
    assert await store.claim_expired(owner="w", lease=30.0) == []
    assert await store.renew("r", owner="dead", lease=30.0) is False
    with pytest.raises(RunStateError, match="it is cancelled"):
        await store.cancel("r")


async def test_a_queued_run_ended_by_the_sweep_frees_its_place_in_the_queue(
    store: Any, clock: FakeClock
) -> None:
    await store.enqueue("first", NAME, queue=Q)
    clock.advance(1)
    await store.enqueue("second", NAME, queue=Q)
    (taken,) = await store.claim_queued(Q, owner="dead", lease=5.0, concurrency=1)
    assert taken.id == "first"
    await store.cancel("first")
    assert await store.claim_queued(Q, owner="w", lease=30.0, concurrency=1) == []
    clock.advance(10)
    assert await store.claim_expired(owner="w", lease=30.0) == []
    assert (await store.info("first")).status == "cancelled"
    # The queue's only place is free again.
    (next_one,) = await store.claim_queued(Q, owner="w", lease=30.0, concurrency=1)
    assert next_one.id == "second"


async def test_the_sweep_ends_a_parked_run_asked_to_cancel_without_a_lease(
    store: Any, clock: FakeClock
) -> None:
    await store.claim("r", NAME, owner="w", lease=30.0)
    await store.begin_wait("r", step="s", key="k", kind="message", wake_at=None, owner="w")
    await store.release("r", owner="w")  # parked: nobody holds it
    assert await store.cancel("r") == "waiting"
    assert await store.claim_expired(owner="w2", lease=30.0) == []
    info = await store.info("r")
    assert (info.status, info.cancel_requested, info.waiting_for) == ("cancelled", True, None)
    assert await store.claim_expired(owner="w2", lease=30.0) == []
    assert (await store.list(status="waiting")).items == []


async def test_the_sweep_ends_no_more_cancelled_runs_than_its_limit(
    store: Any, clock: FakeClock
) -> None:
    for n in range(3):
        await store.claim(f"r{n}", NAME, owner="dead", lease=5.0)
        clock.advance(1)
        await store.cancel(f"r{n}")
    clock.advance(10)
    assert await store.claim_expired(owner="w", lease=30.0, limit=2) == []
    assert [(await store.info(f"r{n}")).status for n in range(3)] == [
        "cancelled",
        "cancelled",
        "running",
    ]
    assert await store.claim_expired(owner="w", lease=30.0, limit=2) == []
    assert (await store.info("r2")).status == "cancelled"


# ---- resume ----------------------------------------------------------------------------


async def test_resume_drops_failed_steps_and_keeps_completed_ones(store: Any) -> None:
    await store.claim("r", NAME, owner="w", lease=30.0, metadata={"in": 7})
    await store.checkpoint("r", encoded("a", 1), owner="w")
    await store.checkpoint("r", failed("b"), owner="w")
    await store.checkpoint("r", encoded("c", 3), owner="w")
    await store.finish("r", "failed", Err("boom"), None, owner="w")
    assert await store.resume("r") == "failed"
    info = await store.info("r")
    # No queue: running with no lease, so any worker's recovery takes it at once.
    assert (info.status, info.lease_owner, info.cancel_requested) == ("running", None, False)
    snapshot = await store.load("r")
    assert list(snapshot.steps) == ["a", "c"]
    assert snapshot.result is None
    assert snapshot.metadata == {"in": 7}
    taken = await store.claim_expired(owner="w2", lease=30.0)
    assert [i.id for i in taken] == ["r"]
    with pytest.raises(RunStateError, match="cannot resume run 'r': it is running"):
        await store.resume("r")


async def test_resume_puts_a_queued_run_back_in_its_queue(store: Any) -> None:
    await store.enqueue("r", NAME, queue=Q, priority=4, partition="p")
    await store.claim_queued(Q, owner="w", lease=30.0)
    await store.checkpoint("r", encoded("a", 1), owner="w")
    assert await store.cancel("r") == "running"
    await store.finish("r", "cancelled", None, None, owner="w")
    assert await store.resume("r") == "cancelled"
    info = await store.info("r")
    assert (info.status, info.queue, info.priority, info.partition) == ("pending", Q, 4, "p")
    assert not info.cancel_requested
    assert info.started_at is None
    (again,) = await store.claim_queued(Q, owner="w2", lease=30.0)
    assert again.id == "r"
    assert list((await store.load("r")).steps) == ["a"]
    # A pending run cancelled before it started resumes too.
    await store.enqueue("p", NAME, queue=Q)
    await store.cancel("p")
    assert await store.resume("p") == "cancelled"
    assert (await store.info("p")).status == "pending"


@pytest.mark.parametrize("status", ["completed", "pending", "waiting"])
async def test_resume_refuses_other_statuses(store: Any, status: str, clock: FakeClock) -> None:
    if status == "pending":
        await store.enqueue("r", NAME, queue=Q)
    else:
        await store.claim("r", NAME, owner="w", lease=30.0)
        if status == "waiting":
            await store.begin_wait("r", step="s", key="k", kind="message", wake_at=None, owner="w")
        else:
            await ended(store, "r", status)
    with pytest.raises(RunStateError) as raised:
        await store.resume("r")
    assert (raised.value.status, raised.value.action) == (status, "resume")
    assert (await store.info("r")).status == status
    with pytest.raises(LookupError, match="'nobody'"):
        await store.resume("nobody")


# ---- fork ------------------------------------------------------------------------------


async def _three_steps(store: Any, id: str = "r", **queue: Any) -> None:
    if queue:
        await store.enqueue(id, NAME, metadata={"in": 1}, **queue)
        await store.claim_queued(queue["queue"], owner="w", lease=30.0)
    else:
        await store.claim(id, NAME, owner="w", lease=30.0, metadata={"in": 1})
    await store.checkpoint(id, encoded("a", 1), owner="w")
    await store.checkpoint(id, failed("b"), owner="w")
    await store.checkpoint(id, encoded("c", 3), owner="w")
    await store.finish(id, "completed", Ok(3), '{"ok":true,"value":3}', owner="w")


async def test_fork_copies_the_completed_steps(store: Any) -> None:
    await _three_steps(store)
    assert await store.fork("r", "f") is None
    info = await store.info("f")
    assert (info.workflow_name, info.status, info.lease_owner) == (NAME, "running", None)
    snapshot = await store.load("f")
    assert list(snapshot.steps) == ["a", "c"]
    assert snapshot.metadata == {"in": 1}
    assert snapshot.result is None
    # The original is untouched.
    assert list((await store.load("r")).steps) == ["a", "b", "c"]
    assert (await store.info("r")).status == "completed"
    assert [i.id for i in await store.claim_expired(owner="w2", lease=30.0)] == ["f"]


async def test_fork_from_a_step_keeps_the_steps_before_it(store: Any) -> None:
    await _three_steps(store)
    await store.fork("r", "from-c", from_step="c")
    assert list((await store.load("from-c")).steps) == ["a", "b"]
    await store.fork("r", "from-a", from_step="a")
    assert list((await store.load("from-a")).steps) == []


async def test_fork_of_a_queued_run_is_queued(store: Any) -> None:
    await _three_steps(store, queue=Q, priority=2, partition="p")
    await store.fork("r", "f")
    info = await store.info("f")
    assert (info.status, info.queue, info.priority, info.partition) == ("pending", Q, 2, "p")
    (taken,) = await store.claim_queued(Q, owner="w2", lease=30.0)
    assert taken.id == "f"


async def test_fork_refuses_a_bad_step_an_unknown_run_and_a_taken_id(store: Any) -> None:
    await _three_steps(store)
    with pytest.raises(ValueError, match="from_step 'zzz'"):
        await store.fork("r", "f", from_step="zzz")
    with pytest.raises(LookupError, match="'nobody'"):
        await store.fork("nobody", "f")
    await store.mark_running("taken", "another")
    with pytest.raises(RunStateError) as raised:
        await store.fork("r", "taken")
    assert (raised.value.run_id, raised.value.status, raised.value.action) == (
        "taken",
        "running",
        "fork into",
    )
    assert (await store.info("taken")).workflow_name == "another"
    with pytest.raises(ValueError, match="run id"):
        await store.fork("r", "")
    assert await store.info("f") is None


# ---- schedules -------------------------------------------------------------------------


async def test_schedules_are_stored_listed_and_deleted(store: Any) -> None:
    assert await store.schedules() == []
    await store.put_schedule("nightly", {"cron": "0 3 * * *", "workflow": "w"})
    await store.put_schedule("hourly", {"every": 3600})
    assert await store.schedules() == [
        StoredSchedule("hourly", {"every": 3600}, None),
        StoredSchedule("nightly", {"cron": "0 3 * * *", "workflow": "w"}, None),
    ]
    assert await store.advance_schedule("hourly", None, 100.0)
    # A new spec keeps the last tick.
    await store.put_schedule("hourly", {"every": 60})
    assert (await store.schedules())[0] == StoredSchedule("hourly", {"every": 60}, 100.0)
    assert await store.delete_schedule("hourly") is True
    assert await store.delete_schedule("hourly") is False
    assert [s.name for s in await store.schedules()] == ["nightly"]


async def test_advance_schedule_is_a_compare_and_set(
    kit: StoreKit, tmp_path: Path, clock: FakeClock
) -> None:
    async with kit.open(tmp_path, clock) as one, kit.open(tmp_path, clock) as two:
        await one.put_schedule("s", {"every": 10})
        assert await one.advance_schedule("s", None, 10.0) is True
        assert await two.advance_schedule("s", None, 10.0) is False  # lost the tick
        assert await two.advance_schedule("s", 10.0, 20.0) is True
        assert await one.advance_schedule("s", 10.0, 20.0) is False
        assert (await one.schedules())[0].last_tick == 20.0
        assert await one.advance_schedule("gone", None, 1.0) is False
        assert await one.schedules() == [StoredSchedule("s", {"every": 10}, 20.0)]

        # Of many workers at once, one wins each tick.
        wins: list[bool] = []

        async def tick(store: Any) -> None:
            wins.append(await store.advance_schedule("s", 20.0, 30.0))

        async with anyio.create_task_group() as tg:
            for n in range(6):
                tg.start_soon(tick, (one, two)[n % 2])
        assert sorted(wins) == [False] * 5 + [True]


async def test_schedules_refuse_bad_arguments(store: Any) -> None:
    with pytest.raises(ValueError, match="schedule name"):
        await store.put_schedule("", {})
    with pytest.raises(TypeError, match="mapping"):
        await store.put_schedule("s", [1, 2])
    with pytest.raises(TypeError, match="plain JSON"):
        await store.put_schedule("s", {"when": object()})
    with pytest.raises(TypeError, match="plain JSON"):
        await store.put_schedule("s", {"x": float("nan")})
    with pytest.raises(ValueError, match="schedule name"):
        await store.delete_schedule("a\x00")
    with pytest.raises(ValueError, match="tick"):
        await store.advance_schedule("s", None, float("inf"))
    with pytest.raises(ValueError, match="expected"):
        await store.advance_schedule("s", "yesterday", 1.0)
    assert await store.schedules() == []


# ---- wake-ups --------------------------------------------------------------------------


async def test_enqueue_cancel_resume_and_a_queued_end_wake_watchers(
    kit: StoreKit, tmp_path: Path, clock: FakeClock
) -> None:
    async with kit.open(tmp_path, clock) as one, kit.open(tmp_path, clock) as two:
        with two.sends(None) as anything, two.sends("r") as this_run:
            await one.enqueue("r", NAME, queue=Q)
            with anyio.fail_after(10):  # a bound on a push, not a timing
                await anything.wait()
                await this_run.wait()
            await one.claim_queued(Q, owner="w", lease=30.0)
            await one.cancel("r")
            with anyio.fail_after(10):
                await anything.wait()
                await this_run.wait()
            await one.finish("r", "cancelled", None, None, owner="w")
            with anyio.fail_after(10):
                await anything.wait()
                await this_run.wait()
            await one.resume("r")
            with anyio.fail_after(10):
                await anything.wait()
                await this_run.wait()
            await one.fork("r", "f")
            with anyio.fail_after(10):
                await anything.wait()
