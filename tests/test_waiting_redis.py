"""The Redis row driver's waiting (issue 19), below the store front: mailboxes, waits,
the index of waiting runs, wake-ups over pub/sub, and runs written by older releases."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

from awaitly_anyio import Ok
from awaitly_anyio.stores._driver import AlreadySent, LeaseLost, RunEnded, RunMissing, WaitRow
from awaitly_anyio.stores.redis import RedisStore
from awaitly_anyio.testing import FakeClock

from .kit_base import encoded
from .redis_kit import URL, fresh_prefix, raw
from .stall_proxy import stall_proxy

pytestmark = pytest.mark.anyio


@pytest.fixture
def prefix() -> Iterator[str]:
    yield from fresh_prefix("waiting")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(prefix: str, clock: FakeClock) -> AsyncIterator[RedisStore]:
    async with RedisStore(URL, prefix=prefix, clock=clock) as opened:
        yield opened


def driver(store: RedisStore) -> Any:
    return store._redis_driver


def record(value_json: str) -> str:
    """A step record holding the message (what the front's ``record`` makes, roughly)."""
    return json.dumps({"ok": json.loads(value_json)})


def run_hash(store: RedisStore, id: str) -> dict[str, str]:
    with contextlib.closing(raw()) as client:
        found: dict[str, str] = client.hgetall(store.keys_of(id)[0])
        return found


def score(store: RedisStore, name: str, id: str) -> float | None:
    with contextlib.closing(raw()) as client:
        found: float | None = client.zscore(store.prefix + name, id)
        return found


def mailbox(store: RedisStore, id: str) -> dict[str, str]:
    with contextlib.closing(raw()) as client:
        found: dict[str, str] = client.hgetall(f"{store.prefix}mail:{id}")
        return found


async def started(store: RedisStore, id: str = "r1") -> str:
    await store.claim(id, "orders", owner="w", lease=30.0)
    return id


async def test_send_refuses_missing_and_ended_runs(store: RedisStore, clock: FakeClock) -> None:
    now = clock.time()
    with pytest.raises(RunMissing):
        await driver(store).send("nope", "k", "1", now, None)
    await started(store, "done")
    await store.finish("done", "completed", Ok(1), "1", owner="w")
    with pytest.raises(RunEnded) as ended:
        await driver(store).send("done", "k", "1", now, None)
    assert ended.value.status == "completed"
    assert mailbox(store, "nope") == {}
    assert mailbox(store, "done") == {}


async def test_messages_are_consumed_once_oldest_first_per_key(
    store: RedisStore, clock: FakeClock
) -> None:
    id = await started(store)
    d = driver(store)
    now = clock.time()
    await d.send(id, "k", '"first"', now, None)
    await d.send(id, "other", '"x"', now, None)
    await d.send(id, "k", '"second"', now, None)
    assert await d.receive(id, "k", "s1", record, now, "w") == '"first"'
    assert await d.receive(id, "k", "s1", record, now, "w") is None  # s1 is recorded
    assert await d.receive(id, "k", "s2", record, now, None) == '"second"'
    assert await d.receive(id, "k", "s3", record, now, None) is None  # none left
    assert await d.receive(id, "other", "s3", record, now, None) == '"x"'
    # Consumed messages are gone (only each key's counters stay).
    assert all(field.startswith("\x00") for field in mailbox(store, id))
    found = await d.read(id, now, steps=True)
    assert [key for key, _ in found[1]] == ["s1", "s2", "s3"]
    assert dict(found[1])["s2"] == '{"ok": "second"}'
    with pytest.raises(LeaseLost):
        await d.receive(id, "k", "s4", record, now, "someone else")
    with pytest.raises(RunMissing):
        await d.receive("nope", "k", "s4", record, now, None)


async def test_a_record_that_raises_writes_nothing(store: RedisStore, clock: FakeClock) -> None:
    id = await started(store)
    d = driver(store)
    await d.send(id, "k", "1", clock.time(), None)

    def broken(_: str) -> str:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await d.receive(id, "k", "s", broken, clock.time(), None)
    assert await d.receive(id, "k", "s", record, clock.time(), None) == "1"


async def test_once_refuses_a_pending_or_consumed_message(
    store: RedisStore, clock: FakeClock
) -> None:
    id = await started(store)
    d = driver(store)
    now = clock.time()
    await d.send(id, "k", "1", now, "s")
    with pytest.raises(AlreadySent):
        await d.send(id, "k", "2", now, "s")  # pending
    await d.receive(id, "k", "s", record, now, None)
    with pytest.raises(AlreadySent):
        await d.send(id, "k", "3", now, "s")  # consumed into step s
    assert await d.receive(id, "k", "t", record, now, None) is None


async def test_hostile_keys_and_values_stay_apart(store: RedisStore, clock: FakeClock) -> None:
    id = await started(store, "r:'\"]]--")
    d = driver(store)
    now = clock.time()
    keys = ["a", "a\x01", "\x01h", "k'] .. redis.call('FLUSHALL') --", "é" * 3000, "1"]
    for n, key in enumerate(keys):
        await d.send(id, key, json.dumps(n), now, None)
    for n, key in enumerate(keys):
        assert await d.receive(id, key, f"s{n}", record, now, None) == json.dumps(n)


async def test_begin_wait_records_and_resumes_the_wait(store: RedisStore, clock: FakeClock) -> None:
    id = await started(store)
    d = driver(store)
    now = clock.time()
    wait = WaitRow("w1", "k", "approval", now + 100)
    assert await d.begin_wait(id, wait, now, "w") == (False, now + 100)
    row = (await d.read(id, now, steps=False))[0]
    assert (row.status, row.wait_step, row.wait_key, row.wait_kind, row.wake_at) == (
        "waiting",
        "w1",
        "k",
        "approval",
        now + 100,
    )
    assert score(store, "waiting", id) == now + 100
    assert score(store, "active", id) is None
    listed = await d.list(now, None, "waiting", None, 10)
    assert [entry.id for entry in listed] == [id]
    # Resumed after a restart: the stored deadline stays, whatever the new one says.
    await store.mark_running(id, "orders")
    row = (await d.read(id, now, steps=False))[0]
    assert (row.status, row.wait_step, row.wake_at) == ("running", "w1", now + 100)
    assert score(store, "waiting", id) is None
    clock.advance(10)
    later = clock.time()
    assert await d.begin_wait(id, WaitRow("w1", "k", "approval", later + 100), later, None) == (
        False,
        now + 100,
    )
    assert score(store, "waiting", id) == now + 100
    with pytest.raises(RunMissing):
        await d.begin_wait("nope", wait, now, None)
    with pytest.raises(LeaseLost):
        await d.begin_wait(id, wait, now, "someone else")


async def test_begin_wait_with_a_message_pending_writes_nothing(
    store: RedisStore, clock: FakeClock
) -> None:
    id = await started(store)
    d = driver(store)
    now = clock.time()
    await d.send(id, "k", "1", now, None)
    before = run_hash(store, id)
    assert await d.begin_wait(id, WaitRow("w1", "k", "message", None), now, None) == (True, None)
    assert run_hash(store, id) == before
    # A timer waits for no key; without a deadline it is not in the index of waiting runs.
    assert await d.begin_wait(id, WaitRow("t1", None, "timer", None), now, None) == (False, None)
    assert run_hash(store, id)["status"] == "waiting"
    assert score(store, "waiting", id) is None


async def test_the_wait_s_step_ends_the_wait(store: RedisStore, clock: FakeClock) -> None:
    id = await started(store)
    d = driver(store)
    now = clock.time()
    await d.begin_wait(id, WaitRow("w1", "k", "message", now + 50), now, None)
    await store.checkpoint(id, encoded("other", 1), owner="w")  # not the wait's step
    assert run_hash(store, id)["status"] == "waiting"
    await store.checkpoint(id, encoded("w1", 1), owner="w")
    row = (await d.read(id, now, steps=False))[0]
    assert (row.status, row.wait_step, row.wait_key, row.wait_kind, row.wake_at) == (
        "running",
        None,
        None,
        None,
        None,
    )
    assert score(store, "waiting", id) is None
    assert score(store, "active", id) is not None
    # Receiving into the wait's step ends it too.
    await d.begin_wait(id, WaitRow("w2", "k", "message", now + 50), now, None)
    await d.send(id, "k", "7", now, None)
    assert await d.receive(id, "k", "w2", record, now, None) == "7"
    row = (await d.read(id, now, steps=False))[0]
    assert (row.status, row.wait_step, row.wake_at) == ("running", None, None)
    assert score(store, "waiting", id) is None


async def test_a_send_makes_its_waiting_run_due(store: RedisStore, clock: FakeClock) -> None:
    id = await started(store)
    d = driver(store)
    now = clock.time()
    await d.begin_wait(id, WaitRow("w1", "k", "message", None), now, None)
    assert score(store, "waiting", id) is None
    clock.advance(5)
    await d.send(id, "other", "1", clock.time(), None)
    assert score(store, "waiting", id) is None  # not the awaited key
    await d.send(id, "k", "1", clock.time(), None)
    assert score(store, "waiting", id) == clock.time()
    assert run_hash(store, id)["wake_at"] == repr(clock.time())


async def test_recovery_takes_due_waiting_runs_only(store: RedisStore, clock: FakeClock) -> None:
    d = driver(store)
    now = clock.time()
    for id, wake_at in (("soon", now + 10), ("late", now + 1000), ("never", None)):
        await started(store, id)
        await d.begin_wait(id, WaitRow("w", "k", "message", wake_at), now, None)
        await store.release(id, owner="w")
    assert await store.claim_expired(owner="sweeper", lease=30.0) == []
    clock.advance(20)
    taken = await store.claim_expired(owner="sweeper", lease=30.0)
    assert [(info.id, info.status, info.waiting_for) for info in taken] == [
        ("soon", "waiting", "k")
    ]
    assert run_hash(store, "soon")["lease_owner"] == "sweeper"
    assert await store.claim_expired(owner="other", lease=30.0) == []  # held now
    # A send makes the one without a deadline due at once.
    await d.send("never", "k", "1", clock.time(), None)
    taken = await store.claim_expired(owner="sweeper", lease=30.0)
    assert [info.id for info in taken] == ["never"]


async def test_claim_and_save_keep_the_wait_and_end_clears_it(
    store: RedisStore, clock: FakeClock
) -> None:
    id = await started(store)
    d = driver(store)
    now = clock.time()
    await d.begin_wait(id, WaitRow("w1", "k", "hook", now + 60), now, None)
    await store.release(id, owner="w")
    claim = await store.claim(id, "orders", owner="w2", lease=30.0)
    assert claim.outcome == "claimed"
    fields = run_hash(store, id)
    assert (fields["status"], fields["wait_step"], fields["wait_kind"]) == ("running", "w1", "hook")
    assert float(fields["wake_at"]) == now + 60
    assert score(store, "waiting", id) is None
    # save() keeps the stored wait (like the lease); a waiting snapshot is indexed again.
    snapshot = await store.load(id)
    assert snapshot is not None
    await store.save(id, snapshot)
    assert run_hash(store, id)["wait_step"] == "w1"
    await d.begin_wait(id, WaitRow("w1", "k", "hook", None), now, None)
    assert score(store, "waiting", id) == now + 60
    await store.finish(id, "completed", Ok(1), "1", ttl=60, owner="w2")
    fields = run_hash(store, id)
    assert (fields["wait_step"], fields["wait_key"], fields["wake_at"]) == ("", "", "")
    assert score(store, "waiting", id) is None


async def test_messages_go_with_their_run(store: RedisStore, clock: FakeClock) -> None:
    d = driver(store)
    now = clock.time()
    for id in ("deleted", "expiring", "purged"):
        await started(store, id)
        await d.send(id, "k", "1", now, None)
        await d.begin_wait(id, WaitRow("w", "x", "message", now + 5), now, None)
    assert await store.delete("deleted")
    assert mailbox(store, "deleted") == {}
    assert score(store, "waiting", "deleted") is None
    await store.finish("expiring", "cancelled", None, None, ttl=60, owner="w")
    with contextlib.closing(raw()) as client:
        assert 0 < client.pttl(f"{store.prefix}mail:expiring") <= 60_000
    await store.finish("purged", "cancelled", None, None, ttl=1, owner="w")
    clock.advance(2)
    assert await store.purge_expired() >= 1
    assert mailbox(store, "purged") == {}
    # A message to a run with a TTL gets the run's TTL.
    await started(store, "ttl")
    await store.finish("ttl", "cancelled", None, None, ttl=60, owner="w")
    await d.send("ttl", "k", "1", clock.time(), None)
    with contextlib.closing(raw()) as client:
        assert 0 < client.pttl(f"{store.prefix}mail:ttl") <= 60_000


async def test_a_run_written_before_waiting_existed_reads(
    store: RedisStore, clock: FakeClock
) -> None:
    id = await started(store)
    with contextlib.closing(raw()) as client:  # as an older release left it
        client.hdel(store.keys_of(id)[0], "wait_step", "wait_key", "wait_kind", "wake_at")
    row = (await driver(store).read(id, clock.time(), steps=False))[0]
    assert (row.wait_step, row.wait_key, row.wait_kind, row.wake_at) == (None, None, None, None)
    info = await store.info(id)
    assert info is not None
    assert info.damaged is None
    assert info.waiting_for is None
    await store.checkpoint(id, encoded("a", 1), owner="w")
    assert await driver(store).begin_wait(id, WaitRow("w", "k", "message", None), 0.0, None) == (
        False,
        None,
    )


async def test_channel_names_the_database_and_prefix_without_secrets(prefix: str) -> None:
    a = RedisStore("redis://user:hunter2@127.0.0.1:6379/0", prefix=prefix)
    b = RedisStore("redis://127.0.0.1:6379", prefix=prefix)
    c = RedisStore("redis://127.0.0.1:6379/1", prefix=prefix)
    d = RedisStore("redis://127.0.0.1:6379/0", prefix=prefix + "x")
    channels = [driver(s).channel for s in (a, b, c, d)]
    assert channels[0] == channels[1]
    assert len(set(channels)) == 3
    assert all("hunter2" not in channel and "user" not in channel for channel in channels)
    for s in (a, b, c, d):
        await s.close()


async def test_watch_wakes_for_every_send(store: RedisStore, prefix: str, clock: FakeClock) -> None:
    woken: list[str] = []
    arrived = anyio.Event()

    def wake(id: str) -> None:
        woken.append(id)
        if len([found for found in woken if found != "p"]) == 3:
            arrived.set()

    async with RedisStore(URL, prefix=prefix, clock=clock) as sender:
        for id in ("a", "b", "p"):
            await started(sender, id)
        # A guard against a hang, not a timing assertion.
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(driver(store).watch, wake)
                # A send published before the watch has subscribed is not heard: send to "p"
                # until one is (each send is a round trip, so this loop is paced).
                while not woken:
                    await driver(sender).send("p", "k", "0", clock.time(), None)
                await driver(sender).send("a", "k", "1", clock.time(), None)
                await driver(sender).send("b", "k", "2", clock.time(), None)
                await driver(sender).send("a", "k", "3", clock.time(), None)
                await arrived.wait()
                tg.cancel_scope.cancel()
    assert [found for found in woken if found != "p"] == ["a", "b", "a"]


async def test_watch_raises_when_its_connection_drops(prefix: str, clock: FakeClock) -> None:
    from redis.exceptions import ConnectionError

    port = URL.rsplit(":", 1)[1].split("/")[0]
    async with stall_proxy("127.0.0.1", int(port)) as proxy:
        url = URL.replace(f":{port}", f":{proxy.port}", 1)
        async with RedisStore(url, prefix=prefix, clock=clock) as store:
            await started(store)
            woken: list[str] = []

            async def heard_then_drop() -> None:
                while not woken:
                    await driver(store).send("r1", "k", "0", clock.time(), None)
                proxy.drop()

            with anyio.fail_after(60):  # a guard against a hang, not a timing assertion
                async with anyio.create_task_group() as tg:
                    tg.start_soon(heard_then_drop)
                    with pytest.raises(ConnectionError):
                        await driver(store).watch(woken.append)
            # The store still works afterwards, and so does a new watch.
            await driver(store).send("r1", "k", "1", clock.time(), None)


async def test_an_end_that_merges_metadata_clears_the_wait_too(
    store: RedisStore, clock: FakeClock
) -> None:
    id = await started(store)
    now = clock.time()
    await driver(store).begin_wait(id, WaitRow("w1", "k", "timer", now + 5), now, None)
    await store.finish(id, "failed", None, None, metadata={"why": "stopped"}, owner="w")
    fields = run_hash(store, id)
    assert (fields["status"], fields["wait_step"], fields["wake_at"]) == ("failed", "", "")
    assert score(store, "waiting", id) is None
