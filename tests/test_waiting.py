"""Durable waiting through the step API (issue 19), on every store and both loops:
``ctx.step.wait_for`` and friends, `send` / `approve` / `reject` / `resolve_hook` /
`pending_approvals`, durable deadlines and timers on an injected clock, bad input,
and what a waiting run shows (events, ``store.list(status="waiting")``)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from awaitly_anyio import (
    MAX_MESSAGE_BYTES,
    AlreadyDeliveredError,
    Approval,
    ApprovalRejectedError,
    Deps,
    Err,
    Hook,
    HookTokenError,
    Ok,
    Result,
    RunFinishedError,
    SerializationError,
    UnexpectedError,
    WaitTimeoutError,
    Workflow,
    WorkflowContext,
    approve,
    create_workflow,
    pending_approvals,
    reject,
    resolve_hook,
    send,
)
from awaitly_anyio._checks import check_key
from awaitly_anyio.events import StepWaiting, WorkflowEvent
from awaitly_anyio.testing import FakeClock

from .kit_base import StoreKit
from .store_kits import KITS, kit_ids

pytestmark = pytest.mark.anyio

DAY = 86_400.0
Body = Callable[[WorkflowContext[Deps]], Awaitable[Any]]


@attrs.define
class HoldClock(FakeClock):
    """A `FakeClock` whose sleeps hang while ``hold`` is set: a run can be caught
    waiting (and cancelled, as a restart would), then its deadline logic runs on
    FakeClock's instant sleeps once ``hold`` is cleared."""

    hold: bool = False

    async def sleep(self, seconds: float) -> None:
        if self.hold:
            await anyio.sleep_forever()
        await FakeClock.sleep(self, seconds)


