"""Run control in the durable session (issue 20): the library's own metadata keys, input
conflicts, and a cancel requested from outside the worker.

- The library's keys in a run's metadata start with ``awaitly.``; user metadata may not
  use the prefix, and a user key ``input`` is the user's.  A run stored by an earlier
  release (its input under ``input``) still resumes with its input.
- Starting an existing run with another input returns ``Err(InputConflictError)`` and
  writes nothing; the same input (or none) resumes it / returns its result.
- ``store.cancel(id)`` while a worker runs ``id``: the worker stops the body, records
  the run ``cancelled`` and returns ``Err(RunStateError(id, "cancelled", "continue"))``;
  from the store's push (or at the latest the next lease renewal).  Real processes at
  the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from awaitly_anyio import (
    Deps,
    Err,
    InputConflictError,
    Ok,
    RunStateError,
    WorkflowContext,
    create_workflow,
    register_type,
)
from awaitly_anyio._clock import SystemClock
from awaitly_anyio._input import (
    INPUT_KEY,
    input_conflict,
    metadata_with_input,
    stored_input,
)
from awaitly_anyio._store import ClaimOutcome
from awaitly_anyio.events import WorkflowEvent
from awaitly_anyio.serialization import TypeRegistry, default_registry, dumps, encode_value
from awaitly_anyio.testing import FakeClock

from .kit_base import StoreKit
from .postgres_kit import DSN, POSTGRES, schema_for
from .redis_kit import REDIS, prefix_for
from .redis_kit import URL as REDIS_URL
from .store_kits import KITS, SQLITE, kit_ids

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).parent.parent

# The store front checks the input inside its claim once it knows the outcome
# "conflict" (task "local" adds it); a leased store before that cannot refuse a
# restart of a run that is not completed without a second read.
CLAIM_CHECKS_INPUT = "conflict" in typing.get_args(ClaimOutcome)
needs_claim_check = pytest.mark.skipif(
    not CLAIM_CHECKS_INPUT, reason="the store front does not check the input in its claim yet"
)


@attrs.frozen
class Opened:
    kit: StoreKit
    store: Any


@pytest.fixture(params=KITS, ids=kit_ids())
async def opened(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Opened]:
    kit: StoreKit = request.param
    async with kit.open(tmp_path, clock) as store:
        yield Opened(kit, store)


@register_type
@attrs.frozen
class Order:
    id: str
    cents: int


# ---- the library's keys ------------------------------------------------------------------


async def test_library_keys_are_prefixed_and_a_user_input_key_stays_the_users(
    opened: Opened, clock: FakeClock
) -> None:
    store = opened.store
    seen: list[Any] = []
    fail = [True]
    workflow = create_workflow("orders", clock=clock)

    async def body(ctx: WorkflowContext[Deps, Any]) -> str:
        seen.append(ctx.input)
        if fail.pop() if fail else False:
            return await ctx.step("pay", lambda: Err("DECLINED"), key="pay")
        return "done"

    first = await workflow.run(
        body,
        workflow_id="o-1",
        store=store,
        input={"n": 1},
        metadata={"input": "the user's", "customer": "ada"},
    )
    assert first == Err("DECLINED")
    saved = await store.load("o-1")
    assert saved.metadata["input"] == "the user's"
    assert saved.metadata["customer"] == "ada"
    assert saved.metadata[INPUT_KEY] == {"n": 1}
    assert saved.metadata["awaitly.error"] == "'DECLINED'"
    assert "awaitly.last_attempt" in saved.metadata
    assert "error" not in saved.metadata

    # Resumed without input: the stored input, not the user's "input" entry.
    assert await workflow.run(body, workflow_id="o-1", store=store) == Ok("done")
    assert seen == [{"n": 1}, {"n": 1}]


async def test_a_user_input_key_without_an_input_is_never_taken_for_the_input(
    opened: Opened, clock: FakeClock
) -> None:
    store = opened.store
    seen: list[Any] = []
    fail = [True]
    workflow = create_workflow("orders", clock=clock)

    async def body(ctx: WorkflowContext[Deps, Any]) -> str:
        seen.append(ctx.input)
        if fail.pop() if fail else False:
            return await ctx.step("pay", lambda: Err("DECLINED"), key="pay")
        return "done"

    assert await workflow.run(
        body, workflow_id="o-2", store=store, metadata={"input": "mine"}
    ) == Err("DECLINED")
    assert await workflow.run(body, workflow_id="o-2", store=store) == Ok("done")
    assert seen == [None, None]
    saved = await store.load("o-2")
    assert saved.metadata["input"] == "mine"
    assert saved.metadata[INPUT_KEY] is None


@pytest.mark.parametrize("key", ["awaitly.input", "awaitly.", "awaitly.anything"])
async def test_user_metadata_with_the_library_prefix_is_refused(
    opened: Opened, clock: FakeClock, key: str
) -> None:
    workflow = create_workflow("orders", clock=clock)

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return "done"

    # Refused when run() is called, before anything is awaited (no coroutine is made).
    bad: list[Any] = [{key: 1, "a": 2}, {1: "x"}, [("a", 1)]]
    with pytest.raises(ValueError, match=f"metadata key {key!r} is reserved"):
        _ = workflow.run(body, workflow_id="o-3", store=opened.store, metadata=bad[0])
    with pytest.raises(TypeError, match="metadata keys must be strings"):
        _ = workflow.run(body, workflow_id="o-3", store=opened.store, metadata=bad[1])
    with pytest.raises(TypeError, match="metadata must be a mapping"):
        _ = workflow.run(body, workflow_id="o-3", store=opened.store, metadata=bad[2])
    assert await opened.store.load("o-3") is None


async def test_a_run_stored_with_the_old_input_key_resumes_with_its_input(
    opened: Opened, clock: FakeClock
) -> None:
    store = opened.store
    # A run of an earlier release: its input under "input", its worker gone.
    await store.claim("old-1", "orders", owner="dead", lease=10, metadata={"input": {"n": 7}})
    clock.advance(11)
    seen: list[Any] = []
    workflow = create_workflow("orders", clock=clock)

    async def body(ctx: WorkflowContext[Deps, Any]) -> str:
        seen.append(ctx.input)
        return "done"

    assert await workflow.run(body, workflow_id="old-1", store=store) == Ok("done")
    assert seen == [{"n": 7}]
    # The same input again is no conflict; another one is.
    assert await workflow.run(body, workflow_id="old-1", store=store, input={"n": 7}) == Ok("done")
    assert await workflow.run(body, workflow_id="old-1", store=store, input={"n": 8}) == Err(
        InputConflictError("old-1", "orders")
    )


# ---- input conflicts -----------------------------------------------------------------------


async def test_a_completed_run_started_with_another_input_is_a_conflict(
    opened: Opened, clock: FakeClock
) -> None:
    store = opened.store
    calls: list[Any] = []
    workflow = create_workflow("orders", clock=clock)

    async def body(ctx: WorkflowContext[Deps, Any]) -> Any:
        calls.append(ctx.input)
        return {"paid": ctx.input}

    order = Order("o-9", 500)
    assert await workflow.run(body, workflow_id="c-1", store=store, input=order) == Ok(
        {"paid": order}
    )
    before = await opened.kit.raw(store, "c-1")
    other = await workflow.run(body, workflow_id="c-1", store=store, input=Order("o-9", 501))
    assert other == Err(InputConflictError("c-1", "orders"))
    assert "different input" in str(other.error)
    assert "501" not in str(other.error)  # never the input itself
    assert await opened.kit.raw(store, "c-1") == before
    # The same input (an equal value) or none: its result, nothing run again.
    assert await workflow.run(body, workflow_id="c-1", store=store, input=Order("o-9", 500)) == Ok(
        {"paid": order}
    )
    assert await workflow.run(body, workflow_id="c-1", store=store) == Ok({"paid": order})
    assert calls == [order]


async def test_equal_inputs_with_unordered_stored_forms_are_no_conflict(
    opened: Opened, clock: FakeClock
) -> None:
    workflow = create_workflow("orders", clock=clock)

    async def body(ctx: WorkflowContext[Deps, Any]) -> int:
        return len(ctx.input)

    items = {f"item-{n}" for n in range(50)}
    assert await workflow.run(body, workflow_id="s-1", store=opened.store, input=items) == Ok(50)
    again = set(sorted(items, reverse=True))
    assert await workflow.run(body, workflow_id="s-1", store=opened.store, input=again) == Ok(50)


@needs_claim_check
async def test_a_failed_run_started_with_another_input_is_a_conflict_and_nothing_is_written(
    opened: Opened, clock: FakeClock
) -> None:
    store = opened.store
    workflow = create_workflow("orders", clock=clock)
    runs: list[Any] = []

    async def body(ctx: WorkflowContext[Deps, Any]) -> Any:
        runs.append(ctx.input)
        return await ctx.step("pay", lambda: Err("DECLINED"), key="pay")

    assert await workflow.run(body, workflow_id="f-1", store=store, input=1) == Err("DECLINED")
    before = await opened.kit.raw(store, "f-1")
    clock.advance(5)
    assert await workflow.run(body, workflow_id="f-1", store=store, input=2) == Err(
        InputConflictError("f-1", "orders")
    )
    assert await opened.kit.raw(store, "f-1") == before
    assert runs == [1]


@needs_claim_check
async def test_a_run_held_elsewhere_with_another_input_is_a_conflict_not_in_progress(
    opened: Opened, clock: FakeClock
) -> None:
    store = opened.store
    await store.claim(
        "h-1", "orders", owner="other", lease=60, metadata=metadata_with_input(None, "a")
    )
    workflow = create_workflow("orders", clock=clock)

    async def body(ctx: WorkflowContext[Deps, Any]) -> str:
        return "done"

    assert await workflow.run(body, workflow_id="h-1", store=store, input="b") == Err(
        InputConflictError("h-1", "orders")
    )


@needs_claim_check
async def test_an_input_for_a_run_stored_without_one_is_a_conflict(
    opened: Opened, clock: FakeClock
) -> None:
    store = opened.store
    workflow = create_workflow("orders", clock=clock)

    async def body(ctx: WorkflowContext[Deps, Any]) -> Any:
        return await ctx.step("pay", lambda: Err("DECLINED"), key="pay")

    assert await workflow.run(body, workflow_id="n-1", store=store) == Err("DECLINED")
    assert await workflow.run(body, workflow_id="n-1", store=store, input="x") == Err(
        InputConflictError("n-1", "orders")
    )


class _SnapshotsOnly:
    """A store with only the five basic methods (a third-party store without leases):
    the durable session loads and saves whole snapshots."""

    def __init__(self) -> None:
        self.saved: dict[str, Any] = {}

    async def save(self, id: str, snapshot: Any, *, ttl: Any = None, metadata: Any = None) -> None:
        self.saved[id] = snapshot

    async def load(self, id: str) -> Any:
        return self.saved.get(id)

    async def delete(self, id: str) -> bool:
        return self.saved.pop(id, None) is not None

    async def list(self, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> _SnapshotsOnly:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass


async def test_a_store_without_leases_refuses_another_input_too(clock: FakeClock) -> None:
    store: Any = _SnapshotsOnly()
    workflow = create_workflow("orders", clock=clock)
    fail = [True]

    async def body(ctx: WorkflowContext[Deps, Any]) -> Any:
        if fail.pop() if fail else False:
            return await ctx.step("pay", lambda: Err("DECLINED"), key="pay")
        return ctx.input

    assert await workflow.run(body, workflow_id="p-1", store=store, input=1) == Err("DECLINED")
    saved = store.saved["p-1"]
    assert await workflow.run(body, workflow_id="p-1", store=store, input=2) == Err(
        InputConflictError("p-1", "orders")
    )
    assert store.saved["p-1"] is saved  # nothing written
    assert await workflow.run(body, workflow_id="p-1", store=store) == Ok(1)
    assert await workflow.run(body, workflow_id="p-1", store=store, input=2) == Err(
        InputConflictError("p-1", "orders")
    )


def test_input_conflict_reads_the_stored_json() -> None:
    registry = TypeRegistry()
    registry.register(Order)

    def stored(metadata: dict[str, Any]) -> str:
        return dumps(encode_value(metadata, registry))

    given = metadata_with_input({"customer": "ada"}, Order("a", 1))
    assert given is not None
    assert not input_conflict(stored({INPUT_KEY: Order("a", 1)}), given, registry)
    assert input_conflict(stored({INPUT_KEY: Order("a", 2)}), given, registry)
    assert input_conflict(stored({}), given, registry)  # stored without an input
    assert not input_conflict(stored({"input": Order("a", 1)}), given, registry)  # old key
    assert input_conflict(stored({"input": Order("a", 2)}), given, registry)
    # The new key wins over the old one, even when it says "no input".
    assert input_conflict(stored({INPUT_KEY: None, "input": Order("a", 1)}), given, registry)
    # No input given: never a conflict, nothing parsed.
    assert not input_conflict("not json", None, registry)
    assert not input_conflict("not json", {"customer": "ada"}, registry)
    assert not input_conflict(stored({INPUT_KEY: 1}), metadata_with_input(None, None), registry)
    # Damaged stored metadata is the claim's to report.
    assert not input_conflict("[1, 2", given, registry)
    assert not input_conflict(
        '{"awaitly.input": {"$t": "obj", "n": "nope", "v": {}}}', given, registry
    )
    assert stored_input({"input": 3}) == 3
    assert stored_input({INPUT_KEY: None, "input": 3}) is None
    assert default_registry is not registry


# ---- cancel from outside -------------------------------------------------------------------


class _Watched:
    """Counts the lease renewals of a store's runs (instrumentation around the real
    store, as in test_leases: the store itself answers)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.renewals = 0
        self.renewed = anyio.Event()
        self._real = store.renew

        async def renew(id: str, *, owner: str, lease: float) -> bool:
            held: bool = await self._real(id, owner=owner, lease=lease)
            self.renewals += 1
            self.renewed.set()
            return held

        store.renew = renew

    def restore(self) -> None:
        del self.store.renew


