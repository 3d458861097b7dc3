"""The cross-run step cache on every store (issue 22): `StoreCache` over the store front's
cache rows, through the shared kits (memory, SQLite, PostgreSQL, Redis), on asyncio
and trio.  Expiry follows the store's `FakeClock`; damaged entries are written behind
the store's back and must read as misses that say why."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from awaitly_anyio import (
    Err,
    Ok,
    SerializationError,
    StepCache,
    StoreCache,
    create_workflow,
)
from awaitly_anyio.events import StepCacheHit, StepCacheMiss, StepComplete, WorkflowEvent
from awaitly_anyio.testing import FakeClock

from .store_kits import StoreKit

pytestmark = pytest.mark.anyio


@pytest.fixture
def cache(store: Any) -> StoreCache:
    return StoreCache(store)


# ---- damage behind the store's back ------------------------------------------------------


async def damage(kit: StoreKit, store: Any, key: str, part: str) -> None:
    """Spoil cache entry ``key`` of ``store``: its value JSON (``"value"``), a tagged value
    whose payload is wrong (``"tag"``), its expiry (``"expiry"``, where the database
    lets one be) or, on Redis, the key's type (``"type"``)."""
    bad = {"value": '{"rate": tru', "tag": '{"$t": "tuple", "v": 5}'}.get(part)
    if kit.name == "memory":
        _, expires_at = store._cache[key]
        store._cache[key] = (bad, expires_at)
    elif kit.name == "sqlite":
        with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as db:
            if part == "expiry":
                db.execute("UPDATE awaitly_cache SET expires_at = 'garbage' WHERE key = ?", (key,))
            else:
                db.execute("UPDATE awaitly_cache SET value_json = ? WHERE key = ?", (bad, key))
    elif kit.name == "postgres":
        from .postgres_kit import admin

        table = store._pg.sql.cache_table
        await admin(f"UPDATE {table} SET value = $2 WHERE key = $1", key, bad)
    else:
        from .redis_kit import raw

        name = f"{store.prefix}cache:{key}"
        with contextlib.closing(raw()) as client:
            if part == "type":
                client.delete(name)
                client.set(name, "not a hash")
            elif part == "expiry":
                client.hset(name, "e", "garbage")
            else:
                client.hset(name, "v", bad)


def damages(kit: StoreKit) -> list[str]:
    parts = ["value", "tag"]
    if kit.name in ("sqlite", "redis"):
        parts.append("expiry")
    if kit.name == "redis":
        parts.append("type")
    return parts


# ---- get, put, expire, invalidate, purge ---------------------------------------------------


async def test_a_store_cache_is_a_step_cache(cache: StoreCache) -> None:
    assert isinstance(cache, StepCache)


async def test_put_then_lookup_gives_an_equal_value_back(cache: StoreCache) -> None:
    value = {"EUR": 1.08, "rates": [1, 2.5, None, "x"], "when": timedelta(seconds=3), "t": (1, 2)}
    assert (await cache.lookup("rates:EUR")).hit is False
    await cache.put("rates:EUR", value, ttl=60)
    found = await cache.lookup("rates:EUR")
    assert found.hit is True
    assert found.problem is None
    assert found.value == value
    assert found.value is not value  # decoded afresh: never the object that was stored


async def test_an_entry_expires_by_the_stores_clock(cache: StoreCache, clock: FakeClock) -> None:
    await cache.put("k", "v", ttl=10)
    clock.advance(9.5)
    assert (await cache.lookup("k")).value == "v"
    clock.advance(0.5)
    assert (await cache.lookup("k")).hit is False
    await cache.put("k", "w", ttl=timedelta(minutes=1))  # a timedelta works too
    clock.advance(59)
    assert (await cache.lookup("k")).value == "w"


async def test_put_replaces_the_value_and_the_ttl(cache: StoreCache, clock: FakeClock) -> None:
    await cache.put("k", 1, ttl=100)
    await cache.put("k", 2, ttl=5)
    assert (await cache.lookup("k")).value == 2
    clock.advance(6)
    assert (await cache.lookup("k")).hit is False


async def test_invalidate_says_whether_a_live_entry_went(
    cache: StoreCache, clock: FakeClock
) -> None:
    await cache.put("a", 1, ttl=10)
    await cache.put("b", 2, ttl=10)
    assert await cache.invalidate("a") is True
    assert (await cache.lookup("a")).hit is False
    assert await cache.invalidate("a") is False
    assert await cache.invalidate("never") is False
    assert (await cache.lookup("b")).value == 2  # the others stay
    clock.advance(11)
    assert await cache.invalidate("b") is False  # expired: no live entry went


