"""The store contract: the tests every store passes, for `awaitly_anyio.testing.check_store`.

Imported only by ``check_store`` (it needs pytest).  Each test is a method of
`StoreContract`; ``check_store`` makes a subclass bound to one store's `StoreKit`.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeVar
from uuid import UUID

import anyio
import anyio.lowlevel
import attrs
import pytest

from ._errors import (
    AlreadyDeliveredError,
    LeaseLostError,
    RunFinishedError,
    SerializationError,
    SnapshotDecodeError,
    StepTimeoutError,
    UnexpectedError,
)
from ._result import Err, Ok
from ._resume import StepRecord
from ._rows import MAX_MESSAGE_BYTES
from ._snapshot import WorkflowSnapshot
from ._store import CheckpointStore, Claim, EncodedStep, LeaseStore, MailboxStore, SnapshotStore
from .serialization import default_registry, encode_step_record, register_type


class FakeClock(Protocol):
    """The clock the contract's tests drive (`awaitly_anyio.testing.FakeClock`)."""

    def time(self) -> float: ...

    def advance(self, seconds: float) -> None: ...


__all__ = ["Damage", "StoreContract", "StoreKit", "make_contract"]

Damage = Literal[
    "step",
    "metadata",
    "format",
    "newer",
    "deep",
    "created_at",
    "workflow_name",
    "wrong_type",
]
"""Which part of a stored run to corrupt (see ``check_store``)."""

_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")


async def _cannot_damage(store: Any, run_id: str, part: Damage) -> None:  # pragma: no cover
    raise AssertionError("this store's kit damages nothing")


async def _nothing_raw(store: Any, run_id: str) -> Any:  # pragma: no cover
    raise AssertionError("this store's kit reads no raw rows")


@attrs.frozen
class StoreKit:
    """How the contract opens one kind of store, and damages its rows on purpose."""

    open: Callable[[Path, Any], contextlib.AbstractAsyncContextManager[Any]]
    new_clock: Callable[[], FakeClock]
    damage: Callable[[Any, str, Damage], Awaitable[None]] = _cannot_damage
    raw: Callable[[Any, str], Awaitable[Any]] = _nothing_raw
    damageable: frozenset[str] = frozenset()


T0 = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=timezone.utc)


@register_type(name="awaitly_anyio.contract.Point")
@attrs.frozen
class Point:
    """A user type the contract stores (registered in the default registry)."""

    x: int
    y: int


@register_type(name="awaitly_anyio.contract.Colour")
class Colour(enum.Enum):
    """A user enum the contract stores (registered in the default registry)."""

    RED = "red"
    BLUE = "blue"


def snapshot(id: str, *, steps: int = 2, **changes: Any) -> WorkflowSnapshot:
    records = {
        f"step-{n}": StepRecord(Ok(n), attempts=1, started_at=T0, finished_at=T0)
        for n in range(steps)
    }
    fields: dict[str, Any] = {
        "workflow_name": "orders",
        "workflow_id": id,
        "steps": records,
        "created_at": T0,
        "updated_at": T0,
    }
    fields.update(changes)
    return WorkflowSnapshot(**fields)


def encoded(key: str, value: Any) -> EncodedStep:
    """Step ``key``'s successful record, encoded as a durable run hands it to a store."""
    record = StepRecord(Ok(value), attempts=1, started_at=T0, finished_at=T0)
    return EncodedStep(key, record, encode_step_record(key, record, default_registry))


async def all_ids(store: SnapshotStore, **filters: Any) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = await store.list(cursor=cursor, limit=7, **filters)
        ids += [info.id for info in page]
        cursor = page.next_cursor
        if cursor is None:
            return ids


def _damaging(*parts: str) -> Callable[[_F], _F]:
    """Run the test once per kind of damage in ``parts`` the store's kit can do."""

    def mark(test: _F) -> _F:
        test.damage_parts = parts  # type: ignore[attr-defined]
        return test

    return mark


def _needs(*needs: type | str) -> Callable[[_F], _F]:
    """Skip the test for a store that is not each protocol of ``needs`` or lacks each
    method named there."""

    def mark(test: _F) -> _F:
        test.store_needs = needs  # type: ignore[attr-defined]
        return test

    return mark


def _skip_unless(store: object, needs: Sequence[type | str]) -> None:
    for need in needs:
        if isinstance(need, str):
            if not callable(getattr(store, need, None)):
                pytest.skip(f"the store has no {need}()")
        elif not isinstance(store, need):
            pytest.skip(f"the store is not a {need.__name__}")


# ---- ids ---------------------------------------------------------------------------------

HOSTILE_IDS = [
    "'; DROP TABLE awaitly_runs; --",
    'say "hi"',
    "100%_off*?[a-z]\\",
    "ünïcødé 🚀 名前",
    "new\nline\ttab",
    "{$where: 'sleep(1)'}",
    "awaitly:run:key:*",
    " leading and trailing ",
    "x" * 10_240,
]


# ---- corrupt data ------------------------------------------------------------------------


# What each damage is reported as (a word of SnapshotDecodeError.reason).
PROBLEM = {
    "step": "step",
    "deep": "deep",
    "metadata": "metadata",
    "format": "99",
    "newer": "newer release",
    "created_at": "created_at",
    "workflow_name": "workflow name",
    "wrong_type": "not a hash",
}
ALL_DAMAGE = list(PROBLEM)
# Damage to the run row itself, which list() sees (it reads no step records or JSON).
ROW_DAMAGE = ["created_at", "workflow_name", "wrong_type", "newer"]


# ---- step order --------------------------------------------------------------------------

# Keys in an order that is neither sorted nor insertion-friendly to a hash table; enough of
# them that no store keeps them in a small, insertion-ordered structure by luck.
SCRAMBLED = [f"{word}-{(n * 7919) % 211:03d}" for n, word in enumerate(["zeta", "alpha"] * 75)]


# ---- damaged runs are never claimed, rewritten or recovered -------------------------------


async def _failed_run(store: LeaseStore, id: str) -> None:
    """A run that failed: two step records, its error stored, no lease."""
    await store.claim(id, "orders", owner="w0", lease=10, metadata={"input": 1})
    await store.checkpoint(id, encoded("a", 1), owner="w0")
    await store.checkpoint(id, encoded("b", 2), owner="w0")
    await store.finish(id, "failed", Err("declined"), '{"ok":false,"error":"declined"}', owner="w0")


def _with_step(key: str) -> WorkflowSnapshot:
    return WorkflowSnapshot("orders", "s", steps={key: StepRecord(Ok(1))})


# ---- waiting -----------------------------------------------------------------------------

MAILBOX: tuple[type | str, ...] = (
    LeaseStore,
    "send",
    "receive",
    "begin_wait",
    "next_send",
    "sends",
)
"""What the waiting tests need of a store (a `MailboxStore`'s methods)."""


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


async def receive_when_sent(
    store: MailboxStore,
    run_id: str,
    key: str,
    *,
    step: str,
    poll: float | None = None,
) -> Ok[Any]:
    """The loop a waiter runs: watch for sends to the run, then receive; if nothing is
    pending, wait for a send, bounded by ``poll`` (the store's ``poll_interval`` by
    default), and receive again.  The watch begins before the first look, so a value
    sent between a look and the wait wakes it; the bound catches a push that was
    missed (a dropped connection, a store that cannot push)."""
    interval = store.poll_interval if poll is None else poll
    with store.sends(run_id) as sends:
        while True:
            got = await store.receive(run_id, key, step=step, name=step)
            if got is not None:
                return got
            with anyio.move_on_after(interval):
                await sends.wait()


async def _cancelled_after(yields: int, call: Awaitable[_T]) -> _T | None:
    """Await ``call``, cancelled after the scheduler has run ``yields`` more times (before
    it starts for -1); what it returned, or ``None`` when the cancellation stopped it."""
    outcome: list[_T] = []

    async def run() -> None:
        outcome.append(await call)

    with anyio.CancelScope() as scope:
        if yields < 0:
            scope.cancel()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            for _ in range(yields):
                await anyio.lowlevel.checkpoint()
            if not outcome:
                scope.cancel()
    return outcome[0] if outcome else None