async def _run_and_cancel(
    store: Any, clock: FakeClock, run_id: str, lease: float, after_renewal: bool
) -> tuple[Any, list[str], _Watched]:
    """Start run ``run_id`` whose second step waits forever; once it waits (and, with
    ``after_renewal``, its lease was renewed once), cancel it through the store."""
    workflow = create_workflow("orders", clock=clock)
    done: list[str] = []
    waiting = anyio.Event()
    watched = _Watched(store)

    async def forever() -> str:
        waiting.set()
        await anyio.sleep_forever()
        done.append("long")  # pragma: no cover - never reached
        return "never"

    async def body(ctx: WorkflowContext[Deps]) -> str:
        done.append(await ctx.step("before", lambda: "before", key="before"))
        return await ctx.step("long", forever, key="long")

    outcome: list[Any] = []

    async def run() -> None:
        outcome.append(await workflow.run(body, workflow_id=run_id, store=store, lease=lease))

    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await waiting.wait()
                if after_renewal:
                    await watched.renewed.wait()
                assert await store.cancel(run_id) == "running"
    finally:
        watched.restore()
    return outcome[0], done, watched


async def test_a_cancel_request_stops_the_run_and_records_it_cancelled(
    opened: Opened, clock: FakeClock
) -> None:
    store = opened.store
    result, done, _ = await _run_and_cancel(store, clock, "x-1", 0.3, after_renewal=False)
    assert result == Err(RunStateError("x-1", "cancelled", "continue"))
    assert done == ["before"]
    saved = await store.load("x-1")
    assert saved.status == "cancelled"
    assert sorted(saved.steps) == ["before"]  # the long step never completed
    info = await store.info("x-1")
    assert info.lease_owner is None  # released by the end write
    # It is not recovered, and cannot be cancelled again.
    assert await store.claim_expired(owner="w", lease=10) == []
    with pytest.raises(RunStateError):
        await store.cancel("x-1")


