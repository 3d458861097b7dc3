"""What only the PostgreSQL driver promises for queues, run control and schedules
(issue 20) and the one-statement receive (issue 19): the upgrade of a version 3
schema, caps kept by many claimers on several connections at once (the advisory
lock per queue), SKIP LOCKED, which pushes go out, long names, and what a write over
an expired run leaves.  The behaviour every store shares is in
tests/test_queue_contract.py."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from awaitly_anyio._bridge import DriverLoop
from awaitly_anyio._loops import current
from awaitly_anyio._rows import RunRow, message_record_parts
from awaitly_anyio.stores._driver import EndTerms, WaitRow
from awaitly_anyio.stores._postgres_sql import Statements
from awaitly_anyio.stores.postgres import SCHEMA_VERSION, PostgresStore, digest
from awaitly_anyio.testing import FakeClock

from .kit_base import server_or_skip
from .postgres_kit import DSN, admin, admin_fetch, schema_for

pytestmark = pytest.mark.anyio

Q = "emails"


@pytest.fixture
async def schema(tmp_path: Path) -> AsyncIterator[str]:
    name = schema_for(tmp_path) + "_q"
    try:
        await admin(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    except OSError as exc:
        server_or_skip("PostgreSQL", DSN, exc)
    yield name
    await admin(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
async def store(schema: str, clock: FakeClock) -> AsyncIterator[PostgresStore]:
    async with PostgresStore(DSN, schema=schema, clock=clock, max_size=4) as opened:
        yield opened


async def running_of(schema: str, queue: str = Q) -> list[tuple[str, str | None]]:
    """The queue's running runs (id, partition), read on a connection of the test's."""
    rows: list[tuple[str, str | None]] = await admin_fetch(
        f'SELECT id, partition FROM "{schema}"."awaitly_runs"'
        " WHERE queue = $1 AND status = 'running' ORDER BY id",
        queue,
    )
    return rows


class _End:
    """`EndTerms` of a plain end (no metadata), for the driver."""

    def __init__(self, status: str = "completed") -> None:
        self.status: Any = status
        self.result_json: str | None = None
        self.expires_at: float | None = None
        self.owner: str | None = None
        self.metadata_patch: str | None = None
        self.merge: Callable[[RunRow], str] | None = None


# ---- the upgrade -------------------------------------------------------------------------


async def test_a_version_3_database_is_upgraded_and_keeps_its_runs(
    schema: str, clock: FakeClock
) -> None:
    sql = Statements(schema, "awaitly_")
    await admin(sql.create_schema)
    await admin(sql.create_versions)
    for version in (1, 2, 3):
        await admin(sql.migration(version))
    await admin(sql.insert_version, 3)
    await admin(
        f"INSERT INTO {sql.runs} (id, id_digest, workflow_name, status, metadata, created_at,"
        " updated_at, format_version, lease_owner, lease_expires_at, wait_step, wait_key,"
        " wait_kind, wake_at) VALUES ('old', $1, 'orders', 'waiting', '{}'::jsonb, 1, 1, 1,"
        " 'w', 1e12, 's', 'k', 'message', 5e9)",
        digest("old"),
    )
    await admin(
        f"INSERT INTO {sql.messages} (run_digest, key, key_digest, value, sent_at)"
        " VALUES ($1, 'other', $2, '7'::jsonb, 1)",
        digest("old"),
        digest("other"),
    )
    async with PostgresStore(DSN, schema=schema, clock=clock) as store:
        found = await store._pg.read("old", clock.time(), steps=False)
        assert found is not None
        row = found[0]
        assert (row.status, row.lease_owner, row.wait_step, row.wake_at) == (
            "waiting",
            "w",
            "s",
            5e9,
        )
        assert (row.queue, row.priority, row.partition, row.started_at, row.cancel_at) == (
            None,
            0,
            None,
            None,
            None,
        )
        head, tail = message_record_parts(clock.time())
        got = await store._pg.receive("old", "other", "t", head, tail, clock.time(), "w", None)
        assert got == "7"  # the mailbox came through
        await store.enqueue("new", "orders", queue=Q, priority=3, partition="p")
        [taken] = await store.claim_queued(Q, owner="w2", lease=30.0, concurrency=1)
        assert (taken.id, taken.queue, taken.priority, taken.partition) == ("new", Q, 3, "p")
        await store.put_schedule("nightly", {"every": 60})
        assert [s.name for s in await store.schedules()] == ["nightly"]
    versions = await admin_fetch(f"SELECT version FROM {sql.versions} ORDER BY version")
    assert [v for (v,) in versions] == [3, SCHEMA_VERSION] == [3, 5]
    indexes = await admin_fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND indexname LIKE '%queue%'"
        " ORDER BY indexname",
        schema,
    )
    assert [name for (name,) in indexes] == [
        "awaitly_runs_queue_running",
        "awaitly_runs_queue_starts",
        "awaitly_runs_queued",
    ]


# ---- caps across connections --------------------------------------------------------------


async def test_many_claimers_on_several_connections_never_exceed_the_caps(
    schema: str, clock: FakeClock
) -> None:
    """Twelve claimers at once over two stores (each with a pool: many connections),
    then again after some runs end: the running runs never exceed the global cap, nor
    a partition its cap, nor the starts the rate cap, and no run is taken twice."""
    async with (
        PostgresStore(DSN, schema=schema, clock=clock, max_size=6) as one,
        PostgresStore(DSN, schema=schema, clock=clock, max_size=6) as two,
    ):
        partitions = ["a", "b", "c", None]
        for n in range(60):
            await one.enqueue(f"r{n:02}", "orders", queue=Q, partition=partitions[n % 4])
        seen: list[str] = []

        async def claim(store: PostgresStore, owner: str) -> None:
            got = await store.claim_queued(
                Q,
                owner=owner,
                lease=30.0,
                limit=3,
                concurrency=6,
                partition_concurrency=2,
                rate=(9, 60.0),
            )
            seen.extend(info.id for info in got)

        for wave in range(3):
            async with anyio.create_task_group() as group:
                for n in range(12):
                    group.start_soon(claim, (one, two)[n % 2], f"w{wave}-{n}")
            running = await running_of(schema)
            assert len(running) <= 6
            for partition in partitions:
                assert [p for _, p in running].count(partition) <= 2
            for id, _ in running[:2]:  # two end: room for two more
                await one.finish(id, "completed", None, None)
            clock.advance(1)
        assert len(seen) == len(set(seen))
        assert len(seen) == 9  # 6, then 2 (the rate's 9th start) then 1, then none


async def test_a_capped_claim_takes_its_turn_and_counts_what_the_turn_before_took(
    schema: str, clock: FakeClock
) -> None:
    """Another claimer holds the queue's turn (its advisory lock) and has started two
    runs, not yet committed: a capped claim waits for the turn, then counts them, and
    takes only what the cap leaves."""
    async with PostgresStore(DSN, schema=schema, clock=clock) as store:
        for n in range(6):
            await store.enqueue(f"r{n}", "orders", queue=Q)
        sql = store._pg.sql
        loop = DriverLoop("test other claimer")
        try:
            import asyncpg

            other: Any = await loop.call(asyncpg.connect, DSN)
            try:
                await loop.call(other.execute, "BEGIN")
                await loop.call(other.execute, sql.lock_queue, f"{schema}.awaitly_", Q)
                await loop.call(
                    other.execute,
                    f"UPDATE {sql.runs} SET status = 'running' WHERE id IN ('r4', 'r5')",
                )
                got: list[Any] = []

                async def claim() -> None:
                    got.extend(
                        await store.claim_queued(Q, owner="w", lease=30.0, limit=5, concurrency=3)
                    )

                async def waiting_for_the_turn() -> bool:
                    found = await admin_fetch(
                        "SELECT 1 FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                        other.get_server_pid(),
                    )
                    return bool(found)

                async with anyio.create_task_group() as group:
                    group.start_soon(claim)
                    # Each look is a round trip (paced by the server); a claim that does
                    # not wait ends the loop too, and then takes too many.
                    while not got and not await waiting_for_the_turn():
                        pass
                    await loop.call(other.execute, "COMMIT")
                assert [info.id for info in got] == ["r0"]
            finally:
                await loop.call(other.close)
        finally:
            loop.release()
    assert [id for id, _ in await running_of(schema)] == ["r0", "r4", "r5"]


async def test_without_caps_claimers_skip_the_rows_others_hold(
    schema: str, clock: FakeClock
) -> None:
    """A pending run locked by another transaction is passed over at once (SKIP LOCKED),
    not waited for; it is taken once free."""
    async with PostgresStore(DSN, schema=schema, clock=clock) as store:
        for n in range(3):
            await store.enqueue(f"r{n}", "orders", queue=Q)
        loop = DriverLoop("test locker")
        try:
            import asyncpg

            connection: Any = await loop.call(asyncpg.connect, DSN)
            try:
                await loop.call(connection.execute, "BEGIN")
                await loop.call(
                    connection.execute,
                    f'SELECT 1 FROM "{schema}"."awaitly_runs" WHERE id = $1 FOR UPDATE',
                    "r0",
                )
                with anyio.fail_after(30):  # a guard: a claim that waits for r0 fails here
                    got = await store.claim_queued(Q, owner="w", lease=30.0, limit=3)
                assert [info.id for info in got] == ["r1", "r2"]
                await loop.call(connection.execute, "ROLLBACK")
                got = await store.claim_queued(Q, owner="w", lease=30.0, limit=3)
                assert [info.id for info in got] == ["r0"]
            finally:
                await loop.call(connection.close)
        finally:
            loop.release()


async def test_many_claimers_without_caps_split_the_queue(schema: str, clock: FakeClock) -> None:
    async with (
        PostgresStore(DSN, schema=schema, clock=clock, max_size=6) as one,
        PostgresStore(DSN, schema=schema, clock=clock, max_size=6) as two,
    ):
        for n in range(40):
            await one.enqueue(f"r{n:02}", "orders", queue=Q, priority=n % 3)
        taken: list[list[str]] = []

        async def claim(store: PostgresStore, owner: str) -> None:
            got = await store.claim_queued(Q, owner=owner, lease=30.0, limit=5)
            taken.append([info.id for info in got])

        async with anyio.create_task_group() as group:
            for n in range(10):
                group.start_soon(claim, (one, two)[n % 2], f"w{n}")
        every = [id for ids in taken for id in ids]
        assert sorted(every) == [f"r{n:02}" for n in range(40)]
        for ids in taken:  # each claimer's runs come back in the queue's order
            assert ids == sorted(ids, key=lambda id: (int(id[1:]) % 3, id))


async def test_long_queue_names_partitions_and_ids_are_only_data(
    store: PostgresStore,
) -> None:
    # Text that does not compress (an index entry holds at most about 2.7 kB).
    queue, partition, id = (
        "".join(hashlib.sha256(f"{what}{n}".encode()).hexdigest() for n in range(size))
        for what, size in (("q", 100), ("p", 100), ("r", 150))
    )
    await store.enqueue(id, "orders", queue=queue, partition=partition)
    await store.enqueue("short", "orders", queue=queue + "x")
    [taken] = await store.claim_queued(queue, owner="w", lease=30.0, partition_concurrency=1)
    assert (taken.id, taken.queue, taken.partition) == (id, queue, partition)
    assert await store.cancel(id) == "running"
    await store.put_schedule(queue, {"every": 1})
    assert [s.name for s in await store.schedules()] == [queue]


# ---- pushes ----------------------------------------------------------------------------------


async def test_pushes_name_the_run_and_a_plain_runs_end_pushes_nothing(
    store: PostgresStore, clock: FakeClock
) -> None:
    """Through the driver's LISTEN: an enqueue, a send, a notify and the end of a queued
    run push the run's id to ``woken``, a cancel request to ``cancelled`` (a long id
    too, sent as its digest); the end of a run without a queue pushes nothing; a
    queued run asked to cancel whose worker died is ended by the sweep, and pushed."""
    d = store._pg
    call = current().call_soon_threadsafe()
    arrived: list[tuple[str, str]] = []
    news = anyio.Event()

    def woken(id: str) -> None:  # called from the driver's loop (its thread under trio)
        call(lambda: (arrived.append(("change", id)), news.set()))

    def cancelled(id: str) -> None:
        call(lambda: (arrived.append(("cancel", id)), news.set()))

    async def next_push() -> tuple[str, str]:
        nonlocal news
        with anyio.fail_after(10):  # a bound on a push, not a timing
            while not arrived:
                await news.wait()
                news = anyio.Event()
        return arrived.pop(0)

    long = "x" * 9000
    async with anyio.create_task_group() as group:
        group.start_soon(d.watch, woken, cancelled)
        while not arrived:  # until the LISTEN is in place (each notify is a round trip)
            await d.notify("hello")
        await d.notify("in place")
        while await next_push() != ("change", "in place"):
            pass  # the hellos sent before it (pushes arrive in the order they commit)
        await store.claim("plain", "orders", owner="w", lease=30.0)
        await store.send("plain", "k", 1)
        assert await next_push() == ("change", "plain")
        await store.cancel("plain")
        assert await next_push() == ("cancel", "plain")
        await d.end_run("plain", clock.time(), _End())  # no queue: no push
        await store.enqueue(long, "orders", queue=Q)
        assert await next_push() == ("change", long)
        await store.claim_queued(Q, owner="w", lease=30.0)
        await store.cancel(long)
        assert await next_push() == ("cancel", long)
        await d.end_run(long, clock.time(), _End("cancelled"))
        assert await next_push() == ("change", long)
        await store.enqueue("orphan", "orders", queue=Q)
        assert await next_push() == ("change", "orphan")
        await store.claim_queued(Q, owner="dead", lease=5.0)
        await store.cancel("orphan")
        assert await next_push() == ("cancel", "orphan")
        clock.advance(10)
        assert await store.claim_expired(owner="w", lease=30.0) == []
        assert await next_push() == ("change", "orphan")  # its end, for its handle
        await d.notify("last")
        assert await next_push() == ("change", "last")  # nothing came from plain's end
        group.cancel_scope.cancel()


# ---- issue 19 on PostgreSQL -------------------------------------------------------------------


async def test_a_receive_is_one_transaction(store: PostgresStore, clock: FakeClock) -> None:
    """The step written and the wait cleared carry one transaction id (one statement)."""
    d, now = store._pg, clock.time()
    await store.claim("r", "orders", owner="w", lease=30.0)
    await d.begin_wait("r", WaitRow("s", "k", "message", None), now, "w")
    await d.send("r", "k", '{"a": 1}', now, None)
    head, tail = message_record_parts(now)
    assert await d.receive("r", "k", "s", head, tail, now, "w", None) == '{"a": 1}'
    runs, steps = store.tables
    [(run_xmin, wait_step, status)] = await admin_fetch(
        f"SELECT xmin::text, wait_step, status FROM {runs} WHERE id_digest = $1", digest("r")
    )
    [(step_xmin, record)] = await admin_fetch(
        f"SELECT xmin::text, record::text FROM {steps} WHERE run_digest = $1", digest("r")
    )
    assert run_xmin == step_xmin
    assert (wait_step, status) == (None, "running")
    assert json.loads(record)["value"] == {"a": 1}
    assert await admin_fetch(f"SELECT 1 FROM {d.sql.messages}") == []


async def test_a_save_over_an_expired_run_drops_its_wait_lease_and_messages(
    store: PostgresStore, clock: FakeClock
) -> None:
    d, now = store._pg, clock.time()
    await store.claim("r", "orders", owner="w", lease=30.0)
    await d.begin_wait("r", WaitRow("s", "k", "message", now + 100), now, "w")
    await d.send("r", "other", "1", now, None)
    await d.end_run("r", now, _expiring(now + 10))
    await admin(f"UPDATE {d.sql.runs} SET lease_owner = 'w', wait_step = 's', wake_at = 1")
    fresh = RunRow("orders", "running", None, "{}", now + 20, now + 20, None)
    await d.write_run("r", fresh, [])
    found = await d.read("r", now + 20, steps=False)
    assert found is not None
    row = found[0]
    assert (row.lease_owner, row.wait_step, row.wake_at) == (None, None, None)
    assert await admin_fetch(f"SELECT 1 FROM {d.sql.messages}") == []


def _expiring(at: float) -> EndTerms:
    end = _End()
    end.expires_at = at
    return end