class StoreContract:
    """The contract's tests; ``check_store`` makes a subclass bound to one `StoreKit`.

    Every test gets a fresh store (the ``store`` fixture) whose clock is a
    `FakeClock` (``clock``); tests that need two stores over the same data open
    the kit twice in one folder.  Tests of `CheckpointStore`, `LeaseStore` or
    ``info`` are skipped for stores without them; tests of damaged rows run once
    per kind of damage the kit can do.
    """

    __test__ = False  # the subclasses check_store makes are collected, not this one
    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]
    kit: ClassVar[StoreKit]

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        parts = getattr(metafunc.function, "damage_parts", None)
        if parts is not None:
            usable = [part for part in parts if part in self.kit.damageable]
            metafunc.parametrize("part", usable)

    @pytest.fixture(name="kit")
    def _kit(self) -> StoreKit:
        return self.kit

    @pytest.fixture(name="clock")
    def _clock(self) -> FakeClock:
        return self.kit.new_clock()

    @pytest.fixture(name="store")
    async def _store(
        self, request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
    ) -> AsyncIterator[Any]:
        async with self.kit.open(tmp_path, clock) as opened:
            _skip_unless(opened, getattr(request.function, "store_needs", ()))
            yield opened

    # ---- save, load, delete ------------------------------------------------------------------

    async def test_every_kind_of_value_round_trips(
        self, store: SnapshotStore, clock: FakeClock
    ) -> None:
        values: dict[str, Any] = {
            "json": {"a": [1, 2.5, None, True, "x"]},
            "tuple": (1, (2, 3)),
            "set": frozenset({1, 2}),
            "bytes": b"\x00\xff",
            "datetime": T0,
            "date": date(2026, 1, 2),
            "delta": timedelta(seconds=90),
            "uuid": UUID("12345678-1234-5678-1234-567812345678"),
            "decimal": Decimal("10.05"),
            "point": Point(1, 2),
            "enum": Colour.BLUE,
            "huge float": 1e308,
            "tiny float": 1e-300,
            "infinity": float("-inf"),
            "nul in text": "a\x00b",
            "nul in a key": {"k\x00": "\x00"},
        }
        steps: dict[str, Any] = {
            key: StepRecord(Ok(value), attempts=2, started_at=T0, finished_at=T0)
            for key, value in values.items()
        }
        steps["typed error"] = StepRecord(Err(StepTimeoutError("charge", 2.5)))
        steps["string error"] = StepRecord(Err("card declined"))
        steps["bug"] = StepRecord(Err(UnexpectedError(KeyError("sku-1"))))
        saved = WorkflowSnapshot(
            workflow_name="orders",
            workflow_id="run-1",
            status="completed",
            steps=steps,
            result=Ok(Point(3, 4)),
            metadata={"tenant": "acme", "when": T0},
            created_at=T0,
            updated_at=T0,
        )
        await store.save("run-1", saved)
        loaded = await store.load("run-1")

        assert loaded is not None
        assert loaded.workflow_name == "orders"
        assert loaded.workflow_id == "run-1"
        assert loaded.status == "completed"
        assert loaded.result == Ok(Point(3, 4))
        assert dict(loaded.metadata) == {"tenant": "acme", "when": T0}
        assert loaded.created_at == T0
        assert loaded.updated_at.timestamp() == pytest.approx(clock.time())
        for key, value in values.items():
            found = loaded.steps[key].result
            assert found == Ok(value), key
            assert isinstance(found, Ok), key
            assert type(found.value) is type(value), key
            assert loaded.steps[key].attempts == 2
            assert loaded.steps[key].finished_at == T0
        assert loaded.steps["typed error"].result == Err(StepTimeoutError("charge", 2.5))
        assert loaded.steps["string error"].result == Err("card declined")
        bug = loaded.steps["bug"].result
        assert isinstance(bug, Err)
        assert isinstance(bug.error, UnexpectedError)
        cause: Any = bug.error.cause
        assert cause.type_name == "builtins.KeyError"
        assert "sku-1" in cause.message

    async def test_missing_runs_load_as_none_and_delete_as_false(
        self, store: SnapshotStore
    ) -> None:
        assert await store.load("nope") is None
        assert await store.delete("nope") is False

    async def test_save_replaces_the_whole_run(self, store: SnapshotStore) -> None:
        await store.save("r", snapshot("r", steps=3))
        await store.save("r", snapshot("r", steps=1, status="failed", result=Err("boom")))
        loaded = await store.load("r")
        assert loaded is not None
        assert list(loaded.steps) == ["step-0"]
        assert loaded.status == "failed"
        assert loaded.result == Err("boom")

    async def test_delete_removes_a_run_and_only_that_run(self, store: SnapshotStore) -> None:
        await store.save("a", snapshot("a"))
        await store.save("b", snapshot("b"))
        assert await store.delete("a") is True
        assert await store.load("a") is None
        assert await store.delete("a") is False
        assert await store.load("b") is not None
        assert await all_ids(store) == ["b"]

    async def test_metadata_is_merged_over_the_snapshots_own(self, store: SnapshotStore) -> None:
        await store.save(
            "m", snapshot("m", metadata={"a": 1, "b": 2}), metadata={"b": (3, 4), "c": T0}
        )
        loaded = await store.load("m")
        assert loaded is not None
        assert dict(loaded.metadata) == {"a": 1, "b": (3, 4), "c": T0}

    async def test_an_unstorable_value_fails_the_save_and_keeps_the_old_run(
        self,
        store: SnapshotStore,
    ) -> None:
        await store.save("r", snapshot("r", steps=1))
        bad = WorkflowSnapshot(
            workflow_name="orders",
            workflow_id="r",
            steps={"sock": Ok(object())},
            created_at=T0,
            updated_at=T0,
        )
        with pytest.raises(SerializationError) as caught:
            await store.save("r", bad)
        assert caught.value.step == "sock"
        assert "object" in caught.value.type_name
        loaded = await store.load("r")
        assert loaded is not None
        assert list(loaded.steps) == ["step-0"]
        with pytest.raises(SerializationError):
            await store.save("r", snapshot("r"), metadata={"lock": anyio.Lock()})

    async def test_large_values_and_many_steps_round_trip(self, store: SnapshotStore) -> None:
        big = "x" * 5_000_000
        many: dict[str, Ok[object]] = {f"k{n:05d}": Ok(n) for n in range(5_000)}
        many["big"] = Ok(big)
        await store.save(
            "big",
            WorkflowSnapshot(
                workflow_name="orders", workflow_id="big", steps=many, created_at=T0, updated_at=T0
            ),
        )
        loaded = await store.load("big")
        assert loaded is not None
        assert len(loaded.steps) == 5_001
        assert loaded.steps["big"].result == Ok(big)
        assert loaded.steps["k04999"].result == Ok(4999)

    @pytest.mark.parametrize("run_id", HOSTILE_IDS, ids=[f"id{n}" for n in range(len(HOSTILE_IDS))])
    async def test_hostile_ids_are_only_ever_data(self, store: SnapshotStore, run_id: str) -> None:
        await store.save("bystander", snapshot("bystander"))
        await store.save(run_id, snapshot(run_id))
        loaded = await store.load(run_id)
        assert loaded is not None
        assert loaded.workflow_id == run_id
        assert sorted(await all_ids(store)) == sorted(["bystander", run_id])
        assert await all_ids(store, prefix=run_id[:5]) == [run_id]
        assert await store.delete(run_id) is True
        assert await all_ids(store) == ["bystander"]

    @pytest.mark.parametrize("bad", ["", "a\x00b", "\ud800", None, 42])
    async def test_invalid_ids_are_refused_before_anything_is_written(
        self, store: SnapshotStore, bad: Any
    ) -> None:
        with pytest.raises(ValueError, match="run id"):
            await store.save(bad, snapshot("x"))
        with pytest.raises(ValueError, match="run id"):
            await store.load(bad)
        with pytest.raises(ValueError, match="run id"):
            await store.delete(bad)
        assert await all_ids(store) == []

    # ---- list --------------------------------------------------------------------------------

    async def test_list_pages_newest_first_without_gaps_or_repeats(
        self, store: SnapshotStore, clock: FakeClock
    ) -> None:
        for n in range(12):
            await store.save(f"run-{n:02d}", snapshot(f"run-{n:02d}"))
            clock.advance(1)
        # Ten more saved in the same instant: ties are ordered by id.
        for n in range(12, 22):
            await store.save(f"run-{n:02d}", snapshot(f"run-{n:02d}"))
        ids = await all_ids(store)
        assert ids == [f"run-{n:02d}" for n in range(21, -1, -1)]
        first = await store.list(limit=5)
        assert [info.id for info in first] == ids[:5]
        assert first.items[0].updated_at >= first.items[-1].updated_at
        last = await store.list(limit=22)
        assert len(last) == 22
        assert last.next_cursor is None

    async def test_list_filters_by_prefix_and_status(self, store: SnapshotStore) -> None:
        await store.save("order-1", snapshot("order-1", status="completed", result=Ok(1)))
        await store.save("order-2", snapshot("order-2"))
        await store.save("order_3", snapshot("order_3"))
        await store.save("orderX", snapshot("orderX"))
        await store.save("refund-1", snapshot("refund-1", status="failed", result=Err("x")))
        assert sorted(await all_ids(store, prefix="order-")) == ["order-1", "order-2"]
        assert await all_ids(store, prefix="order_") == ["order_3"]
        assert await all_ids(store, prefix="order%") == []
        assert await all_ids(store, status="failed") == ["refund-1"]
        assert await all_ids(store, prefix="order", status="completed") == ["order-1"]
        page = await store.list(prefix="refund")
        (info,) = page
        assert info.workflow_name == "orders"
        assert info.status == "failed"
        assert info.created_at == T0

    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            ({"limit": 0}, "limit"),
            ({"limit": 10_001}, "limit"),
            ({"limit": True}, "limit"),
            ({"status": "sleeping"}, "status"),
            ({"cursor": "not a cursor"}, "cursor"),
        ],
    )
    async def test_list_refuses_bad_arguments(
        self, store: SnapshotStore, arguments: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            await store.list(**arguments)

    # ---- ttl ---------------------------------------------------------------------------------

    async def test_expired_runs_are_never_returned(
        self, store: SnapshotStore, clock: FakeClock
    ) -> None:
        await store.save("short", snapshot("short"), ttl=10)
        await store.save("long", snapshot("long"), ttl=timedelta(hours=1))
        await store.save("forever", snapshot("forever"))
        short = await store.load("short")
        assert short is not None
        assert short.expires_at is not None
        assert short.expires_at.timestamp() == pytest.approx(clock.time() + 10)
        clock.advance(10)
        assert await store.load("short") is None
        assert sorted(await all_ids(store)) == ["forever", "long"]
        assert await store.delete("short") is False
        clock.advance(3600)
        assert await all_ids(store) == ["forever"]
        # Saving again without a ttl makes a run permanent.
        await store.save("long", snapshot("long"))
        clock.advance(10**6)
        assert sorted(await all_ids(store)) == ["forever", "long"]

    @pytest.mark.parametrize("ttl", [0, -5, "60", True, timedelta(0)])
    async def test_bad_ttls_are_refused(self, store: SnapshotStore, ttl: Any) -> None:
        with pytest.raises(ValueError, match="ttl"):
            await store.save("t", snapshot("t"), ttl=ttl)
        assert await store.load("t") is None

    @_damaging(*ALL_DAMAGE)
    async def test_corrupt_runs_are_reported_with_their_id_and_spoil_nothing_else(
        self, kit: StoreKit, store: SnapshotStore, part: Any
    ) -> None:
        await store.save("healthy", snapshot("healthy"))
        await store.save("broken-7", snapshot("broken-7"))
        await kit.damage(store, "broken-7", part)
        with pytest.raises(SnapshotDecodeError) as caught:
            await store.load("broken-7")
        assert caught.value.run_id == "broken-7"
        assert "broken-7" in str(caught.value)
        assert PROBLEM[part] in caught.value.reason
        assert await store.load("healthy") is not None
        assert sorted(await all_ids(store)) == ["broken-7", "healthy"]
        assert await store.delete("broken-7") is True

    @_damaging(*ROW_DAMAGE)
    async def test_list_reports_a_damaged_run_lists_the_rest_and_changes_nothing(
        self, kit: StoreKit, store: SnapshotStore, part: Any
    ) -> None:
        for id in ("older", "broken-7", "newer"):
            await store.save(id, snapshot(id))
        await kit.damage(store, "broken-7", part)
        before = await kit.raw(store, "broken-7")

        page = await store.list()
        by_id = {info.id: info for info in page}
        assert sorted(by_id) == ["broken-7", "newer", "older"]
        assert by_id["older"].damaged is None
        assert by_id["newer"].damaged is None
        assert by_id["older"].workflow_name == "orders"
        damaged = by_id["broken-7"].damaged
        assert damaged is not None
        assert PROBLEM[part] in damaged
        # A read never repairs or deletes: the run is left for an operator.
        assert await kit.raw(store, "broken-7") == before
        assert sorted(await all_ids(store)) == ["broken-7", "newer", "older"]
        assert await kit.raw(store, "broken-7") == before
        with pytest.raises(SnapshotDecodeError, match="broken-7"):
            await store.load("broken-7")

    # ---- lifecycle ---------------------------------------------------------------------------

    async def test_a_closed_store_refuses_work_and_closes_twice_quietly(
        self, kit: StoreKit, tmp_path: Path, clock: FakeClock
    ) -> None:
        async with kit.open(tmp_path, clock) as store:
            await store.save("r", snapshot("r"))
        await store.close()
        with pytest.raises(RuntimeError, match="closed"):
            await store.load("r")

    async def test_cancelled_saves_leave_the_old_run_or_the_new_one_never_a_mix(
        self,
        store: SnapshotStore,
    ) -> None:
        await store.save("r", snapshot("r", steps=3))
        for _ in range(20):
            with anyio.CancelScope() as scope:
                scope.cancel()
                await store.save("r", snapshot("r", steps=1, status="failed", result=Err("x")))
            loaded = await store.load("r")
            assert loaded is not None
            assert (loaded.status, len(loaded.steps)) in {("running", 3), ("failed", 1)}
        with anyio.move_on_after(0.001):
            while True:
                await store.save("r", snapshot("r", steps=3))
                await store.save("r", snapshot("r", steps=1, status="failed", result=Err("x")))
        loaded = await store.load("r")
        assert loaded is not None
        assert (loaded.status, len(loaded.steps)) in {("running", 3), ("failed", 1)}

    # ---- concurrency -------------------------------------------------------------------------

    @_needs(CheckpointStore)  # (for store_type; the test opens its own stores)
    async def test_concurrent_writers_on_two_stores_lose_nothing(
        self, kit: StoreKit, tmp_path: Path, clock: FakeClock
    ) -> None:
        async with kit.open(tmp_path, clock) as one, kit.open(tmp_path, clock) as two:
            _skip_unless(one, [CheckpointStore])

            async def writer(store: Any, run: int) -> None:
                await store.mark_running(f"run-{run}", "orders")
                for n in range(10):
                    await store.checkpoint(f"run-{run}", encoded(f"k{n}", (run, n)))
                # Every writer also adds a step to one shared run.
                await store.checkpoint("shared", encoded(f"from-{run}", run))

            await one.mark_running("shared", "orders")
            async with anyio.create_task_group() as tg:
                for run in range(16):
                    tg.start_soon(writer, one if run % 2 else two, run)

            for run in range(16):
                loaded = await one.load(f"run-{run}")
                assert loaded is not None
                assert {k: r.result.value for k, r in loaded.steps.items()} == {
                    f"k{n}": (run, n) for n in range(10)
                }
            shared = await two.load("shared")
            assert shared is not None
            assert sorted(shared.steps) == sorted(f"from-{run}" for run in range(16))

    # ---- checkpointing -----------------------------------------------------------------------

    @_needs(CheckpointStore)
    async def test_checkpoints_build_a_run_one_step_at_a_time(
        self, store: CheckpointStore, clock: FakeClock
    ) -> None:
        assert isinstance(store, CheckpointStore)
        await store.mark_running("c", "orders", metadata={"tenant": "acme"})
        clock.advance(1)
        await store.checkpoint("c", encoded("a", 1))
        await store.checkpoint("c", encoded("b", Point(1, 2)))
        await store.checkpoint("c", encoded("a", 10))  # replaces
        running = await store.load("c")
        assert running is not None
        assert running.status == "running"
        # updated_at moves at least when a run starts and ends (stores may also move it per step).
        assert running.updated_at.timestamp() >= clock.time() - 1
        assert {k: r.result for k, r in running.steps.items()} == {
            "a": Ok(10),
            "b": Ok(Point(1, 2)),
        }

        await store.finish("c", "failed", Err("declined"), None, ttl=60, metadata={"tries": 1})
        failed = await store.load("c")
        assert failed is not None
        assert failed.status == "failed"
        assert dict(failed.metadata) == {"tenant": "acme", "tries": 1}
        assert failed.expires_at is not None
        assert len(failed.steps) == 2

        # Resuming sets it running again, keeps its steps and its creation time, drops the expiry.
        await store.mark_running("c", "orders", metadata={"tries": 2})
        again = await store.load("c")
        assert again is not None
        assert (again.status, again.expires_at, again.created_at) == (
            "running",
            None,
            running.created_at,
        )
        assert dict(again.metadata) == {"tenant": "acme", "tries": 2}
        assert len(again.steps) == 2

    @_needs(CheckpointStore)
    async def test_checkpoints_need_a_running_run(
        self, store: CheckpointStore, clock: FakeClock
    ) -> None:
        with pytest.raises(LookupError, match="ghost"):
            await store.checkpoint("ghost", encoded("a", 1))
        with pytest.raises(LookupError, match="ghost"):
            await store.finish("ghost", "completed", Ok(1), None)
        # An expired run is gone: checkpoints to it fail, and starting it again starts afresh.
        await store.mark_running("old", "orders")
        await store.checkpoint("old", encoded("a", 1))
        await store.finish("old", "completed", Ok(1), None, ttl=5)
        clock.advance(5)
        with pytest.raises(LookupError):
            await store.checkpoint("old", encoded("b", 2))
        await store.mark_running("old", "orders")
        fresh = await store.load("old")
        assert fresh is not None
        assert fresh.steps == {}

    async def test_a_saved_runs_steps_load_in_the_order_they_were_recorded(
        self,
        store: SnapshotStore,
    ) -> None:
        records = {key: StepRecord(Ok(n), finished_at=T0) for n, key in enumerate(SCRAMBLED)}
        await store.save("s", attrs.evolve(snapshot("s", steps=0), steps=records))
        loaded = await store.load("s")
        assert loaded is not None
        assert list(loaded.steps) == SCRAMBLED
        assert [r.result for r in loaded.steps.values()] == [Ok(n) for n in range(len(SCRAMBLED))]
        if not isinstance(store, LeaseStore):
            return
        # A claim of the run hands over its steps in the same order.
        claim = await store.claim("s", "orders", owner="w", lease=30)
        assert claim.outcome == "claimed"
        if claim.snapshot is not None:
            assert list(claim.snapshot.steps) == SCRAMBLED

    @_needs(LeaseStore)
    async def test_checkpointed_steps_load_in_the_order_they_were_recorded(
        self, store: LeaseStore, clock: FakeClock
    ) -> None:
        await store.claim("c", "orders", owner="w", lease=30)
        for n, key in enumerate(SCRAMBLED):
            await store.checkpoint("c", encoded(key, n), owner="w")
        # A step recorded again (a retry after a crash) keeps its place and takes its new value.
        await store.checkpoint("c", encoded(SCRAMBLED[1], "again"), owner="w")
        loaded = await store.load("c")
        assert loaded is not None
        assert list(loaded.steps) == SCRAMBLED
        assert loaded.steps[SCRAMBLED[1]].result == Ok("again")

        # Resumed after a failure: the steps keep their order and new ones go after them.
        await store.finish("c", "failed", Err("declined"), None, owner="w")
        clock.advance(1)
        claim = await store.claim("c", "orders", owner="w2", lease=30)
        assert claim.outcome == "claimed"
        if claim.snapshot is not None:
            assert list(claim.snapshot.steps) == SCRAMBLED
        await store.checkpoint("c", encoded("aaa-last", 0), owner="w2")
        await store.checkpoint("c", encoded(SCRAMBLED[0], "again"), owner="w2")
        resumed = await store.load("c")
        assert resumed is not None
        assert list(resumed.steps) == [*SCRAMBLED, "aaa-last"]

    # ---- leases ------------------------------------------------------------------------------

    @_needs(LeaseStore)
    async def test_one_owner_at_a_time_holds_a_run(
        self, store: LeaseStore, clock: FakeClock
    ) -> None:
        assert isinstance(store, LeaseStore)
        first = await store.claim("r", "orders", owner="w1", lease=30, metadata={"input": 7})
        assert first == Claim("claimed", "w1", clock.time() + 30, fresh=True)
        assert await store.claim("r", "refunds", owner="w1", lease=30) == Claim(
            "mismatch", workflow_name="orders"
        )
        held = await store.claim("r", "orders", owner="w2", lease=30)
        assert held == Claim("held", "w1", clock.time() + 30)
        # The holder may claim again (a retry in the same worker).
        again = await store.claim("r", "orders", owner="w1", lease=30)
        assert (again.outcome, again.fresh) == ("claimed", False)
        await store.checkpoint("r", encoded("a", 1), owner="w1")
        with pytest.raises(LeaseLostError):
            await store.checkpoint("r", encoded("b", 2), owner="w2")
        with pytest.raises(LeaseLostError):
            await store.finish("r", "completed", Ok(1), None, owner="w2")

        clock.advance(30)  # w1 went silent: its lease ran out
        taken = await store.claim("r", "orders", owner="w2", lease=30)
        assert taken.outcome == "claimed"
        assert await store.renew("r", owner="w1", lease=30) is False
        with pytest.raises(LeaseLostError):
            await store.checkpoint("r", encoded("late", 0), owner="w1")
        assert await store.renew("r", owner="w2", lease=60) is True
        clock.advance(45)
        assert (await store.claim("r", "orders", owner="w3", lease=30)).outcome == "held"

        snapshot_ = await store.load("r")
        assert snapshot_ is not None
        assert set(snapshot_.steps) == {"a"}
        assert dict(snapshot_.metadata) == {"input": 7}

        await store.finish("r", "completed", Ok(1), None, owner="w2")
        assert (await store.claim("r", "orders", owner="w3", lease=30)).outcome == "completed"

    @_needs(LeaseStore)
    async def test_finishing_or_releasing_frees_the_lease(self, store: LeaseStore) -> None:
        await store.claim("f", "orders", owner="w1", lease=30)
        await store.finish("f", "failed", Err("declined"), None, owner="w1")
        # A failed run can be retried at once by anyone.
        assert (await store.claim("f", "orders", owner="w2", lease=30)).outcome == "claimed"
        await store.release("f", owner="w1")  # not the holder: nothing happens
        assert (await store.claim("f", "orders", owner="w3", lease=30)).outcome == "held"
        await store.release("f", owner="w2")
        assert (await store.claim("f", "orders", owner="w3", lease=30)).outcome == "claimed"

    @_needs(LeaseStore, "info")
    async def test_info_and_list_show_who_holds_a_run_and_until_when(
        self, store: Any, clock: FakeClock
    ) -> None:
        assert await store.info("nobody") is None
        await store.claim("r", "orders", owner="worker-1", lease=30)
        until = datetime.fromtimestamp(clock.time() + 30, timezone.utc)
        held = await store.info("r")
        assert (held.id, held.workflow_name, held.status) == ("r", "orders", "running")
        assert (held.lease_owner, held.lease_expires_at, held.damaged) == ("worker-1", until, None)
        (listed,) = (await store.list()).items
        assert (listed.lease_owner, listed.lease_expires_at) == ("worker-1", until)

        # A dead worker's lease stays as it was, with its time in the past.
        clock.advance(60)
        stale = await store.info("r")
        assert (stale.lease_owner, stale.lease_expires_at) == ("worker-1", until)

        # Finished or released: no one holds it.
        await store.claim("r", "orders", owner="worker-2", lease=30)
        await store.release("r", owner="worker-2")
        released = await store.info("r")
        assert (released.lease_owner, released.lease_expires_at) == (None, None)
        await store.finish("r", "completed", Ok(1), None, ttl=10)
        done = await store.info("r")
        assert (done.status, done.lease_owner) == ("completed", None)
        clock.advance(10)
        assert await store.info("r") is None

    @_needs("info")
    @_damaging("created_at", "wrong_type")
    async def test_info_flags_a_damaged_run_instead_of_raising(
        self, kit: StoreKit, store: Any, part: Any
    ) -> None:
        await store.save("bad", snapshot("bad"))
        await kit.damage(store, "bad", part)
        found = await store.info("bad")
        assert found.id == "bad"
        assert PROBLEM[part] in found.damaged
        assert found.lease_owner is None

    @_needs(LeaseStore)
    async def test_claim_expired_takes_abandoned_runs_oldest_first(
        self, store: LeaseStore, clock: FakeClock
    ) -> None:
        await store.claim("crashed", "orders", owner="dead", lease=10)
        clock.advance(1)
        await store.claim("shut-down", "orders", owner="gone", lease=10)
        await store.finish("shut-down", "cancelled", None, None, owner="gone")
        clock.advance(1)
        await store.claim("busy", "orders", owner="alive", lease=1000)
        await store.claim("done", "orders", owner="x", lease=10)
        await store.finish("done", "completed", Ok(1), None, owner="x")
        await store.claim("declined", "orders", owner="x", lease=10)
        await store.finish("declined", "failed", Err("no"), None, owner="x")
        await store.claim("other", "refunds", owner="dead", lease=10)
        clock.advance(10)

        claimed = await store.claim_expired(owner="me", lease=30, workflow_names=["orders"])
        assert [info.id for info in claimed] == ["crashed", "shut-down"]
        assert {info.workflow_name for info in claimed} == {"orders"}
        assert await store.claim_expired(owner="you", lease=30, workflow_names=["orders"]) == []
        assert (await store.claim("crashed", "orders", owner="you", lease=30)).outcome == "held"
        await store.checkpoint("crashed", encoded("a", 1), owner="me")

        rest = await store.claim_expired(owner="you", lease=30, limit=5)
        assert [info.id for info in rest] == ["other"]
        assert await store.claim_expired(owner="you", lease=30, workflow_names=[]) == []

    @_needs(LeaseStore)  # (for store_type; the test opens its own stores)
    async def test_concurrent_claims_have_exactly_one_winner(
        self, kit: StoreKit, tmp_path: Path, clock: FakeClock
    ) -> None:
        async with kit.open(tmp_path, clock) as one, kit.open(tmp_path, clock) as two:
            _skip_unless(one, [LeaseStore])
            outcomes: list[str] = []

            async def claimer(n: int) -> None:
                store = one if n % 2 else two
                claim = await store.claim("hot", "orders", owner=f"w{n}", lease=30)
                outcomes.append(claim.outcome)

            async with anyio.create_task_group() as tg:
                for n in range(20):
                    tg.start_soon(claimer, n)
            assert sorted(outcomes) == ["claimed"] + ["held"] * 19

    @pytest.mark.parametrize(
        ("owner", "lease"), [("", 30), (None, 30), ("w", 0), ("w", -1), ("w", "30")]
    )
    @_needs(LeaseStore)
    async def test_bad_lease_arguments_are_refused(
        self, store: LeaseStore, owner: Any, lease: Any
    ) -> None:
        with pytest.raises(ValueError, match="lease"):
            await store.claim("r", "orders", owner=owner, lease=lease)

    @_needs(LeaseStore)
    @_damaging(*ALL_DAMAGE)
    async def test_claiming_a_damaged_run_refuses_it_and_leaves_every_byte(
        self, kit: StoreKit, store: LeaseStore, part: Any
    ) -> None:
        await _failed_run(store, "broken-7")
        await kit.damage(store, "broken-7", part)
        before = await kit.raw(store, "broken-7")

        try:
            await store.claim("broken-7", "orders", owner="w1", lease=30, metadata={"input": 2})
        except SnapshotDecodeError as exc:
            caught: Exception | None = exc
        else:
            caught = None
        assert await kit.raw(store, "broken-7") == before
        assert isinstance(caught, SnapshotDecodeError)
        assert caught.run_id == "broken-7"
        assert PROBLEM[part] in caught.reason

    @_needs(LeaseStore)
    @_damaging("newer", "format")
    async def test_a_snapshot_of_another_format_is_never_claimed_nor_downgraded(
        self, kit: StoreKit, store: LeaseStore, clock: FakeClock, part: Any
    ) -> None:
        await store.claim("future", "orders", owner="dead", lease=10)
        await store.checkpoint("future", encoded("a", 1), owner="dead")
        await kit.damage(store, "future", part)
        before = await kit.raw(store, "future")
        clock.advance(20)  # its lease ran out: recovery would take it, if it could read it

        with pytest.raises(SnapshotDecodeError, match="format version"):
            await store.claim("future", "orders", owner="w1", lease=30)
        found = await store.claim_expired(owner="w1", lease=30)
        assert [(info.id, info.damaged is not None) for info in found] == [("future", True)]
        assert await kit.raw(store, "future") == before

    @_needs(LeaseStore)
    @_damaging("step", "deep", "metadata", "newer")
    async def test_claim_expired_skips_damaged_runs_and_reports_them(
        self, kit: StoreKit, store: LeaseStore, clock: FakeClock, part: Any
    ) -> None:
        for id in ("broken-1", "broken-2", "crashed"):  # oldest first
            await store.claim(id, "orders", owner="dead", lease=10)
            await store.checkpoint(id, encoded("a", 1), owner="dead")
            clock.advance(1)
        await kit.damage(store, "broken-1", part)
        await kit.damage(store, "broken-2", part)
        before = [await kit.raw(store, id) for id in ("broken-1", "broken-2")]
        clock.advance(20)

        # Damaged runs do not take the place of a healthy one, even with limit=1.
        found = await store.claim_expired(owner="me", lease=30, limit=1)
        assert [info.id for info in found if info.damaged is None] == ["crashed"]
        reported = {info.id: info.damaged for info in found if info.damaged is not None}
        assert sorted(reported) == ["broken-1", "broken-2"]
        assert all(reason is not None and PROBLEM[part] in reason for reason in reported.values())
        assert (await store.claim("crashed", "orders", owner="you", lease=30)).outcome == "held"
        # Not claimed, not changed, and reported again by the next pass.
        assert [await kit.raw(store, id) for id in ("broken-1", "broken-2")] == before
        again = await store.claim_expired(owner="you", lease=30)
        assert sorted(info.id for info in again) == ["broken-1", "broken-2"]
        assert all(info.damaged is not None for info in again)
        assert [await kit.raw(store, id) for id in ("broken-1", "broken-2")] == before

    @pytest.mark.parametrize(
        "key",
        ["", "nul\x00key", "lone \ud800 surrogate", "\udfff"],
        ids=["empty", "nul", "lone", "low"],
    )
    async def test_invalid_step_keys_are_refused_before_anything_is_written(
        self, store: SnapshotStore, key: str
    ) -> None:
        with pytest.raises(ValueError, match="step key"):
            await store.save("s", _with_step(key))
        assert await store.load("s") is None
        if not isinstance(store, LeaseStore):
            return
        await store.claim("r", "orders", owner="w", lease=30)
        await store.checkpoint("r", encoded("good", 1), owner="w")
        step = EncodedStep(key, StepRecord(Ok(1)), '{"ok":true,"value":1}')
        with pytest.raises(ValueError, match="step key"):
            await store.checkpoint("r", step, owner="w")
        loaded = await store.load("r")
        assert loaded is not None
        assert set(loaded.steps) == {"good"}

    # ---- waiting: messages, waits and wake-ups (MailboxStore) --------------------------------

    @_needs(*MAILBOX)
    async def test_sent_values_are_received_in_order_each_once(self, store: Any) -> None:
        await store.claim("r", "orders", owner="w", lease=30)
        await store.claim("bystander", "orders", owner="w", lease=30)
        await store.send("r", "k", Point(1, 2))
        await store.send("bystander", "k", "not yours")
        await store.send("r", "other", "x")
        await store.send("r", "k", {"a": [1, (2, 3)]})
        await store.send("r", "k", Colour.RED)

        first = await store.receive("r", "k", step="got-1", name="got-1")
        assert first == Ok(Point(1, 2))
        assert type(first.value) is Point
        assert await store.receive("r", "k", step="got-2", name="got-2") == Ok({"a": [1, (2, 3)]})
        third = await store.receive("r", "k", step="got-3", name="got-3")
        assert third == Ok(Colour.RED)
        assert third.value is Colour.RED
        # Each value once: the key's mailbox is empty now, and an empty receive writes nothing.
        assert await store.receive("r", "k", step="got-4", name="got-4") is None
        assert await store.receive("r", "never-sent", step="got-5", name="got-5") is None
        assert await store.receive("r", "other", step="got-o", name="got-o") == Ok("x")
        loaded = await store.load("r")
        assert loaded is not None
        assert list(loaded.steps) == ["got-1", "got-2", "got-3", "got-o"]
        # Another run's mailbox was not touched.
        assert await store.receive("bystander", "k", step="s", name="s") == Ok("not yours")

    @_needs(*MAILBOX)
    async def test_receive_records_the_step_and_clears_the_wait(
        self, store: Any, clock: FakeClock
    ) -> None:
        await store.claim("r", "orders", owner="w", lease=30)
        deadline = clock.time() + 100
        assert await store.begin_wait(
            "r", step="approve", key="k", kind="message", wake_at=deadline, owner="w"
        ) == (False, deadline)
        await store.send("r", "k", "yes")
        got = await store.receive("r", "k", step="approve", name="approve", owner="w")
        assert got == Ok("yes")

        loaded = await store.load("r")
        assert loaded is not None
        assert loaded.status == "running"
        record = loaded.steps["approve"]
        assert (record.result, record.attempts) == (Ok("yes"), 1)
        assert await all_ids(store, status="waiting") == []
        (info,) = await store.list()
        assert (info.status, info.waiting_for, info.wait_kind, info.wake_at) == (
            "running",
            None,
            None,
            None,
        )
        # Received and recorded: the same step does not take the next value.
        await store.send("r", "k", "again")
        assert await store.receive("r", "k", step="approve", name="approve") is None

    @_needs(*MAILBOX)
    async def test_receive_into_a_recorded_step_leaves_the_message(self, store: Any) -> None:
        await store.claim("r", "orders", owner="w", lease=30)
        await store.checkpoint("r", encoded("approve", "old"), owner="w")
        await store.send("r", "k", "new")
        assert await store.receive("r", "k", step="approve", name="approve", owner="w") is None
        loaded = await store.load("r")
        assert loaded is not None
        assert loaded.steps["approve"].result == Ok("old")
        assert await store.receive("r", "k", step="approve-2", name="approve-2") == Ok("new")

    @_needs(*MAILBOX)
    async def test_begin_wait_is_ready_when_a_message_is_pending(
        self, store: Any, clock: FakeClock
    ) -> None:
        await store.claim("r", "orders", owner="w", lease=30)
        await store.send("r", "k", 1)
        ready = await store.begin_wait(
            "r", step="s", key="k", kind="message", wake_at=clock.time() + 60, owner="w"
        )
        assert ready == (True, None)
        # Nothing written: the run did not start waiting, the message is still there.
        assert await all_ids(store, status="waiting") == []
        loaded = await store.load("r")
        assert loaded is not None
        assert loaded.status == "running"
        assert await store.receive("r", "k", step="s", name="s", owner="w") == Ok(1)

    @_needs(*MAILBOX)
    async def test_a_waiting_run_is_listed_with_what_it_waits_for(
        self, store: Any, clock: FakeClock
    ) -> None:
        for id in ("approval", "timer", "forever", "plain"):
            await store.claim(id, "orders", owner="w", lease=30)
        soon, later = clock.time() + 60, clock.time() + 3600
        assert await store.begin_wait(
            "approval", step="approve", key="approve:order-7", kind="approval", wake_at=later
        ) == (False, later)
        assert await store.begin_wait(
            "timer", step="nap", key=None, kind="timer", wake_at=soon, owner="w"
        ) == (False, soon)
        assert await store.begin_wait(
            "forever", step="hook", key="hook:abc", kind="hook", wake_at=None, owner="w"
        ) == (False, None)

        assert sorted(await all_ids(store, status="waiting")) == ["approval", "forever", "timer"]
        assert await all_ids(store, status="running") == ["plain"]
        found = {info.id: info for info in (await store.list(status="waiting"))}
        assert {
            id: (info.status, info.waiting_for, info.wait_kind, info.wake_at)
            for id, info in found.items()
        } == {
            "approval": ("waiting", "approve:order-7", "approval", _at(later)),
            "timer": ("waiting", None, "timer", _at(soon)),
            "forever": ("waiting", "hook:abc", "hook", None),
        }
        loaded = await store.load("approval")
        assert loaded is not None
        assert loaded.status == "waiting"
        # A timer's deadline passing does not change the row: the sweep wakes it.
        clock.advance(61)
        assert sorted(await all_ids(store, status="waiting")) == ["approval", "forever", "timer"]

    @_needs(*MAILBOX)
    async def test_a_resumed_wait_keeps_its_stored_deadline(
        self, store: Any, clock: FakeClock
    ) -> None:
        await store.claim("r", "orders", owner="w1", lease=30)
        deadline = clock.time() + 100
        assert await store.begin_wait(
            "r", step="s", key="k", kind="message", wake_at=deadline, owner="w1"
        ) == (False, deadline)
        clock.advance(40)  # w1 died; w2 resumes the run and reaches the same wait
        assert (await store.claim("r", "orders", owner="w2", lease=30)).outcome == "claimed"
        again = await store.begin_wait(
            "r", step="s", key="k", kind="message", wake_at=clock.time() + 100, owner="w2"
        )
        assert again == (False, deadline)
        (info,) = await store.list(status="waiting")
        assert (info.id, info.waiting_for, info.wake_at) == ("r", "k", _at(deadline))
        with pytest.raises(LeaseLostError):
            await store.begin_wait("r", step="s", key="k", kind="message", wake_at=None, owner="w1")
        # A value that came meanwhile ends the wait; the next wait starts its own clock.
        await store.send("r", "k", "v")
        assert await store.receive("r", "k", step="s", name="s", owner="w2") == Ok("v")
        later = clock.time() + 5
        assert await store.begin_wait(
            "r", step="s2", key="k2", kind="message", wake_at=later, owner="w2"
        ) == (False, later)
        (info,) = await store.list(status="waiting")
        assert (info.waiting_for, info.wake_at) == ("k2", _at(later))

    @_needs(*MAILBOX)
    async def test_a_send_makes_a_waiting_run_due_for_claim_expired(
        self, store: Any, clock: FakeClock
    ) -> None:
        far = clock.time() + 3600
        for id, owner, lease in (("due", "w", 10), ("not-due", "w", 10), ("held", "alive", 10**5)):
            await store.claim(id, "orders", owner=owner, lease=lease)
            await store.begin_wait(
                id, step="s", key=f"k-{id}", kind="message", wake_at=far, owner=owner
            )
        # A host parks the two first: their coroutines are gone, their leases free.
        await store.release("due", owner="w")
        await store.release("not-due", owner="w")
        clock.advance(1)
        assert await store.claim_expired(owner="me", lease=30) == []

        await store.send("due", "k-due", "v")
        await store.send("not-due", "some-other-key", "v")  # not what it waits for
        await store.send("held", "k-held", "v")  # due, but its worker is alive
        claimed = await store.claim_expired(owner="me", lease=30)
        assert [info.id for info in claimed] == ["due"]
        assert await store.claim_expired(owner="you", lease=30) == []
        assert (await store.claim("due", "orders", owner="you", lease=30)).outcome == "held"
        assert await store.receive("due", "k-due", step="s", name="s", owner="me") == Ok("v")
        await store.finish("due", "completed", Ok(1), None, owner="me")

        # The deadline passing makes the other one due (the held one's worker is alive).
        clock.advance(3600)
        assert [info.id for info in await store.claim_expired(owner="me", lease=30)] == ["not-due"]
        assert await store.claim_expired(owner="me", lease=30) == []

    @_needs(*MAILBOX)
    async def test_writing_the_waits_own_step_ends_the_wait(
        self, store: Any, clock: FakeClock
    ) -> None:
        await store.claim("r", "orders", owner="w", lease=30)
        await store.begin_wait(
            "r", step="nap", key=None, kind="timer", wake_at=clock.time() + 5, owner="w"
        )
        await store.checkpoint("r", encoded("another step", 1), owner="w")
        assert await all_ids(store, status="waiting") == ["r"]
        await store.checkpoint("r", encoded("nap", None), owner="w")  # the timer went off
        assert await all_ids(store, status="waiting") == []
        (info,) = await store.list()
        assert (info.status, info.waiting_for, info.wait_kind, info.wake_at) == (
            "running",
            None,
            None,
            None,
        )

    @_needs(*MAILBOX)
    async def test_finishing_ends_the_wait(self, store: Any, clock: FakeClock) -> None:
        await store.claim("r", "orders", owner="w", lease=30)
        first = clock.time() + 50
        await store.begin_wait("r", step="s", key="k", kind="message", wake_at=first, owner="w")
        await store.finish("r", "cancelled", None, None, owner="w")
        (info,) = await store.list()
        assert (info.status, info.waiting_for, info.wait_kind, info.wake_at) == (
            "cancelled",
            None,
            None,
            None,
        )
        # Resumed, the run starts the same wait afresh: the old deadline went with its end.
        clock.advance(10)
        await store.claim("r", "orders", owner="w", lease=30)
        second = clock.time() + 50
        assert await store.begin_wait(
            "r", step="s", key="k", kind="message", wake_at=second, owner="w"
        ) == (False, second)

    @_needs(*MAILBOX)
    async def test_sending_to_a_missing_or_ended_run_is_refused(
        self, store: Any, clock: FakeClock
    ) -> None:
        with pytest.raises(LookupError, match="ghost") as missing:
            await store.send("ghost", "k", 1)
        assert not isinstance(missing.value, RunFinishedError)
        assert await store.load("ghost") is None

        for status, result in (("completed", Ok(1)), ("failed", Err("declined"))):
            id = f"{status}-run"
            await store.claim(id, "orders", owner="w", lease=30)
            await store.finish(id, status, result, None, owner="w")
            with pytest.raises(RunFinishedError) as ended:
                await store.send(id, "k", 1)
            assert (ended.value.run_id, ended.value.status) == (id, status)
            assert id in str(ended.value)
            assert status in str(ended.value)
            # Nothing stored: resumed (a failed run may be), the run finds no message.
            if status == "failed":
                await store.claim(id, "orders", owner="w", lease=30)
                assert await store.receive(id, "k", step="s", name="s") is None

        # A cancelled run may be resumed: its mailbox still takes values.
        await store.claim("stopped", "orders", owner="w", lease=30)
        await store.finish("stopped", "cancelled", None, None, owner="w")
        await store.send("stopped", "k", "kept")
        assert await store.receive("stopped", "k", step="s", name="s") == Ok("kept")

        # An expired run is gone.
        await store.save("old", snapshot("old"), ttl=10)
        clock.advance(10)
        with pytest.raises(LookupError, match="old"):
            await store.send("old", "k", 1)

    @_needs(*MAILBOX)
    async def test_once_takes_one_value_only(self, store: Any) -> None:
        await store.claim("r", "orders", owner="w", lease=30)
        await store.send("r", "hook:1", "first", once="the hook")
        with pytest.raises(AlreadyDeliveredError) as pending:
            await store.send("r", "hook:1", "second", once="the hook")
        assert (pending.value.run_id, pending.value.key) == ("r", "hook:1")
        assert await store.receive("r", "hook:1", step="the hook", name="h") == Ok("first")
        # Consumed: the step is recorded, and once still refuses.
        with pytest.raises(AlreadyDeliveredError):
            await store.send("r", "hook:1", "third", once="the hook")
        assert await store.receive("r", "hook:1", step="another", name="another") is None
        # Without once, the key takes any number of values.
        await store.send("r", "hook:1", "fourth")
        assert await store.receive("r", "hook:1", step="another", name="another") == Ok("fourth")

    @_needs(*MAILBOX)
    async def test_values_too_big_or_unstorable_are_refused(self, store: Any) -> None:
        await store.claim("r", "orders", owner="w", lease=30)
        too_big = "x" * MAX_MESSAGE_BYTES
        with pytest.raises(ValueError, match="bytes") as big:
            await store.send("r", "k", too_big)
        assert str(MAX_MESSAGE_BYTES) in str(big.value)
        assert str(len(too_big) + 2) in str(big.value)  # its size, as JSON text
        with pytest.raises(SerializationError) as sock:
            await store.send("r", "k", object())
        assert sock.value.step == "<message>"
        assert "object" in sock.value.type_name
        with pytest.raises(SerializationError):
            await store.send("r", "k", {"lock": anyio.Lock()})
        # Nothing stored.
        assert await store.receive("r", "k", step="s", name="s") is None
        # Just under the limit is fine.
        await store.send("r", "k", "x" * (MAX_MESSAGE_BYTES - 2))
        got = await store.receive("r", "k", step="s", name="s")
        assert got is not None
        assert len(got.value) == MAX_MESSAGE_BYTES - 2

    @pytest.mark.parametrize("key", HOSTILE_IDS, ids=[f"key{n}" for n in range(len(HOSTILE_IDS))])
    @_needs(*MAILBOX)
    async def test_hostile_keys_are_only_ever_data(
        self, store: Any, clock: FakeClock, key: str
    ) -> None:
        await store.claim("r", "orders", owner="w", lease=30)
        look_alikes = [key + "-2", "a" + key, key[:-1] + "?", "*", "%"]
        for other in look_alikes:
            await store.send("r", other, other)
        deadline = clock.time() + 60
        assert await store.begin_wait(
            "r", step=key, key=key, kind="message", wake_at=deadline, owner="w"
        ) == (False, deadline)
        (info,) = await store.list(status="waiting")
        assert (info.waiting_for, info.wait_kind) == (key, "message")
        await store.send("r", key, key, once=key)
        assert await store.receive("r", key, step=key, name=key, owner="w") == Ok(key)
        assert await store.receive("r", key, step="again", name="again") is None
        assert await all_ids(store, status="waiting") == []
        for n, other in enumerate(look_alikes):
            assert await store.receive("r", other, step=f"l{n}", name="l") == Ok(other), other
        loaded = await store.load("r")
        assert loaded is not None
        assert loaded.steps[key].result == Ok(key)

    @pytest.mark.parametrize(
        "bad",
        ["", "nul\x00key", "lone \ud800 surrogate", "\udfff", None, 42],
        ids=["empty", "nul", "lone", "low", "none", "int"],
    )
    @_needs(*MAILBOX)
    async def test_invalid_keys_and_ids_are_refused_before_anything_is_written(
        self, store: Any, bad: Any
    ) -> None:
        await store.claim("r", "orders", owner="w", lease=30)
        with pytest.raises(ValueError, match="key"):
            await store.send("r", bad, 1)
        if bad is not None:  # (no once: any number of values)
            with pytest.raises(ValueError, match="key"):
                await store.send("r", "k", 1, once=bad)
        with pytest.raises(ValueError, match="key"):
            await store.receive("r", bad, step="s", name="s")
        with pytest.raises(ValueError, match="key"):
            await store.receive("r", "k", step=bad, name="s")
        if bad is not None:  # (no key: a timer)
            with pytest.raises(ValueError, match="key"):
                await store.begin_wait("r", step="s", key=bad, kind="message", wake_at=None)
        with pytest.raises(ValueError, match="key"):
            await store.begin_wait("r", step=bad, key="k", kind="message", wake_at=None)
        with pytest.raises(ValueError, match="run id"):
            await store.send(bad, "k", 1)
        with pytest.raises(ValueError, match="run id"):
            await store.receive(bad, "k", step="s", name="s")
        with pytest.raises(ValueError, match="run id"):
            await store.begin_wait(bad, step="s", key="k", kind="message", wake_at=None)
        if bad is not None:  # (next_send() waits for a send to any run)
            with pytest.raises(ValueError, match="run id"):
                await store.next_send(bad)
            with pytest.raises(ValueError, match="run id"):
                store.sends(bad)
        assert await all_ids(store, status="waiting") == []
        assert await store.receive("r", "k", step="s", name="s") is None
        loaded = await store.load("r")
        assert loaded is not None
        assert loaded.steps == {}

    @_needs(*MAILBOX)
    async def test_messages_go_with_their_run(self, store: Any, clock: FakeClock) -> None:
        # Saved over, a run keeps its mailbox.
        await store.claim("kept", "orders", owner="w", lease=30)
        await store.send("kept", "k", "still here")
        await store.save("kept", snapshot("kept"))
        assert await store.receive("kept", "k", step="s", name="s") == Ok("still here")

        # Deleted, it takes its messages along: a new run of the same id starts empty.
        await store.claim("deleted", "orders", owner="w", lease=30)
        await store.send("deleted", "k", "gone")
        assert await store.delete("deleted") is True
        await store.claim("deleted", "orders", owner="w", lease=30)
        assert await store.receive("deleted", "k", step="s", name="s") is None

        # Expired, too: started again, the run finds no message of its former life.
        await store.save("expired", snapshot("expired"), ttl=10)
        await store.send("expired", "k", "gone")
        clock.advance(10)
        await store.mark_running("expired", "orders")
        assert await store.receive("expired", "k", step="s", name="s") is None
        # And when expired runs were purged first.
        if callable(getattr(store, "purge_expired", None)):
            await store.save("purged", snapshot("purged"), ttl=10)
            await store.send("purged", "k", "gone")
            clock.advance(10)
            assert await store.purge_expired() >= 1
            await store.mark_running("purged", "orders")
            assert await store.receive("purged", "k", step="s", name="s") is None

    @_needs(*MAILBOX)
    async def test_cancelled_sends_and_receives_write_all_or_nothing(self, store: Any) -> None:
        await store.claim("r", "orders", owner="w", lease=30)
        # Sends cancelled before they start, at each point of their way, and while they run.
        attempted, sent = 0, list[int]()
        for n in range(40):
            attempted += 1
            if await _cancelled_after(n % 10 - 1, store.send("r", "k", attempted)):
                sent.append(attempted)
        with anyio.move_on_after(0.002):
            while True:
                attempted += 1
                await store.send("r", "k", attempted)
                sent.append(attempted)
        got: list[int] = []
        while (found := await store.receive("r", "k", step=f"d{len(got)}", name="d")) is not None:
            got.append(found.value)
        # Each stored value whole and once, in the order sent; every acknowledged one there.
        assert got == sorted(set(got))
        assert set(sent) <= set(got) <= set(range(1, attempted + 1))

        # Receives cancelled the same ways: a message leaves only with its step recorded.
        for n in range(60):
            await store.send("r", "m", n)
        returned: dict[str, int] = {}
        tries = 0
        for n in range(40):
            tries += 1
            step = f"c{tries}"
            one = await _cancelled_after(n % 10 - 1, store.receive("r", "m", step=step, name="c"))
            if one is not None:
                returned[step] = one.value
        with anyio.move_on_after(0.002):
            while True:
                tries += 1
                one = await store.receive("r", "m", step=f"c{tries}", name="c")
                if one is not None:
                    returned[f"c{tries}"] = one.value
        rest: list[int] = []
        while (found := await store.receive("r", "m", step=f"e{len(rest)}", name="e")) is not None:
            rest.append(found.value)
        loaded = await store.load("r")
        assert loaded is not None
        recorded = {
            key: record.result.value for key, record in loaded.steps.items() if key[0] == "c"
        }
        assert returned.items() <= recorded.items()
        taken = [recorded[key] for key in sorted(recorded, key=lambda key: int(key[1:]))]
        assert taken + rest == list(range(60))

    @_needs(*MAILBOX)  # (for store_type; the test opens its own stores)
    async def test_a_send_wakes_next_send_on_another_store_over_the_same_data(
        self, kit: StoreKit, tmp_path: Path, clock: FakeClock
    ) -> None:
        async with kit.open(tmp_path, clock) as one, kit.open(tmp_path, clock) as two:
            _skip_unless(one, MAILBOX)
            await one.claim("r", "orders", owner="w", lease=30)
            await one.claim("other", "orders", owner="w", lease=30)
            woken: list[str] = []

            async def wait(run_id: str | None) -> None:
                await two.next_send(run_id)
                woken.append(str(run_id))

            # Bounded, but nothing about how fast: a send once the waiters wait wakes them.
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait, "r")
                    tg.start_soon(wait, None)  # any run
                    sends = 0
                    while len(woken) < 2:
                        sends += 1
                        await one.send("r", "k", sends)
                        await anyio.wait_all_tasks_blocked()
            assert sorted(woken) == ["None", "r"]
            assert await two.receive("r", "k", step="s", name="s") == Ok(1)

    @_needs(*MAILBOX)  # (for store_type; the test opens its own stores)
    async def test_a_send_between_the_look_and_the_wait_is_never_lost(
        self, kit: StoreKit, tmp_path: Path, clock: FakeClock
    ) -> None:
        async with kit.open(tmp_path, clock) as one, kit.open(tmp_path, clock) as two:
            _skip_unless(one, MAILBOX)
            await one.claim("r", "orders", owner="w", lease=30)
            with anyio.fail_after(30):
                # The race a waiter must survive: the value comes after its look and
                # before its wait.  Watching from before the look, the wait sees it.
                with two.sends("r") as watch:
                    assert await two.receive("r", "k", step="s0", name="s0") is None
                    await one.send("r", "k", "between")
                    await watch.wait()
                    assert await two.receive("r", "k", step="s0", name="s0") == Ok("between")

                # Without a watch, next_send began after the send and never sees it: the
                # bound on the wait and a second look find the value all the same.
                assert await two.receive("r", "k", step="s1", name="s1") is None
                await one.send("r", "k", "in between")
                with anyio.move_on_after(0.05):
                    await two.next_send("r")
                assert await two.receive("r", "k", step="s1", name="s1") == Ok("in between")

                # Sent before the loop starts: the first look finds it.
                await one.send("r", "k", "before")
                assert await receive_when_sent(two, "r", "k", step="s2") == Ok("before")

                # Sent while the loop waits: the send wakes it (or the bound does).
                found: list[Ok[Any]] = []

                async def waiter() -> None:
                    found.append(await receive_when_sent(two, "r", "k", step="s3"))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(waiter)
                    await anyio.wait_all_tasks_blocked()
                    await one.send("r", "k", "while waiting")
                assert found == [Ok("while waiting")]


