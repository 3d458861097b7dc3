"""Steps keep the order they were recorded in, also in a database written by a release
that kept no order (schema version 1): its steps come first, by key, and new ones after
them.  (The contract itself, on every store, is in test_store_contract.py.)"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from awaitly_anyio import Ok
from awaitly_anyio._resume import StepRecord
from awaitly_anyio.serialization import default_registry, encode_step_record

from .kit_base import encoded, server_or_skip
from .postgres_kit import DSN, admin, schema_for

pytestmark = pytest.mark.anyio

# Schema version 1, as the release before this one created it.
SQLITE_V1 = """
CREATE TABLE awaitly_runs (
    id TEXT PRIMARY KEY NOT NULL, workflow_name TEXT NOT NULL, status TEXT NOT NULL,
    result_json TEXT, metadata_json TEXT NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, expires_at REAL, format_version INTEGER NOT NULL,
    lease_owner TEXT, lease_expires_at REAL
);
CREATE TABLE awaitly_steps (
    run_id TEXT NOT NULL, key TEXT NOT NULL, record_json TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
PRAGMA user_version = 1;
"""

OLD_KEYS = ["b-second", "a-first", "c-third"]


def record(n: int) -> str:
    return encode_step_record("k", StepRecord(Ok(n)), default_registry)


async def test_a_version_1_sqlite_database_is_upgraded_and_keeps_its_steps(
    tmp_path: Path,
) -> None:
    from awaitly_anyio.stores.sqlite import SCHEMA_VERSION, SQLiteStore

    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.executescript(SQLITE_V1)
        db.execute(
            "INSERT INTO awaitly_runs VALUES ('r', 'orders', 'running', NULL, '{}', 1, 1, NULL,"
            " 1, NULL, NULL)"
        )
        for n, key in enumerate(OLD_KEYS):
            db.execute("INSERT INTO awaitly_steps VALUES ('r', ?, ?)", (key, record(n)))

    async with SQLiteStore(path) as store:
        await store.checkpoint("r", encoded("0-new", 9))
        await store.checkpoint("r", encoded("b-second", 1))  # recorded again: stays put
        loaded = await store.load("r")
    assert loaded is not None
    assert list(loaded.steps) == ["a-first", "b-second", "c-third", "0-new"]
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5


@pytest.fixture
async def old_schema(tmp_path: Path) -> AsyncIterator[str]:
    """A schema of this test's own holding a version 1 database."""
    from awaitly_anyio.stores._postgres_sql import MIGRATIONS

    schema = schema_for(tmp_path) + "_v1"
    try:
        await admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    except OSError as exc:
        server_or_skip("PostgreSQL", DSN, exc)
    runs, steps = f'"{schema}"."awaitly_runs"', f'"{schema}"."awaitly_steps"'
    await admin(f'CREATE SCHEMA "{schema}"')
    await admin(MIGRATIONS[1].format(runs=runs, steps=steps, prefix="awaitly_"))
    await admin(f'CREATE TABLE "{schema}"."awaitly_schema_version" (version integer NOT NULL)')
    await admin(f'INSERT INTO "{schema}"."awaitly_schema_version" VALUES (1)')
    yield schema
    await admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_a_version_1_postgres_database_is_upgraded_and_keeps_its_steps(
    old_schema: str,
) -> None:
    from awaitly_anyio.stores.postgres import PostgresStore, digest

    # A run and its steps as version 1 wrote them (no order).
    await admin(
        f'INSERT INTO "{old_schema}"."awaitly_runs" (id, id_digest, workflow_name, status,'
        " metadata, created_at, updated_at, format_version)"
        " VALUES ('r', $1, 'orders', 'running', '{}'::jsonb, 1, 1, 1)",
        digest("r"),
    )
    for n, key in enumerate(OLD_KEYS):
        await admin(
            f'INSERT INTO "{old_schema}"."awaitly_steps" (run_digest, key, key_digest, record)'
            " VALUES ($1, $2, $3, $4::jsonb)",
            digest("r"),
            key,
            digest(key),
            record(n),
        )
    # The upgrade numbers them as the table holds them; new steps go after them.
    async with PostgresStore(DSN, schema=old_schema) as store:
        await store.checkpoint("r", encoded("0-new", 9))
        await store.checkpoint("r", encoded("b-second", 1))  # recorded again: stays put
        loaded = await store.load("r")
    assert loaded is not None
    assert list(loaded.steps) == [*OLD_KEYS, "0-new"]
    assert loaded.steps["b-second"].result == Ok(1)
