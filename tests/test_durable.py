"""Durable runs: checkpoints, resume, idempotent completion, failure, cancellation, bad data."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from awaitly_anyio import (
    Deps,
    Err,
    Ok,
    SerializationError,
    SnapshotDecodeError,
    SnapshotPage,
    SnapshotStore,
    StoreError,
    TypeRegistry,
    WorkflowContext,
    WorkflowMismatchError,
    WorkflowSnapshot,
    create_resume_state_collector,
    create_workflow,
)
from awaitly_anyio._store import EncodedStep
from awaitly_anyio.stores.memory import MemoryStore
from awaitly_anyio.testing import FakeClock

pytestmark = pytest.mark.anyio


class Effects:
    """Counts side effects per step, like a payments table would."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def do(self, name: str, value: Any = None) -> Any:
        self.counts[name] = self.counts.get(name, 0) + 1
        return value if value is not None else f"{name}-done"


async def test_resume_skips_checkpointed_steps_and_reruns_those_that_opted_out(
    store: Any, clock: FakeClock
) -> None:
    effects = Effects()
    fail_once = [True]
    workflow = create_workflow("order", clock=clock)

    async def body(ctx: WorkflowContext[Deps]) -> list[str]:
        charge = await ctx.step("charge", lambda: effects.do("charge"), key="charge")
        log = await ctx.step("log", lambda: effects.do("log"))
        await ctx.step("pure", lambda: effects.do("pure"), checkpoint=False)
        if fail_once.pop() if fail_once else False:
            await ctx.step("ship", lambda: Err("WAREHOUSE_DOWN"), key="ship")
        ship = await ctx.step("ship", lambda: effects.do("ship"), key="ship")
        return [charge, log, ship]

    assert await workflow.run(body, workflow_id="o-1", store=store) == Err("WAREHOUSE_DOWN")
    assert await workflow.run(body, workflow_id="o-1", store=store) == Ok(
        ["charge-done", "log-done", "ship-done"]
    )
    # Every step is checkpointed (the unkeyed "log" under an automatic key) but the one
    # that opted out, which runs again.
    assert effects.counts == {"charge": 1, "log": 1, "pure": 2, "ship": 1}


async def test_completed_run_returns_its_stored_result_without_executing(store: Any) -> None:
    effects = Effects()
    workflow = create_workflow("order")

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.step("charge", lambda: effects.do("charge"), key="charge")

    first = await workflow.run(body, workflow_id="o-2", store=store)
    second = await workflow.run(body, workflow_id="o-2", store=store)
    assert first == second == Ok("charge-done")
    assert effects.counts == {"charge": 1}
    snapshot = await store.load("o-2")
    assert snapshot.status == "completed"
    assert snapshot.result == Ok("charge-done")
    assert snapshot.steps["charge"].result == Ok("charge-done")
    assert snapshot.steps["charge"].started_at <= snapshot.steps["charge"].finished_at


async def test_delete_on_success_removes_the_run(store: Any) -> None:
    workflow = create_workflow("order")

    async def body(ctx: WorkflowContext[Deps]) -> int:
        return await ctx.step("one", lambda: 1, key="one")

    assert await workflow.run(body, workflow_id="o-3", store=store, delete_on_success=True) == Ok(1)
    assert await store.load("o-3") is None


async def test_failure_is_saved_with_ttl_and_metadata(store: Any, clock: FakeClock) -> None:
    workflow = create_workflow("order", clock=clock)

    async def body(ctx: WorkflowContext[Deps]) -> None:
        await ctx.step("charge", lambda: Err("DECLINED"), key="charge")

    result = await workflow.run(
        body, workflow_id="o-4", store=store, failure_ttl=3600, metadata={"customer": "ada"}
    )
    assert result == Err("DECLINED")
    snapshot = await store.load("o-4")
    assert snapshot.status == "failed"
    assert snapshot.result == Err("DECLINED")
    assert snapshot.metadata["customer"] == "ada"
    assert snapshot.metadata["awaitly.error"] == "'DECLINED'"
    assert snapshot.metadata["awaitly.last_attempt"].startswith("2023-11-14T22:13:20")
    assert snapshot.steps["charge"].result == Err("DECLINED")
    clock.advance(3599)
    assert await store.load("o-4") is not None
    clock.advance(2)
    assert await store.load("o-4") is None


