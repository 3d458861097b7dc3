"""The PostgreSQL row driver's waiting (issue 19), below the store front: mailboxes,
waits, due runs, wake-ups over LISTEN/NOTIFY, and the upgrade of a version 2 schema."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest

from awaitly_anyio import Ok
from awaitly_anyio.stores._driver import AlreadySent, LeaseLost, RunEnded, RunMissing, WaitRow
from awaitly_anyio.stores.postgres import SCHEMA_VERSION, PostgresStore, digest
from awaitly_anyio.testing import FakeClock

from .kit_base import encoded, server_or_skip
from .postgres_kit import DSN, _on_fresh_connection, admin, admin_fetch, schema_for

pytestmark = pytest.mark.anyio


@pytest.fixture
async def schema(tmp_path: Path) -> AsyncIterator[str]:
    name = schema_for(tmp_path) + "_w"
    try:
        await admin(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    except OSError as exc:
        server_or_skip("PostgreSQL", DSN, exc)
    yield name
    await admin(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(schema: str, clock: FakeClock) -> AsyncIterator[PostgresStore]:
    async with PostgresStore(DSN, schema=schema, clock=clock, max_size=4) as opened:
        yield opened


def driver(store: PostgresStore) -> Any:
    return store._pg


def record(value_json: str) -> str:
    """A step record holding the message (what the front's ``record`` makes, roughly)."""
    return json.dumps({"ok": json.loads(value_json)})


async def started(store: PostgresStore, id: str = "r1") -> str:
    await store.claim(id, "orders", owner="w", lease=30.0)
    return id


async def row_of(store: PostgresStore, id: str) -> Any:
    found = await driver(store).read(id, 0.0, steps=False)
    assert found is not None
    return found[0]


async def mailbox(store: PostgresStore, id: str) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = await admin_fetch(
        f"SELECT key, value::text FROM {driver(store).sql.messages} WHERE run_digest = $1"
        " ORDER BY seq",
        digest(id),
    )
    return rows


async def test_send_refuses_missing_and_ended_runs(store: PostgresStore, clock: FakeClock) -> None:
    now = clock.time()
    with pytest.raises(RunMissing):
        await driver(store).send("nope", "k", "1", now, None)
    await started(store, "done")
    await store.finish("done", "completed", Ok(1), "1", owner="w")
    with pytest.raises(RunEnded) as ended:
        await driver(store).send("done", "k", "1", now, None)
    assert ended.value.status == "completed"
    await started(store, "stopped")
    await store.finish("stopped", "cancelled", None, None, owner="w")
    await driver(store).send("stopped", "k", "1", now, None)  # a cancelled run may resume
    assert await mailbox(store, "nope") == []
    assert await mailbox(store, "done") == []
    assert await mailbox(store, "stopped") == [("k", "1")]


async def test_messages_are_consumed_once_oldest_first_per_key(
    store: PostgresStore, clock: FakeClock
) -> None:
    id = await started(store)
    d = driver(store)
    now = clock.time()
    await d.send(id, "k", '"first"', now, None)
    await d.send(id, "other", '"x"', now, None)
    await d.send(id, "k", '"second"', now, None)
    assert await d.receive(id, "k", "s1", record, now, "w") == '"first"'
    assert await d.receive(id, "k", "s1", record, now, "w") is None  # s1 is recorded
    assert await d.receive(id, "k", "s2", record, now, None) == '"second"'
    assert await d.receive(id, "k", "s3", record, now, None) is None  # none left
    assert await d.receive(id, "other", "s3", record, now, None) == '"x"'
    found = await d.read(id, now, steps=True)
    assert [key for key, _ in found[1]] == ["s1", "s2", "s3"]
    assert json.loads(dict(found[1])["s2"]) == {"ok": "second"}
    assert await mailbox(store, id) == []
    with pytest.raises(LeaseLost):
        await d.receive(id, "k", "s4", record, now, "someone else")
    with pytest.raises(RunMissing):
        await d.receive("nope", "k", "s4", record, now, None)


async def test_concurrent_receivers_each_take_a_different_message(
    store: PostgresStore, clock: FakeClock
) -> None:
    id = await started(store)
    d = driver(store)
    now = clock.time()
    for n in range(20):
        await d.send(id, "k", str(n), now, None)
    got: list[str | None] = []

    async def take(n: int) -> None:
        got.append(await d.receive(id, "k", f"s{n}", record, now, None))

    async with anyio.create_task_group() as tg:
        for n in range(25):
            tg.start_soon(take, n)
    assert sorted(int(value) for value in got if value is not None) == list(range(20))
    assert got.count(None) == 5


async def test_a_record_that_raises_writes_nothing(store: PostgresStore, clock: FakeClock) -> None:
    id = await started(store)
    d = driver(store)
    await d.send(id, "k", "1", clock.time(), None)

    def broken(_: str) -> str:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await d.receive(id, "k", "s", broken, clock.time(), None)
    assert await d.receive(id, "k", "s", record, clock.time(), None) == "1"


async def test_once_refuses_a_pending_or_consumed_message(
    store: PostgresStore, clock: FakeClock
) -> None:
    id = await started(store)
    d = driver(store)
    now = clock.time()
    await d.send(id, "k", "1", now, "s")
    with pytest.raises(AlreadySent):
        await d.send(id, "k", "2", now, "s")  # pending
    await d.receive(id, "k", "s", record, now, None)
    with pytest.raises(AlreadySent):
        await d.send(id, "k", "3", now, "s")  # consumed into step s
    assert await d.receive(id, "k", "t", record, now, None) is None
    assert await mailbox(store, id) == []


async def test_hostile_keys_and_values_stay_apart(store: PostgresStore, clock: FakeClock) -> None:
    id = await started(store, "r:'\"]]--; DROP TABLE x")
    d = driver(store)
    now = clock.time()
    keys = ["a", "a\x01", "k'); DELETE FROM runs; --", "$1", "é" * 5000, "1"]
    for n, key in enumerate(keys):
        await d.send(id, key, json.dumps({"n": n, "s": key}), now, None)
    for n, key in enumerate(keys):
        got = await d.receive(id, key, f"s{n}", record, now, None)
        assert json.loads(got) == {"n": n, "s": key}


async def test_begin_wait_records_and_resumes_the_wait(
    store: PostgresStore, clock: FakeClock
) -> None:
    id = await started(store)
    d = driver(store)
    now = clock.time()
    wait = WaitRow("w1", "k", "approval", now + 100)
    assert await d.begin_wait(id, wait, now, "w") == (False, now + 100)
    row = await row_of(store, id)
    assert (row.status, row.wait_step, row.wait_key, row.wait_kind, row.wake_at) == (
        "waiting",
        "w1",
        "k",
        "approval",
        now + 100,
    )
    listed = await d.list(now, None, "waiting", None, 10)
    assert [entry.id for entry in listed] == [id]
    # Resumed after a restart: the stored deadline stays, whatever the new one says.
    await store.mark_running(id, "orders")
    row = await row_of(store, id)
    assert (row.status, row.wait_step, row.wake_at) == ("running", "w1", now + 100)
    clock.advance(10)
    later = clock.time()
    assert await d.begin_wait(id, WaitRow("w1", "k", "approval", later + 100), later, None) == (
        False,
        now + 100,
    )
    row = await row_of(store, id)
    assert (row.status, row.wake_at, row.updated_at) == ("waiting", now + 100, now)
    with pytest.raises(RunMissing):
        await d.begin_wait("nope", wait, now, None)
    with pytest.raises(LeaseLost):
        await d.begin_wait(id, wait, now, "someone else")


async def test_begin_wait_with_a_message_pending_writes_nothing(
    store: PostgresStore, clock: FakeClock
) -> None:
    id = await started(store)
    d = driver(store)
    now = clock.time()
    await d.send(id, "k", "1", now, None)
    before = await row_of(store, id)
    assert await d.begin_wait(id, WaitRow("w1", "k", "message", None), now, None) == (True, None)
    assert await row_of(store, id) == before
    # A timer waits for no key.
    assert await d.begin_wait(id, WaitRow("t1", None, "timer", None), now, None) == (False, None)
    assert (await row_of(store, id)).status == "waiting"


async def test_a_message_sent_while_the_wait_is_being_recorded_is_seen(
    store: PostgresStore, clock: FakeClock
) -> None:
    """The send holds the run's lock when the wait's statement starts (so that
    statement's snapshot cannot see the message); the wait must still come back
    ready, or the run would wait beside its message."""
    id = await started(store)
    d = driver(store)
    now = clock.time()
    tag = f"awaitly-test-{uuid.uuid4().hex}"
    sql = d.sql

    async def hold(connection: Any) -> None:
        # The send's own statement, left uncommitted until the wait is blocked on it.
        await connection.execute(f"SET application_name = '{tag}'")
        async with connection.transaction():
            outcome = await connection.fetchval(
                sql.send, digest(id), "k", digest("k"), "7", now, None, sql.channel, "=" + id
            )
            assert outcome == "ok"
            await connection.execute(f"SET LOCAL application_name = '{tag}-locked'")
            me = connection.get_server_pid()
            while not await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity"
                " WHERE $1 = ANY(pg_blocking_pids(pid)))",
                me,
            ):
                pass  # each look is a round trip: paced by the server

    async def is_locked() -> bool:
        found = await admin_fetch(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = $1", f"{tag}-locked"
        )
        return bool(found)

    outcome: list[tuple[bool, float | None]] = []

    async def wait() -> None:
        while not await is_locked():
            pass
        outcome.append(await d.begin_wait(id, WaitRow("w1", "k", "message", None), now, None))

    async with anyio.create_task_group() as tg:
        tg.start_soon(_on_fresh_connection, hold)
        tg.start_soon(wait)
    assert outcome == [(True, None)]
    assert await d.receive(id, "k", "w1", record, now, None) == "7"
    row = await row_of(store, id)
    assert (row.status, row.wait_step) == ("running", None)


