"""Counts by status from the store (`StoreFront.count_by_status`, issue 23's dashboard
counts) on every store (memory, SQLite, PostgreSQL, Redis), on asyncio and trio: the
counts agree with what `list(status=...)` lists after saves, finishes, cancels and
expiry (the store's `FakeClock`), a prefix counts only its own runs, and a damaged run
counts the way `list` shows it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from awaitly_anyio import Err, Ok, RunStatus, WorkflowSnapshot
from awaitly_anyio._snapshot import RUN_STATUSES
from awaitly_anyio.stores import redis as redis_store
from awaitly_anyio.testing import FakeClock

from .store_kits import StoreKit

pytestmark = pytest.mark.anyio

ZERO: dict[RunStatus, int] = dict.fromkeys(RUN_STATUSES, 0)


@pytest.fixture
async def store(
    kit: StoreKit, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Any]:
    # Redis counts a slice of the index per script: slices of 2 make every test here
    # cross several slices (the other stores ignore it).
    monkeypatch.setattr(redis_store, "_COUNT_SLICE", 2)
    async with kit.open(tmp_path, clock) as opened:
        yield opened


async def listed(store: Any, prefix: str | None = None) -> dict[RunStatus, int]:
    """The counts a user would get by paging through `list(status=...)`."""
    counts = dict(ZERO)
    for status in RUN_STATUSES:
        cursor: str | None = None
        while True:
            page = await store.list(prefix=prefix, status=status, limit=2, cursor=cursor)
            counts[status] += len(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
    return counts


async def test_an_empty_store_counts_zero_for_every_status(store: Any) -> None:
    counts = await store.count_by_status()
    assert counts == ZERO
    assert list(counts) == list(RUN_STATUSES)


async def test_counts_follow_saves_finishes_and_cancels(store: Any) -> None:
    statuses: list[RunStatus] = ["running", "running", "completed", "failed", "waiting"]
    for n, status in enumerate(statuses):
        await store.save(f"run-{n}", WorkflowSnapshot("orders", f"run-{n}", status=status))
    await store.mark_running("live-1", "orders")
    await store.mark_running("live-2", "orders")
    await store.enqueue("queued-1", "orders", queue="mail")
    await store.enqueue("queued-2", "orders", queue="mail")
    assert await store.count_by_status() == {
        **ZERO,
        "pending": 2,
        "running": 4,
        "waiting": 1,
        "completed": 1,
        "failed": 1,
    }

    await store.finish("live-1", "completed", Ok(1), None)
    await store.finish("live-2", "failed", Err("declined"), None)
    assert await store.cancel("queued-1") == "pending"  # a queued run ends cancelled
    await store.save("run-0", WorkflowSnapshot("orders", "run-0", status="completed"))
    assert await store.delete("run-4")

    expected = {**ZERO, "pending": 1, "running": 1, "completed": 3, "failed": 2, "cancelled": 1}
    assert await store.count_by_status() == expected
    assert await listed(store) == expected


async def test_expired_runs_are_not_counted(store: Any, clock: FakeClock) -> None:
    await store.save("keep", WorkflowSnapshot("orders", "keep", status="completed"))
    await store.save(
        "short", WorkflowSnapshot("orders", "short", status="completed"), ttl=timedelta(minutes=1)
    )
    await store.mark_running("ends", "orders")
    await store.finish("ends", "failed", Err("x"), None, ttl=timedelta(minutes=5))
    assert await store.count_by_status() == {**ZERO, "completed": 2, "failed": 1}

    clock.advance(61)
    assert await store.count_by_status() == {**ZERO, "completed": 1, "failed": 1}
    clock.advance(300)
    expected = {**ZERO, "completed": 1}
    assert await store.count_by_status() == expected
    assert await listed(store) == expected
    # A run saved again over an expired one counts once, as new.
    await store.save("short", WorkflowSnapshot("orders", "short", status="running"))
    assert await store.count_by_status() == {**ZERO, "completed": 1, "running": 1}


async def test_a_prefix_counts_only_its_own_runs(store: Any) -> None:
    ids = ["tenant-a:1", "tenant-a:2", "tenant-ab:3", "tenant-b:1", "x%_1", "xy_2", "ü-1"]
    for n, id in enumerate(ids):
        status = "completed" if n % 2 else "running"
        await store.save(id, WorkflowSnapshot("orders", id, status=status))

    assert await store.count_by_status(prefix="tenant-a:") == {
        **ZERO,
        "running": 1,
        "completed": 1,
    }
    assert await store.count_by_status(prefix="tenant-a") == {
        **ZERO,
        "running": 2,
        "completed": 1,
    }
    # Characters that are wildcards to SQL LIKE are plain characters of a prefix.
    assert await store.count_by_status(prefix="x%") == {**ZERO, "running": 1}
    assert await store.count_by_status(prefix="x_") == ZERO
    assert await store.count_by_status(prefix="ü") == {**ZERO, "running": 1}
    assert await store.count_by_status(prefix="nobody") == ZERO
    for prefix in ("tenant-a", "x%", "ü", ""):
        assert await store.count_by_status(prefix=prefix) == await listed(store, prefix or None)
    assert sum((await store.count_by_status()).values()) == len(ids)


async def test_a_damaged_run_counts_as_list_shows_it(kit: StoreKit, store: Any) -> None:
    await store.save("good", WorkflowSnapshot("orders", "good", status="completed"))
    await store.save("bad-meta", WorkflowSnapshot("orders", "bad-meta", status="completed"))
    await kit.damage(store, "bad-meta", "metadata")
    # Its row still says completed: list(status="completed") lists it, so it counts.
    assert await store.count_by_status() == {**ZERO, "completed": 2}
    assert await listed(store) == {**ZERO, "completed": 2}
    if "wrong_type" not in kit.cannot_damage:
        # A Redis key that is not a run hash has no status: listed damaged, not counted.
        await store.save("not-a-hash", WorkflowSnapshot("orders", "not-a-hash"))
        await kit.damage(store, "not-a-hash", "wrong_type")
        assert await store.count_by_status() == {**ZERO, "completed": 2}
        page = await store.list()
        assert [info.id for info in page.items if info.damaged is not None] == ["not-a-hash"]


async def test_bad_arguments_and_a_closed_store(kit: StoreKit, tmp_path: Path) -> None:
    async with kit.open(tmp_path, FakeClock()) as store:
        with pytest.raises(TypeError, match="prefix must be a string, not 5"):
            await store.count_by_status(prefix=5)
    if kit.name != "memory":  # (the memory kit's store lives on for the test's folder)
        with pytest.raises(RuntimeError, match="closed"):
            await store.count_by_status()


# ---- the dashboard's /api/counts --------------------------------------------------------


class PagingOnly:
    """A `SnapshotStore` of the user's own (no ``count_by_status``): the dashboard
    counts its runs by paging through ``list``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.save, self.load, self.delete = inner.save, inner.load, inner.delete
        self.list, self.close = inner.list, inner.close

    async def __aenter__(self) -> PagingOnly:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None