async def test_cancellation_records_cancelled_and_keeps_checkpoints(store: Any) -> None:
    effects = Effects()
    workflow = create_workflow("order")
    reached = anyio.Event()

    async def body(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step("charge", lambda: effects.do("charge"), key="charge")
        reached.set()
        await ctx.step("wait", anyio.sleep_forever, key="wait")
        return "unreachable"

    returned: list[object] = []
    async with anyio.create_task_group() as tg:

        async def start() -> None:
            returned.append(await workflow.run(body, workflow_id="o-5", store=store))

        tg.start_soon(start)
        await reached.wait()
        tg.cancel_scope.cancel()
    assert returned == []
    snapshot = await store.load("o-5")
    assert snapshot.status == "cancelled"
    assert set(snapshot.steps) == {"charge"}

    async def finish(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step("charge", lambda: effects.do("charge"), key="charge")
        return "resumed"

    assert await workflow.run(finish, workflow_id="o-5", store=store) == Ok("resumed")
    assert effects.counts == {"charge": 1}


@attrs.frozen
class Receipt:
    number: int


async def test_unserializable_value_fails_at_its_step_and_nothing_is_stored(store: Any) -> None:
    ran_after: list[str] = []
    workflow = create_workflow("order")

    async def body(ctx: WorkflowContext[Deps]) -> None:
        await ctx.step("good", lambda: 1, key="good")
        await ctx.step("receipt", lambda: Receipt(7), key="receipt")
        ran_after.append("after")

    result = await workflow.run(body, workflow_id="o-6", store=store)
    assert isinstance(result, Err)
    assert isinstance(result.error, SerializationError)
    assert result.error.step == "receipt"
    assert result.error.type_name.endswith("Receipt")
    assert "register_type(Receipt)" in result.error.reason
    assert ran_after == []
    snapshot = await store.load("o-6")
    assert set(snapshot.steps) == {"good"}
    assert snapshot.status == "failed"


async def test_step_type_option_stores_and_checks_the_value(tmp_path: Path) -> None:
    @attrs.frozen
    class Parcel:
        weight: float

    registry = TypeRegistry()
    workflow = create_workflow("ship")
    async with MemoryStore(registry=registry) as store:

        async def body(ctx: WorkflowContext[Deps]) -> Any:
            return await ctx.step("weigh", lambda: Parcel(1.5), key="weigh", type=Parcel)

        assert await workflow.run(body, workflow_id="s-1", store=store) == Ok(Parcel(1.5))
        assert (await store.load("s-1")).steps["weigh"].result == Ok(Parcel(1.5))

        async def wrong(ctx: WorkflowContext[Deps]) -> Any:
            return await ctx.step("weigh", lambda: "heavy", key="weigh", type=Parcel)

        result = await workflow.run(wrong, workflow_id="s-2", store=store)
        assert isinstance(result, Err)
        assert isinstance(result.error, SerializationError)
        assert "type=Parcel" in result.error.reason


async def test_workflow_mismatch_is_an_error(store: Any) -> None:
    async def body(ctx: WorkflowContext[Deps]) -> int:
        return await ctx.step("one", lambda: 1, key="one")

    await create_workflow("order").run(body, workflow_id="shared", store=store)
    result = await create_workflow("refund").run(body, workflow_id="shared", store=store)
    assert result == Err(WorkflowMismatchError("shared", "order", "refund"))


async def test_corrupt_snapshot_is_reported_and_left_alone() -> None:
    async with MemoryStore() as store:

        async def body(ctx: WorkflowContext[Deps]) -> int:
            return await ctx.step("one", lambda: 1, key="one")

        workflow = create_workflow("order")
        await workflow.run(body, workflow_id="bad", store=store)
        store._steps["bad"]["one"] = "{not json"
        result = await workflow.run(body, workflow_id="bad", store=store)
        assert isinstance(result, Err)
        assert isinstance(result.error, SnapshotDecodeError)
        assert result.error.run_id == "bad"
        assert store._steps["bad"]["one"] == "{not json"


class FlakyStore(MemoryStore):
    """A memory store whose checkpoints fail while ``down`` is set, like a lost server."""

    down = False

    async def checkpoint(self, id: str, step: EncodedStep, *, owner: str | None = None) -> None:
        if self.down:
            raise ConnectionError("server closed the connection")
        await super().checkpoint(id, step, owner=owner)


async def test_a_failing_store_ends_the_run_with_store_error_and_recovers() -> None:
    effects = Effects()
    workflow = create_workflow("order")
    async with FlakyStore() as store:

        async def body(ctx: WorkflowContext[Deps]) -> list[str]:
            first = await ctx.step("first", lambda: effects.do("first"), key="first")
            store.down = True
            second = await ctx.step("second", lambda: effects.do("second"), key="second")
            return [first, second]

        result = await workflow.run(body, workflow_id="f-1", store=store)
        assert isinstance(result, Err)
        assert isinstance(result.error, StoreError)
        assert result.error.operation == "checkpoint"
        assert "server closed the connection" in result.error.reason
        snapshot = await store.load("f-1")
        assert set(snapshot.steps) == {"first"}

        store.down = False

        async def resume(ctx: WorkflowContext[Deps]) -> list[str]:
            first = await ctx.step("first", lambda: effects.do("first"), key="first")
            second = await ctx.step("second", lambda: effects.do("second"), key="second")
            return [first, second]

        assert await workflow.run(resume, workflow_id="f-1", store=store) == Ok(
            ["first-done", "second-done"]
        )
        assert effects.counts == {"first": 1, "second": 2}


class PlainStore:
    """A user's store with only the five protocol methods, keeping whole snapshots."""

    def __init__(self) -> None:
        self.saved: dict[str, WorkflowSnapshot] = {}
        self.saves = 0

    async def save(
        self,
        id: str,
        snapshot: WorkflowSnapshot,
        *,
        ttl: Any = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        await anyio.lowlevel.checkpoint()
        self.saves += 1
        self.saved[id] = snapshot

    async def load(self, id: str) -> WorkflowSnapshot | None:
        await anyio.lowlevel.checkpoint()
        return self.saved.get(id)

    async def delete(self, id: str) -> bool:
        return self.saved.pop(id, None) is not None

    async def list(self, **options: Any) -> SnapshotPage:
        return SnapshotPage([s.info() for s in self.saved.values()])

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> PlainStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def test_a_store_with_only_the_basic_methods_gets_whole_snapshot_saves() -> None:
    store = PlainStore()
    assert isinstance(store, SnapshotStore)
    effects = Effects()
    workflow = create_workflow("order")

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        async def item(n: int) -> None:
            await ctx.step(f"item-{n}", lambda: effects.do(f"item-{n}"), key=f"i{n}")

        async with anyio.create_task_group() as tg:
            for n in range(10):
                tg.start_soon(item, n)
        return "packed"

    assert await workflow.run(body, workflow_id="p-1", store=store) == Ok("packed")
    snapshot = store.saved["p-1"]
    assert snapshot.status == "completed"
    assert set(snapshot.steps) == {f"i{n}" for n in range(10)}
    assert await workflow.run(body, workflow_id="p-1", store=store) == Ok("packed")
    assert all(count == 1 for count in effects.counts.values())


async def test_seed_collector_pattern_saves_and_resumes(store: Any) -> None:
    effects = Effects()
    collector = create_resume_state_collector()
    workflow = create_workflow("workflow", on_event=collector.handle_event)

    async def body(ctx: WorkflowContext[Deps]) -> str:
        user = await ctx.step("fetchUser", lambda: effects.do("fetchUser", "ada"), key="user:1")
        return f"hello {user}"

    assert await workflow.run(body, workflow_id="run-123") == Ok("hello ada")
    await store.save("run-123", collector.get_resume_state())
    saved = await store.load("run-123")
    assert saved.steps["user:1"].result == Ok("ada")
    assert await workflow.run(body, resume_state=saved) == Ok("hello ada")
    assert effects.counts == {"fetchUser": 1}


async def test_durable_options_need_a_store_and_exclude_resume_state() -> None:
    workflow = create_workflow("order")

    async def body(ctx: WorkflowContext[Deps]) -> None:
        return None

    with pytest.raises(ValueError, match="need a store"):
        await workflow.run(body, ttl=5)
    with pytest.raises(ValueError, match="not both"):
        await workflow.run(body, store=MemoryStore(), resume_state=WorkflowSnapshot("order", "x"))
    with pytest.raises(ValueError, match="ttl must be a positive number"):
        await workflow.run(body, store=MemoryStore(), failure_ttl=-1)
    with pytest.raises(TypeError, match="store must implement SnapshotStore"):
        await workflow.run(body, store=object())  # type: ignore[arg-type]


async def test_default_lease_owners_are_unique_and_name_the_host_and_process() -> None:
    import os
    import socket

    from awaitly_anyio._durable import default_owner

    owners = [default_owner() for _ in range(1000)]
    assert len(set(owners)) == len(owners)
    prefix = f"{socket.gethostname()}:{os.getpid()}:"
    assert all(owner.startswith(prefix) and len(owner) > len(prefix) for owner in owners)


async def test_a_run_held_elsewhere_names_its_default_owner() -> None:
    import os
    import socket

    from awaitly_anyio import RunInProgressError

    workflow = create_workflow("orders")
    inside, release = anyio.Event(), anyio.Event()

    async def body(ctx: WorkflowContext[Deps]) -> str:
        inside.set()
        await release.wait()
        return "done"

    async with MemoryStore() as store, anyio.create_task_group() as tg:
        tg.start_soon(lambda: workflow.run(body, workflow_id="order-1", store=store))
        await inside.wait()
        second = await workflow.run(body, workflow_id="order-1", store=store)
        release.set()
    assert isinstance(second, Err)
    assert isinstance(second.error, RunInProgressError)
    assert second.error.owner.startswith(f"{socket.gethostname()}:{os.getpid()}:")


async def test_the_durable_layer_fills_the_cores_slot() -> None:
    from awaitly_anyio import _durable, _session

    assert _session.open_session() is _durable.open_session
