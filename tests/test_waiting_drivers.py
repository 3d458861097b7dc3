"""The row drivers' side of durable waiting (issue 19), below the store front, on all
four stores (memory, SQLite, PostgreSQL, Redis) through their test kits: mailboxes
(``receive`` splicing the value between the front's ``head`` and ``tail``, and only
what was sent by ``sent_by``), waits and their deadlines, due runs, messages going
with their run, channels and wake-ups, and the upgrade of older schemas.

Each behaviour is one test over every kit; what only one database has (its channel's
name, its push, its indexes, its schema upgrade) follows, kit by kit.  The store-level
contract is in the shared contract suite; the step API's side in ``test_waiting.py``."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from awaitly_anyio import Ok
from awaitly_anyio._rows import RunRow, message_record_parts
from awaitly_anyio._snapshot import RunStatus
from awaitly_anyio.stores._driver import AlreadySent, LeaseLost, RunEnded, RunMissing, WaitRow
from awaitly_anyio.stores.memory import MemoryStore
from awaitly_anyio.testing import FakeClock

from .kit_base import StoreKit, encoded

pytestmark = pytest.mark.anyio

NAME = "orders"
HEAD, TAIL = message_record_parts(1_700_000_000.0)


@attrs.define
class End:
    """`EndTerms` as a test writes them."""

    status: RunStatus
    result_json: str | None = None
    expires_at: float | None = None
    owner: str | None = None
    metadata_patch: str | None = None
    merge: Any = None


@pytest.fixture
async def store(kit: StoreKit, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Any]:
    async with kit.open(tmp_path, clock) as opened:
        yield opened


def row(status: RunStatus = "running", *, at: float, expires_at: float | None = None) -> RunRow:
    return RunRow(NAME, status, None, "{}", at, at, expires_at)


def record(value: str) -> Any:
    """The step record a receive of ``value`` (its JSON) writes, decoded."""
    return json.loads(HEAD + value + TAIL)


async def receive(
    store: Any,
    id: str,
    key: str,
    step: str,
    now: float,
    owner: str | None = None,
    sent_by: float | None = None,
) -> str | None:
    found: str | None = await store._driver.receive(id, key, step, HEAD, TAIL, now, owner, sent_by)
    return found


async def stored(store: Any, id: str) -> RunRow:
    found = await store._driver.read(id, 0.0, steps=False)
    assert found is not None
    run: RunRow = found[0]
    return run


async def steps_of(store: Any, id: str) -> list[tuple[str, Any]]:
    """Run ``id``'s steps in order, each record decoded (PostgreSQL keeps jsonb)."""
    found = await store._driver.read(id, 0.0, steps=True)
    assert found is not None
    return [(key, json.loads(text)) for key, text in found[1]]


async def started(store: Any, id: str, owner: str = "w") -> str:
    """Run ``id`` claimed by ``owner`` (leased for 30 s on the store's clock)."""
    await store.claim(id, NAME, owner=owner, lease=30.0)
    return id


WAIT = WaitRow(step="approval", key="approve:7", kind="approval", wake_at=None)


def wait_until(
    wake_at: float | None, *, step: str = "approval", key: str | None = "approve:7"
) -> WaitRow:
    return attrs.evolve(WAIT, step=step, key=key, wake_at=wake_at)


# ---- mailboxes ---------------------------------------------------------------------------


async def test_messages_are_consumed_oldest_first_per_key_each_once(
    store: Any, clock: FakeClock
) -> None:
    d = store._driver
    now = clock.time()
    await d.write_run("r", row(at=now), [])
    await d.send("r", "a", '"first"', now + 1, None)
    await d.send("r", "b", '{"x": [1, 2]}', now + 2, None)
    await d.send("r", "a", '"second"', now + 3, None)
    assert await receive(store, "r", "a", "s1", now + 4) == '"first"'
    assert await receive(store, "r", "a", "s1", now + 4) is None  # s1 is recorded
    assert await receive(store, "r", "a", "s2", now + 4) == '"second"'
    assert await receive(store, "r", "a", "s3", now + 4) is None  # none left
    assert await receive(store, "r", "b", "s4", now + 4) == '{"x": [1, 2]}'
    # Each record is head + value + tail, as the front made them; new steps go last.
    assert await steps_of(store, "r") == [
        ("s1", record('"first"')),
        ("s2", record('"second"')),
        ("s4", record('{"x": [1, 2]}')),
    ]
    assert record('"first"') == {
        "ok": True,
        "value": "first",
        "attempts": 1,
        "started_at": "2023-11-14T22:13:20+00:00",
        "finished_at": "2023-11-14T22:13:20+00:00",
    }


async def test_a_step_already_recorded_consumes_nothing(store: Any, clock: FakeClock) -> None:
    d = store._driver
    now = clock.time()
    await d.write_run("r", row(at=now), [("s", '{"ok": true, "value": 0}')])
    await d.send("r", "k", "1", now, None)
    assert await receive(store, "r", "k", "s", now) is None
    assert await receive(store, "r", "k", "t", now) == "1"  # it was still there


async def test_only_messages_sent_by_sent_by_are_received(store: Any, clock: FakeClock) -> None:
    d = store._driver
    now = clock.time()
    await d.write_run("r", row(at=now), [])
    await d.send("r", "k", '"early"', now + 10, None)
    await d.send("r", "k", '"late"', now + 20, None)
    # At the bound counts; none sent by an earlier bound: nothing written.
    assert await receive(store, "r", "k", "s0", now + 30, sent_by=now + 5) is None
    assert await steps_of(store, "r") == []
    assert await receive(store, "r", "k", "s1", now + 30, sent_by=now + 10) == '"early"'
    assert await receive(store, "r", "k", "s2", now + 30, sent_by=now + 19.5) is None
    assert await steps_of(store, "r") == [("s1", record('"early"'))]
    assert await receive(store, "r", "k", "s2", now + 30, sent_by=None) == '"late"'