async def test_the_wait_s_step_ends_the_wait(store: PostgresStore, clock: FakeClock) -> None:
    id = await started(store)
    d = driver(store)
    now = clock.time()
    await d.begin_wait(id, WaitRow("w1", "k", "message", now + 50), now, None)
    await store.checkpoint(id, encoded("other", 1), owner="w")  # not the wait's step
    assert (await row_of(store, id)).status == "waiting"
    await store.checkpoint(id, encoded("w1", 1), owner="w")
    row = await row_of(store, id)
    assert (row.status, row.wait_step, row.wait_key, row.wait_kind, row.wake_at) == (
        "running",
        None,
        None,
        None,
        None,
    )
    # Receiving into the wait's step ends it too.
    await d.begin_wait(id, WaitRow("w2", "k", "message", now + 50), now, None)
    await d.send(id, "k", "7", now, None)
    assert await d.receive(id, "k", "w2", record, now, None) == "7"
    row = await row_of(store, id)
    assert (row.status, row.wait_step, row.wake_at) == ("running", None, None)
    # Another owner's checkpoint of the wait's step changes nothing.
    await d.begin_wait(id, WaitRow("w3", "k", "message", now + 50), now, None)
    with pytest.raises(LeaseLost):
        await d.write_step(id, "w3", '{"ok": 1}', now, "someone else")
    assert (await row_of(store, id)).wait_step == "w3"


