"""The memory and SQLite row drivers' side of durable waiting (issue 19): mailboxes,
waits, due runs and the schema upgrade, driven through the driver itself.  (The
store-level contract, on every store, is in the shared contract suite.)"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from awaitly_anyio._rows import RunRow
from awaitly_anyio._snapshot import RunStatus
from awaitly_anyio.stores._driver import AlreadySent, LeaseLost, RunEnded, RunMissing, WaitRow
from awaitly_anyio.stores.memory import MemoryStore
from awaitly_anyio.stores.sqlite import SCHEMA_VERSION, SQLiteStore
from awaitly_anyio.testing import FakeClock

from .kit_base import encoded

pytestmark = pytest.mark.anyio

NAME = "orders"


@attrs.define
class End:
    """`EndTerms` as a test writes them."""

    status: RunStatus
    result_json: str | None = None
    expires_at: float | None = None
    owner: str | None = None
    metadata_patch: str | None = None
    merge: Any = None


def row(
    status: RunStatus = "running", *, at: float = 1.0, expires_at: float | None = None
) -> RunRow:
    return RunRow(NAME, status, None, "{}", at, at, expires_at)


def ok(value: str) -> str:
    """A step record made of a message's JSON, as the front's ``record`` callback does."""
    return f'{{"ok": {value}}}'


WAIT = WaitRow(step="approval", key="approve:7", kind="approval", wake_at=500.0)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    clock = FakeClock()
    if request.param == "memory":
        async with MemoryStore(clock=clock) as memory:
            yield memory
    else:
        async with SQLiteStore(tmp_path / "runs.db", clock=clock, synchronous="NORMAL") as lite:
            yield lite


async def stored(store: Any, id: str) -> RunRow:
    found = await store._driver.read(id, 0.0, steps=False)
    assert found is not None
    row: RunRow = found[0]
    return row


async def steps_of(store: Any, id: str) -> list[tuple[str, str]]:
    found = await store._driver.read(id, 0.0, steps=True)
    assert found is not None
    return list(found[1])


# ---- mailboxes -------------------------------------------------------------------------


async def test_messages_are_consumed_oldest_first_per_key_each_once(store: Any) -> None:
    d = store._driver
    await d.write_run("r", row(), [])
    await d.send("r", "a", "1", 2.0, None)
    await d.send("r", "b", "2", 3.0, None)
    await d.send("r", "a", "3", 4.0, None)
    assert await d.receive("r", "a", "s1", ok, 5.0, None) == "1"
    assert await d.receive("r", "a", "s2", ok, 5.0, None) == "3"
    assert await d.receive("r", "a", "s3", ok, 5.0, None) is None  # none left
    assert await d.receive("r", "b", "s4", ok, 5.0, None) == "2"
    assert await steps_of(store, "r") == [("s1", ok("1")), ("s2", ok("3")), ("s4", ok("2"))]


async def test_a_step_already_recorded_consumes_nothing(store: Any) -> None:
    d = store._driver
    await d.write_run("r", row(), [("s", ok("0"))])
    await d.send("r", "k", "1", 2.0, None)
    assert await d.receive("r", "k", "s", ok, 3.0, None) is None
    assert await d.receive("r", "k", "t", ok, 3.0, None) == "1"  # still there


async def test_a_record_that_raises_writes_nothing(store: Any) -> None:
    d = store._driver
    await d.write_run("r", row(), [])
    await d.send("r", "k", "1", 2.0, None)

    def broken(value: str) -> str:
        raise ValueError("cannot record")

    with pytest.raises(ValueError, match="cannot record"):
        await d.receive("r", "k", "s", broken, 3.0, None)
    assert await steps_of(store, "r") == []
    assert await d.receive("r", "k", "s", ok, 3.0, None) == "1"


async def test_receive_and_begin_wait_refuse_a_missing_run_or_a_lost_lease(store: Any) -> None:
    d = store._driver
    with pytest.raises(RunMissing):
        await d.receive("nobody", "k", "s", ok, 1.0, None)
    with pytest.raises(RunMissing):
        await d.begin_wait("nobody", WAIT, 1.0, None)
    await store.claim("r", NAME, owner="me", lease=30)
    await d.send("r", "k", "1", 2.0, None)
    with pytest.raises(LeaseLost):
        await d.receive("r", "k", "s", ok, 3.0, "other")
    with pytest.raises(LeaseLost):
        await d.begin_wait("r", WAIT, 3.0, "other")
    assert await d.receive("r", "k", "s", ok, 3.0, "me") == "1"


async def test_send_refuses_missing_ended_and_repeated_deliveries(store: Any) -> None:
    d = store._driver
    with pytest.raises(RunMissing):
        await d.send("nobody", "k", "1", 1.0, None)
    await d.write_run("gone", row(expires_at=5.0), [])
    with pytest.raises(RunMissing):
        await d.send("gone", "k", "1", 6.0, None)
    for status in ("completed", "failed"):
        await d.write_run(status, row(status), [])
        with pytest.raises(RunEnded) as ended:
            await d.send(status, "k", "1", 2.0, None)
        assert ended.value.status == status
        assert await d.receive(status, "k", "s", ok, 3.0, None) is None  # nothing stored
    await d.write_run("cancelled", row("cancelled"), [])
    await d.send("cancelled", "k", "1", 2.0, None)  # may still resume

    await d.write_run("r", row(), [])
    await d.send("r", "k", "1", 2.0, "s")
    with pytest.raises(AlreadySent):  # one pending
        await d.send("r", "k", "2", 3.0, "s")
    assert await d.receive("r", "k", "s", ok, 4.0, None) == "1"
    with pytest.raises(AlreadySent):  # consumed into step s
        await d.send("r", "k", "3", 5.0, "s")
    assert await d.receive("r", "k", "t", ok, 6.0, None) is None  # nothing stored
    await d.send("r", "k", "4", 7.0, None)  # without once: fine


async def test_hostile_keys_and_values_are_stored_as_they_are(store: Any) -> None:
    d = store._driver
    await d.write_run("r'; DROP TABLE awaitly_runs; --", row(), [])
    key = "k'\"; DELETE FROM awaitly_messages; -- ü" + "x" * 10_000
    value = '"\\u0000 it\'s \u2603"'
    await d.send("r'; DROP TABLE awaitly_runs; --", key, value, 2.0, None)
    got = await d.receive("r'; DROP TABLE awaitly_runs; --", key, "s", ok, 3.0, None)
    assert got == value


# ---- waits ---------------------------------------------------------------------------------


async def test_begin_wait_records_the_wait_once_and_keeps_its_deadline(store: Any) -> None:
    d = store._driver
    await d.write_run("r", row(), [])
    assert await d.begin_wait("r", WAIT, 10.0, None) == (False, 500.0)
    waiting = await stored(store, "r")
    assert (waiting.status, waiting.updated_at) == ("waiting", 10.0)
    assert (waiting.wait_step, waiting.wait_key, waiting.wait_kind, waiting.wake_at) == (
        "approval",
        "approve:7",
        "approval",
        500.0,
    )
    # Resumed (mark_running keeps the wait): the stored deadline stands.
    await store.mark_running("r", NAME)
    assert (await stored(store, "r")).status == "running"
    later = attrs.evolve(WAIT, wake_at=900.0)
    assert await d.begin_wait("r", later, 20.0, None) == (False, 500.0)
    again = await stored(store, "r")
    assert (again.status, again.wake_at) == ("waiting", 500.0)
    # Another wait replaces it.
    timer = WaitRow(step="nap", key=None, kind="timer", wake_at=700.0)
    assert await d.begin_wait("r", timer, 30.0, None) == (False, 700.0)
    napping = await stored(store, "r")
    assert (napping.wait_step, napping.wait_key, napping.wait_kind) == ("nap", None, "timer")


async def test_a_message_already_there_makes_the_wait_ready_at_once(store: Any) -> None:
    d = store._driver
    await d.write_run("r", row(), [])
    await d.send("r", "approve:7", '"yes"', 2.0, None)
    assert await d.begin_wait("r", WAIT, 3.0, None) == (True, None)
    untouched = await stored(store, "r")
    assert (untouched.status, untouched.wait_step) == ("running", None)


async def test_a_message_for_the_awaited_key_makes_the_wait_due(store: Any) -> None:
    d = store._driver
    await d.write_run("r", row(), [])
    await d.begin_wait("r", WAIT, 3.0, None)
    await d.send("r", "other", "1", 4.0, None)
    assert (await stored(store, "r")).wake_at == 500.0
    await d.send("r", "approve:7", "2", 5.0, None)
    assert (await stored(store, "r")).wake_at == 5.0


async def test_the_waits_own_step_ends_the_wait(store: Any) -> None:
    d = store._driver
    await d.write_run("r", row(), [])
    await d.begin_wait("r", WAIT, 3.0, None)
    await d.write_step("r", "other", ok("1"), 4.0, None)
    assert (await stored(store, "r")).wait_step == "approval"
    await d.write_step("r", "approval", ok("2"), 5.0, None)
    done = await stored(store, "r")
    assert done.status == "running"
    assert (done.wait_step, done.wait_key, done.wait_kind, done.wake_at) == (None,) * 4


async def test_receiving_into_the_waits_step_ends_the_wait(store: Any) -> None:
    d = store._driver
    await d.write_run("r", row(), [])
    await d.begin_wait("r", WAIT, 3.0, None)
    await d.send("r", "approve:7", '"yes"', 4.0, None)
    assert await d.receive("r", "approve:7", "approval", ok, 5.0, None) == '"yes"'
    done = await stored(store, "r")
    assert (done.status, done.wait_step, done.wake_at) == ("running", None, None)


async def test_writes_keep_the_wait_and_an_end_clears_it(store: Any) -> None:
    d = store._driver
    await d.write_run("r", row(), [])
    await d.begin_wait("r", WAIT, 3.0, None)
    await d.write_run("r", row("waiting", at=4.0), [("a", ok("1"))])  # a save
    assert (await stored(store, "r")).wait_step == "approval"
    await d.write_run("new", attrs.evolve(row(), wait_step="x", wake_at=1.0), [])
    fresh = await stored(store, "new")
    assert (fresh.wait_step, fresh.wake_at) == (None, None)
    await d.end_run("r", 6.0, End("completed"))
    ended = await stored(store, "r")
    assert ended.status == "completed"
    assert (ended.wait_step, ended.wait_key, ended.wait_kind, ended.wake_at) == (None,) * 4


async def test_a_claim_writes_the_wait_it_is_given(store: Any) -> None:
    d = store._driver
    await store.mark_running("r", NAME)
    await d.begin_wait("r", WAIT, 3.0, None)
    claim = await store.claim("r", NAME, owner="me", lease=30)
    assert claim.outcome == "claimed"
    taken = await stored(store, "r")
    assert (taken.status, taken.lease_owner, taken.wait_step, taken.wake_at) == (
        "running",
        "me",
        "approval",
        500.0,
    )


# ---- due waiting runs ------------------------------------------------------------------


async def test_the_sweep_claims_waiting_runs_once_they_are_due(store: Any) -> None:
    d = store._driver
    now = store._clock.time()
    for id, wake_at in [("due", now - 1), ("later", now + 100), ("never", None)]:
        await store.mark_running(id, NAME)
        await d.begin_wait(id, attrs.evolve(WAIT, step=id, wake_at=wake_at), now - 10, None)
    claimed = await store.claim_expired(owner="sweeper", lease=30)
    assert [info.id for info in claimed] == ["due"]
    assert claimed[0].status == "waiting"  # as read
    assert (await stored(store, "due")).lease_owner == "sweeper"
    assert await store.claim_expired(owner="other", lease=30) == []  # leased now
    await d.send("never", "approve:7", "1", now, None)
    assert [info.id for info in await store.claim_expired(owner="sweeper", lease=30)] == ["never"]


async def test_waiting_runs_are_listed_by_status(store: Any) -> None:
    d = store._driver
    await store.mark_running("w", NAME)
    await store.mark_running("r", NAME)
    await d.begin_wait("w", WAIT, store._clock.time(), None)
    page = await store.list(status="waiting")
    assert [(info.id, info.waiting_for, info.wait_kind) for info in page] == [
        ("w", "approve:7", "approval")
    ]


# ---- messages go with their run --------------------------------------------------------


async def test_deleting_or_expiring_a_run_drops_its_messages(store: Any) -> None:
    d = store._driver
    await d.write_run("r", row(), [])
    await d.send("r", "k", "1", 2.0, None)
    assert await d.delete("r", 3.0)
    await d.write_run("r", row(), [])
    assert await d.receive("r", "k", "s", ok, 4.0, None) is None

    for id in ("purged", "p2", "p3"):
        await d.write_run(id, row(expires_at=10.0), [])
        await d.send(id, "k", "1", 2.0, None)
    assert await d.purge(10.0) == 3
    await d.write_run("purged", row(), [])
    assert await d.receive("purged", "k", "s", ok, 11.0, None) is None


@pytest.mark.parametrize("how", ["start_run", "claim"])
async def test_a_run_started_over_an_expired_one_has_no_messages(store: Any, how: str) -> None:
    d = store._driver
    now = store._clock.time()
    await d.write_run("r", row(expires_at=now + 5), [])
    await d.send("r", "k", "1", now, None)
    await d.begin_wait("r", WAIT, now, None)
    store._clock.advance(10)
    if how == "start_run":
        await store.mark_running("r", NAME)
    else:
        await store.claim("r", NAME, owner="me", lease=30)
    assert await d.receive("r", "k", "s", ok, now + 10, None) is None
    assert (await stored(store, "r")).wait_step is None


# ---- channels ----------------------------------------------------------------------------


async def test_each_memory_store_is_its_own_channel() -> None:
    one, two = MemoryStore(), MemoryStore()
    assert one._driver.channel.startswith("memory:")
    assert one._driver.channel != two._driver.channel
    assert one._driver.channel == one._driver.channel
    await one._driver.watch(lambda id: None)  # nothing to listen to: returns


async def test_a_sqlite_file_is_one_channel_whatever_its_path_says(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    resolved = os.path.realpath(path)  # noqa: ASYNC240 (no event loop to block yet)
    one = SQLiteStore(path)
    other = SQLiteStore(os.path.join(str(tmp_path), ".", "runs.db"))
    assert one._driver.channel == other._driver.channel == f"sqlite:{resolved}"
    assert SQLiteStore(":memory:")._driver.channel != SQLiteStore(":memory:")._driver.channel
    await one._driver.watch(lambda id: None)  # no push: returns


async def test_a_message_sent_through_one_sqlite_store_is_received_through_another(
    tmp_path: Path,
) -> None:
    async with SQLiteStore(tmp_path / "runs.db") as one, SQLiteStore(tmp_path / "runs.db") as two:
        await one._driver.write_run("r", row(), [])
        await one._driver.send("r", "k", "1", 2.0, None)
        assert await two._driver.receive("r", "k", "s", ok, 3.0, None) == "1"
        assert await one._driver.receive("r", "k", "t", ok, 3.0, None) is None


# ---- the SQLite schema upgrade -------------------------------------------------------------

SQLITE_V2 = """
CREATE TABLE awaitly_runs (
    id TEXT PRIMARY KEY NOT NULL, workflow_name TEXT NOT NULL, status TEXT NOT NULL,
    result_json TEXT, metadata_json TEXT NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, expires_at REAL, format_version INTEGER NOT NULL,
    lease_owner TEXT, lease_expires_at REAL
);
CREATE INDEX awaitly_runs_by_update ON awaitly_runs (updated_at DESC, id DESC);
CREATE INDEX awaitly_runs_by_expiry ON awaitly_runs (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE awaitly_steps (
    run_id TEXT NOT NULL, key TEXT NOT NULL, record_json TEXT NOT NULL, seq INTEGER,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE INDEX awaitly_steps_in_order ON awaitly_steps (run_id, seq);
PRAGMA user_version = 2;
"""


async def test_a_version_2_sqlite_database_is_upgraded_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.executescript(SQLITE_V2)
        db.execute(
            "INSERT INTO awaitly_runs VALUES ('r', 'orders', 'running', NULL, '{}', 1, 1, NULL,"
            " 1, 'me', 99)"
        )
        db.execute("INSERT INTO awaitly_steps VALUES ('r', 'a', ?, 1)", (encoded("a", 1).json,))

    async with SQLiteStore(path) as store:
        loaded = await store.load("r")
        assert loaded is not None
        assert list(loaded.steps) == ["a"]
        old = await stored(store, "r")
        assert (old.lease_owner, old.wait_step, old.wait_key, old.wait_kind, old.wake_at) == (
            "me",
            None,
            None,
            None,
            None,
        )
        d = store._driver
        await d.send("r", "k", "1", 2.0, None)
        assert await d.begin_wait("r", WAIT, 3.0, "me") == (False, 500.0)
        assert await d.receive("r", "k", "s", ok, 4.0, "me") == "1"
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        indexes = {
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        assert {"awaitly_runs_due", "awaitly_messages_in_order"} <= indexes


async def test_a_new_sqlite_file_and_an_upgraded_one_have_the_same_tables(tmp_path: Path) -> None:
    def shape(path: Path) -> list[tuple[str, list[tuple[Any, ...]]]]:
        with contextlib.closing(sqlite3.connect(path)) as db:
            tables = [
                name
                for (name,) in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            return [
                (table, [tuple(col[1:3]) for col in db.execute(f"PRAGMA table_info({table})")])
                for table in tables
            ]

    with contextlib.closing(sqlite3.connect(tmp_path / "old.db", isolation_level=None)) as db:
        db.executescript(SQLITE_V2)
    async with SQLiteStore(tmp_path / "old.db"):
        pass
    async with SQLiteStore(tmp_path / "new.db"):
        pass
    assert shape(tmp_path / "old.db") == shape(tmp_path / "new.db")