async def test_sent_by_considers_each_message_oldest_first(store: Any, clock: FakeClock) -> None:
    """Another process's clock may be behind: a message sent later can carry an
    earlier time.  Only the ones sent by the bound are considered, oldest first."""
    d = store._driver
    now = clock.time()
    await d.write_run("r", row(at=now), [])
    await d.send("r", "k", '"ahead"', now + 50, None)
    await d.send("r", "k", '"behind"', now + 5, None)
    assert await receive(store, "r", "k", "s1", now + 60, sent_by=now + 10) == '"behind"'
    assert await receive(store, "r", "k", "s2", now + 60, sent_by=now + 10) is None
    assert await receive(store, "r", "k", "s2", now + 60, sent_by=now + 50) == '"ahead"'


async def test_receive_and_begin_wait_refuse_a_missing_run_or_a_lost_lease(
    store: Any, clock: FakeClock
) -> None:
    d = store._driver
    now = clock.time()
    with pytest.raises(RunMissing):
        await receive(store, "nobody", "k", "s", now)
    with pytest.raises(RunMissing):
        await d.begin_wait("nobody", WAIT, now, None)
    await started(store, "r", owner="me")
    await d.send("r", "k", "1", now, None)
    with pytest.raises(LeaseLost):
        await receive(store, "r", "k", "s", now, owner="other")
    with pytest.raises(LeaseLost):
        await d.begin_wait("r", WAIT, now, "other")
    assert await steps_of(store, "r") == []
    assert (await stored(store, "r")).wait_step is None
    assert await receive(store, "r", "k", "s", now, owner="me") == "1"


async def test_send_refuses_missing_expired_and_ended_runs(store: Any, clock: FakeClock) -> None:
    d = store._driver
    now = clock.time()
    with pytest.raises(RunMissing):
        await d.send("nobody", "k", "1", now, None)
    await d.write_run("gone", row(at=now, expires_at=now + 5), [])
    with pytest.raises(RunMissing):
        await d.send("gone", "k", "1", now + 6, None)
    for status in ("completed", "failed"):
        await d.write_run(status, row(status, at=now), [])
        with pytest.raises(RunEnded) as ended:
            await d.send(status, "k", "1", now, None)
        assert ended.value.status == status
    await d.write_run("cancelled", row("cancelled", at=now), [])
    await d.send("cancelled", "k", "1", now, None)  # a cancelled run may resume
    # Nothing was stored for the refused ones.
    for id in ("completed", "failed"):
        await d.write_run(id, row(at=now), [])  # alive again: its mailbox is empty
        assert await receive(store, id, "k", "s", now) is None
    assert await receive(store, "cancelled", "k", "s", now) == "1"


async def test_once_refuses_a_pending_or_consumed_message(store: Any, clock: FakeClock) -> None:
    d = store._driver
    now = clock.time()
    await d.write_run("r", row(at=now), [])
    await d.send("r", "k", "1", now, "s")
    with pytest.raises(AlreadySent):  # one pending
        await d.send("r", "k", "2", now, "s")
    assert await receive(store, "r", "k", "s", now) == "1"
    with pytest.raises(AlreadySent):  # consumed into step s
        await d.send("r", "k", "3", now, "s")
    assert await receive(store, "r", "k", "t", now) is None  # nothing stored
    await d.send("r", "k", "4", now, None)  # without once: fine


HOSTILE_KEYS = [
    "a",
    "a\x01",
    "\x01h",
    "k'\"; DELETE FROM awaitly_messages; --",
    "k'] .. redis.call('FLUSHALL') --",
    "$1",
    "é" * 3000,
    "1",
]


async def test_hostile_ids_keys_and_values_stay_apart(store: Any, clock: FakeClock) -> None:
    d = store._driver
    now = clock.time()
    id = "r'; DROP TABLE awaitly_runs; --\"]]"
    await d.write_run(id, row(at=now), [])
    for n, key in enumerate(HOSTILE_KEYS):
        await d.send(id, key, json.dumps({"n": n, "s": key + "\\u0000 it's \u2603"}), now, None)
    for n, key in enumerate(HOSTILE_KEYS):
        got = await receive(store, id, key, f"s{n}", now)
        assert got is not None
        assert json.loads(got) == {"n": n, "s": key + "\\u0000 it's \u2603"}
    assert [key for key, _ in await steps_of(store, id)] == [
        f"s{n}" for n in range(len(HOSTILE_KEYS))
    ]


async def test_concurrent_receivers_each_take_a_different_message(
    store: Any, clock: FakeClock
) -> None:
    d = store._driver
    now = clock.time()
    await d.write_run("r", row(at=now), [])
    for n in range(20):
        await d.send("r", "k", str(n), now, None)
    got: list[str | None] = []

    async def take(n: int) -> None:
        got.append(await receive(store, "r", "k", f"s{n}", now))

    async with anyio.create_task_group() as tg:
        for n in range(25):
            tg.start_soon(take, n)
    assert sorted(int(value) for value in got if value is not None) == list(range(20))
    assert got.count(None) == 5


async def test_a_message_sent_through_one_store_is_received_through_another(
    kit: StoreKit, tmp_path: Path, clock: FakeClock
) -> None:
    now = clock.time()
    async with kit.open(tmp_path, clock) as one, kit.open(tmp_path, clock) as two:
        await one._driver.write_run("r", row(at=now), [])
        await one._driver.send("r", "k", "1", now, None)
        assert await receive(two, "r", "k", "s", now) == "1"
        assert await receive(one, "r", "k", "t", now) is None


# ---- waits -------------------------------------------------------------------------------


async def test_begin_wait_records_the_wait_once_and_keeps_its_deadline(
    store: Any, clock: FakeClock
) -> None:
    d = store._driver
    now = clock.time()
    await d.write_run("r", row(at=now), [])
    assert await d.begin_wait("r", wait_until(now + 500), now + 10, None) == (False, now + 500)
    waiting = await stored(store, "r")
    assert (waiting.status, waiting.updated_at) == ("waiting", now + 10)
    assert (waiting.wait_step, waiting.wait_key, waiting.wait_kind, waiting.wake_at) == (
        "approval",
        "approve:7",
        "approval",
        now + 500,
    )
    assert [entry.id for entry in await d.list(now, None, "waiting", None, 10)] == ["r"]
    # Resumed (mark_running keeps the wait): the stored deadline stands.
    await store.mark_running("r", NAME)
    resumed = await stored(store, "r")
    assert (resumed.status, resumed.wait_step, resumed.wake_at) == (
        "running",
        "approval",
        now + 500,
    )
    assert await d.begin_wait("r", wait_until(now + 900), now + 20, None) == (False, now + 500)
    again = await stored(store, "r")
    assert (again.status, again.wake_at) == ("waiting", now + 500)
    # Another wait replaces it; a timer waits for no key.
    timer = WaitRow(step="nap", key=None, kind="timer", wake_at=now + 700)
    assert await d.begin_wait("r", timer, now + 30, None) == (False, now + 700)
    napping = await stored(store, "r")
    assert (napping.wait_step, napping.wait_key, napping.wait_kind, napping.wake_at) == (
        "nap",
        None,
        "timer",
        now + 700,
    )