async def test_purge_deletes_the_expired_entries_only(cache: StoreCache, clock: FakeClock) -> None:
    await cache.put("old-1", 1, ttl=5)
    await cache.put("old-2", 2, ttl=5)
    await cache.put("young", 3, ttl=50)
    assert await cache.purge_expired() == 0
    clock.advance(10)
    assert await cache.purge_expired() == 2
    assert await cache.purge_expired() == 0
    assert (await cache.lookup("young")).value == 3


async def test_two_store_objects_share_the_entries(
    kit: StoreKit, tmp_path: Path, clock: FakeClock, cache: StoreCache
) -> None:
    # A second store over the same database: another process sees the same cache.
    async with kit.open(tmp_path, clock) as other:
        await cache.put("shared", {"n": 1}, ttl=30)
        assert (await StoreCache(other).lookup("shared")).value == {"n": 1}
        assert await StoreCache(other).invalidate("shared") is True
        assert (await cache.lookup("shared")).hit is False


@pytest.mark.parametrize(
    "key",
    ["rates:EUR", "ünïcode ключ ✓", "a*b?[c]\\d", "x" * 5000, " ", "run:1", "steps:1"],
    ids=["plain", "unicode", "glob", "long", "space", "run-like", "steps-like"],
)
async def test_hostile_keys_are_kept_apart(
    cache: StoreCache, clock: FakeClock, store: Any, key: str
) -> None:
    await cache.put(key, key[:10], ttl=5)
    await cache.put(key + "-other", "other", ttl=500)
    assert (await cache.lookup(key)).value == key[:10]
    assert (await cache.lookup(key[:-1] or "?")).hit is False
    clock.advance(10)
    assert await cache.purge_expired() == 1
    assert (await cache.lookup(key + "-other")).value == "other"
    assert await store.list() is not None  # the runs know nothing of the cache
    assert list(await store.list()) == []


# ---- bad input, unstorable values, damage ---------------------------------------------------


@pytest.mark.parametrize(
    ("key", "ttl", "error"),
    [
        ("", 10, ValueError),
        ("a\x00b", 10, ValueError),
        (5, 10, ValueError),
        ("k", 0, ValueError),
        ("k", -1, ValueError),
        ("k", float("nan"), ValueError),
        ("k", float("inf"), ValueError),
        ("k", "10", TypeError),
        ("k", True, TypeError),
        ("k", None, TypeError),
    ],
)
async def test_bad_keys_and_ttls_are_refused_before_writing(
    cache: StoreCache, key: Any, ttl: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match=r"cache key|ttl"):
        await cache.put(key, 1, ttl=ttl)
    assert await cache.purge_expired() == 0


async def test_a_value_that_cannot_be_encoded_names_the_step_and_writes_nothing(
    cache: StoreCache,
) -> None:
    await cache.put("k", "before", ttl=10)
    with pytest.raises(SerializationError) as caught:
        await cache.put("k", object(), ttl=10, step="fetch rates")
    assert caught.value.step == "fetch rates"
    assert (await cache.lookup("k")).value == "before"


async def test_a_damaged_entry_is_a_miss_that_says_why(
    kit: StoreKit, store: Any, cache: StoreCache
) -> None:
    for part in damages(kit):
        key = f"damaged-{part}"
        await cache.put(key, {"rate": True}, ttl=60)
        await damage(kit, store, key, part)
        found = await cache.lookup(key)
        assert found.hit is False, part
        assert found.problem, part
        # A new value overwrites it, whatever was there.
        await cache.put(key, {"rate": False}, ttl=60)
        assert (await cache.lookup(key)).value == {"rate": False}, part
        await damage(kit, store, key, part)
        assert await cache.invalidate(key) is True, part  # unreadable counts as live
        assert (await cache.lookup(key)).problem is None, part


# ---- the cached step, across runs and store objects -----------------------------------------


async def test_a_later_run_through_another_store_object_is_answered_from_the_cache(
    kit: StoreKit, tmp_path: Path, clock: FakeClock, cache: StoreCache
) -> None:
    calls: list[str] = []
    events: list[WorkflowEvent] = []

    async def fetch() -> dict[str, float]:
        calls.append("fetch")
        return {"EUR": 1.08}

    def body_for(cache: StoreCache) -> Any:
        async def body(ctx: Any) -> dict[str, float]:
            rates: dict[str, float] = await ctx.step.cached(
                "rates", fetch, key="rates:EUR", ttl=60, cache=cache
            )
            return rates

        return body

    workflow = create_workflow("pricing", on_event=events.append)
    assert await workflow.run(body_for(cache)) == Ok({"EUR": 1.08})
    async with kit.open(tmp_path, clock) as other:
        assert await workflow.run(body_for(StoreCache(other))) == Ok({"EUR": 1.08})
    assert calls == ["fetch"]
    hits = [e for e in events if isinstance(e, StepCacheHit)]
    misses = [e for e in events if isinstance(e, StepCacheMiss)]
    completes = [e for e in events if isinstance(e, StepComplete)]
    assert [(e.name, e.cache_key) for e in hits] == [("rates", "rates:EUR")]
    assert [(e.cache_key, e.reason) for e in misses] == [("rates:EUR", None)]
    assert [e.cached for e in completes] == [False, True]
    clock.advance(61)  # past the TTL: the next run fetches again
    assert await workflow.run(body_for(cache)) == Ok({"EUR": 1.08})
    assert calls == ["fetch", "fetch"]


