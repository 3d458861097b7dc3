"""What only the PostgreSQL store promises: its schema and version, one-statement
checkpoints, recovery from a lost connection, pools, and no thread left behind."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from awaitly_anyio import LeaseLostError, Ok, open_store
from awaitly_anyio.stores.postgres import SCHEMA_VERSION, PostgresStore, digest
from awaitly_anyio.testing import FakeClock

from .kit_base import encoded, leftover_driver_work, server_or_skip
from .postgres_kit import DSN, admin, schema_for
from .stall_proxy import stall_proxy

pytestmark = pytest.mark.anyio


async def fetch(sql: str, *args: Any) -> list[Any]:
    """Rows of one query, on a fresh connection (through the hosted loop under trio)."""
    from awaitly_anyio._bridge import DriverLoop

    async def run() -> list[Any]:
        import asyncpg

        connection = await asyncpg.connect(DSN, timeout=5)
        try:
            return list(await connection.fetch(sql, *args))
        finally:
            await connection.close()

    loop = DriverLoop("test query")
    try:
        return await loop.call(run)
    finally:
        loop.release()


async def written_by(schema: str, table: str, where: str = "TRUE") -> tuple[int, int]:
    """How many rows of ``table`` match ``where``, and how many transactions wrote
    them (a row carries its writer's id, ``xmin``)."""
    [[transactions, rows]] = await fetch(
        f'SELECT count(DISTINCT xmin::text), count(*) FROM "{schema}"."awaitly_{table}"'
        f" WHERE {where}"
    )
    return rows, transactions


@pytest.fixture
async def schema(tmp_path: Path) -> AsyncIterator[str]:
    name = schema_for(tmp_path)
    try:
        await admin(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    except OSError as exc:
        server_or_skip("PostgreSQL", DSN, exc)
    yield name
    await admin(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


async def test_the_schema_is_created_once_with_its_version(schema: str) -> None:
    async with PostgresStore(DSN, schema=schema, table_prefix="wf_") as one:
        await one.mark_running("r", "orders")
    async with PostgresStore(DSN, schema=schema, table_prefix="wf_") as two:
        assert await two.load("r") is not None
    versions = await fetch(f'SELECT version FROM "{schema}"."wf_schema_version"')
    assert [row[0] for row in versions] == [SCHEMA_VERSION]
    tables = await fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1"
        " ORDER BY table_name",
        schema,
    )
    assert [row[0] for row in tables] == [
        "wf_cache",
        "wf_messages",
        "wf_runs",
        "wf_schedules",
        "wf_schema_version",
        "wf_steps",
    ]
    kinds = await fetch(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = $1 AND column_name IN ('record', 'metadata', 'result')",
        schema,
    )
    assert {row[1] for row in kinds} == {"jsonb"}


async def test_many_stores_starting_at_once_migrate_once(schema: str) -> None:
    async def start() -> None:
        async with PostgresStore(DSN, schema=schema):
            pass

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(start)
    versions = await fetch(f'SELECT version FROM "{schema}"."awaitly_schema_version"')
    assert [row[0] for row in versions] == [SCHEMA_VERSION]


async def test_a_database_from_a_newer_release_is_refused(schema: str) -> None:
    async with PostgresStore(DSN, schema=schema):
        pass
    await admin(f'INSERT INTO "{schema}"."awaitly_schema_version" VALUES ({SCHEMA_VERSION + 1})')
    with pytest.raises(RuntimeError, match="upgrade awaitly-anyio"):
        async with PostgresStore(DSN, schema=schema):
            pass


async def test_a_checkpoint_is_one_statement_that_writes_one_step(schema: str) -> None:
    async with PostgresStore(DSN, schema=schema) as store:
        await store.mark_running("r", "orders")
        for n in range(20):
            await store.checkpoint("r", encoded(f"big-{n}", "x" * 50_000))
        await store.checkpoint("r", encoded("small", 1))
        loaded = await store.load("r")
        assert loaded is not None
        assert len(loaded.steps) == 21
    # Rows written by the checkpoint's transaction carry its id (xmin): only one step row does.
    steps = f'"{schema}"."awaitly_steps"'
    written = await fetch(
        f"SELECT key FROM {steps} WHERE xmin::text = (SELECT xmin::text FROM {steps}"
        " WHERE key = 'small')"
    )
    assert [row[0] for row in written] == ["small"]


async def test_only_a_new_runs_claim_skips_the_flush_and_steps_stay_durable(schema: str) -> None:
    async def setting(connection: Any) -> str:
        value: str = await connection.fetchval("SHOW synchronous_commit")
        return value

    async with PostgresStore(DSN, schema=schema) as store:
        claim = await store.claim("r", "orders", owner="me", lease=30)
        assert claim.outcome == "claimed"
        # The claim turned synchronous_commit off for its own transaction only: the
        # connection that made it (the store's, used one call at a time) still waits
        # for the flush, so the checkpoint after it is durable when it returns.
        assert await store._call(setting) == "on"
        await store.checkpoint("r", encoded("s", 1), owner="me")
        assert await store._call(setting) == "on"
        await store.finish("r", "completed", Ok(1), '{"ok": true, "value": 1}', owner="me")
        loaded = await store.load("r")
        assert loaded is not None
        assert (loaded.status, loaded.steps["s"].result) == ("completed", Ok(1))


async def test_concurrent_checkpoints_commit_together_and_each_gets_its_own_answer(
    schema: str,
) -> None:
    outcomes: dict[str, object] = {}
    async with PostgresStore(DSN, schema=schema) as store:
        for n in range(40):
            await store.claim(f"ours-{n}", "orders", owner="a", lease=60)
        for n in range(5):
            await store.claim(f"theirs-{n}", "orders", owner="b", lease=60)

        async def write(run: str, key: str, value: int) -> None:
            try:
                await store.checkpoint(run, encoded(key, value), owner="a")
            except (LookupError, LeaseLostError) as exc:
                outcomes[f"{run}/{key}"] = type(exc)
            else:
                outcomes[f"{run}/{key}"] = "written"

        async with anyio.create_task_group() as tg:
            for step in range(3):
                for n in range(40):
                    tg.start_soon(write, f"ours-{n}", f"s{step}", n)
                for n in range(5):
                    tg.start_soon(write, f"theirs-{n}", f"s{step}", n)
                tg.start_soon(write, "gone", f"s{step}", 0)
            tg.start_soon(write, "ours-0", "twice", 1)  # the same key, at once:
            tg.start_soon(write, "ours-0", "twice", 2)  # one statement cannot take both

        for n in range(40):
            loaded = await store.load(f"ours-{n}")
            assert loaded is not None
            for step in range(3):
                assert loaded.steps[f"s{step}"].result == Ok(n)
        theirs = await store.load("theirs-0")
        assert theirs is not None
        assert theirs.steps == {}
    assert outcomes.pop("ours-0/twice") == "written"
    assert outcomes == {
        **{f"ours-{n}/s{step}": "written" for n in range(40) for step in range(3)},
        **{f"theirs-{n}/s{step}": LeaseLostError for n in range(5) for step in range(3)},
        **{f"gone/s{step}": LookupError for step in range(3)},
    }
    # Group commit (rows carry their xmin): the first checkpoint is written alone,
    # every other one that arrived meanwhile in one batch, except the second write of
    # the same key.  Under trio this holds only if no caller handing work to the hosted
    # loop lets a reply in before the others have queued theirs.
    rows, transactions = await written_by(schema, "steps")
    assert (rows, transactions <= 3) == (121, True)


async def test_writes_whose_callers_gave_up_while_queued_are_not_sent(schema: str) -> None:
    from awaitly_anyio._bridge import DriverLoop

    async with PostgresStore(DSN, schema=schema) as store:
        for n in range(10):
            await store.claim(f"r{n}", "orders", owner="a", lease=60)
        # Another transaction's uncommitted row holds the first write at the server,
        # so the others queue behind it for as long as the test needs.
        blocker = DriverLoop("blocker")
        import asyncpg

        connection = await blocker.call(asyncpg.connect, DSN)
        await blocker.call(connection.execute, "BEGIN")
        await blocker.call(
            connection.execute,
            f'INSERT INTO "{schema}"."awaitly_steps" VALUES ($1, $2, $3, $4::jsonb)',
            digest("r0"),
            "k",
            digest("k"),
            "{}",
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(store.checkpoint, "r0", encoded("k", 0), owner="a"))
            await anyio.wait_all_tasks_blocked()
            with anyio.CancelScope() as given_up:
                async with anyio.create_task_group() as queued:
                    for n in range(1, 10):
                        write = partial(store.checkpoint, f"r{n}", encoded("k", n), owner="a")
                        queued.start_soon(write)
                    await anyio.wait_all_tasks_blocked()
                    given_up.cancel()
            await blocker.call(connection.execute, "ROLLBACK")
        await blocker.call(connection.close)
        blocker.release()
        # Written after whatever was queued: once it returns, any batch has gone out.
        await store.checkpoint("r0", encoded("after", 1), owner="a")
    rows = await fetch(f'SELECT key FROM "{schema}"."awaitly_steps" ORDER BY key')
    assert [row[0] for row in rows] == ["after", "k"]


async def test_concurrent_claims_are_made_together_and_one_id_is_won_once(schema: str) -> None:
    outcomes: dict[str, list[str]] = {}
    async with PostgresStore(DSN, schema=schema) as store:
        await store.claim("done", "orders", owner="x", lease=60)
        await store.finish("done", "completed", Ok(1), '{"ok": true, "value": 1}', owner="x")

        async def claim(run: str, owner: str) -> None:
            found = await store.claim(run, "orders", owner=owner, lease=60, metadata={"n": 1})
            outcomes.setdefault(run, []).append(found.outcome)

        async with anyio.create_task_group() as tg:
            for n in range(40):
                tg.start_soon(claim, f"new-{n}", "a")
            for owner in "bcdef":  # five workers start one run at once: one wins
                tg.start_soon(claim, "contested", owner)
            tg.start_soon(claim, "done", "a")

        for n in range(40):
            loaded = await store.load(f"new-{n}")
            assert loaded is not None
            assert (loaded.status, dict(loaded.metadata)) == ("running", {"n": 1})
    assert outcomes.pop("done") == ["completed"]
    assert sorted(outcomes.pop("contested")) == ["claimed", "held", "held", "held", "held"]
    assert outcomes == {f"new-{n}": ["claimed"] for n in range(40)}
    # The first claim went alone and the others that arrived meanwhile in one statement
    # (rows carry the xmin of the transaction that inserted them).
    rows, transactions = await written_by(schema, "runs", "id <> 'done'")
    assert (rows, transactions <= 3) == (41, True)


async def test_concurrent_ends_are_recorded_together_each_on_its_own_terms(schema: str) -> None:
    outcomes: dict[str, object] = {}
    async with PostgresStore(DSN, schema=schema) as store:
        for n in range(30):
            await store.claim(f"ours-{n}", "orders", owner="a", lease=60, metadata={"t": n})
        for n in range(5):
            await store.claim(f"theirs-{n}", "orders", owner="b", lease=60)

        async def end(run: str, n: int, failed: bool) -> None:
            status = "failed" if failed else "completed"
            result = '{"ok": false, "error": "boom"}' if failed else f'{{"ok": true, "value": {n}}}'
            metadata = {"error": f"boom {n}"} if failed else None
            try:
                await store.finish(run, status, None, result, metadata=metadata, owner="a")
            except (LookupError, LeaseLostError) as exc:
                outcomes[run] = type(exc)
            else:
                outcomes[run] = status

        async with anyio.create_task_group() as tg:
            for n in range(30):
                tg.start_soon(end, f"ours-{n}", n, n % 3 == 0)
            for n in range(5):
                tg.start_soon(end, f"theirs-{n}", n, False)
            tg.start_soon(end, "gone", 0, False)

        for n in range(30):
            loaded = await store.load(f"ours-{n}")
            assert loaded is not None
            if n % 3 == 0:
                assert loaded.status == "failed"
                assert dict(loaded.metadata) == {"t": n, "error": f"boom {n}"}
            else:
                assert (loaded.status, loaded.result) == ("completed", Ok(n))
                assert dict(loaded.metadata) == {"t": n}
        theirs = await store.load("theirs-0")
        assert theirs is not None
        assert theirs.status == "running"
    assert outcomes == {
        **{f"ours-{n}": "failed" if n % 3 == 0 else "completed" for n in range(30)},
        **{f"theirs-{n}": LeaseLostError for n in range(5)},
        "gone": LookupError,
    }
    # Updated rows carry the xmin of the transaction that updated them.
    rows, transactions = await written_by(schema, "runs", "id LIKE 'ours-%'")
    assert (rows, transactions <= 3) == (30, True)


async def test_metadata_sql_cannot_merge_is_merged_in_one_transaction_on_the_same_terms(
    schema: str,
) -> None:
    at = datetime(2024, 1, 1, tzinfo=timezone.utc)
    async with PostgresStore(DSN, schema=schema) as store:
        # Stored metadata that is tagged as a whole (a "$t" key of its own): jsonb ||
        # would corrupt it, so the end is merged in Python.
        await store.claim("tagged", "orders", owner="a", lease=60, metadata={"$t": "x", "n": 1})
        await store.finish("tagged", "completed", Ok(1), None, metadata={"n": 2}, owner="a")
        # A tagged value in the new metadata: merged in Python too.
        await store.claim("dated", "orders", owner="a", lease=60, metadata={"n": 1})
        await store.finish("dated", "failed", None, None, metadata={"at": at}, owner="a")
        # And refused on the same terms as the one-statement end.
        await store.claim("theirs", "orders", owner="b", lease=60)
        with pytest.raises(LeaseLostError):
            await store.finish("theirs", "failed", None, None, metadata={"at": at}, owner="a")
        with pytest.raises(LookupError):
            await store.finish("gone", "failed", None, None, metadata={"at": at}, owner="a")

        tagged, dated, theirs = [await store.load(id) for id in ("tagged", "dated", "theirs")]
        assert tagged is not None
        assert dated is not None
        assert theirs is not None
        assert (tagged.status, dict(tagged.metadata)) == ("completed", {"$t": "x", "n": 2})
        assert (dated.status, dict(dated.metadata)) == ("failed", {"n": 1, "at": at})
        assert (theirs.status, dict(theirs.metadata)) == ("running", {})
        # Each end released its lease: another owner may claim the run at once.
        claimed = await store.claim("dated", "orders", owner="c", lease=60)
        assert claimed.outcome == "claimed"


async def test_a_lost_connection_is_an_error_and_the_store_recovers(schema: str) -> None:
    # Only this store's connection is broken (through a proxy): other suites share
    # the server, and their connections are not ours to end.
    parts = urllib.parse.urlsplit(DSN)
    port = parts.port or 5432
    async with stall_proxy(parts.hostname or "127.0.0.1", port) as proxy:
        dsn = DSN.replace(f":{port}", f":{proxy.port}", 1)
        async with PostgresStore(dsn, schema=schema, max_size=1) as store:
            await store.mark_running("r", "orders")
            proxy.drop()
            await anyio.wait_all_tasks_blocked()  # the proxy has closed it
            await _recovers(store)


async def _recovers(store: PostgresStore) -> None:
    failure: Exception | None = None
    try:
        await store.checkpoint("r", encoded("a", 1))
    except Exception as exc:
        failure = exc
    # asyncpg reports the dropped connection in its own words; it must not pass silently.
    assert failure is None or str(failure)
    # Whatever happened to that call, the store works again and nothing is half written.
    await store.checkpoint("r", encoded("b", 2))
    loaded = await store.load("r")
    assert loaded is not None
    assert set(loaded.steps) <= {"a", "b"}
    assert loaded.steps["b"].result == Ok(2)


async def test_an_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(OSError, match=r"[Cc]onnect"):
        async with PostgresStore("postgresql://postgres@127.0.0.1:1/test"):
            pass


async def test_a_given_pool_works_on_asyncio_and_is_refused_on_trio(
    schema: str, anyio_backend: str
) -> None:
    if anyio_backend == "trio":
        import asyncpg

        # A pool needs an asyncio loop to exist at all; a bare instance stands in for one.
        store = PostgresStore(asyncpg.Pool.__new__(asyncpg.Pool), schema=schema)
        with pytest.raises(RuntimeError, match="asyncio only"):
            await store.load("r")
        await store.close()
        return
    import asyncpg

    async with asyncpg.create_pool(DSN, min_size=1, max_size=2) as pool:
        async with PostgresStore(pool, schema=schema) as store:
            await store.mark_running("r", "orders")
        # The store did not close a pool it did not make.
        assert await pool.fetchval("SELECT 1") == 1


async def test_closing_leaves_nothing_running(schema: str) -> None:
    async with open_store(DSN, schema=schema) as store:
        await store.mark_running("r", "orders")
    assert leftover_driver_work() == []


async def test_purge_expired_deletes_runs_and_their_steps(schema: str) -> None:
    clock = FakeClock()
    async with PostgresStore(DSN, schema=schema, clock=clock) as store:
        await store.mark_running("old", "orders")
        await store.checkpoint("old", encoded("a", 1))
        await store.finish("old", "completed", Ok(1), None, ttl=5)
        await store.mark_running("new", "orders")
        clock.advance(5)
        assert await store.purge_expired() == 1
        assert await store.purge_expired() == 0
    rows = await fetch(f'SELECT id FROM "{schema}"."awaitly_runs"')
    assert [row[0] for row in rows] == ["new"]
    steps = await fetch(f'SELECT count(*) FROM "{schema}"."awaitly_steps"')
    assert steps[0][0] == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"schema": 'x"; DROP TABLE y; --'}, "schema"),
        ({"table_prefix": "bad-prefix"}, "table_prefix"),
        ({"schema": ""}, "schema"),
        ({"min_size": 3, "max_size": 2}, "min_size"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PostgresStore(DSN, **options)


def test_a_dsn_must_be_postgresql() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        PostgresStore("mysql://x")
    with pytest.raises(TypeError, match=r"DSN string or an asyncpg\.Pool"):
        PostgresStore(42)  # type: ignore[arg-type]