@pytest.mark.parametrize(
    ("sent_after", "ready"), [(-5.0, True), (100.0, True), (101.0, False)], ids=str
)
async def test_a_wait_is_ready_only_for_a_message_sent_by_its_deadline(
    store: Any, clock: FakeClock, sent_after: float, ready: bool
) -> None:
    d = store._driver
    now = clock.time()
    await d.write_run("r", row(at=now), [])
    await d.send("r", "approve:7", '"yes"', now + sent_after, None)
    before = await stored(store, "r")
    outcome = await d.begin_wait("r", wait_until(now + 100), now + 200, None)
    if ready:
        assert outcome == (True, None)
        assert await stored(store, "r") == before  # nothing written
    else:  # a value sent after the deadline loses to the timeout: the run waits
        assert outcome == (False, now + 100)
        assert (await stored(store, "r")).status == "waiting"
    # Without a deadline any message makes it ready.
    await d.write_run("n", row(at=now), [])
    await d.send("n", "approve:7", '"yes"', now + 10**6, None)
    assert await d.begin_wait("n", wait_until(None), now, None) == (True, None)


async def test_a_resumed_wait_is_ready_only_for_a_message_sent_by_its_stored_deadline(
    store: Any, clock: FakeClock
) -> None:
    d = store._driver
    now = clock.time()
    await started(store, "r")
    assert await d.begin_wait("r", wait_until(now + 100), now, None) == (False, now + 100)
    await d.send("r", "approve:7", '"late"', now + 150, None)
    await store.mark_running("r", NAME)  # a restart
    # The new deadline would take the message; the stored one does not.
    assert await d.begin_wait("r", wait_until(now + 1000), now + 200, None) == (
        False,
        now + 100,
    )
    assert await receive(store, "r", "approve:7", "approval", now + 200, sent_by=now + 100) is None
    await d.send("r", "approve:7", '"old"', now + 50, None)  # a clock behind ours
    assert await d.begin_wait("r", wait_until(now + 1000), now + 200, None) == (True, None)


async def test_a_message_for_the_awaited_key_brings_the_deadline_forward_only(
    store: Any, clock: FakeClock
) -> None:
    d = store._driver
    now = clock.time()
    await started(store, "r")
    await d.begin_wait("r", wait_until(now + 500), now, None)
    await d.send("r", "other", "1", now + 4, None)
    assert (await stored(store, "r")).wake_at == now + 500  # not the awaited key
    await d.send("r", "approve:7", "2", now + 5, None)
    assert (await stored(store, "r")).wake_at == now + 5
    # After the deadline, a send leaves the deadline where it was.
    await started(store, "late")
    await d.begin_wait("late", wait_until(now + 100), now, None)
    await d.send("late", "approve:7", "3", now + 600, None)
    assert (await stored(store, "late")).wake_at == now + 100
    # Without a deadline, the send makes it due now.
    await started(store, "open")
    await d.begin_wait("open", wait_until(None), now, None)
    await d.send("open", "approve:7", "4", now + 7, None)
    assert (await stored(store, "open")).wake_at == now + 7


async def test_the_waits_own_step_ends_the_wait(store: Any, clock: FakeClock) -> None:
    d = store._driver
    now = clock.time()
    await started(store, "r")
    await d.begin_wait("r", wait_until(now + 50), now, None)
    await store.checkpoint("r", encoded("other", 1), owner="w")  # not the wait's step
    still = await stored(store, "r")
    assert (still.status, still.wait_step) == ("waiting", "approval")
    await store.checkpoint("r", encoded("approval", 1), owner="w")
    done = await stored(store, "r")
    assert done.status == "running"
    assert (done.wait_step, done.wait_key, done.wait_kind, done.wake_at) == (None,) * 4
    # Another owner's write of the wait's step changes nothing.
    await d.begin_wait("r", wait_until(now + 50, step="w3"), now, None)
    with pytest.raises(LeaseLost):
        await d.write_step("r", "w3", '{"ok": true, "value": 1}', now, "someone else")
    assert (await stored(store, "r")).wait_step == "w3"


async def test_receiving_into_the_waits_step_ends_the_wait(store: Any, clock: FakeClock) -> None:
    d = store._driver
    now = clock.time()
    await d.write_run("r", row(at=now), [])
    await d.begin_wait("r", wait_until(now + 50), now, None)
    await d.send("r", "approve:7", '"yes"', now + 1, None)
    assert await receive(store, "r", "approve:7", "approval", now + 2) == '"yes"'
    done = await stored(store, "r")
    assert (done.status, done.wait_step, done.wait_key, done.wake_at) == (
        "running",
        None,
        None,
        None,
    )


async def test_checkpoints_written_together_end_their_waits(store: Any, clock: FakeClock) -> None:
    d = store._driver
    now = clock.time()
    ids = [f"g{n}" for n in range(30)]
    for id in ids:
        await started(store, id)
        await d.begin_wait(id, wait_until(now + 50, step="w"), now, None)
    async with anyio.create_task_group() as tg:  # PostgreSQL's group-commit path
        for id in ids:
            tg.start_soon(functools.partial(store.checkpoint, owner="w"), id, encoded("other", 1))
            tg.start_soon(functools.partial(store.checkpoint, owner="w"), id, encoded("w", 1))
    for id in ids:
        run = await stored(store, id)
        assert (run.status, run.wait_step, run.wake_at) == ("running", None, None)