async def test_checkpoints_written_together_end_their_waits(
    store: PostgresStore, clock: FakeClock
) -> None:
    d = driver(store)
    now = clock.time()
    ids = [f"g{n}" for n in range(30)]
    for id in ids:
        await started(store, id)
        await d.begin_wait(id, WaitRow("w", "k", "message", now + 50), now, None)
    async with anyio.create_task_group() as tg:  # the group-commit path
        for id in ids:
            tg.start_soon(functools.partial(store.checkpoint, owner="w"), id, encoded("other", 1))
            tg.start_soon(functools.partial(store.checkpoint, owner="w"), id, encoded("w", 1))
    for id in ids:
        row = await row_of(store, id)
        assert (row.status, row.wait_step, row.wake_at) == ("running", None, None)


async def test_a_send_makes_its_waiting_run_due(store: PostgresStore, clock: FakeClock) -> None:
    id = await started(store)
    d = driver(store)
    now = clock.time()
    await d.begin_wait(id, WaitRow("w1", "k", "message", None), now, None)
    clock.advance(5)
    await d.send(id, "other", "1", clock.time(), None)
    assert (await row_of(store, id)).wake_at is None  # not the awaited key
    await d.send(id, "k", "1", clock.time(), None)
    assert (await row_of(store, id)).wake_at == clock.time()