async def test_errs_and_unstorable_values_are_not_cached(cache: StoreCache) -> None:
    answers: list[Any] = [Err("rate service down"), object(), 1.5]

    async def body(ctx: Any) -> float:
        rate: float = await ctx.step.cached(
            "rate", lambda: answers.pop(0), key="rate", ttl=60, cache=cache
        )
        return rate

    workflow = create_workflow("pricing")
    assert await workflow.run(body) == Err("rate service down")
    failed = await workflow.run(body)
    assert isinstance(failed, Err)
    assert isinstance(failed.error, SerializationError)
    assert failed.error.step == "rate"
    assert await workflow.run(body) == Ok(1.5)
    assert await workflow.run(body) == Ok(1.5)
    assert answers == []


async def test_redis_purge_reads_its_prefix_literally(clock: FakeClock) -> None:
    # A prefix with glob characters: purge must not reach another prefix it would match.
    from awaitly_anyio.stores.redis import RedisStore

    from .redis_kit import URL, fresh_prefix

    prefixes = fresh_prefix("cache")
    base = next(prefixes)
    try:
        async with (
            RedisStore(URL, prefix=base + "[ab]:", clock=clock) as globbed,
            RedisStore(URL, prefix=base + "a:", clock=clock) as plain,
        ):
            await StoreCache(plain).put("k", 1, ttl=5)
            await StoreCache(globbed).put("k", 2, ttl=5)
            clock.advance(10)
            assert await StoreCache(globbed).purge_expired() == 1
            assert await StoreCache(plain).purge_expired() == 1
    finally:
        next(prefixes, None)


# ---- schema version 5: the upgrade from version 4 ----------------------------------------


async def test_a_version_4_sqlite_file_is_upgraded_and_keeps_its_runs(
    tmp_path: Path, clock: FakeClock
) -> None:
    from awaitly_anyio.stores.sqlite import SCHEMA_VERSION, SQLiteStore

    from .kit_base import encoded

    path = tmp_path / "old.db"
    async with SQLiteStore(path, clock=clock) as store:
        await store.mark_running("r1", "orders")
        await store.checkpoint("r1", encoded("a", 1))
    # What a release of version 4 left: the same tables, without the cache.
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("DROP TABLE awaitly_cache")
        db.execute("PRAGMA user_version = 4")
    async with SQLiteStore(path, clock=clock) as store:
        snapshot = await store.load("r1")
        assert snapshot is not None
        assert list(snapshot.steps) == ["a"]
        await StoreCache(store).put("k", 1, ttl=5)
        assert (await StoreCache(store).lookup("k")).value == 1
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5


async def test_a_version_4_postgres_schema_is_upgraded_and_keeps_its_runs(
    tmp_path: Path, clock: FakeClock
) -> None:
    from awaitly_anyio.stores.postgres import SCHEMA_VERSION

    from .kit_base import encoded
    from .postgres_kit import POSTGRES, admin, admin_fetch

    async with POSTGRES.open(tmp_path, clock) as store:
        await store.mark_running("r1", "orders")
        await store.checkpoint("r1", encoded("a", 1))
        sql = store._pg.sql
        # What a release of version 4 left: the same tables, without the cache.
        await admin(f"DROP TABLE {sql.cache_table}")
        await admin(f"DELETE FROM {sql.versions} WHERE version = 5")
        await admin(f"INSERT INTO {sql.versions} VALUES (4)")
        async with POSTGRES.open(tmp_path, clock) as reopened:
            snapshot = await reopened.load("r1")
            assert snapshot is not None
            assert list(snapshot.steps) == ["a"]
            await StoreCache(reopened).put("k", 1, ttl=5)
            assert (await StoreCache(reopened).lookup("k")).value == 1
        versions = await admin_fetch(f"SELECT version FROM {sql.versions} ORDER BY version")
        assert [v for (v,) in versions] == [4, SCHEMA_VERSION] == [4, 5]
