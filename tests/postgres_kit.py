"""Opening PostgresStore for the shared store tests, each test in its own schema."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from awaitly_anyio.testing import FakeClock

from .kit_base import Damage, StoreKit, deep_json, server_or_skip

DSN = os.environ.get("AWAITLY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")

_open_counts: dict[str, int] = {}


def schema_for(tmp_path: Path) -> str:
    """One schema per test folder, so a second store of the same test shares the data."""
    return "awaitly_t_" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]


async def _on_fresh_connection(use: Callable[[Any], Awaitable[Any]]) -> Any:
    """``use(connection)`` on a fresh asyncpg connection of the current loop (tests only)."""
    from awaitly_anyio._bridge import DriverLoop

    async def run() -> Any:
        import asyncpg

        connection = await asyncpg.connect(DSN, timeout=5)
        try:
            return await use(connection)
        finally:
            await connection.close()

    loop = DriverLoop("test admin")
    try:
        return await loop.call(run)
    finally:
        loop.release()


async def admin(sql: str, *args: Any) -> Any:
    """Run one statement on a fresh connection of the current loop (tests only)."""
    return await _on_fresh_connection(lambda connection: connection.execute(sql, *args))


@contextlib.asynccontextmanager
async def _open_postgres(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Any]:
    from awaitly_anyio.stores.postgres import PostgresStore

    schema = schema_for(tmp_path)
    first = _open_counts.get(schema, 0) == 0
    if first:
        try:
            await admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        except OSError as exc:
            server_or_skip("PostgreSQL", DSN, exc)
    _open_counts[schema] = _open_counts.get(schema, 0) + 1
    try:
        async with PostgresStore(DSN, schema=schema, clock=clock, max_size=4) as store:
            yield store
    finally:
        _open_counts[schema] -= 1
        if _open_counts[schema] == 0:
            del _open_counts[schema]
            await admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def admin_fetch(sql: str, *args: Any) -> list[Any]:
    """Run one query on a fresh connection of the current loop (tests only); its rows
    as tuples."""

    async def fetch(connection: Any) -> list[Any]:
        return [tuple(row) for row in await connection.fetch(sql, *args)]

    result: list[Any] = await _on_fresh_connection(fetch)
    return result


async def _damage_postgres(store: Any, run_id: str, part: Damage) -> None:
    from awaitly_anyio.stores.postgres import digest

    runs, steps = store.tables
    key = digest(run_id)
    if part == "step":
        # jsonb only holds valid JSON: damage the meaning instead of the syntax.
        await admin(f'UPDATE {steps} SET record = \'{{"ok": "maybe"}}\' WHERE run_digest = $1', key)
    elif part == "deep":  # jsonb refuses 100,000 deep; 5,000 is beyond Python's parser
        await admin(
            f"UPDATE {steps} SET record = $2::jsonb WHERE run_digest = $1", key, deep_json(5000)
        )
    elif part == "metadata":
        await admin(f"UPDATE {runs} SET metadata = '[1, 2]' WHERE id_digest = $1", key)
    elif part == "created_at":
        await admin(f"UPDATE {runs} SET created_at = 'NaN' WHERE id_digest = $1", key)
    elif part == "workflow_name":  # NOT NULL: the closest is an empty name
        await admin(f"UPDATE {runs} SET workflow_name = '' WHERE id_digest = $1", key)
    elif part == "wrong_type":
        raise AssertionError("only Redis keys have types (see StoreKit.cannot_damage)")
    else:
        version = 2 if part == "newer" else 99
        await admin(f"UPDATE {runs} SET format_version = $2 WHERE id_digest = $1", key, version)


async def _raw_postgres(store: Any, run_id: str) -> Any:
    from awaitly_anyio.stores.postgres import digest

    runs, steps = store.tables
    key = digest(run_id)
    run = await admin_fetch(f"SELECT r::text FROM {runs} r WHERE id_digest = $1", key)
    records = await admin_fetch(
        f"SELECT s::text FROM {steps} s WHERE run_digest = $1 ORDER BY key_digest", key
    )
    return run, records


POSTGRES = StoreKit("postgres", _open_postgres, _damage_postgres, _raw_postgres)
