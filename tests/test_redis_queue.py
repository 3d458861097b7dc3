"""What only the Redis store promises about queues, cancel requests and schedules (issue
20): the queue's keys (a sorted set of pending runs, a hash of started ones, a set of
starts), caps counted from runs that still run (a run that vanished or expired stops
counting), one script per claim and no ``KEYS``/``SCAN``, pushes for enqueues, cancel
requests and the end of queued runs only, schedules in two hashes of the prefix, and
run hashes written before queues existed.  The behaviour every store shares is in the
queue contract suite."""

from __future__ import annotations

import contextlib
import struct
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import attrs
import pytest

from awaitly_anyio import Ok
from awaitly_anyio.stores.redis import RedisStore, _entry
from awaitly_anyio.testing import FakeClock

from .kit_base import server_or_skip
from .redis_kit import URL, fresh_prefix, raw
from .stall_proxy import StallProxy, commands_sent, stall_proxy

pytestmark = pytest.mark.anyio


@pytest.fixture
def prefix() -> Iterator[str]:
    yield from fresh_prefix("queue")


@pytest.fixture
async def store(prefix: str, clock: FakeClock) -> AsyncIterator[RedisStore]:
    async with RedisStore(URL, prefix=prefix, clock=clock) as opened:
        yield opened


def _port() -> int:
    return urllib.parse.urlsplit(URL).port or 6379


@pytest.fixture
async def proxied(prefix: str, clock: FakeClock) -> AsyncIterator[tuple[RedisStore, StallProxy]]:
    """A store reached through a proxy that sees exactly what this store sends."""
    try:
        async with stall_proxy("127.0.0.1", _port()) as proxy:
            url = URL.replace(f":{_port()}", f":{proxy.port}", 1)
            async with RedisStore(url, prefix=prefix, clock=clock) as opened:
                yield opened, proxy
    except OSError as exc:  # pragma: no cover - depends on the environment
        server_or_skip("Redis", URL, exc)


def _keys(prefix: str) -> dict[str, str]:
    with contextlib.closing(raw()) as client:
        return {key: client.type(key) for key in client.scan_iter(match=prefix + "*")}


def test_queue_entries_sort_as_their_creation_times_then_ids() -> None:
    from awaitly_anyio._rows import RunRow

    times = [-1e9, -2.5, -0.0, 0.0, 1e-300, 0.5, 1.0, 1_700_000_000.25, 1_700_000_000.5, 4e9]
    rows = [
        (at, id)
        for at in times
        for id in ("b", "a", "é")
        if not (at == 0.0 and struct.pack(">d", at) != struct.pack(">d", 0.0))
    ]
    entries = {
        _entry(id, RunRow("w", "pending", None, "{}", at, at, None, queue="q")): (at, id)
        for at, id in rows
    }
    assert [entries[entry] for entry in sorted(entries)] == sorted(rows)
    assert _entry("x", RunRow("w", "running", None, "{}", 1.0, 1.0, None)) == ""


async def test_a_queue_lives_in_its_own_keys(store: RedisStore, prefix: str) -> None:
    await store.enqueue("a", "orders", queue="mail", priority=5, partition="p1")
    await store.enqueue("b", "orders", queue="mail")
    with contextlib.closing(raw()) as client:
        pending = client.zrange(f"{prefix}queue:mail", 0, -1, withscores=True)
        assert [(member.split("\x00")[1], score) for member, score in pending] == [
            ("b", 0.0),
            ("a", 5.0),
        ]
    [taken] = await store.claim_queued("mail", owner="w", lease=30)
    assert taken.id == "b"
    with contextlib.closing(raw()) as client:
        assert client.hgetall(f"{prefix}qrun:mail") == {"b": ""}
        assert client.zrange(f"{prefix}qstart:mail", 0, -1) == ["b"]
        assert client.zscore(f"{prefix}active", "b") is not None  # recovery's candidate
    await store.finish("b", "completed", Ok(1), "1", owner="w")
    with contextlib.closing(raw()) as client:
        assert client.hgetall(f"{prefix}qrun:mail") == {}
        assert [m.split("\x00")[1] for m in client.zrange(f"{prefix}queue:mail", 0, -1)] == ["a"]
    assert await store.cancel("a") == "pending"
    assert _keys(prefix).get(f"{prefix}queue:mail") is None  # the pending set is empty