def make_contract(
    kit: StoreKit, backends: Collection[str], store_type: type | None = None
) -> type[StoreContract]:
    """A `StoreContract` subclass bound to ``kit``, its tests run on each of ``backends``;
    with ``store_type``, the tests it cannot take are left out (see `check_store`)."""

    @pytest.fixture(params=list(backends))
    def anyio_backend(self: StoreContract, request: pytest.FixtureRequest) -> Any:
        return request.param

    namespace = {
        "__test__": True,
        "__doc__": StoreContract.__doc__,
        "kit": kit,
        "anyio_backend": anyio_backend,
    }
    if store_type is not None:
        for name, test in vars(StoreContract).items():
            if name.startswith("test_") and not _can_take(test, kit, store_type):
                namespace[name] = None  # pytest collects no test under this name
    return type("StoreContractTests", (StoreContract,), namespace)


def _can_take(test: object, kit: StoreKit, store_type: type) -> bool:
    """Whether a store of ``store_type`` (and ``kit``'s damage) can take ``test``."""
    parts = getattr(test, "damage_parts", None)
    if parts is not None and not set(parts) & kit.damageable:
        return False
    for need in getattr(test, "store_needs", ()):
        if isinstance(need, str):
            if not callable(getattr(store_type, need, None)):
                return False
        elif not issubclass(store_type, need):
            return False
    return True
