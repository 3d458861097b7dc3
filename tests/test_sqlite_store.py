"""What only the SQLite store promises: WAL, many processes on one file, small checkpoints,
no blocked event loop, other drivers through ``connect=``, schema versions."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from awaitly_anyio import Ok, open_store
from awaitly_anyio.stores.sqlite import SCHEMA_VERSION, SQLiteStore
from awaitly_anyio.testing import FakeClock

from .kit_base import encoded

pytestmark = pytest.mark.anyio


class RecordingConnection:
    """A sqlite3 connection that records each statement and can signal when one starts."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.statements: list[tuple[str, Any]] = []
        self.began = threading.Event()

    def execute(self, sql: str, params: Any = ()) -> Any:
        self.statements.append((sql, params))
        if sql == "BEGIN IMMEDIATE":
            self.began.set()
        return self.db.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> Any:
        self.statements.append((sql, rows))
        return self.db.executemany(sql, rows)

    def close(self) -> None:
        self.db.close()


def raw(path: Path) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(path, isolation_level=None))


async def test_the_file_is_in_wal_mode_with_the_current_schema(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "runs.db"):
        pass
    with raw(tmp_path / "runs.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_a_checkpoint_writes_one_step_not_the_whole_run(tmp_path: Path) -> None:
    connections: list[RecordingConnection] = []

    def connect(path: str) -> RecordingConnection:
        connections.append(RecordingConnection(path))
        return connections[-1]

    async with SQLiteStore(tmp_path / "runs.db", connect=connect) as store:
        await store.mark_running("r", "orders")
        for n in range(50):
            await store.checkpoint("r", encoded(f"big-{n}", "x" * 100_000))
        (db,) = connections
        db.statements.clear()
        await store.checkpoint("r", encoded("small", 1))
        written = sum(len(repr(params)) for _, params in db.statements)
        assert [sql.split()[0] for sql, _ in db.statements] == [
            "BEGIN",
            "UPDATE",
            "INSERT",
            "COMMIT",
        ]
        assert written < 1_000
        loaded = await store.load("r")
        assert loaded is not None
        assert len(loaded.steps) == 51


async def test_waiting_for_another_writer_does_not_block_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    connections: list[RecordingConnection] = []

    def connect(path: str) -> RecordingConnection:
        connections.append(RecordingConnection(path))
        return connections[-1]

    async with SQLiteStore(path, connect=connect, busy_timeout=60) as store:
        await store.mark_running("r", "orders")
        (recorder,) = connections
        recorder.began.clear()
        with raw(path) as other:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            done = anyio.Event()

            async def write() -> None:
                await store.checkpoint("r", encoded("a", 1))
                done.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(write)
                await anyio.to_thread.run_sync(recorder.began.wait)
                # The store's thread is now waiting for the lock; the loop keeps running.
                for _ in range(100):
                    await anyio.lowlevel.checkpoint()
                assert not done.is_set()
                other.execute("COMMIT")
        loaded = await store.load("r")
        assert loaded is not None
        assert "a" in loaded.steps


async def test_a_writer_that_cannot_get_the_lock_in_time_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteStore(path, busy_timeout=0) as store:
        await store.mark_running("r", "orders")
        with raw(path) as other:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                await store.checkpoint("r", encoded("a", 1))
            other.execute("COMMIT")
        # The failed transaction left nothing open: the store works on.
        await store.checkpoint("r", encoded("a", 1))


WRITER = """
import sys, anyio
from awaitly_anyio.stores.sqlite import SQLiteStore
from tests.test_sqlite_store import encoded

async def main(path, name):
    async with SQLiteStore(path, synchronous="NORMAL") as store:
        await store.mark_running(name, "orders")
        for n in range(40):
            await store.checkpoint(name, encoded(f"k{n}", n))
            await store.checkpoint("shared", encoded(f"{name}-{n}", n))

anyio.run(main, sys.argv[1], sys.argv[2], backend=sys.argv[3])
"""


async def test_several_processes_share_one_file_without_losing_writes(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteStore(path) as store:
        await store.mark_running("shared", "orders")
        root = Path(__file__).parent.parent
        outcomes: dict[int, Any] = {}

        async def child(n: int) -> None:
            command = [
                sys.executable,
                "-c",
                WRITER,
                str(path),
                f"proc-{n}",
                ("asyncio", "trio")[n % 2],
            ]
            outcomes[n] = await anyio.run_process(command, cwd=root, check=False)

        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(child, n)
        for outcome in outcomes.values():
            assert outcome.returncode == 0, outcome.stderr.decode()
        for n in range(4):
            loaded = await store.load(f"proc-{n}")
            assert loaded is not None
            assert len(loaded.steps) == 40
        shared = await store.load("shared")
        assert shared is not None
        assert len(shared.steps) == 160


async def test_a_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with raw(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="upgrade awaitly-anyio"):
        async with SQLiteStore(path):
            pass


# The tables of schema version 3 (before queues), as a release of that version made them.
V3_SCHEMA = """
CREATE TABLE awaitly_runs (
    id TEXT PRIMARY KEY NOT NULL, workflow_name TEXT NOT NULL, status TEXT NOT NULL,
    result_json TEXT, metadata_json TEXT NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, expires_at REAL, format_version INTEGER NOT NULL,
    lease_owner TEXT, lease_expires_at REAL, wait_step TEXT, wait_key TEXT, wait_kind TEXT,
    wake_at REAL
);
CREATE INDEX awaitly_runs_by_update ON awaitly_runs (updated_at DESC, id DESC);
CREATE INDEX awaitly_runs_by_expiry ON awaitly_runs (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX awaitly_runs_due ON awaitly_runs (wake_at)
    WHERE status = 'waiting' AND wake_at IS NOT NULL;
CREATE TABLE awaitly_steps (
    run_id TEXT NOT NULL, key TEXT NOT NULL, record_json TEXT NOT NULL, seq INTEGER,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE INDEX awaitly_steps_in_order ON awaitly_steps (run_id, seq);
CREATE TABLE awaitly_messages (
    seq INTEGER PRIMARY KEY, run_id TEXT NOT NULL, key TEXT NOT NULL,
    value_json TEXT NOT NULL, sent_at REAL NOT NULL
);
CREATE INDEX awaitly_messages_in_order ON awaitly_messages (run_id, key, seq);
PRAGMA user_version = 3;
"""


async def test_a_version_3_database_is_upgraded_keeping_every_run(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with raw(path) as db:
        db.executescript(V3_SCHEMA)
        db.execute(
            "INSERT INTO awaitly_runs VALUES ('old', 'orders', 'waiting', NULL, '{\"in\": 1}',"
            " 1.0, 2.0, NULL, 1, 'w', 99.0, 'approve', 'k', 'approval', 50.0)"
        )
        db.execute(
            "INSERT INTO awaitly_runs VALUES ('done', 'orders', 'completed', NULL, '{}',"
            " 1.0, 3.0, NULL, 1, NULL, NULL, NULL, NULL, NULL, NULL)"
        )
        db.execute("INSERT INTO awaitly_steps VALUES ('old', 'a', ?, 1)", (encoded("a", 1).json,))
        db.execute("INSERT INTO awaitly_messages VALUES (1, 'old', 'k', '\"yes\"', 1.5)")
    async with SQLiteStore(path, clock=FakeClock(10.0)) as store:
        old = await store.info("old")
        assert (old.status, old.waiting_for, old.lease_owner) == ("waiting", "k", "w")
        assert (old.queue, old.priority, old.partition, old.started_at) == (None, 0, None, None)
        assert not old.cancel_requested
        snapshot = await store.load("old")
        assert snapshot.metadata == {"in": 1}
        assert list(snapshot.steps) == ["a"]
        assert [i.id for i in await store.list()] == ["done", "old"]
        got = await store.receive("old", "k", step="approve", name="approve", owner="w")
        assert got == Ok("yes")
        # The new tables and columns work.
        assert await store.enqueue("new", "orders", queue="q", priority=2) is None
        assert [i.id for i in await store.claim_queued("q", owner="w", lease=5.0)] == ["new"]
        await store.put_schedule("s", {"every": 1})
        assert await store.advance_schedule("s", None, 1.0)
    with raw(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
        columns = {row[1] for row in db.execute("PRAGMA table_info(awaitly_runs)")}
        assert {"queue", "priority", "partition_key", "started_at", "cancel_at"} <= columns
        indexes = {row[1] for row in db.execute("PRAGMA index_list(awaitly_runs)")}
        assert {"awaitly_runs_queued", "awaitly_runs_queue_running"} <= indexes
        plan = " ".join(
            str(row[-1])
            for row in db.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM awaitly_runs WHERE queue = 'q'"
                " AND status = 'pending' AND cancel_at IS NULL ORDER BY priority, created_at, id"
            )
        )
        assert "awaitly_runs_queued" in plan


async def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        async with SQLiteStore(tmp_path / "nowhere" / "runs.db"):
            pass


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not the runs you are looking for\n" * 100)
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        async with SQLiteStore(path):
            pass
    assert path.read_text().startswith("these are not")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"synchronous": "SOMETIMES"}, "synchronous"),
        ({"busy_timeout": -1}, "busy_timeout"),
        ({"busy_timeout": "5"}, "busy_timeout"),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SQLiteStore(tmp_path / "runs.db", **options)


async def test_purge_expired_deletes_rows_for_good(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "runs.db"
    async with SQLiteStore(path, clock=clock) as store:
        await store.mark_running("old", "orders")
        await store.checkpoint("old", encoded("a", 1))
        await store.finish("old", "completed", Ok(1), None, ttl=5)
        await store.mark_running("new", "orders")
        clock.advance(5)
        assert await store.purge_expired() == 1
        assert await store.purge_expired() == 0
    with raw(path) as db:
        assert db.execute("SELECT id FROM awaitly_runs").fetchall() == [("new",)]
        assert db.execute("SELECT count(*) FROM awaitly_steps").fetchone()[0] == 0


async def test_open_store_reads_relative_and_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with open_store("sqlite:///relative.db") as store:
        await store.mark_running("r", "orders")
    assert (tmp_path / "relative.db").exists()
    absolute = tmp_path / "sub" / "absolute.db"
    absolute.parent.mkdir()
    async with open_store(f"sqlite:///{absolute}", synchronous="NORMAL") as store:
        assert isinstance(store, SQLiteStore)
        assert store.path == str(absolute)
    assert absolute.exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///", "SQLite URL"),
        ("sqlite://relative.db", "SQLite URL"),
        ("mysql://localhost/x", "unknown store scheme"),
        ("runs.db", "store URL"),
        ("memory://somewhere", "memory://"),
    ],
)
def test_bad_store_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url)