async def test_claims_enqueues_and_cancels_are_one_script_call_and_never_scan(
    proxied: tuple[RedisStore, StallProxy],
) -> None:
    store, proxy = proxied
    await store.enqueue("warm", "orders", queue="q")
    await store.claim_queued("q", owner="w", lease=30, concurrency=5, rate=(10, 60.0))
    await store.cancel("warm")
    for n in range(3):
        await store.enqueue(f"r{n}", "orders", queue="q", partition=f"p{n % 2}")
    before = len(proxy.sent)
    await store.enqueue("r3", "orders", queue="q")
    taken = await store.claim_queued(
        "q", owner="w", lease=30, limit=3, concurrency=5, partition_concurrency=1, rate=(10, 60.0)
    )
    assert await store.cancel("r3") == "pending"
    sent = bytes(proxy.sent[before:])
    assert [info.id for info in taken] == ["r0", "r1"]  # r2 shares r0's partition
    assert commands_sent(sent, "evalsha") == 3
    assert commands_sent(sent) == 3
    assert commands_sent(sent, "keys", "scan") == 0


async def test_caps_stop_counting_runs_that_vanished_or_expired(
    store: RedisStore, prefix: str, clock: FakeClock
) -> None:
    for id in ("a", "b", "c"):
        await store.enqueue(id, "orders", queue="q")
        clock.advance(1)
    assert [i.id for i in await store.claim_queued("q", owner="w", lease=60, concurrency=1)] == [
        "a"
    ]
    assert await store.claim_queued("q", owner="w", lease=60, concurrency=1) == []
    with contextlib.closing(raw()) as client:
        client.delete(f"{prefix}run:a")  # as if Redis evicted it
    assert [i.id for i in await store.claim_queued("q", owner="w", lease=60, concurrency=1)] == [
        "b"
    ]
    # b expires while it runs (saved with an expiry: Redis's TTL has not run out yet).
    driver: Any = store._driver
    found = await driver.read("b", clock.time(), steps=False)
    row = found[0]
    await driver.write_run("b", attrs.evolve(row, expires_at=clock.time() + 5), [])
    assert await store.claim_queued("q", owner="w", lease=60, concurrency=1) == []
    clock.advance(10)
    assert [i.id for i in await store.claim_queued("q", owner="w", lease=60, concurrency=1)] == [
        "c"
    ]
    with contextlib.closing(raw()) as client:
        assert client.hgetall(f"{prefix}qrun:q") == {"c": ""}


async def test_a_waiting_run_stays_started_but_does_not_count(
    store: RedisStore, prefix: str, clock: FakeClock
) -> None:
    await store.enqueue("a", "orders", queue="q")
    await store.enqueue("b", "orders", queue="q")
    [first] = await store.claim_queued("q", owner="w", lease=60, concurrency=1)
    ready, _ = await store.begin_wait(
        first.id, step="wait", key="k", kind="message", wake_at=None, owner="w"
    )
    assert not ready
    [second] = await store.claim_queued("q", owner="w", lease=60, concurrency=1)
    assert (first.id, second.id) == ("a", "b")
    with contextlib.closing(raw()) as client:
        assert client.hgetall(f"{prefix}qrun:q") == {"a": "", "b": ""}
    # a runs again once its value comes: two running, none more may start.
    await store.send("a", "k", 1)
    assert await store.receive("a", "k", step="wait", name="wait", owner="w") == Ok(1)
    await store.enqueue("c", "orders", queue="q")
    assert await store.claim_queued("q", owner="w", lease=60, concurrency=2) == []


async def test_runs_cancelled_on_request_leave_the_set_of_recovery_candidates(
    store: RedisStore, prefix: str
) -> None:
    await store.enqueue("r", "orders", queue="q")
    await store.claim_queued("q", owner="w", lease=60)
    assert await store.cancel("r") == "running"
    assert await store.renew("r", owner="w", lease=60) is False
    await store.finish("r", "cancelled", None, None, owner="w")
    with contextlib.closing(raw()) as client:
        assert client.zscore(f"{prefix}active", "r") is None
        assert client.hgetall(f"{prefix}qrun:q") == {}


async def test_pushes_come_for_queued_runs_only(store: RedisStore, clock: FakeClock) -> None:
    seen: list[str] = []
    arrived: dict[str, anyio.Event] = {}

    def woken(id: str) -> None:
        seen.append(id)
        arrived.setdefault(id, anyio.Event()).set()

    async def pushed(id: str) -> None:
        with anyio.fail_after(10):
            await arrived.setdefault(id, anyio.Event()).wait()

    await store.mark_running("plain", "orders")
    async with anyio.create_task_group() as group:
        group.start_soon(store._driver.watch, woken)
        # Nothing tells when the watch has subscribed: push until one arrives.
        for _ in range(200):
            await store._driver.notify("ready")
            with anyio.move_on_after(0.05):
                await pushed("ready")
            if arrived["ready"].is_set():
                break
        seen.clear()
        await store.finish("plain", "completed", Ok(1), "1")  # not queued: no push
        await store.enqueue("queued", "orders", queue="q")
        await pushed("queued")
        await store.claim_queued("q", owner="w", lease=60)
        arrived.pop("queued")
        await store.cancel("queued")
        await pushed("queued")
        arrived.pop("queued")
        await store.finish("queued", "cancelled", None, None, owner="w")
        await pushed("queued")
        group.cancel_scope.cancel()
    # A "ready" published twice may come late.
    assert [id for id in seen if id != "ready"] == ["queued", "queued", "queued"]


async def test_a_cancel_request_is_pushed_apart_from_other_changes(
    store: RedisStore, clock: FakeClock
) -> None:
    """The watch calls ``cancelled`` for a cancel request's message ("!" + id) and
    ``woken`` for the others ("=" + id, and a bare id from an older release); a queued
    run asked to cancel whose worker died is ended by the sweep, and pushed."""
    seen: list[tuple[str, str]] = []
    news = anyio.Event()

    def woken(id: str) -> None:
        seen.append(("change", id))
        news.set()

    def cancelled(id: str) -> None:
        seen.append(("cancel", id))
        news.set()

    async def next_push() -> tuple[str, str]:
        nonlocal news
        with anyio.fail_after(10):  # a bound on a push, not a timing
            while not seen:
                await news.wait()
                news = anyio.Event()
        return seen.pop(0)

    driver: Any = store._driver
    async with anyio.create_task_group() as group:
        group.start_soon(driver.watch, woken, cancelled)
        # Nothing tells when the watch has subscribed: push until one arrives.
        for _ in range(200):
            await driver.notify("ready")
            with anyio.move_on_after(0.05):
                while ("change", "ready") not in seen:
                    await news.wait()
                    news = anyio.Event()
            if ("change", "ready") in seen:
                break
        await driver.notify("in place")
        while await next_push() != ("change", "in place"):
            pass  # "ready"s published before it
        await store.mark_running("r", "orders")
        await store.send("r", "k", 1)
        assert await next_push() == ("change", "r")
        await store.cancel("r")
        assert await next_push() == ("cancel", "r")
        await driver._call(lambda client: client.publish(driver._wake, "=!odd"))
        assert await next_push() == ("change", "!odd")  # the kind comes first
        await driver._call(lambda client: client.publish(driver._wake, "bare"))
        assert await next_push() == ("change", "bare")
        await store.enqueue("orphan", "orders", queue="q")
        assert await next_push() == ("change", "orphan")
        await store.claim_queued("q", owner="dead", lease=5.0)
        await store.cancel("orphan")
        assert await next_push() == ("cancel", "orphan")
        clock.advance(10)
        assert await store.claim_expired(owner="w", lease=30.0) == []
        assert await next_push() == ("change", "orphan")  # its end, for its handle
        assert (await store.info("orphan")).status == "cancelled"  # type: ignore[union-attr]
        group.cancel_scope.cancel()


async def test_schedules_are_two_hashes_of_the_prefix(store: RedisStore, prefix: str) -> None:
    await store.put_schedule("nightly", {"every": 86400})
    assert await store.advance_schedule("nightly", None, 1000.5)
    await store.put_schedule("nightly", {"every": 3600})  # the tick stays
    with contextlib.closing(raw()) as client:
        assert client.hgetall(f"{prefix}schedules") == {"nightly": '{"every":3600}'}
        assert client.hgetall(f"{prefix}schedule-ticks") == {"nightly": "1000.5"}
    assert not await store.advance_schedule("nightly", None, 2000.0)
    assert await store.advance_schedule("nightly", 1000.5, 2000.0)
    assert await store.delete_schedule("nightly")
    assert _keys(prefix) == {}


async def test_a_run_hash_written_before_queues_reads_as_not_queued(
    store: RedisStore, prefix: str, clock: FakeClock
) -> None:
    await store.claim("old", "orders", owner="dead", lease=10)
    with contextlib.closing(raw()) as client:
        client.hdel(
            f"{prefix}run:old",
            "queue",
            "priority",
            "partition",
            "started_at",
            "cancel_at",
            "queue_entry",
        )
    info = await store.info("old")
    assert info is not None
    assert (info.queue, info.priority, info.partition, info.started_at) == (None, 0, None, None)
    assert info.cancel_requested is False
    clock.advance(20)
    [taken] = await store.claim_expired(owner="me", lease=30)
    assert taken.id == "old"
    assert await store.renew("old", owner="me", lease=30)
    assert await store.cancel("old") == "running"
    assert not await store.renew("old", owner="me", lease=30)