async def test_saves_and_claims_keep_the_wait_and_an_end_clears_it(
    store: Any, clock: FakeClock
) -> None:
    d = store._driver
    now = clock.time()
    await started(store, "r")
    await d.begin_wait("r", WaitRow("w1", "k", "hook", now + 60), now, None)
    await store.release("r", owner="w")
    claim = await store.claim("r", NAME, owner="w2", lease=30.0)
    assert claim.outcome == "claimed"
    taken = await stored(store, "r")
    assert (taken.status, taken.lease_owner, taken.wait_step, taken.wait_kind, taken.wake_at) == (
        "running",
        "w2",
        "w1",
        "hook",
        now + 60,
    )
    snapshot = await store.load("r")
    assert snapshot is not None
    await store.save("r", snapshot)  # a save keeps the stored wait (like the lease)
    assert (await stored(store, "r")).wait_step == "w1"
    assert await d.begin_wait("r", WaitRow("w1", "k", "hook", None), now, None) == (
        False,
        now + 60,
    )
    await store.finish("r", "completed", Ok(1), "1", ttl=60, owner="w2")
    ended = await stored(store, "r")
    assert ended.status == "completed"
    assert (ended.wait_step, ended.wait_key, ended.wait_kind, ended.wake_at) == (None,) * 4
    # So does an end that merges metadata, plain or not plain JSON.
    for n, metadata in enumerate(({"a": 1}, {"when": datetime(2026, 1, 1, tzinfo=timezone.utc)})):
        other = await started(store, f"m{n}")
        await d.begin_wait(other, WaitRow("w1", "k", "timer", now + 60), now, None)
        await store.finish(other, "failed", None, None, metadata=metadata, owner="w")
        failed = await stored(store, other)
        assert (failed.status, failed.wait_step, failed.wake_at) == ("failed", None, None)
    # A new run is written without a wait, whatever its row says.
    await d.write_run("new", attrs.evolve(row(at=now), wait_step="x", wake_at=1.0), [])
    fresh = await stored(store, "new")
    assert (fresh.wait_step, fresh.wake_at) == (None, None)


# ---- due waiting runs --------------------------------------------------------------------


async def test_the_sweep_claims_waiting_runs_once_they_are_due(
    store: Any, clock: FakeClock
) -> None:
    d = store._driver
    now = clock.time()
    for id, wake_at in (("soon", now + 10), ("late", now + 1000), ("never", None)):
        await started(store, id)
        await d.begin_wait(id, wait_until(wake_at, step="w"), now, None)
        await store.release(id, owner="w")
    assert await store.claim_expired(owner="sweeper", lease=30.0) == []
    clock.advance(20)
    taken = await store.claim_expired(owner="sweeper", lease=30.0)
    assert [(info.id, info.status, info.waiting_for) for info in taken] == [
        ("soon", "waiting", "approve:7")
    ]
    assert (await stored(store, "soon")).lease_owner == "sweeper"
    assert await store.claim_expired(owner="other", lease=30.0) == []  # held now
    # A send makes the one without a deadline due at once.
    await d.send("never", "approve:7", "1", clock.time(), None)
    assert [info.id for info in await store.claim_expired(owner="sweeper", lease=30.0)] == ["never"]


async def test_waiting_runs_are_listed_by_status(store: Any, clock: FakeClock) -> None:
    d = store._driver
    await store.mark_running("w", NAME)
    await store.mark_running("r", NAME)
    await d.begin_wait("w", wait_until(None), clock.time(), None)
    page = await store.list(status="waiting")
    assert [(info.id, info.waiting_for, info.wait_kind) for info in page] == [
        ("w", "approve:7", "approval")
    ]


# ---- messages go with their run ----------------------------------------------------------


async def test_deleting_purging_or_replacing_a_run_drops_its_messages(
    store: Any, clock: FakeClock
) -> None:
    d = store._driver
    now = clock.time()
    await d.write_run("deleted", row(at=now), [])
    await d.send("deleted", "k", "1", now, None)
    assert await d.delete("deleted", now)
    await d.write_run("deleted", row(at=now), [])
    assert await receive(store, "deleted", "k", "s", now) is None

    for id in ("purged", "p2", "p3"):
        await d.write_run(id, row(at=now, expires_at=now + 10), [])
        await d.send(id, "k", "1", now, None)
    assert await d.purge(now + 10) == 3
    await d.write_run("purged", row(at=now), [])
    assert await receive(store, "purged", "k", "s", now) is None

    # A save over a run that expired (not yet purged) starts an empty mailbox, no wait.
    await d.write_run("saved", row(at=now, expires_at=now + 5), [])
    await d.send("saved", "k", "1", now, None)
    await d.begin_wait("saved", wait_until(now + 100), now, None)
    clock.advance(10)
    await d.write_run("saved", row(at=now + 10), [])
    assert await receive(store, "saved", "k", "s", now + 10) is None
    assert (await stored(store, "saved")).wait_step is None

    # A save over a live run keeps them.
    await d.write_run("kept", row(at=now), [])
    await d.send("kept", "k", "2", now, None)
    await d.write_run("kept", row("waiting", at=now + 1), [("a", '{"ok": true, "value": 1}')])
    assert await receive(store, "kept", "k", "s", now + 1) == "2"


@pytest.mark.parametrize("how", ["start_run", "claim"])
async def test_a_run_started_over_an_expired_one_has_no_messages(
    store: Any, clock: FakeClock, how: str
) -> None:
    d = store._driver
    now = clock.time()
    await d.write_run("r", row(at=now, expires_at=now + 5), [])
    await d.send("r", "k", "1", now, None)
    await d.begin_wait("r", wait_until(now + 100), now, None)
    clock.advance(10)
    if how == "start_run":
        await store.mark_running("r", NAME)
    else:
        assert (await store.claim("r", NAME, owner="me", lease=30)).fresh
    assert await receive(store, "r", "k", "s", now + 10) is None
    assert (await stored(store, "r")).wait_step is None


# ---- memory ------------------------------------------------------------------------------