async def api_counts(store: Any, clock: FakeClock, **options: Any) -> dict[str, Any]:
    import httpx

    from awaitly_anyio import create_dashboard_app

    app = create_dashboard_app(store, clock=clock, counts_ttl=0, **options)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as c:
        got = await c.get("/api/counts")
    assert got.status_code == 200, got.text
    found: dict[str, Any] = got.json()
    return found


async def test_the_dashboard_counts_with_the_store(
    store: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    statuses: list[RunStatus] = ["running", "completed", "completed", "failed"]
    for n, status in enumerate(statuses):
        id = f"run-{n}"
        await store.save(
            id, WorkflowSnapshot("orders", id, status=status), ttl=timedelta(minutes=n + 1)
        )
    clock.advance(61)  # run-0 expires
    asked: list[object] = []
    count_by_status = store.count_by_status

    async def spy(**kwargs: Any) -> dict[RunStatus, int]:
        asked.append(kwargs)
        return await count_by_status(**kwargs)

    monkeypatch.setattr(store, "count_by_status", spy)
    expected = {**ZERO, "completed": 2, "failed": 1}
    doc = await api_counts(store, clock)
    assert doc == {"counts": expected, "capped": [], "limit": 100_000}
    assert asked == [{}]  # one count from the store, no paging
    assert await api_counts(store, clock, count_limit=1) == {
        "counts": {**expected, "completed": 1},
        "capped": ["completed"],
        "limit": 1,
    }
    # A store of one's own without count_by_status gets the same counts by paging.
    assert (await api_counts(PagingOnly(store), clock))["counts"] == expected
    assert len(asked) == 2