async def test_recovery_takes_due_waiting_runs_only(store: PostgresStore, clock: FakeClock) -> None:
    d = driver(store)
    now = clock.time()
    for id, wake_at in (("soon", now + 10), ("late", now + 1000), ("never", None)):
        await started(store, id)
        await d.begin_wait(id, WaitRow("w", "k", "message", wake_at), now, None)
        await store.release(id, owner="w")
    assert await store.claim_expired(owner="sweeper", lease=30.0) == []
    clock.advance(20)
    taken = await store.claim_expired(owner="sweeper", lease=30.0)
    assert [(info.id, info.status, info.waiting_for) for info in taken] == [
        ("soon", "waiting", "k")
    ]
    assert (await row_of(store, "soon")).lease_owner == "sweeper"
    assert await store.claim_expired(owner="other", lease=30.0) == []  # held now
    # A send makes the one without a deadline due at once.
    await d.send("never", "k", "1", clock.time(), None)
    taken = await store.claim_expired(owner="sweeper", lease=30.0)
    assert [info.id for info in taken] == ["never"]


async def test_claim_and_save_keep_the_wait_and_end_clears_it(
    store: PostgresStore, clock: FakeClock
) -> None:
    id = await started(store)
    d = driver(store)
    now = clock.time()
    await d.begin_wait(id, WaitRow("w1", "k", "hook", now + 60), now, None)
    await store.release(id, owner="w")
    claim = await store.claim(id, "orders", owner="w2", lease=30.0)
    assert claim.outcome == "claimed"
    row = await row_of(store, id)
    assert (row.status, row.wait_step, row.wait_kind, row.wake_at) == (
        "running",
        "w1",
        "hook",
        now + 60,
    )
    # save() keeps the stored wait (like the lease).
    snapshot = await store.load(id)
    assert snapshot is not None
    await store.save(id, snapshot)
    assert (await row_of(store, id)).wait_step == "w1"
    await store.finish(id, "completed", Ok(1), "1", ttl=60, owner="w2")
    row = await row_of(store, id)
    assert (row.wait_step, row.wait_key, row.wait_kind, row.wake_at) == (None, None, None, None)
    # So does an end that merges metadata, alone or in SQL.
    for n, metadata in enumerate(({"a": 1}, {"when": datetime(2026, 1, 1, tzinfo=timezone.utc)})):
        other = await started(store, f"m{n}")
        await d.begin_wait(other, WaitRow("w1", "k", "hook", now + 60), now, None)
        await store.finish(other, "failed", None, None, metadata=metadata, owner="w")
        row = await row_of(store, other)
        assert (row.status, row.wait_step, row.wake_at) == ("failed", None, None)


