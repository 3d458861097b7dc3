"""The contract every SnapshotStore keeps (``awaitly_anyio.testing.check_store``), run
against each shipped store: a new store is one driver file and one line here.

The tests themselves live in ``awaitly_anyio/_contract.py`` so that third-party store
authors run the very same suite.
"""

from __future__ import annotations

import ast
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import awaitly_anyio.stores
from awaitly_anyio.stores import MemoryStore
from awaitly_anyio.testing import DAMAGE, FakeClock, check_store

from .postgres_kit import POSTGRES
from .redis_kit import REDIS
from .store_kits import MEMORY, SQLITE

TestMemoryStore = check_store(MEMORY.open, damage=MEMORY.damage, raw=MEMORY.raw)
TestSQLiteStore = check_store(SQLITE.open, damage=SQLITE.damage, raw=SQLITE.raw)
TestPostgresStore = check_store(POSTGRES.open, damage=POSTGRES.damage, raw=POSTGRES.raw)
TestRedisStore = check_store(REDIS.open, damage=REDIS.damage, raw=REDIS.raw, damages=DAMAGE)


# ---- the drivers speak rows only -----------------------------------------------------------

STORES = Path(awaitly_anyio.stores.__file__).parent
DRIVER_FILES = ["memory.py", "sqlite.py", "postgres.py", "redis.py"]
# Validation, TTL, encoding and listing helpers: the front's business, never a driver's.
FRONT_ONLY_MODULES = {"_checks", "_times"}
ALLOWED = {
    "_rows": {"RunRow"},
    "_store": {"Claim", "ClaimOutcome"},
    "serialization": {"TypeRegistry", "default_registry"},
}


def front_helpers_used(source: str) -> list[str]:
    """What a driver module imports that only the front may use."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level >= 2 and node.module is not None:
            module = node.module.split(".")[0]
            names = {alias.name for alias in node.names}
            if module in FRONT_ONLY_MODULES:
                found += [f"{module}.{name}" for name in sorted(names)]
            elif module in ALLOWED:
                found += [f"{module}.{name}" for name in sorted(names - ALLOWED[module])]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("awaitly_anyio")]
    return found


@pytest.mark.parametrize("name", DRIVER_FILES)
def test_no_driver_file_calls_validation_ttl_or_encoding_helpers(name: str) -> None:
    assert front_helpers_used((STORES / name).read_text(encoding="utf-8")) == []


def test_the_driver_check_catches_a_helper() -> None:
    sneaky = "from .._rows import RunRow, snapshot_from_rows\nfrom .._checks import check_id\n"
    assert front_helpers_used(sneaky) == ["_rows.snapshot_from_rows", "_checks.check_id"]


# ---- a whole-document store written by a user: the one docs/custom-store.md shows -----------


def _docs_dict_store() -> type:
    """The ``DictStore`` class of docs/custom-store.md (its first example, run as a module)."""
    from .test_docs import DOCS, _examples

    (example,) = [e for e in _examples(DOCS / "custom-store.md") if "class DictStore" in e.code]
    namespace: dict[str, Any] = {"__name__": "docs_custom_store"}
    source = "\n" * example.line + example.code  # the Markdown file's line numbers
    exec(compile(source, "docs/custom-store.md", "exec"), namespace)
    store_class: type = namespace["DictStore"]
    return store_class


_docs_store_class = _docs_dict_store()
_docs_store_data: dict[Path, dict[str, str]] = {}


@contextlib.asynccontextmanager
async def _open_docs_store(folder: Path, clock: FakeClock) -> AsyncIterator[Any]:
    async with _docs_store_class(_docs_store_data.setdefault(folder, {}), clock=clock) as store:
        yield store


# Its class is known: what a whole-document store lacks is left out, not skipped.
TestDocsDictStore = check_store(_open_docs_store, store_type=_docs_store_class)


# ---- check_store's own arguments -------------------------------------------------------------


def test_check_store_refuses_half_a_damage_kit_and_unknown_names() -> None:
    async def damage(store: Any, run_id: str, part: str) -> None: ...

    async def raw(store: Any, run_id: str) -> Any: ...

    with pytest.raises(TypeError, match="both"):
        check_store(_open_docs_store, damage=damage)
    with pytest.raises(TypeError, match="both"):
        check_store(_open_docs_store, raw=raw)
    with pytest.raises(ValueError, match="melted"):
        check_store(_open_docs_store, damage=damage, raw=raw, damages=["step", "melted"])
    with pytest.raises(ValueError, match="backends"):
        check_store(_open_docs_store, backends=["curio"])
    with pytest.raises(ValueError, match="backends"):
        check_store(_open_docs_store, backends=[])


def test_check_store_makes_a_class_pytest_collects() -> None:
    made = check_store(_open_docs_store, backends=["asyncio"])
    assert made.__test__ is True
    assert "test_hostile_ids_are_only_ever_data" in dir(made)


def test_a_known_store_type_leaves_out_what_it_cannot_take() -> None:
    # The docs' DictStore keeps whole documents: no checkpoints, leases or damage kit.
    made = check_store(_open_docs_store, store_type=_docs_store_class)
    assert made.test_hostile_ids_are_only_ever_data is not None
    assert made.test_concurrent_claims_have_exactly_one_winner is None  # a LeaseStore's
    assert made.test_concurrent_writers_on_two_stores_lose_nothing is None  # a CheckpointStore's
    damaged = [name for name in dir(made) if name.startswith("test_") and "damage" in name]
    assert damaged
    assert all(getattr(made, name) is None for name in damaged)
    # A store class that has it all keeps every test.
    full = check_store(MEMORY.open, damage=MEMORY.damage, raw=MEMORY.raw, store_type=MemoryStore)
    assert all(getattr(full, name) is not None for name in dir(full) if name.startswith("test_"))
