"""Shared fixtures: every async test runs on asyncio and on trio."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each ``@pytest.mark.anyio`` test once per backend."""
    return str(request.param)


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