async def test_a_pushed_cancel_request_stops_the_run_without_waiting_for_a_renewal(
    opened: Opened, clock: FakeClock
) -> None:
    # A lease of 0.6 s: renewed every 0.2 s.  Once it was renewed, the keeper watches the
    # store's pushes; the cancel (from this process: every store wakes its own watchers)
    # stops the run with no further renewal, which would have said it too.
    result, done, watched = await _run_and_cancel(
        opened.store, clock, "x-2", 0.6, after_renewal=True
    )
    assert result == Err(RunStateError("x-2", "cancelled", "continue"))
    assert watched.renewals == 1
    assert done == ["before"]
    assert (await opened.store.load("x-2")).status == "cancelled"


async def test_a_cancel_of_a_run_held_by_a_long_lease_is_pushed_from_the_start(
    opened: Opened, clock: FakeClock
) -> None:
    if not hasattr(opened.store, "on_push"):
        pytest.skip("the store front has no on_push hook yet (the keeper watches from lease/3)")
    result, done, watched = await _run_and_cancel(
        opened.store, clock, "x-3", 600.0, after_renewal=False
    )
    assert result == Err(RunStateError("x-3", "cancelled", "continue"))
    assert watched.renewals == 0
    assert done == ["before"]


async def test_a_run_waiting_for_a_message_is_cancelled_not_left_waiting(
    opened: Opened, clock: FakeClock
) -> None:
    store = opened.store
    waiting = anyio.Event()

    def on_event(event: WorkflowEvent) -> None:
        if event.type == "step_waiting":
            waiting.set()

    workflow = create_workflow("orders", clock=clock, on_event=on_event)

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        await ctx.step("before", lambda: "before", key="before")
        return await ctx.step.wait_for("approval", key="approved")

    outcome: list[Any] = []

    async def run() -> None:
        outcome.append(await workflow.run(body, workflow_id="w-1", store=store, lease=0.3))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await waiting.wait()
            assert await store.cancel("w-1") in ("running", "waiting")
    assert outcome == [Err(RunStateError("w-1", "cancelled", "continue"))]
    saved = await store.load("w-1")
    assert saved.status == "cancelled"
    assert sorted(saved.steps) == ["before"]
    assert (await store.list(status="waiting")).items == []