async def test_each_memory_store_is_its_own_channel() -> None:
    one, two = MemoryStore(), MemoryStore()
    assert one._driver.channel.startswith("memory:")
    assert one._driver.channel != two._driver.channel
    assert one._driver.channel == one._driver.channel
    await one._driver.watch(lambda id: None)  # nothing to listen to: returns


# ---- SQLite ------------------------------------------------------------------------------


async def test_a_sqlite_file_is_one_channel_whatever_its_path_says(tmp_path: Path) -> None:
    from awaitly_anyio.stores.sqlite import SQLiteStore

    path = tmp_path / "runs.db"
    resolved = os.path.realpath(path)  # noqa: ASYNC240 (no event loop to block yet)
    one = SQLiteStore(path)
    other = SQLiteStore(os.path.join(str(tmp_path), ".", "runs.db"))
    assert one._driver.channel == other._driver.channel == f"sqlite:{resolved}"
    assert SQLiteStore(":memory:")._driver.channel != SQLiteStore(":memory:")._driver.channel
    await one._driver.watch(lambda id: None)  # no push: returns


SQLITE_V2 = """
CREATE TABLE awaitly_runs (
    id TEXT PRIMARY KEY NOT NULL, workflow_name TEXT NOT NULL, status TEXT NOT NULL,
    result_json TEXT, metadata_json TEXT NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, expires_at REAL, format_version INTEGER NOT NULL,
    lease_owner TEXT, lease_expires_at REAL
);
CREATE INDEX awaitly_runs_by_update ON awaitly_runs (updated_at DESC, id DESC);
CREATE INDEX awaitly_runs_by_expiry ON awaitly_runs (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE awaitly_steps (
    run_id TEXT NOT NULL, key TEXT NOT NULL, record_json TEXT NOT NULL, seq INTEGER,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE INDEX awaitly_steps_in_order ON awaitly_steps (run_id, seq);
PRAGMA user_version = 2;
"""


