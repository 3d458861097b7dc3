"""Shared fixtures: every async test runs on asyncio and on trio; ``kit``/``store``/
``clock`` open each store of the shared kits (a module may override any of them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from awaitly_anyio.testing import FakeClock

from .store_kits import KITS, StoreKit, kit_ids


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each ``@pytest.mark.anyio`` test once per backend."""
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    """The store's clock; only tests move it."""
    return FakeClock()


@pytest.fixture(params=KITS, ids=kit_ids())
def kit(request: pytest.FixtureRequest) -> StoreKit:
    """Each store of the shared kits (memory, SQLite, PostgreSQL, Redis) in turn."""
    found: StoreKit = request.param
    return found


@pytest.fixture
async def store(kit: StoreKit, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Any]:
    """``kit``'s store, opened on ``clock`` and closed after the test."""
    async with kit.open(tmp_path, clock) as opened:
        yield opened


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the combinations that do not exist, rather than skip them: a store
    parametrized with a kind of damage it cannot suffer (``StoreKit.cannot_damage``),
    or a test marked ``needs_url_store`` on a store no other process can open."""
    from .kit_base import StoreKit

    kept: list[pytest.Item] = []
    left_out: list[pytest.Item] = []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        kit = params.get("kit")
        if isinstance(kit, StoreKit) and (
            params.get("part") in kit.cannot_damage
            or (item.get_closest_marker("needs_url_store") and not kit.by_url)
        ):
            left_out.append(item)
        else:
            kept.append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept
