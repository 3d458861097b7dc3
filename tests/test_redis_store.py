"""What only the Redis store promises: its key layout and real TTLs, one-call checkpoints,
listing from the index alone, clean-up of dangling entries, clients, lost connections."""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from awaitly_anyio import AlreadyDeliveredError, Ok, open_store
from awaitly_anyio.stores.redis import RedisStore
from awaitly_anyio.testing import FakeClock

from .kit_base import encoded, leftover_driver_work, server_or_skip
from .redis_kit import URL, prefix_for, raw, wipe
from .stall_proxy import StallProxy, commands_sent, stall_proxy

pytestmark = pytest.mark.anyio


@pytest.fixture
def prefix(tmp_path: Path) -> Iterator[str]:
    name = prefix_for(tmp_path)
    try:
        wipe(name)
    except Exception as exc:
        server_or_skip("Redis", URL, exc)
    yield name
    wipe(name)


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[RedisStore]:
    async with RedisStore(URL, prefix=prefix, clock=FakeClock()) as opened:
        yield opened


@pytest.fixture
async def proxied(prefix: str) -> AsyncIterator[tuple[RedisStore, StallProxy]]:
    """A store reached through a proxy that sees exactly what this store sends (the
    server's own command counters are shared with every other suite)."""
    async with stall_proxy("127.0.0.1", _port()) as proxy:
        url = URL.replace(f":{_port()}", f":{proxy.port}", 1)
        async with RedisStore(url, prefix=prefix, clock=FakeClock()) as opened:
            yield opened, proxy


async def test_keys_live_under_the_prefix_with_real_ttls(store: RedisStore, prefix: str) -> None:
    await store.claim("r:1", "orders", owner="w", lease=30)
    await store.checkpoint("r:1", encoded("a", 1), owner="w")
    await store.finish("r:1", "completed", Ok(1), None, ttl=60, owner="w")
    with contextlib.closing(raw()) as client:
        keys = sorted(client.scan_iter(match="*" + prefix[-17:] + "*"))
        # The run finished, so it left the set of active runs (which, empty, is gone).
        assert keys == sorted([f"{prefix}run:r:1", f"{prefix}steps:r:1", f"{prefix}index"])
        assert client.type(f"{prefix}index") == "zset"
        for key in (f"{prefix}run:r:1", f"{prefix}steps:r:1"):
            assert 0 < client.pttl(key) <= 60_000


async def test_a_checkpoint_is_one_script_call(proxied: tuple[RedisStore, StallProxy]) -> None:
    store, proxy = proxied
    await store.claim("r", "orders", owner="w", lease=30)
    await store.checkpoint("r", encoded("warm", 0), owner="w")  # loads the script
    before = len(proxy.sent)
    await store.checkpoint("r", encoded("a", 1), owner="w")
    sent = bytes(proxy.sent[before:])
    # One script call, and nothing else sent.
    assert commands_sent(sent, "evalsha") == 1
    assert commands_sent(sent) == 1  # and no other command


async def test_scripts_the_server_forgot_are_loaded_again(store: RedisStore) -> None:
    await store.claim("r", "orders", owner="w", lease=30)
    with contextlib.closing(raw()) as client:
        client.script_flush()  # as after a restart of the server
    await store.checkpoint("r", encoded("a", 1), owner="w")
    loaded = await store.load("r")
    assert loaded is not None
    assert loaded.steps["a"].result == Ok(1)


async def test_a_call_cancelled_before_its_reply_leaves_no_reply_behind(
    store: RedisStore,
) -> None:
    await store.claim("r", "orders", owner="w", lease=30)
    await store.checkpoint("r", encoded("a", 1), owner="w")  # the kept connection is in use
    with contextlib.closing(raw()) as client:
        client.client_pause(300, all=False)  # writes wait on the server: no reply yet
    with anyio.move_on_after(0.05) as scope:
        await store.checkpoint("r", encoded("b", 2), owner="w")
    assert scope.cancelled_caught
    # Had the connection been kept, this call would read the cancelled one's reply (1).
    assert await store.delete("missing") is False
    await store.checkpoint("r", encoded("c", 3), owner="w")
    loaded = await store.load("r")
    assert loaded is not None
    assert loaded.steps["c"].result == Ok(3)


async def test_concurrent_calls_share_the_store_connection_and_each_gets_its_answer(
    prefix: str,
) -> None:
    # Through a proxy that counts this store's connections only (other suites share
    # the server, so its own connection counters are not ours to read).
    async with stall_proxy("127.0.0.1", _port()) as proxy:
        url = URL.replace(f":{_port()}", f":{proxy.port}", 1)
        async with RedisStore(url, prefix=prefix) as store:
            await _share_the_connection(store, proxy)


def _port() -> int:
    return urllib.parse.urlsplit(URL).port or 6379


async def _share_the_connection(store: RedisStore, proxy: StallProxy) -> None:
    for n in range(40):
        await store.claim(f"ours-{n}", "orders", owner="a", lease=60)
    await store.claim("theirs", "orders", owner="b", lease=60)
    outcomes: dict[str, object] = {}

    async def write(run: str, key: str, value: int) -> None:
        try:
            await store.checkpoint(run, encoded(key, value), owner="a")
        except Exception as exc:
            outcomes[f"{run}/{key}"] = type(exc).__name__
        else:
            outcomes[f"{run}/{key}"] = "written"

    before = proxy.accepted
    async with anyio.create_task_group() as tg:
        for step in range(3):
            for n in range(40):
                tg.start_soon(write, f"ours-{n}", f"s{step}", n * 10 + step)
            tg.start_soon(write, "theirs", f"s{step}", 0)
    # Queued behind the first call and sent together on the store's own connection,
    # not each on a connection of the client's pool.
    assert proxy.accepted - before <= 1
    assert outcomes == {
        **{f"ours-{n}/s{step}": "written" for n in range(40) for step in range(3)},
        **{f"theirs/s{step}": "LeaseLostError" for step in range(3)},
    }
    for n in range(40):
        loaded = await store.load(f"ours-{n}")
        assert loaded is not None
        assert {key: record.result for key, record in loaded.steps.items()} == {
            f"s{step}": Ok(n * 10 + step) for step in range(3)
        }


async def test_queued_calls_survive_forgotten_scripts_and_cancelled_neighbours(
    store: RedisStore,
) -> None:
    await store.claim("r", "orders", owner="w", lease=60)
    await store.checkpoint("r", encoded("warm", 0), owner="w")
    with contextlib.closing(raw()) as client:
        client.script_flush()  # as after a restart of the server
        client.client_pause(200, all=False)  # writes wait on the server: replies come late
    cancelled: list[str] = []

    async def write(key: str, value: int, patience: float | None) -> None:
        with anyio.move_on_after(patience if patience is not None else 30) as scope:
            await store.checkpoint("r", encoded(key, value), owner="w")
        if scope.cancelled_caught:
            cancelled.append(key)

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(write, f"k{n}", n, None if n % 2 else 0.05)
    assert len(cancelled) == 10
    # The connection is in step: this call reads its own reply, not a cancelled one's.
    assert await store.delete("missing") is False
    loaded = await store.load("r")
    assert loaded is not None
    for n in range(20):
        record = loaded.steps.get(f"k{n}")
        if n % 2:
            assert record is not None
            assert record.result == Ok(n)
        else:  # cancelled: written if it had been sent, never with another's value
            assert record is None or record.result == Ok(n)


async def test_a_script_the_server_does_not_know_is_loaded_inside_a_batch(prefix: str) -> None:
    from awaitly_anyio._redis_client import SharedRedis

    tag = prefix.replace(":", "-")  # new script text, so the server knows neither script
    first = f"-- {tag} first\nreturn redis.call('INCR', KEYS[1])"
    second = f"-- {tag} second\nreturn ARGV[1] .. '!'"
    shared = SharedRedis(URL, "test")
    answers: dict[int, object] = {}

    async def call(n: int) -> None:
        if n == 0:  # the call that finds the connection free; the others queue behind it
            answers[n] = await shared.run(first, [f"{prefix}counter"], [])
        else:
            answers[n] = await shared.run(second, [], [str(n)])

    try:
        async with anyio.create_task_group() as tg:
            for n in range(12):
                tg.start_soon(call, n)
    finally:
        await shared.aclose()
    assert answers == {0: 1, **{n: f"{n}!" for n in range(1, 12)}}


async def test_listing_reads_the_index_and_never_scans(
    proxied: tuple[RedisStore, StallProxy],
) -> None:
    store, proxy = proxied
    for n in range(30):
        await store.mark_running(f"run-{n:02d}", "orders")
    before = len(proxy.sent)
    ids, cursor = [], None
    while True:
        page = await store.list(limit=7, cursor=cursor)
        ids += [info.id for info in page]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert commands_sent(bytes(proxy.sent[before:]), "keys", "scan") == 0
    assert len(proxy.sent) > before  # the listing did go through the proxy
    assert sorted(ids) == [f"run-{n:02d}" for n in range(30)]


async def test_index_entries_of_vanished_runs_are_dropped(store: RedisStore, prefix: str) -> None:
    await store.mark_running("kept", "orders")
    await store.mark_running("evicted", "orders")
    with contextlib.closing(raw()) as client:
        client.delete(f"{prefix}run:evicted")  # as if Redis evicted or expired it
    page = await store.list()
    assert [info.id for info in page] == ["kept"]
    with contextlib.closing(raw()) as client:
        assert client.zrange(f"{prefix}index", 0, -1) == ["kept"]


async def test_purge_expired_cleans_the_indexes(prefix: str) -> None:
    clock = FakeClock()
    async with RedisStore(URL, prefix=prefix, clock=clock) as store:
        await store.mark_running("old", "orders")
        await store.finish("old", "completed", Ok(1), None, ttl=5)
        await store.mark_running("new", "orders")
        clock.advance(5)
        assert await store.purge_expired() == 1
        assert await store.purge_expired() == 0
    with contextlib.closing(raw()) as client:
        assert client.zrange(f"{prefix}index", 0, -1) == ["new"]
        assert not client.exists(f"{prefix}run:old", f"{prefix}steps:old")


@pytest.mark.parametrize("damage", ["no_expiry_field", "not_a_hash", "bad_expiry"])
async def test_purging_and_listing_never_delete_a_damaged_run(
    store: RedisStore, prefix: str, damage: str
) -> None:
    await store.claim("hurt", "orders", owner="w", lease=30)
    await store.checkpoint("hurt", encoded("a", 1), owner="w")
    run_key, steps_key = store.keys_of("hurt")
    with contextlib.closing(raw()) as client:
        if damage == "no_expiry_field":
            client.hdel(run_key, "expires_at")
        elif damage == "bad_expiry":
            client.hset(run_key, "expires_at", "soon")
        else:
            client.delete(run_key)
            client.set(run_key, "not a hash")
        before = (client.dump(run_key), client.hgetall(steps_key))

    assert await store.purge_expired() == 0
    listed = await store.list()
    assert [(info.id, info.damaged is not None) for info in listed] == [("hurt", True)]
    with contextlib.closing(raw()) as client:
        assert (client.dump(run_key), client.hgetall(steps_key)) == before
        assert client.zrange(f"{prefix}index", 0, -1) == ["hurt"]
    assert await store.delete("hurt") is True  # an operator can still remove it


async def test_recovery_reports_a_run_missing_a_field_even_when_choosing_by_name(
    prefix: str,
) -> None:
    # Its workflow name is gone, so no filter can tell whose it is: it is reported.
    clock = FakeClock()
    async with RedisStore(URL, prefix=prefix, clock=clock) as store:
        await store.claim("hurt", "orders", owner="dead", lease=10)
        await store.checkpoint("hurt", encoded("a", 1), owner="dead")
        run_key, steps_key = store.keys_of("hurt")
        with contextlib.closing(raw()) as client:
            client.hdel(run_key, "workflow_name")
            before = (client.hgetall(run_key), client.hgetall(steps_key))
        clock.advance(20)
        found = await store.claim_expired(owner="me", lease=30, workflow_names=["orders"])
        assert [info.id for info in found] == ["hurt"]
        assert found[0].damaged is not None
        assert "workflow name" in found[0].damaged
        with contextlib.closing(raw()) as client:
            assert (client.hgetall(run_key), client.hgetall(steps_key)) == before


@pytest.mark.parametrize("metadata", [None, {"note": 1}], ids=["kept", "merged"])
async def test_ending_a_run_whose_key_is_not_a_hash_is_a_decode_error(
    store: RedisStore, metadata: dict[str, int] | None
) -> None:
    from awaitly_anyio import SnapshotDecodeError

    await store.claim("hurt", "orders", owner="w", lease=30)
    run_key = store.keys_of("hurt")[0]
    with contextlib.closing(raw()) as client:
        client.delete(run_key)
        client.set(run_key, "not a hash")
    with pytest.raises(SnapshotDecodeError, match="not a hash") as caught:
        await store.finish("hurt", "completed", Ok(1), None, metadata=metadata, owner="w")
    assert caught.value.run_id == "hurt"
    with contextlib.closing(raw()) as client:
        assert client.get(run_key) == "not a hash"


async def test_a_dropped_connection_is_an_error_and_the_store_recovers(prefix: str) -> None:
    # Only this store's connections are dropped: other suites share the server.
    async with stall_proxy("127.0.0.1", _port()) as proxy:
        url = URL.replace(f":{_port()}", f":{proxy.port}", 1)
        async with RedisStore(url, prefix=prefix) as store:
            await _recovers_from_a_drop(store, proxy)


async def _recovers_from_a_drop(store: RedisStore, proxy: StallProxy) -> None:
    await store.mark_running("r", "orders")
    proxy.drop()
    await anyio.wait_all_tasks_blocked()  # the proxy has closed them
    failure: Exception | None = None
    try:
        await store.checkpoint("r", encoded("a", 1))
    except Exception as exc:
        failure = exc
    assert failure is None or "connection" in str(failure).lower()
    await store.checkpoint("r", encoded("b", 2))
    loaded = await store.load("r")
    assert loaded is not None
    assert loaded.steps["b"].result == Ok(2)


async def test_an_unreachable_server_is_a_clear_error() -> None:
    import redis

    with pytest.raises(redis.ConnectionError):
        async with RedisStore("redis://127.0.0.1:1/0"):
            pass
    assert leftover_driver_work() == []


async def test_a_given_client_works_on_asyncio_and_is_refused_on_trio(
    prefix: str, anyio_backend: str
) -> None:
    import redis.asyncio

    if anyio_backend == "trio":
        store = RedisStore(redis.asyncio.Redis.__new__(redis.asyncio.Redis), prefix=prefix)
        with pytest.raises(RuntimeError, match="asyncio only"):
            await store.load("r")
        await store.close()
        return
    client = redis.asyncio.Redis.from_url(URL, decode_responses=True)
    try:
        async with RedisStore(client, prefix=prefix) as store:
            await store.mark_running("r", "orders")
        assert await client.ping()  # not closed by the store
    finally:
        await client.aclose()


async def test_closing_leaves_nothing_running(prefix: str) -> None:
    async with open_store(URL, prefix=prefix) as store:
        await store.mark_running("r", "orders")
        assert leftover_driver_work() == []  # between calls, nothing is pending either
    await anyio.lowlevel.checkpoint()
    assert leftover_driver_work() == []


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="redis://"):
        RedisStore("http://localhost")
    with pytest.raises(TypeError, match="Redis URL"):
        RedisStore(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prefix"):
        RedisStore(URL, prefix="a\x00b")


# ---- waiting (issue 19) ----------------------------------------------------------------


async def test_a_receive_is_one_script_call(proxied: tuple[RedisStore, StallProxy]) -> None:
    store, proxy = proxied
    await store.claim("r", "orders", owner="w", lease=30)
    await store.send("r", "k", "warm")
    assert await store.receive("r", "k", step="warm", name="warm", owner="w") == Ok("warm")
    await store.send("r", "k", {"value": 1})
    before = len(proxy.sent)
    found = await store.receive("r", "k", step="got", name="got", owner="w", sent_by=2e9)
    sent = bytes(proxy.sent[before:])
    assert found == Ok({"value": 1})
    # The look, the take and the step's record: one script, and nothing else sent.
    assert commands_sent(sent, "evalsha") == 1
    assert commands_sent(sent) == 1
    loaded = await store.load("r")
    assert loaded is not None
    assert list(loaded.steps) == ["warm", "got"]
    assert loaded.steps["got"].result == Ok({"value": 1})


def _other_db_url() -> str:
    parts = urllib.parse.urlsplit(URL)
    db = (parts.path.strip("/") or "0") == "0"
    return urllib.parse.urlunsplit(parts._replace(path="/1" if db else "/0"))


async def test_two_databases_with_one_prefix_never_wake_each_other(prefix: str) -> None:
    import redis

    other_url = _other_db_url()
    clock = FakeClock()
    seen: list[str] = []
    arrived = anyio.Event()

    def woken(id: str) -> None:
        seen.append(id)
        if id == "ours":
            arrived.set()

    async with (
        RedisStore(URL, prefix=prefix, clock=clock) as ours,
        RedisStore(other_url, prefix=prefix, clock=clock) as theirs,
    ):
        assert ours._driver.channel != theirs._driver.channel
        await ours.mark_running("ours", "orders")
        await theirs.mark_running("theirs", "orders")
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(ours._driver.watch, woken)
                # Nothing tells when the watch has subscribed: each round publishes
                # theirs, then ours, until ours arrives.
                for n in range(200):
                    await theirs.send("theirs", "k", n)
                    await ours.send("ours", "k", n)
                    with anyio.move_on_after(0.05):
                        await arrived.wait()
                    if arrived.is_set():
                        break
                # One more round, the watch surely listening: ours arrives after theirs
                # would have, had the two channels been one.
                seen.clear()
                arrived = anyio.Event()
                await theirs.send("theirs", "k", "late")
                await ours.send("ours", "k", "late")
                with anyio.fail_after(10):
                    await arrived.wait()
                group.cancel_scope.cancel()
        finally:
            with contextlib.closing(redis.Redis.from_url(other_url)) as client:
                keys = list(client.scan_iter(match=prefix + "*", count=1000))
                if keys:
                    client.delete(*keys)
    assert seen == ["ours"]


async def test_writing_over_an_expired_run_drops_its_mailbox_wait_and_lease(
    prefix: str,
) -> None:
    from awaitly_anyio._rows import RunRow

    clock = FakeClock()
    async with RedisStore(URL, prefix=prefix, clock=clock) as store:
        driver = store._driver
        await store.claim("r", "orders", owner="w", lease=300)
        await store.send("r", "k", "stale")
        ready, _ = await store.begin_wait(
            "r", step="wait", key="other", kind="message", wake_at=clock.time() + 100
        )
        assert not ready
        now = clock.time()
        # Saved with an expiry (the stored lease and wait stay, as for any save).
        row = RunRow("orders", "waiting", None, "{}", now, now, now + 5)
        await driver.write_run("r", row, [])
        run_key = store.keys_of("r")[0]
        with contextlib.closing(raw()) as client:
            assert client.hget(run_key, "wait_step") == "wait"
            assert client.hget(run_key, "lease_owner") == "w"
        clock.advance(10)  # expired for the store; Redis's own TTL has not run out
        now = clock.time()
        await driver.write_run("r", RunRow("orders", "running", None, "{}", now, now, None), [])
        with contextlib.closing(raw()) as client:
            stored = client.hgetall(run_key)
            assert not client.exists(f"{prefix}mail:r")
            assert client.zscore(f"{prefix}waiting", "r") is None
        # Absent fields read as none.
        gone = [stored.get(name, "") for name in ("wait_step", "wake_at", "lease_owner")]
        assert gone == ["", "", ""]
        assert await store.receive("r", "k", step="s", name="s") is None


async def test_a_message_stored_without_its_send_time_counts_as_sent_in_time(
    store: RedisStore,
) -> None:
    await store.mark_running("r", "orders")
    await store.send("r", "k", "old")
    await store.send("r", "k", "new")
    with contextlib.closing(raw()) as client:
        mail = f"{store.prefix}mail:r"
        # As a release that kept no send times stored it.
        client.hdel(mail, *[field for field in client.hkeys(mail) if field.startswith("\x00s")])
    ready, _ = await store.begin_wait("r", step="w", key="k", kind="message", wake_at=1.0)
    assert ready
    assert await store.receive("r", "k", step="w", name="w", sent_by=1.0) == Ok("old")
    assert await store.receive("r", "k", step="w2", name="w2", sent_by=1.0) == Ok("new")


async def test_a_message_sent_after_the_deadline_waits_behind_none_taken_before_it(
    store: RedisStore,
) -> None:
    # Senders whose clocks disagree: the second message was sent "earliest".
    driver = store._driver
    await store.mark_running("r", "orders")
    await driver.send("r", "k", '"late"', 2000.0, None)
    await driver.send("r", "k", '"early"', 1000.0, None)
    await driver.send("r", "k", '"later"', 3000.0, None)
    assert await store.receive("r", "k", step="a", name="a", sent_by=1500.0) == Ok("early")
    assert await store.receive("r", "k", step="b", name="b", sent_by=1500.0) is None
    assert await store.receive("r", "k", step="c", name="c") == Ok("late")
    # The oldest pending one is found past the gap the early one left: "once" sees it.
    with pytest.raises(AlreadyDeliveredError):
        await store.send("r", "k", "again", once="d")
    assert await store.receive("r", "k", step="d", name="d") == Ok("later")
    with contextlib.closing(raw()) as client:
        left = [f for f in client.hkeys(f"{store.prefix}mail:r") if not f.startswith("\x00")]
    assert left == []