class _Reads:
    """Counts ``store.info`` calls (instrumentation around the real store, like
    `_Watched`): the lease keeper's look at its run."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.count = 0
        real = store.info

        async def info(id: str) -> Any:
            self.count += 1
            return await real(id)

        store.info = info

    def restore(self) -> None:
        del self.store.info


async def test_a_send_to_a_running_run_does_not_make_its_keeper_read_it(
    opened: Opened, clock: FakeClock
) -> None:
    store = opened.store
    waiting, received, hold = anyio.Event(), anyio.Event(), anyio.Event()

    def on_event(event: WorkflowEvent) -> None:
        if event.type == "step_waiting":
            waiting.set()

    workflow = create_workflow("orders", clock=clock, on_event=on_event)

    async def held() -> str:
        received.set()
        await hold.wait()
        return "held"

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        value = await ctx.step.wait_for("approval", key="approved")
        await ctx.step("held", held, key="held")
        return value

    # A sentinel run, cancelled after the send: where the store pushes (PostgreSQL,
    # Redis), its pushed cancel comes after the send's push on the one channel, so
    # once it came the send's push has been handed out too.
    await store.claim("sentinel", "orders", owner="elsewhere", lease=600.0)
    sentinel: list[int] = []
    sentinel_seen = anyio.Event()
    pushes = 2 if opened.kit.name in ("postgres", "redis") else 1  # local wake (+ push)

    def on_sentinel() -> None:
        sentinel.append(1)
        if len(sentinel) >= pushes:
            sentinel_seen.set()

    unhook = store.on_push("sentinel", on_sentinel)
    outcome: list[Any] = []

    async def run() -> None:
        # A long lease: no renewal (which would read the run if refused) in the test.
        outcome.append(await workflow.run(body, workflow_id="s-1", store=store, lease=600.0))

    reads = _Reads(store)
    try:
        with anyio.fail_after(60):  # a bound on pushes, not a timing
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await waiting.wait()
                await store.send("s-1", "approved", "yes")
                await received.wait()
                assert await store.cancel("sentinel") == "running"
                await sentinel_seen.wait()
                hold.set()
    finally:
        reads.restore()
        unhook()
    assert outcome == [Ok("yes")]
    assert reads.count == 0  # neither the local wake nor the push reached the keeper


async def test_a_run_that_ends_before_the_cancel_keeps_its_end(
    opened: Opened, clock: FakeClock
) -> None:
    store = opened.store
    workflow = create_workflow("orders", clock=clock)

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.step("only", lambda: "v", key="only")

    assert await workflow.run(body, workflow_id="e-1", store=store, lease=0.3) == Ok("v")
    with pytest.raises(RunStateError) as refused:
        await store.cancel("e-1")
    assert refused.value == RunStateError("e-1", "completed", "cancel")
    assert (await store.load("e-1")).status == "completed"


# ---- real processes --------------------------------------------------------------------------

# The worker: runs "worker-run" whose step "long" waits forever after step "before";
# prints READY once "before" is recorded, then the Result when the run returns.
# argv: URL OPTIONS_JSON LEASE BACKEND.
WORKER = """
import json, sys
import anyio
from awaitly_anyio import Deps, WorkflowContext, create_workflow, open_store