async def test_a_version_2_sqlite_database_is_upgraded_and_keeps_its_runs(
    tmp_path: Path, clock: FakeClock
) -> None:
    from awaitly_anyio.stores.sqlite import SCHEMA_VERSION, SQLiteStore

    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.executescript(SQLITE_V2)
        db.execute(
            "INSERT INTO awaitly_runs VALUES ('r', 'orders', 'running', NULL, '{}', 1, 1, NULL,"
            " 1, 'me', 4e9)"
        )
        db.execute("INSERT INTO awaitly_steps VALUES ('r', 'a', ?, 1)", (encoded("a", 1).json,))

    now = clock.time()
    async with SQLiteStore(path, clock=clock) as store:
        loaded = await store.load("r")
        assert loaded is not None
        assert list(loaded.steps) == ["a"]
        old = await stored(store, "r")
        assert (old.lease_owner, old.wait_step, old.wait_key, old.wait_kind, old.wake_at) == (
            "me",
            None,
            None,
            None,
            None,
        )
        d = store._driver
        await d.send("r", "k", "1", now, None)
        assert await d.begin_wait("r", wait_until(now + 500, step="s", key="k"), now, "me") == (
            True,
            None,
        )
        assert await receive(store, "r", "k", "s", now, owner="me") == "1"
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 3
        indexes = {
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        assert {"awaitly_runs_due", "awaitly_messages_in_order"} <= indexes


async def test_a_new_sqlite_file_and_an_upgraded_one_have_the_same_tables(tmp_path: Path) -> None:
    from awaitly_anyio.stores.sqlite import SQLiteStore

    def shape(path: Path) -> list[tuple[str, list[tuple[Any, ...]]]]:
        with contextlib.closing(sqlite3.connect(path)) as db:
            tables = [
                name
                for (name,) in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            return [
                (table, [tuple(col[1:3]) for col in db.execute(f"PRAGMA table_info({table})")])
                for table in tables
            ]

    with contextlib.closing(sqlite3.connect(tmp_path / "old.db", isolation_level=None)) as db:
        db.executescript(SQLITE_V2)
    async with SQLiteStore(tmp_path / "old.db"):
        pass
    async with SQLiteStore(tmp_path / "new.db"):
        pass
    assert shape(tmp_path / "old.db") == shape(tmp_path / "new.db")


# ---- PostgreSQL --------------------------------------------------------------------------


@pytest.fixture
async def pg_schema(tmp_path: Path) -> AsyncIterator[str]:
    """A schema of its own, dropped before and after (the PostgreSQL-only tests)."""
    from .kit_base import server_or_skip
    from .postgres_kit import DSN, admin, schema_for

    name = schema_for(tmp_path) + "_w"
    try:
        await admin(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    except OSError as exc:
        server_or_skip("PostgreSQL", DSN, exc)
    yield name
    await admin(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
async def pg(pg_schema: str, clock: FakeClock) -> AsyncIterator[Any]:
    from awaitly_anyio.stores.postgres import PostgresStore

    from .postgres_kit import DSN

    async with PostgresStore(DSN, schema=pg_schema, clock=clock, max_size=4) as opened:
        yield opened


async def test_postgres_a_message_sent_while_the_wait_is_being_recorded_is_seen(
    pg: Any, clock: FakeClock
) -> None:
    """The send holds the run's lock when the wait's statement starts (so that
    statement's snapshot cannot see the message); the wait must still come back
    ready, or the run would wait beside its message."""
    from awaitly_anyio.stores.postgres import digest

    from .postgres_kit import _on_fresh_connection, admin_fetch

    id = await started(pg, "r1")
    d = pg._driver
    now = clock.time()
    tag = f"awaitly-test-{uuid.uuid4().hex}"
    sql = d.sql

    async def hold(connection: Any) -> None:
        # The send's own statement, left uncommitted until the wait is blocked on it.
        await connection.execute(f"SET application_name = '{tag}'")
        async with connection.transaction():
            outcome = await connection.fetchval(
                sql.send, digest(id), "k", digest("k"), "7", now, None, sql.channel, "=" + id
            )
            assert outcome == "ok"
            await connection.execute(f"SET LOCAL application_name = '{tag}-locked'")
            me = connection.get_server_pid()
            while not await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity"
                " WHERE $1 = ANY(pg_blocking_pids(pid)))",
                me,
            ):
                pass  # each look is a round trip: paced by the server

    async def is_locked() -> bool:
        found = await admin_fetch(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = $1", f"{tag}-locked"
        )
        return bool(found)

    outcome: list[tuple[bool, float | None]] = []

    async def wait() -> None:
        while not await is_locked():
            pass
        outcome.append(await d.begin_wait(id, WaitRow("w1", "k", "message", None), now, None))

    async with anyio.create_task_group() as tg:
        tg.start_soon(_on_fresh_connection, hold)
        tg.start_soon(wait)
    assert outcome == [(True, None)]
    assert await receive(pg, id, "k", "w1", now) == "7"
    run = await stored(pg, id)
    assert (run.status, run.wait_step) == ("running", None)


async def test_postgres_channel_names_the_database_and_schema_without_secrets() -> None:
    from awaitly_anyio.stores.postgres import PostgresStore

    from .postgres_kit import DSN

    a = PostgresStore("postgresql://user:hunter2@127.0.0.1:5432/test", schema="s1")
    b = PostgresStore("postgresql://user:other@127.0.0.1:5432/test", schema="s1")
    c = PostgresStore("postgresql://user:hunter2@127.0.0.1:5432/test", schema="s2")
    d = PostgresStore(
        "postgresql://user:hunter2@127.0.0.1:5432/test", schema="s1", table_prefix="x_"
    )
    channels = [s._driver.channel for s in (a, b, c, d)]
    assert channels[0] == channels[1]
    assert len(set(channels)) == 3
    assert all("hunter2" not in channel and "other" not in channel for channel in channels)
    # The NOTIFY channels: one per schema and prefix, a long one named by its digest.
    long = PostgresStore(DSN, schema="s" * 41, table_prefix="p" * 41)
    notify = {s._driver.sql.channel for s in (a, b, c, d, long)}
    assert len(notify) == 4
    assert all(len(name) <= 63 for name in notify)
    for s in (a, b, c, d, long):
        await s.close()


async def test_postgres_watch_wakes_for_every_send(
    pg: Any, pg_schema: str, clock: FakeClock
) -> None:
    from awaitly_anyio.stores.postgres import PostgresStore

    from .postgres_kit import DSN

    woken: list[str] = []
    arrived = anyio.Event()
    long_id = "L" * 9000  # too long for a NOTIFY payload: sent as its digest
    expected = ["a", "b", long_id, "a"]

    def wake(id: str) -> None:
        woken.append(id)
        if [found for found in woken if found != "p"] == expected:
            arrived.set()

    async with PostgresStore(DSN, schema=pg_schema, clock=clock) as sender:
        for id in ("a", "b", "p", long_id):
            await started(sender, id)
        other = PostgresStore(DSN, schema=pg_schema, table_prefix="other_", clock=clock)
        async with other:
            await started(other, "a")
            async with anyio.create_task_group() as tg:
                tg.start_soon(pg._driver.watch, wake)
                # A NOTIFY sent before the watch listens is not heard: send to "p"
                # until one is (each send is a round trip, so this loop is paced).
                while not woken:
                    await sender._driver.send("p", "k", "0", clock.time(), None)
                await other._driver.send("a", "k", "0", clock.time(), None)  # other tables
                await sender._driver.send("a", "k", "1", clock.time(), None)
                await sender._driver.send("b", "k", "2", clock.time(), None)
                await sender._driver.send(long_id, "k", "2", clock.time(), None)
                with pytest.raises(RunMissing):  # nothing sent: nothing heard
                    await sender._driver.send("gone", "k", "2", clock.time(), None)
                await sender._driver.send("a", "k", "3", clock.time(), None)
                with anyio.fail_after(60):  # a guard against a hang, not a timing check
                    await arrived.wait()
                tg.cancel_scope.cancel()
    assert [found for found in woken if found != "p"] == expected
    assert not pg._driver._listeners  # its connection is closed


async def test_postgres_watch_raises_when_its_connection_drops(pg: Any, clock: FakeClock) -> None:
    from .postgres_kit import admin

    await started(pg, "r1")
    d = pg._driver
    woken: list[str] = []

    async def heard_then_drop() -> None:
        while not woken:
            await d.send("r1", "k", "0", clock.time(), None)
        (listener,) = d._listeners
        await admin("SELECT pg_terminate_backend($1)", listener.server_pid)  # ours

    async with anyio.create_task_group() as tg:
        tg.start_soon(heard_then_drop)
        # (A guard, not a timing check: a watch deaf to the drop fails instead of hanging.)
        with pytest.raises(ConnectionError, match="lost its connection"), anyio.fail_after(60):
            await d.watch(woken.append)
    assert not d._listeners
    # The store still works afterwards, and so does a new watch.
    await d.send("r1", "k", "1", clock.time(), None)
    again: list[str] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(d.watch, again.append)
        while not again:
            await d.send("r1", "k", "2", clock.time(), None)
        tg.cancel_scope.cancel()


async def test_postgres_closing_the_store_ends_its_watch(pg_schema: str, clock: FakeClock) -> None:
    from awaitly_anyio.stores.postgres import PostgresStore

    from .postgres_kit import DSN

    store = PostgresStore(DSN, schema=pg_schema, clock=clock)
    await store.__aenter__()
    await started(store, "r1")
    d = store._driver
    woken: list[str] = []
    ended: list[Exception] = []

    async def watching() -> None:
        try:
            await d.watch(woken.append)
        except (ConnectionError, RuntimeError) as exc:
            ended.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watching)
        while not woken:
            await d.send("r1", "k", "0", clock.time(), None)
        await store.close()
    assert len(ended) == 1
    assert not d._listeners


async def _postgres_version_2(schema: str) -> None:
    from awaitly_anyio.stores._postgres_sql import MIGRATIONS

    from .postgres_kit import admin

    runs, steps = f'"{schema}"."awaitly_runs"', f'"{schema}"."awaitly_steps"'
    await admin(f'CREATE SCHEMA "{schema}"')
    for version in (1, 2):
        await admin(MIGRATIONS[version].format(runs=runs, steps=steps, prefix="awaitly_"))
    await admin(f'CREATE TABLE "{schema}"."awaitly_schema_version" (version integer NOT NULL)')
    await admin(f'INSERT INTO "{schema}"."awaitly_schema_version" VALUES (2)')


async def _postgres_shape(schema: str) -> tuple[list[Any], list[Any]]:
    from .postgres_kit import admin_fetch

    columns = await admin_fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = $1 ORDER BY table_name, column_name",
        schema,
    )
    indexes = await admin_fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname",
        schema,
    )
    return columns, [(name, text.replace(schema, "S")) for name, text in indexes]