async def test_messages_go_with_their_run(store: PostgresStore, clock: FakeClock) -> None:
    d = driver(store)
    now = clock.time()
    for id in ("deleted", "purged", "reclaimed", "restarted"):
        await started(store, id)
        await d.send(id, "k", "1", now, None)
    assert await store.delete("deleted")
    assert await mailbox(store, "deleted") == []
    for id in ("purged", "reclaimed", "restarted"):
        await store.finish(id, "cancelled", None, None, ttl=1, owner="w")
    clock.advance(2)
    # A new run over an expired one starts with an empty mailbox (claim, mark_running).
    assert (await store.claim("reclaimed", "orders", owner="w", lease=30.0)).fresh
    assert await mailbox(store, "reclaimed") == []
    await store.mark_running("restarted", "orders")
    assert await mailbox(store, "restarted") == []
    assert await store.purge_expired() == 1
    assert await mailbox(store, "purged") == []
    # save() keeps a live run's messages.
    await d.send("reclaimed", "k", "2", clock.time(), None)
    snapshot = await store.load("reclaimed")
    assert snapshot is not None
    await store.save("reclaimed", snapshot)
    assert await mailbox(store, "reclaimed") == [("k", "2")]


async def test_channel_names_the_database_and_schema_without_secrets() -> None:
    a = PostgresStore("postgresql://user:hunter2@127.0.0.1:5432/test", schema="s1")
    b = PostgresStore("postgresql://user:other@127.0.0.1:5432/test", schema="s1")
    c = PostgresStore("postgresql://user:hunter2@127.0.0.1:5432/test", schema="s2")
    d = PostgresStore(
        "postgresql://user:hunter2@127.0.0.1:5432/test", schema="s1", table_prefix="x_"
    )
    channels = [driver(s).channel for s in (a, b, c, d)]
    assert channels[0] == channels[1]
    assert len(set(channels)) == 3
    assert all("hunter2" not in channel and "other" not in channel for channel in channels)
    # The NOTIFY channels: one per schema and prefix, a long one named by its digest.
    long = PostgresStore(DSN, schema="s" * 41, table_prefix="p" * 41)
    notify = {driver(s).sql.channel for s in (a, b, c, d, long)}
    assert len(notify) == 4
    assert all(len(name) <= 63 for name in notify)
    for s in (a, b, c, d, long):
        await s.close()


async def test_watch_wakes_for_every_send(
    store: PostgresStore, schema: str, clock: FakeClock
) -> None:
    woken: list[str] = []
    arrived = anyio.Event()
    long_id = "L" * 9000  # too long for a NOTIFY payload: sent as its digest
    expected = ["a", "b", long_id, "a"]

    def wake(id: str) -> None:
        woken.append(id)
        if [found for found in woken if found != "p"] == expected:
            arrived.set()

    async with PostgresStore(DSN, schema=schema, clock=clock) as sender:
        for id in ("a", "b", "p", long_id):
            await started(sender, id)
        other = PostgresStore(DSN, schema=schema, table_prefix="other_", clock=clock)
        async with other:
            await started(other, "a")
            async with anyio.create_task_group() as tg:
                tg.start_soon(driver(store).watch, wake)
                # A NOTIFY sent before the watch listens is not heard: send to "p"
                # until one is (each send is a round trip, so this loop is paced).
                while not woken:
                    await driver(sender).send("p", "k", "0", clock.time(), None)
                await driver(other).send("a", "k", "0", clock.time(), None)  # other tables
                await driver(sender).send("a", "k", "1", clock.time(), None)
                await driver(sender).send("b", "k", "2", clock.time(), None)
                await driver(sender).send(long_id, "k", "2", clock.time(), None)
                with pytest.raises(RunMissing):  # nothing sent: nothing heard
                    await driver(sender).send("gone", "k", "2", clock.time(), None)
                await driver(sender).send("a", "k", "3", clock.time(), None)
                await arrived.wait()
                tg.cancel_scope.cancel()
    assert [found for found in woken if found != "p"] == expected
    assert not driver(store)._listeners  # its connection is closed


