"""How the shared tests open each store, and how they damage its rows on purpose.

A store joins the durable tests by adding one :class:`StoreKit` to :data:`KITS`, and
the contract suite by one ``check_store`` line in ``test_store_contract.py``.  A test
takes ``store`` (or ``kit``, and ``clock`` to move time) from ``tests/conftest.py`` to
run on each of them; a module overrides one of those fixtures only to change it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs

from awaitly_anyio.stores.memory import MemoryStore
from awaitly_anyio.testing import FakeClock

from .kit_base import Damage, StoreKit, deep_json, server_or_skip

# ---- memory ------------------------------------------------------------------------------

_memory_by_folder: dict[Path, MemoryStore] = {}


@contextlib.asynccontextmanager
async def _open_memory(tmp_path: Path, clock: FakeClock) -> AsyncIterator[MemoryStore]:
    # One MemoryStore per test folder: a second "open" shares the first one's data.
    store = _memory_by_folder.get(tmp_path)
    if store is not None:
        yield store
        return
    store = _memory_by_folder[tmp_path] = MemoryStore(clock=clock)
    try:
        async with store:
            yield store
    finally:
        del _memory_by_folder[tmp_path]


async def _damage_memory(store: MemoryStore, run_id: str, part: Damage) -> None:
    row = store._runs[run_id]
    steps = store._steps[run_id]  # (the driver's dicts, which MemoryStore names)
    if part == "step":
        steps[next(iter(steps))] = '{"ok": tru'
    elif part == "deep":
        steps[next(iter(steps))] = deep_json()
    elif part == "metadata":
        store._runs[run_id] = attrs.evolve(row, metadata_json="[1, 2")
    elif part == "created_at":
        store._runs[run_id] = attrs.evolve(row, created_at=float("nan"))
    elif part == "workflow_name":
        store._runs[run_id] = attrs.evolve(row, workflow_name=None)
    elif part == "newer":
        store._runs[run_id] = attrs.evolve(row, format_version=2)
    elif part == "wrong_type":
        raise AssertionError("only Redis keys have types (see StoreKit.cannot_damage)")
    else:
        store._runs[run_id] = attrs.evolve(row, format_version=99)


async def _raw_memory(store: MemoryStore, run_id: str) -> Any:
    row = store._runs.get(run_id)
    return repr(row), dict(store._steps.get(run_id, {}))


# ---- SQLite ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _open_sqlite(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Any]:
    from awaitly_anyio.stores.sqlite import SQLiteStore

    async with SQLiteStore(tmp_path / "runs.db", clock=clock, synchronous="NORMAL") as store:
        yield store


async def _damage_sqlite(store: Any, run_id: str, part: Damage) -> None:
    if part == "wrong_type":
        raise AssertionError("only Redis keys have types (see StoreKit.cannot_damage)")
    with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as db:
        if part in ("step", "deep"):
            db.execute(
                "UPDATE awaitly_steps SET record_json = ? WHERE run_id = ?",
                ('{"ok": tru' if part == "step" else deep_json(), run_id),
            )
        elif part == "metadata":
            db.execute("UPDATE awaitly_runs SET metadata_json = '[1, 2' WHERE id = ?", (run_id,))
        elif part == "created_at":
            db.execute("UPDATE awaitly_runs SET created_at = 'garbage' WHERE id = ?", (run_id,))
        elif part == "workflow_name":  # NOT NULL: the closest is an empty name
            db.execute("UPDATE awaitly_runs SET workflow_name = '' WHERE id = ?", (run_id,))
        else:
            version = 2 if part == "newer" else 99
            db.execute("UPDATE awaitly_runs SET format_version = ? WHERE id = ?", (version, run_id))


async def _raw_sqlite(store: Any, run_id: str) -> Any:
    with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as db:
        run = db.execute("SELECT * FROM awaitly_runs WHERE id = ?", (run_id,)).fetchall()
        steps = db.execute(
            "SELECT * FROM awaitly_steps WHERE run_id = ? ORDER BY key", (run_id,)
        ).fetchall()
    return run, steps


def _server_kits() -> list[StoreKit]:
    from .postgres_kit import POSTGRES
    from .redis_kit import REDIS

    return [POSTGRES, REDIS]


MEMORY = StoreKit("memory", _open_memory, _damage_memory, _raw_memory, by_url=False)
SQLITE = StoreKit("sqlite", _open_sqlite, _damage_sqlite, _raw_sqlite)
KITS: list[StoreKit] = [MEMORY, SQLITE, *_server_kits()]


def kit_ids() -> list[str]:
    """Readable pytest ids for :data:`KITS`."""
    return [kit.name for kit in KITS]


__all__ = ["KITS", "MEMORY", "SQLITE", "Damage", "StoreKit", "kit_ids", "server_or_skip"]