@attrs.define
class Bench:
    """One test's store kit, folder, clock and the events of its workflows."""

    kit: StoreKit
    tmp_path: Path
    clock: HoldClock = attrs.field(factory=HoldClock)
    events: list[WorkflowEvent] = attrs.field(factory=list[WorkflowEvent])
    waiting: dict[str, anyio.Event] = attrs.field(factory=dict[str, anyio.Event])

    def open(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.kit.open(self.tmp_path, self.clock)

    def workflow(self, name: str = "orders") -> Workflow[Any]:
        return create_workflow(name, clock=self.clock, on_event=self._seen)

    def _seen(self, event: WorkflowEvent) -> None:
        self.events.append(event)
        if event.type == "step_waiting":
            self.waiting.setdefault(event.workflow_id, anyio.Event()).set()

    async def until_waiting(self, run_id: str) -> None:
        """Until run ``run_id`` is recorded waiting (its ``step_waiting`` event)."""
        with anyio.fail_after(20):
            await self.waiting.setdefault(run_id, anyio.Event()).wait()

    @contextlib.asynccontextmanager
    async def interrupted(
        self, workflow: Workflow[Any], body: Body, run_id: str, store: Any
    ) -> AsyncIterator[list[Result[Any, Any]]]:
        """Run ``body`` as run ``run_id`` until it waits (the block runs then), then
        cancel it, as a worker's restart would; its result (if it ended) is yielded."""
        ended: list[Result[Any, Any]] = []
        self.waiting.pop(run_id, None)
        async with anyio.create_task_group() as group:

            async def go() -> None:
                ended.append(await workflow.run(body, workflow_id=run_id, store=store))

            group.start_soon(go)
            await self.until_waiting(run_id)
            yield ended
            group.cancel_scope.cancel()


@pytest.fixture(params=KITS, ids=kit_ids())
def bench(request: pytest.FixtureRequest, tmp_path: Path) -> Bench:
    kit: StoreKit = request.param
    return Bench(kit, tmp_path)


async def mailbox_size(bench: Bench, store: Any) -> int:
    """How many messages the whole store keeps (read behind the store's back)."""
    name = bench.kit.name
    if name == "memory":
        return sum(len(queue) for box in store._messages.values() for queue in box.values())
    if name == "sqlite":
        with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as db:
            count: int = db.execute("SELECT COUNT(*) FROM awaitly_messages").fetchone()[0]
        return count
    if name == "postgres":
        from .postgres_kit import admin_fetch

        rows = await admin_fetch(f"SELECT COUNT(*) FROM {store._pg.sql.messages}")
        return int(rows[0][0])
    from .redis_kit import prefix_for, raw

    with contextlib.closing(raw()) as client:
        keys = list(client.scan_iter(match=prefix_for(bench.tmp_path) + "mail:*", count=1000))
        # A message is the field ``key NUL n``; fields starting with NUL are counters.
        return sum(
            1
            for key in keys
            for field in client.hkeys(key)
            if "\x00" in field and not field.startswith("\x00")
        )


def waits_for(key: str, timeout: float | timedelta | None = None) -> Body:
    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.wait_for("get", key=key, timeout=timeout)

    return body


# ---- messages ---------------------------------------------------------------------------


async def test_a_value_sent_before_the_wait_is_kept_and_received(bench: Bench) -> None:
    async with bench.open() as store:
        await store.mark_running("r1", "orders")
        await send(store, "r1", "k", {"amount": 7, "items": ["a", "b"]})
        result = await bench.workflow().run(waits_for("k"), workflow_id="r1", store=store)
        assert result == Ok({"amount": 7, "items": ["a", "b"]})
        snapshot = await store.load("r1")
        assert snapshot is not None
        assert snapshot.status == "completed"
        # The wait's outcome is the step's record, under its key.
        assert snapshot.steps["k"].result == Ok({"amount": 7, "items": ["a", "b"]})
        assert snapshot.steps["k"].attempts == 1
        assert await mailbox_size(bench, store) == 0


async def test_a_value_sent_while_the_run_waits_wakes_it(bench: Bench) -> None:
    workflow = bench.workflow()
    done: list[Result[Any, Any]] = []
    async with bench.open() as store, anyio.create_task_group() as group:

        async def go() -> None:
            done.append(await workflow.run(waits_for("k"), workflow_id="r1", store=store))

        group.start_soon(go)
        await bench.until_waiting("r1")
        info = await store.info("r1")
        assert info is not None
        assert info.status == "waiting"
        await send(store, "r1", "k", "hello")
    assert done == [Ok("hello")]


async def test_values_are_received_oldest_first_and_once(bench: Bench) -> None:
    async with bench.open() as store:
        await store.mark_running("r1", "orders")
        for n in range(3):
            await send(store, "r1", "k", n)
        await send(store, "r1", "other", "x")
        got = [await store.receive("r1", "k", step=f"s{n}", name=f"s{n}") for n in range(4)]
        assert got == [Ok(0), Ok(1), Ok(2), None]
        # Each value went into the step that received it; the other key is untouched.
        snapshot = await store.load("r1")
        assert snapshot is not None
        assert [snapshot.steps[f"s{n}"].result for n in range(3)] == [Ok(0), Ok(1), Ok(2)]
        assert await store.receive("r1", "other", step="o", name="o") == Ok("x")
        # A step already recorded receives nothing more.
        await send(store, "r1", "k", 99)
        assert await store.receive("r1", "k", step="s0", name="s0") is None
        assert await mailbox_size(bench, store) == 1


async def test_a_resumed_run_does_not_wait_again_for_a_value_it_received(bench: Bench) -> None:
    workflow = bench.workflow()
    after: list[Any] = []
    calls: list[str] = []

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        await ctx.step("before", lambda: calls.append("before"), key="before")
        value = await ctx.step.wait_for("get", key="k")
        after.append(value)
        await ctx.step.wait_for("then", key="k2")  # the crash-like interruption lands here
        return value

    async with bench.open() as store:
        await store.mark_running("r1", "orders")
        await send(store, "r1", "k", "first")
        async with bench.interrupted(workflow, body, "r1", store) as ended:
            assert after == ["first"]
        assert ended == []
        await send(store, "r1", "k", "second")  # not for this run's step: it received already
        await send(store, "r1", "k2", "go")
        async with bench.open() as again:  # a new worker's store (memory: the same one)
            assert await workflow.run(body, workflow_id="r1", store=again) == Ok("first")
            assert after == ["first", "first"]
            assert calls == ["before"]
            snapshot = await again.load("r1")
            assert snapshot is not None
            assert snapshot.steps["k"].result == Ok("first")
            assert await mailbox_size(bench, again) == 1  # "second" was never consumed
            # A completed run returns its stored result, waiting for nothing.
            assert await workflow.run(body, workflow_id="r1", store=again) == Ok("first")


async def test_the_deadline_is_durable_a_restart_does_not_restart_the_clock(bench: Bench) -> None:
    clock = bench.clock
    workflow = bench.workflow()
    body = waits_for("k", timeout=timedelta(days=3))
    start = clock.time()
    async with bench.open() as store:
        clock.hold = True
        async with bench.interrupted(workflow, body, "r1", store) as ended:
            waiting = await store.list(status="waiting")
            assert [(i.id, i.waiting_for, i.wait_kind) for i in waiting] == [("r1", "k", "message")]
            assert waiting.items[0].wake_at == datetime.fromtimestamp(start + 3 * DAY, timezone.utc)
        assert ended == []
        clock.hold = False
        clock.advance(2 * DAY)  # two days pass with no worker
        clock.sleeps.clear()
        async with bench.open() as again:  # a new worker's store (memory: the same one)
            await finish_the_deadline(bench, workflow, body, again, start)


async def finish_the_deadline(
    bench: Bench, workflow: Workflow[Any], body: Body, store: Any, start: float
) -> None:
    """The second worker's side: the run times out after the time left."""
    clock = bench.clock
    info = await store.info("r1")
    assert info is not None
    assert info.status == "waiting"
    result = await workflow.run(body, workflow_id="r1", store=store)
    assert result == Err(WaitTimeoutError("get", "k", start + 3 * DAY))
    # It slept the one day left, not three.
    assert clock.sleeps == [pytest.approx(DAY)]
    snapshot = await store.load("r1")
    assert snapshot is not None
    assert snapshot.status == "failed"
    # Too late: the run ended, so nothing will read a value now; none is stored.
    before = await mailbox_size(bench, store)
    with pytest.raises(RunFinishedError) as raised:
        await send(store, "r1", "k", "late")
    assert (raised.value.run_id, raised.value.status) == ("r1", "failed")
    assert await mailbox_size(bench, store) == before


@pytest.mark.parametrize(
    ("sent_at", "in_time"),
    [(30.0, True), (60.0, True), (61.0, False), (120.0, False)],
    ids=["before", "at", "just-after", "long-after"],
)
async def test_a_value_sent_after_the_deadline_stays_in_the_mailbox(
    bench: Bench, sent_at: float, in_time: bool
) -> None:
    """No worker runs at the deadline (60 s); a value arrives at ``sent_at`` s, and the
    run resumes at 180 s.  A value sent by the deadline (at it included) is received;
    one sent after it stays in the mailbox and the run takes the timeout path."""
    clock = bench.clock
    workflow = bench.workflow()
    body = waits_for("k", timeout=60)
    start = clock.time()
    async with bench.open() as store:
        clock.hold = True
        async with bench.interrupted(workflow, body, "r1", store):
            pass
        clock.hold = False
        clock.advance(sent_at)
        await send(store, "r1", "k", "value")
        clock.advance(180 - sent_at)
        result = await workflow.run(body, workflow_id="r1", store=store)
        if in_time:
            assert result == Ok("value")
            assert await mailbox_size(bench, store) == 0
        else:
            assert result == Err(WaitTimeoutError("get", "k", start + 60))
            assert await mailbox_size(bench, store) == 1
        snapshot = await store.load("r1")
        assert snapshot is not None
        assert snapshot.status == ("completed" if in_time else "failed")
        assert snapshot.steps["k"].result == result


async def test_a_value_sent_before_the_first_wait_is_received_however_old(bench: Bench) -> None:
    """The run reaches its wait for the first time only after a value was sent; the
    value is received (there was no deadline yet when it was sent)."""
    async with bench.open() as store:
        await store.mark_running("r1", "orders")
        await send(store, "r1", "k", "early")
        bench.clock.advance(DAY)
        result = await bench.workflow().run(
            waits_for("k", timeout=60), workflow_id="r1", store=store
        )
        assert result == Ok("early")


async def test_a_keyed_sleep_is_a_durable_timer(bench: Bench) -> None:
    clock = bench.clock
    workflow = bench.workflow()

    async def body(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step.sleep("nap", 3600, key="nap")
        return "awake"

    start = clock.time()
    async with bench.open() as store:
        clock.hold = True
        async with bench.interrupted(workflow, body, "r1", store):
            [info] = (await store.list(status="waiting")).items
            assert (info.id, info.waiting_for, info.wait_kind) == ("r1", None, "timer")
            assert info.wake_at == datetime.fromtimestamp(start + 3600, timezone.utc)
        clock.hold = False
        clock.advance(1000)
        clock.sleeps.clear()
        async with bench.open() as again:  # a new worker's store (memory: the same one)
            assert await workflow.run(body, workflow_id="r1", store=again) == Ok("awake")
            assert clock.sleeps == [pytest.approx(2600)]
            snapshot = await again.load("r1")
            assert snapshot is not None
            assert snapshot.steps["nap"].result == Ok(None)
            # Rung and recorded: running the run again sleeps no more.
            clock.sleeps.clear()
            assert await workflow.run(body, workflow_id="r1", store=again) == Ok("awake")
            assert clock.sleeps == []


async def test_an_unkeyed_sleep_is_unchanged(bench: Bench) -> None:
    clock = bench.clock
    workflow = bench.workflow()

    async def body(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step.sleep("nap", 3600)
        return "awake"

    async with bench.open() as store:
        assert await workflow.run(body, workflow_id="r1", store=store) == Ok("awake")
        assert clock.sleeps == [3600]
        assert [e.type for e in bench.events if e.type == "step_waiting"] == []
        snapshot = await store.load("r1")
        assert snapshot is not None
        assert snapshot.steps == {}
    # Without a store, too.
    plain = create_workflow("plain", clock=clock)
    assert await plain.run(body) == Ok("awake")
    assert clock.sleeps == [3600, 3600]


# ---- approvals --------------------------------------------------------------------------


def waits_for_approval(key: str) -> Body:
    async def body(ctx: WorkflowContext[Deps]) -> Approval:
        return await ctx.step.wait_for_approval("approval", key=key)

    return body


async def test_an_approval_gives_who_why_and_when(bench: Bench) -> None:
    async with bench.open() as store:
        await store.mark_running("r1", "orders")
        await approve(store, "r1", "approve:7", by="ann", reason="looks fine")
        result = await bench.workflow().run(
            waits_for_approval("approve:7"), workflow_id="r1", store=store
        )
        assert isinstance(result, Ok)
        decision = result.value
        assert isinstance(decision, Approval)
        assert (decision.approved, decision.by, decision.reason) == (True, "ann", "looks fine")
        assert isinstance(decision.at, datetime)
        assert decision.at.tzinfo is not None


async def test_a_rejection_ends_the_workflow(bench: Bench) -> None:
    after: list[str] = []

    async def body(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step.wait_for_approval("approval", key="approve:7")
        after.append("ran")
        return "shipped"

    async with bench.open() as store:
        await store.mark_running("r1", "orders")
        await reject(store, "r1", "approve:7", by="bob", reason="too expensive")
        result = await bench.workflow().run(body, workflow_id="r1", store=store)
        assert result == Err(ApprovalRejectedError("approval", "approve:7", "bob", "too expensive"))
        assert after == []
        snapshot = await store.load("r1")
        assert snapshot is not None
        assert snapshot.status == "failed"


async def test_approve_and_reject_need_someone_who_decided(bench: Bench) -> None:
    async with bench.open() as store:
        await store.mark_running("r1", "orders")
        for by in ("", "   ", None):
            with pytest.raises(ValueError, match="by"):
                await approve(store, "r1", "k", by=by)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="reason"):
            await reject(store, "r1", "k", by="ann", reason=3)  # type: ignore[arg-type]
        assert await mailbox_size(bench, store) == 0


async def test_pending_approvals_lists_approval_waits_across_runs(bench: Bench) -> None:
    workflow = bench.workflow()
    done: dict[str, Result[Any, Any]] = {}
    async with bench.open() as store:
        assert await pending_approvals(store) == []
        async with anyio.create_task_group() as group:

            async def go(run_id: str, body: Body) -> None:
                done[run_id] = await workflow.run(body, workflow_id=run_id, store=store)

            group.start_soon(go, "a1", waits_for_approval("approve:a1"))
            group.start_soon(go, "m1", waits_for("message:m1"))
            group.start_soon(go, "a2", waits_for_approval("approve:a2"))
            for run_id in ("a1", "m1", "a2"):
                await bench.until_waiting(run_id)
            pending = await pending_approvals(store)
            assert sorted((p.id, p.waiting_for, p.wait_kind) for p in pending) == [
                ("a1", "approve:a1", "approval"),
                ("a2", "approve:a2", "approval"),
            ]
            assert len(await pending_approvals(store, limit=1)) == 1
            with pytest.raises(ValueError, match="limit"):
                await pending_approvals(store, limit=0)
            await approve(store, "a1", "approve:a1", by="ann")
            await reject(store, "a2", "approve:a2", by="bob")
            await send(store, "m1", "message:m1", 1)
        assert await pending_approvals(store) == []
    assert done["m1"] == Ok(1)
    assert isinstance(done["a1"], Ok)
    assert isinstance(done["a2"], Err)
    assert isinstance(done["a2"].error, ApprovalRejectedError)


# ---- hooks ------------------------------------------------------------------------------


def hooked(tokens: list[str]) -> Body:
    async def body(ctx: WorkflowContext[Deps]) -> Any:
        hook = await ctx.step.create_hook("make hook", key="paid")
        assert isinstance(hook, Hook)
        tokens.append(hook.token)
        return await ctx.step.wait_for_hook("await payment", hook)

    return body


async def test_a_hook_token_resolves_once(bench: Bench) -> None:
    workflow = bench.workflow()
    tokens: list[str] = []
    async with bench.open() as store:
        async with bench.interrupted(workflow, hooked(tokens), "r1", store):
            pass
        [token] = tokens
        # The run id is encoded (base64), not spelled out: the random part may hold "r1".
        assert not token.startswith("r1")
        await resolve_hook(store, token, {"paid": 12})
        size = await mailbox_size(bench, store)
        with pytest.raises(HookTokenError, match="already resolved") as raised:
            await resolve_hook(store, token, {"paid": 13})
        assert token not in str(raised.value)
        assert await mailbox_size(bench, store) == size
        # The resumed run hands out the same token, and receives the first value.
        assert await workflow.run(hooked(tokens), workflow_id="r1", store=store) == Ok({"paid": 12})
        assert tokens == [token, token]
        # Once the run ended, the token is refused too (nothing stored).
        with pytest.raises(HookTokenError) as raised:
            await resolve_hook(store, token, {"paid": 14})
        assert token not in str(raised.value)
        assert await mailbox_size(bench, store) == 0


async def test_a_hook_resolved_while_the_run_waits_wakes_it(bench: Bench) -> None:
    workflow = bench.workflow()
    tokens: list[str] = []
    done: list[Result[Any, Any]] = []
    async with bench.open() as store, anyio.create_task_group() as group:

        async def go() -> None:
            done.append(await workflow.run(hooked(tokens), workflow_id="r1", store=store))

        group.start_soon(go)
        await bench.until_waiting("r1")
        [info] = (await store.list(status="waiting")).items
        assert info.wait_kind == "hook"
        await resolve_hook(store, tokens[0], "ok")
    assert done == [Ok("ok")]


async def test_bad_hook_tokens_are_refused_without_quoting_them(bench: Bench) -> None:
    workflow = bench.workflow()
    tokens: list[str] = []
    async with bench.open() as store:
        async with bench.interrupted(workflow, hooked(tokens), "r1", store):
            pass
        [token] = tokens
        run_part, key_part, secret = token.split(".")
        flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
        # A well-formed token of a run that does not exist, and one of a step never made.
        from awaitly_anyio._waits import new_hook_token

        bad = [
            f"{run_part}.{key_part}.{flipped}",  # tampered secret
            new_hook_token("no-such-run", "paid"),  # unknown run
            new_hook_token("r1", "other"),  # unknown hook of a known run
            f"{key_part}.{run_part}.{secret}",  # parts swapped
            "not-a-token",
            "a.b",
            "...",
            "",
            "a.b.c.d",
            "%%%.###.$$$",
            "x" * 100_000,
        ]
        for candidate in bad:
            with pytest.raises(HookTokenError) as raised:
                await resolve_hook(store, candidate, "value")
            text = str(raised.value)
            assert "hook token" in text
            if len(candidate) > 3:
                assert candidate not in text
            assert secret not in text
            assert flipped not in text
        with pytest.raises(HookTokenError):
            await resolve_hook(store, 12345, "value")  # type: ignore[arg-type]
        assert await mailbox_size(bench, store) == 0
        # The real token still works.
        await resolve_hook(store, token, "value")


# ---- bad input --------------------------------------------------------------------------


async def test_sending_to_an_unknown_run_stores_nothing(bench: Bench) -> None:
    async with bench.open() as store:
        with pytest.raises(LookupError, match="no-such-run"):
            await send(store, "no-such-run", "k", 1)
        assert await store.info("no-such-run") is None
        assert await mailbox_size(bench, store) == 0


async def test_sending_to_an_ended_run_is_refused(bench: Bench) -> None:
    workflow = bench.workflow()

    async def fails(ctx: WorkflowContext[Deps]) -> Result[str, str]:
        return Err("nope")

    async def completes(ctx: WorkflowContext[Deps]) -> str:
        return "yes"

    async with bench.open() as store:
        assert await workflow.run(completes, workflow_id="done", store=store) == Ok("yes")
        assert await workflow.run(fails, workflow_id="failed", store=store) == Err("nope")
        raw = {id: await bench.kit.raw(store, id) for id in ("done", "failed")}
        for run_id, status in (("done", "completed"), ("failed", "failed")):
            with pytest.raises(RunFinishedError) as raised:
                await send(store, run_id, "k", 1)
            assert (raised.value.run_id, raised.value.status) == (run_id, status)
            assert run_id in str(raised.value)
            assert status in str(raised.value)
            with pytest.raises(RunFinishedError):
                await approve(store, run_id, "k", by="ann")
            assert await bench.kit.raw(store, run_id) == raw[run_id]
        assert await mailbox_size(bench, store) == 0


async def test_oversized_and_unstorable_values_are_refused(bench: Bench) -> None:
    async with bench.open() as store:
        await store.mark_running("r1", "orders")
        with pytest.raises(ValueError, match=str(MAX_MESSAGE_BYTES)):
            await send(store, "r1", "k", "x" * MAX_MESSAGE_BYTES)
        with pytest.raises(SerializationError) as raised:
            await send(store, "r1", "k", object())
        assert raised.value.step == "<message>"
        with pytest.raises(SerializationError):
            await send(store, "r1", "k", {"fine": 1, "bad": [lambda: None]})
        assert await mailbox_size(bench, store) == 0
        assert await store.receive("r1", "k", step="k", name="k") is None
        # Just under the limit is fine.
        await send(store, "r1", "k", "x" * (MAX_MESSAGE_BYTES - 2))
        got = await store.receive("r1", "k", step="k", name="k")
        assert got is not None
        assert len(got.value) == MAX_MESSAGE_BYTES - 2


HOSTILE_KEYS = [
    'quote"d',
    "it's",
    "'; DROP TABLE awaitly_runs; --",
    '"); DELETE FROM awaitly_messages; --',
    "]] redis.call('FLUSHALL') --[[",
    "KEYS[1] ARGV[1] %s {0} $1 ?",
    "*",
    "mail:x",
    "\\",
    "a\nb\tc\r",
    "ключ-🔑-キー-\u202e",
    "k" * 10_240,
]


async def test_hostile_keys_work(bench: Bench) -> None:
    workflow = bench.workflow()

    async def body(ctx: WorkflowContext[Deps]) -> list[Any]:
        return [await ctx.step.wait_for(f"get {n}", key=key) for n, key in enumerate(HOSTILE_KEYS)]

    async with bench.open() as store:
        await store.mark_running("r1", "orders")
        for n, key in enumerate(HOSTILE_KEYS):
            await send(store, "r1", key, n)
        assert await workflow.run(body, workflow_id="r1", store=store) == Ok(
            list(range(len(HOSTILE_KEYS)))
        )
        snapshot = await store.load("r1")
        assert snapshot is not None
        assert {key: snapshot.steps[key].result for key in HOSTILE_KEYS} == {
            key: Ok(n) for n, key in enumerate(HOSTILE_KEYS)
        }
        assert await mailbox_size(bench, store) == 0


async def test_invalid_keys_and_ids_are_refused_clearly(bench: Bench) -> None:
    async with bench.open() as store:
        await store.mark_running("r1", "orders")
        for key in ("", "nul\x00key", "\ud800"):
            with pytest.raises(ValueError, match=r"^a message key must "):
                await send(store, "r1", key, 1)
            with pytest.raises(ValueError, match=r"^a message key must "):
                await store.receive("r1", key, step="s", name="s")
            with pytest.raises(ValueError, match=r"^a message key must "):
                await store.begin_wait("r1", step="s", key=key, kind="message", wake_at=None)
        with pytest.raises(ValueError, match=r"^a step key must "):
            await store.receive("r1", "k", step="", name="s")
        for bad_id in ("", "nul\x00id"):
            with pytest.raises(ValueError, match="id"):
                await send(store, bad_id, "k", 1)
        assert await mailbox_size(bench, store) == 0


@pytest.mark.parametrize("bad", ["", "nul\x00key", "\ud800", 7, None])
def test_a_key_check_names_the_kind_of_key(bad: object) -> None:
    with pytest.raises(
        ValueError, match=r"^a message key must (be a non-empty|be valid|not contain)"
    ) as raised:
        check_key(bad, "message key")
    assert "step key" not in str(raised.value)
    with pytest.raises(ValueError, match=r"^a step key must "):
        check_key(bad)
    assert check_key("k\u00e9", "message key") == "k\u00e9"


async def test_a_wait_outside_a_durable_run_is_a_runtime_error_naming_the_step() -> None:
    raised: list[BaseException] = []

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        try:
            return await ctx.step.wait_for("get approval", key="k")
        except RuntimeError as exc:
            raised.append(exc)
            raise

    result = await create_workflow("plain").run(body)
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    [error] = raised
    assert result.error.cause is error
    assert "get approval" in str(error)
    assert "durable" in str(error)
    for body_of in (
        lambda ctx: ctx.step.wait_for_approval("ask", key="k"),
        lambda ctx: ctx.step.create_hook("hook it", key="k"),
    ):

        async def other(ctx: WorkflowContext[Deps], body_of: Any = body_of) -> Any:
            return await body_of(ctx)

        result = await create_workflow("plain").run(other)
        assert isinstance(result, Err)
        assert isinstance(result.error, UnexpectedError)
        assert isinstance(result.error.cause, RuntimeError)


async def test_bad_timeouts_are_refused(bench: Bench) -> None:
    async with bench.open() as store:
        for timeout, error in ((0, ValueError), (-1, ValueError), (float("inf"), ValueError)):
            result = await bench.workflow().run(
                waits_for("k", timeout=timeout), workflow_id=f"t{timeout}", store=store
            )
            assert isinstance(result, Err)
            assert isinstance(result.error, UnexpectedError)
            assert isinstance(result.error.cause, error)
            assert "get" in str(result.error.cause)


# ---- what a waiting run shows -------------------------------------------------------------


async def test_a_wait_is_evented_and_listed(bench: Bench) -> None:
    clock = bench.clock
    workflow = bench.workflow()
    start = clock.time()
    clock.hold = True
    done: list[Result[Any, Any]] = []
    ended = anyio.Event()
    async with bench.open() as store, anyio.create_task_group() as group:

        async def go() -> None:
            done.append(
                await workflow.run(waits_for("pay:1", timeout=90), workflow_id="r1", store=store)
            )
            ended.set()

        group.start_soon(go)
        await bench.until_waiting("r1")
        page = await store.list(status="waiting")
        [info] = page.items
        assert (info.id, info.status, info.waiting_for, info.wait_kind) == (
            "r1",
            "waiting",
            "pay:1",
            "message",
        )
        assert info.wake_at == datetime.fromtimestamp(start + 90, timezone.utc)
        assert (await store.list(status="running")).items == []
        await send(store, "r1", "pay:1", "paid")
        with anyio.fail_after(20):
            await ended.wait()
        info = await store.info("r1")
        assert info is not None
        assert (info.status, info.waiting_for, info.wait_kind, info.wake_at) == (
            "completed",
            None,
            None,
            None,
        )
        assert (await store.list(status="waiting")).items == []
    assert done == [Ok("paid")]
    steps = [e for e in bench.events if getattr(e, "name", None) == "get"]
    assert [e.type for e in steps] == ["step_start", "step_waiting", "step_complete"]
    waiting = steps[1]
    assert isinstance(waiting, StepWaiting)
    assert (waiting.waiting_for, waiting.wait_kind, waiting.wake_at, waiting.step_key) == (
        "pay:1",
        "message",
        start + 90,
        "pay:1",
    )


async def test_a_value_already_there_is_received_without_a_waiting_event(bench: Bench) -> None:
    async with bench.open() as store:
        await store.mark_running("r1", "orders")
        await send(store, "r1", "k", 1)
        assert await bench.workflow().run(waits_for("k"), workflow_id="r1", store=store) == Ok(1)
    assert [e.type for e in bench.events if getattr(e, "name", None) == "get"] == [
        "step_start",
        "step_complete",
    ]


async def test_once_refuses_a_second_delivery(bench: Bench) -> None:
    async with bench.open() as store:
        await store.mark_running("r1", "orders")
        await store.send("r1", "k", 1, once="k")
        with pytest.raises(AlreadyDeliveredError):
            await store.send("r1", "k", 2, once="k")
        assert await mailbox_size(bench, store) == 1