async def test_watch_raises_when_its_connection_drops(
    store: PostgresStore, clock: FakeClock
) -> None:
    await started(store)
    d = driver(store)
    woken: list[str] = []

    async def heard_then_drop() -> None:
        while not woken:
            await d.send("r1", "k", "0", clock.time(), None)
        (listener,) = d._listeners
        await admin("SELECT pg_terminate_backend($1)", listener.server_pid)  # ours

    async with anyio.create_task_group() as tg:
        tg.start_soon(heard_then_drop)
        # (A guard, not a timing check: a watch deaf to the drop fails instead of hanging.)
        with pytest.raises(ConnectionError, match="lost its connection"), anyio.fail_after(60):
            await d.watch(woken.append)
    assert not d._listeners
    # The store still works afterwards, and so does a new watch.
    await d.send("r1", "k", "1", clock.time(), None)
    again: list[str] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(d.watch, again.append)
        while not again:
            await d.send("r1", "k", "2", clock.time(), None)
        tg.cancel_scope.cancel()


async def test_closing_the_store_ends_its_watch(schema: str, clock: FakeClock) -> None:
    store = PostgresStore(DSN, schema=schema, clock=clock)
    await store.__aenter__()
    await started(store)
    d = driver(store)
    woken: list[str] = []
    ended: list[Exception] = []

    async def watching() -> None:
        try:
            await d.watch(woken.append)
        except (ConnectionError, RuntimeError) as exc:
            ended.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watching)
        while not woken:
            await d.send("r1", "k", "0", clock.time(), None)
        await store.close()
    assert len(ended) == 1
    assert not d._listeners


# ---- the schema ------------------------------------------------------------------------


async def _version_2(schema: str) -> None:
    from awaitly_anyio.stores._postgres_sql import MIGRATIONS

    runs, steps = f'"{schema}"."awaitly_runs"', f'"{schema}"."awaitly_steps"'
    await admin(f'CREATE SCHEMA "{schema}"')
    for version in (1, 2):
        await admin(MIGRATIONS[version].format(runs=runs, steps=steps, prefix="awaitly_"))
    await admin(f'CREATE TABLE "{schema}"."awaitly_schema_version" (version integer NOT NULL)')
    await admin(f'INSERT INTO "{schema}"."awaitly_schema_version" VALUES (2)')


async def _shape(schema: str) -> tuple[list[Any], list[Any]]:
    columns = await admin_fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = $1 ORDER BY table_name, column_name",
        schema,
    )
    indexes = await admin_fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname",
        schema,
    )
    return columns, [(name, text.replace(schema, "S")) for name, text in indexes]


async def test_a_version_2_database_is_upgraded_and_keeps_its_runs(
    schema: str, clock: FakeClock
) -> None:
    await _version_2(schema)
    await admin(
        f'INSERT INTO "{schema}"."awaitly_runs" (id, id_digest, workflow_name, status,'
        " metadata, created_at, updated_at, format_version, lease_owner, lease_expires_at)"
        " VALUES ('old', $1, 'orders', 'running', '{}'::jsonb, 1, 1, 1, 'w', 1e12)",
        digest("old"),
    )
    async with PostgresStore(DSN, schema=schema, clock=clock) as store:
        d = driver(store)
        row = await row_of(store, "old")
        assert (row.status, row.lease_owner, row.wait_step, row.wake_at) == (
            "running",
            "w",
            None,
            None,
        )
        await d.send("old", "k", '"v"', clock.time(), None)
        assert await d.begin_wait("old", WaitRow("s", "k", "message", None), 0.0, "w") == (
            True,
            None,
        )
        assert await d.receive("old", "k", "s", record, clock.time(), "w") == '"v"'
    versions = await admin_fetch(f'SELECT version FROM "{schema}"."awaitly_schema_version"')
    assert max(row[0] for row in versions) == SCHEMA_VERSION == 3
    upgraded = await _shape(schema)
    await admin(f'DROP SCHEMA "{schema}" CASCADE')
    async with PostgresStore(DSN, schema=schema, clock=clock):
        pass
    fresh = await _shape(schema)
    assert upgraded == fresh
    assert {name for name, _ in fresh[1]} >= {"awaitly_runs_waking", "awaitly_messages_pkey"}
    assert "WHERE (status = 'waiting'::text)" in dict(fresh[1])["awaitly_runs_waking"]
    assert "(run_digest, key_digest, seq)" in dict(fresh[1])["awaitly_messages_pkey"]