async def test_postgres_a_version_2_database_is_upgraded_and_keeps_its_runs(
    pg_schema: str, clock: FakeClock
) -> None:
    from awaitly_anyio.stores.postgres import SCHEMA_VERSION, PostgresStore, digest

    from .postgres_kit import DSN, admin, admin_fetch

    schema = pg_schema
    await _postgres_version_2(schema)
    await admin(
        f'INSERT INTO "{schema}"."awaitly_runs" (id, id_digest, workflow_name, status,'
        " metadata, created_at, updated_at, format_version, lease_owner, lease_expires_at)"
        " VALUES ('old', $1, 'orders', 'running', '{}'::jsonb, 1, 1, 1, 'w', 4e9)",
        digest("old"),
    )
    now = clock.time()
    async with PostgresStore(DSN, schema=schema, clock=clock) as store:
        d = store._driver
        old = await stored(store, "old")
        assert (old.status, old.lease_owner, old.wait_step, old.wake_at) == (
            "running",
            "w",
            None,
            None,
        )
        await d.send("old", "k", '"v"', now, None)
        assert await d.begin_wait("old", WaitRow("s", "k", "message", None), now, "w") == (
            True,
            None,
        )
        assert await receive(store, "old", "k", "s", now, owner="w") == '"v"'
    versions = await admin_fetch(f'SELECT version FROM "{schema}"."awaitly_schema_version"')
    assert max(found[0] for found in versions) == SCHEMA_VERSION >= 3
    upgraded = await _postgres_shape(schema)
    await admin(f'DROP SCHEMA "{schema}" CASCADE')
    async with PostgresStore(DSN, schema=schema, clock=clock):
        pass
    fresh = await _postgres_shape(schema)
    assert upgraded == fresh
    assert {name for name, _ in fresh[1]} >= {"awaitly_runs_waking", "awaitly_messages_pkey"}
    assert "WHERE (status = 'waiting'::text)" in dict(fresh[1])["awaitly_runs_waking"]
    assert "(run_digest, key_digest, seq)" in dict(fresh[1])["awaitly_messages_pkey"]


# ---- Redis -------------------------------------------------------------------------------


@pytest.fixture
def redis_prefix() -> Any:
    from .redis_kit import fresh_prefix

    yield from fresh_prefix("waiting")


@pytest.fixture
async def rd(redis_prefix: str, clock: FakeClock) -> AsyncIterator[Any]:
    from awaitly_anyio.stores.redis import RedisStore

    from .redis_kit import URL

    async with RedisStore(URL, prefix=redis_prefix, clock=clock) as opened:
        yield opened


def _run_hash(store: Any, id: str) -> dict[str, str]:
    from .redis_kit import raw

    with contextlib.closing(raw()) as client:
        found: dict[str, str] = client.hgetall(store.keys_of(id)[0])
        return found


def _score(store: Any, name: str, id: str) -> float | None:
    from .redis_kit import raw

    with contextlib.closing(raw()) as client:
        found: float | None = client.zscore(store.prefix + name, id)
        return found


def _mailbox(store: Any, id: str) -> dict[str, str]:
    from .redis_kit import raw

    with contextlib.closing(raw()) as client:
        found: dict[str, str] = client.hgetall(f"{store.prefix}mail:{id}")
        return found


async def test_redis_the_index_of_waiting_runs_follows_each_wait(rd: Any, clock: FakeClock) -> None:
    d = rd._driver
    now = clock.time()
    id = await started(rd, "r1")
    await d.begin_wait(id, WaitRow("w1", "k", "approval", now + 100), now, "w")
    assert _score(rd, "waiting", id) == now + 100
    assert _score(rd, "active", id) is None
    await rd.mark_running(id, NAME)  # resumed: not waiting until it waits again
    assert _score(rd, "waiting", id) is None
    await d.begin_wait(id, WaitRow("w1", "k", "approval", now + 500), now + 10, None)
    assert _score(rd, "waiting", id) == now + 100
    # A step that ends the wait takes it out; it is active again.
    await rd.checkpoint(id, encoded("w1", 1), owner="w")
    assert _score(rd, "waiting", id) is None
    assert _score(rd, "active", id) is not None
    # A timer without a deadline is not in the index; a send to a keyed wait puts it in.
    await d.begin_wait(id, WaitRow("t1", None, "timer", None), now, None)
    assert _run_hash(rd, id)["status"] == "waiting"
    assert _score(rd, "waiting", id) is None
    await d.begin_wait(id, WaitRow("w2", "k", "message", None), now, None)
    await d.send(id, "other", "1", now + 5, None)
    assert _score(rd, "waiting", id) is None  # not the awaited key
    await d.send(id, "k", "1", now + 5, None)
    assert _score(rd, "waiting", id) == now + 5
    assert _run_hash(rd, id)["wake_at"] == repr(now + 5)
    # A receive into the wait's step takes it out.
    assert await receive(rd, id, "k", "w2", now + 6) == "1"
    assert _score(rd, "waiting", id) is None


async def test_redis_claims_saves_and_ends_keep_the_index_right(rd: Any, clock: FakeClock) -> None:
    d = rd._driver
    now = clock.time()
    id = await started(rd, "r1")
    await d.begin_wait(id, WaitRow("w1", "k", "hook", now + 60), now, None)
    await rd.release(id, owner="w")
    assert (await rd.claim(id, NAME, owner="w2", lease=30.0)).outcome == "claimed"
    assert _score(rd, "waiting", id) is None
    snapshot = await rd.load(id)
    assert snapshot is not None
    await rd.save(id, snapshot)
    await d.begin_wait(id, WaitRow("w1", "k", "hook", None), now, None)
    assert _score(rd, "waiting", id) == now + 60
    await rd.finish(id, "completed", Ok(1), "1", ttl=60, owner="w2")
    fields = _run_hash(rd, id)
    assert (fields["wait_step"], fields["wait_key"], fields["wake_at"]) == ("", "", "")
    assert _score(rd, "waiting", id) is None
    other = await started(rd, "m")
    await d.begin_wait(other, WaitRow("w1", "k", "timer", now + 5), now, None)
    await rd.finish(other, "failed", None, None, metadata={"why": "stopped"}, owner="w")
    assert _score(rd, "waiting", other) is None