async def main(url, options, lease):
    workflow = create_workflow("orders")

    async def long():
        print("READY", flush=True)
        await anyio.sleep_forever()
        print("LONG DONE", flush=True)

    async def body(ctx: WorkflowContext[Deps]):
        await ctx.step("before", lambda: "before", key="before")
        await ctx.step("long", long, key="long")
        return "finished"

    async with open_store(url, **options) as store:
        result = await workflow.run(body, workflow_id="worker-run", store=store, lease=lease)
    print("RESULT", repr(result), flush=True)

anyio.run(main, sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), backend=sys.argv[4])
"""

PROCESS_KITS = {"sqlite": SQLITE, "postgres": POSTGRES, "redis": REDIS}


def _target(kind: str, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.db'}", {"synchronous": "NORMAL"}
    if kind == "postgres":
        return DSN, {"schema": schema_for(tmp_path)}
    return REDIS_URL, {"prefix": prefix_for(tmp_path)}


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "redis"])
async def test_a_cancel_from_another_process_stops_the_worker_running_the_run(
    tmp_path: Path, kind: str, anyio_backend: str
) -> None:
    # SQLite cannot push to another process: its worker learns at its next renewal
    # (a lease of 1.5 s: every 0.5 s).  PostgreSQL and Redis push the request.
    lease = 1.5 if kind == "sqlite" else 3.0
    child_backend = "trio" if anyio_backend == "asyncio" else "asyncio"
    url, options = _target(kind, tmp_path)
    async with PROCESS_KITS[kind].open(tmp_path, SystemClock()) as store:  # type: ignore[arg-type]
        command = [sys.executable, "-c", WORKER, url, json.dumps(options), str(lease)]
        async with await anyio.open_process(
            [*command, child_backend],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as child:
            assert child.stdout is not None
            assert child.stderr is not None
            out = BufferedByteReceiveStream(child.stdout)
            with anyio.fail_after(120):
                try:
                    ready = await out.receive_until(b"\n", 1 << 16)
                except anyio.IncompleteRead:
                    errors = b"".join([chunk async for chunk in child.stderr])
                    raise AssertionError(errors.decode(errors="replace")) from None
                assert ready == b"READY"
                assert await store.cancel("worker-run") == "running"
                said = (await out.receive_until(b"\n", 1 << 16)).decode()
                errors = b"".join([chunk async for chunk in child.stderr])
                assert await child.wait() == 0, errors.decode(errors="replace")
        assert said == (
            "RESULT Err(RunStateError(run_id='worker-run', status='cancelled', action='continue'))"
        )
        saved = await store.load("worker-run")
        assert saved is not None
        assert saved.status == "cancelled"
        assert sorted(saved.steps) == ["before"]