async def test_redis_a_mailbox_lives_and_dies_with_its_run(rd: Any, clock: FakeClock) -> None:
    from .redis_kit import raw

    d = rd._driver
    now = clock.time()
    for id in ("deleted", "expiring", "purged"):
        await started(rd, id)
        await d.send(id, "k", "1", now, None)
        await d.begin_wait(id, WaitRow("w", "x", "message", now + 5), now, None)
    # Consumed messages are gone (only each key's counters stay).
    await started(rd, "consumed")
    await d.send("consumed", "k", "1", now, None)
    assert await receive(rd, "consumed", "k", "s", now) == "1"
    assert all(field.startswith("\x00") for field in _mailbox(rd, "consumed"))
    assert await rd.delete("deleted")
    assert _mailbox(rd, "deleted") == {}
    assert _score(rd, "waiting", "deleted") is None
    await rd.finish("expiring", "cancelled", None, None, ttl=60, owner="w")
    with contextlib.closing(raw()) as client:
        assert 0 < client.pttl(f"{rd.prefix}mail:expiring") <= 60_000
    await rd.finish("purged", "cancelled", None, None, ttl=1, owner="w")
    clock.advance(2)
    assert await rd.purge_expired() >= 1
    assert _mailbox(rd, "purged") == {}
    # A message to a run with a TTL gets the run's TTL.
    await started(rd, "ttl")
    await rd.finish("ttl", "cancelled", None, None, ttl=60, owner="w")
    await d.send("ttl", "k", "1", clock.time(), None)
    with contextlib.closing(raw()) as client:
        assert 0 < client.pttl(f"{rd.prefix}mail:ttl") <= 60_000


async def test_redis_a_run_written_before_waiting_existed_reads(rd: Any, clock: FakeClock) -> None:
    from .redis_kit import raw

    id = await started(rd, "r1")
    with contextlib.closing(raw()) as client:  # as an older release left it
        client.hdel(rd.keys_of(id)[0], "wait_step", "wait_key", "wait_kind", "wake_at")
    old = await stored(rd, id)
    assert (old.wait_step, old.wait_key, old.wait_kind, old.wake_at) == (None, None, None, None)
    info = await rd.info(id)
    assert info is not None
    assert info.damaged is None
    assert info.waiting_for is None
    await rd.checkpoint(id, encoded("a", 1), owner="w")
    assert await rd._driver.begin_wait(id, WaitRow("w", "k", "message", None), 0.0, None) == (
        False,
        None,
    )


async def test_redis_channel_names_the_database_and_prefix_without_secrets(
    redis_prefix: str,
) -> None:
    from awaitly_anyio.stores.redis import RedisStore

    a = RedisStore("redis://user:hunter2@127.0.0.1:6379/0", prefix=redis_prefix)
    b = RedisStore("redis://127.0.0.1:6379", prefix=redis_prefix)
    c = RedisStore("redis://127.0.0.1:6379/1", prefix=redis_prefix)
    d = RedisStore("redis://127.0.0.1:6379/0", prefix=redis_prefix + "x")
    channels = [s._driver.channel for s in (a, b, c, d)]
    assert channels[0] == channels[1]
    assert len(set(channels)) == 3
    assert all("hunter2" not in channel and "user" not in channel for channel in channels)
    for s in (a, b, c, d):
        await s.close()


async def test_redis_watch_wakes_for_every_send(
    rd: Any, redis_prefix: str, clock: FakeClock
) -> None:
    from awaitly_anyio.stores.redis import RedisStore

    from .redis_kit import URL

    woken: list[str] = []
    arrived = anyio.Event()

    def wake(id: str) -> None:
        woken.append(id)
        if len([found for found in woken if found != "p"]) == 3:
            arrived.set()

    async with RedisStore(URL, prefix=redis_prefix, clock=clock) as sender:
        for id in ("a", "b", "p"):
            await started(sender, id)
        with anyio.fail_after(60):  # a guard against a hang, not a timing assertion
            async with anyio.create_task_group() as tg:
                tg.start_soon(rd._driver.watch, wake)
                # A send published before the watch has subscribed is not heard: send to
                # "p" until one is (each send is a round trip, so this loop is paced).
                while not woken:
                    await sender._driver.send("p", "k", "0", clock.time(), None)
                await sender._driver.send("a", "k", "1", clock.time(), None)
                await sender._driver.send("b", "k", "2", clock.time(), None)
                await sender._driver.send("a", "k", "3", clock.time(), None)
                await arrived.wait()
                tg.cancel_scope.cancel()
    assert [found for found in woken if found != "p"] == ["a", "b", "a"]


async def test_redis_watch_raises_when_its_connection_drops(
    redis_prefix: str, clock: FakeClock
) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    from awaitly_anyio.stores.redis import RedisStore

    from .redis_kit import URL
    from .stall_proxy import stall_proxy

    port = URL.rsplit(":", 1)[1].split("/")[0]
    async with stall_proxy("127.0.0.1", int(port)) as proxy:
        url = URL.replace(f":{port}", f":{proxy.port}", 1)
        async with RedisStore(url, prefix=redis_prefix, clock=clock) as store:
            await started(store, "r1")
            woken: list[str] = []

            async def heard_then_drop() -> None:
                while not woken:
                    await store._driver.send("r1", "k", "0", clock.time(), None)
                proxy.drop()

            with anyio.fail_after(60):  # a guard against a hang, not a timing assertion
                async with anyio.create_task_group() as tg:
                    tg.start_soon(heard_then_drop)
                    with pytest.raises(RedisConnectionError):
                        await store._driver.watch(woken.append)
            # The store still works afterwards.
            await store._driver.send("r1", "k", "1", clock.time(), None)
