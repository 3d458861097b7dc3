"""The workflow harness (`awaitly_anyio.testing.WorkflowHarness`): scripted step outcomes
by name or key, what a run did (steps in order, attempts, outcomes, events), the
assertions and their messages, durable resume scenarios, and every bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from awaitly_anyio import (
    Approval,
    ApprovalRejectedError,
    Compensation,
    CompensationError,
    Deps,
    Err,
    MemoryCache,
    Ok,
    Result,
    RetryPolicy,
    StepTimeoutError,
    UnexpectedError,
    WorkflowContext,
    create_workflow,
    events,
)
from awaitly_anyio._step_groups import Step
from awaitly_anyio.testing import (
    REAL,
    Delay,
    FakeClock,
    HarnessError,
    ManualClock,
    Replace,
    StepCall,
    WorkflowHarness,
    compensations,
)

from .store_kits import MEMORY, SQLITE, StoreKit

pytestmark = pytest.mark.anyio


@attrs.frozen
class CardDeclined:
    reason: str


class Shop:
    """The real services: every call is counted, so a test sees what really ran."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def fetch(self, order: str) -> int:
        self.calls.append(f"fetch {order}")
        return 100

    async def charge(self, cents: int) -> Result[str, CardDeclined]:
        self.calls.append(f"charge {cents}")
        return Ok(f"receipt-{cents}")

    def email(self, text: str) -> str:
        self.calls.append(f"email {text}")
        return "sent"


async def checkout(ctx: WorkflowContext[Deps]) -> str:
    shop: Shop = ctx.deps.shop
    cents: int = await ctx.step.retry("fetch", lambda: shop.fetch("o-1"), attempts=3, delay=1.0)
    receipt: str = await ctx.step("charge", lambda: shop.charge(cents))
    await ctx.step("email", lambda: shop.email(receipt))
    return receipt


def make(shop: Shop, **options: Any) -> WorkflowHarness[Deps]:
    return WorkflowHarness(create_workflow("checkout", {"shop": shop}), **options)


# ---- scripting by name -----------------------------------------------------------------


async def test_unscripted_steps_run_their_real_fn() -> None:
    shop = Shop()
    harness = make(shop)
    assert await harness.run(checkout) == Ok("receipt-100")
    assert shop.calls == ["fetch o-1", "charge 100", "email receipt-100"]
    harness.assert_steps(["fetch", "charge", "email"])
    assert [call.status for call in harness.steps] == ["ok", "ok", "ok"]
    assert harness.step("charge").outcome == Ok("receipt-100")
    assert not any(call.scripted or call.replayed for call in harness.steps)


async def test_a_scripted_err_ends_the_run_and_the_real_fn_never_runs() -> None:
    shop = Shop()
    harness = make(shop)
    harness.script("charge", Err(CardDeclined("insufficient funds")))

    result = await harness.run(checkout)

    assert result == Err(CardDeclined("insufficient funds"))
    assert shop.calls == ["fetch o-1"]  # charge's real fn did not run, email never reached
    harness.assert_steps(["fetch", "charge"])
    charge = harness.step("charge")
    assert (charge.status, charge.attempts, charge.scripted) == ("err", 1, True)
    assert charge.outcome == Err(CardDeclined("insufficient funds"))
    harness.assert_events(
        "workflow_start",
        "step_start:fetch",
        "step_complete:fetch",
        "step_start:charge",
        "step_error:charge",
        "workflow_error",
    )


async def test_outcomes_attempt_by_attempt_drive_the_real_retry() -> None:
    shop = Shop()
    harness = make(shop)
    harness.script("fetch", [TimeoutError("slow"), TimeoutError("slower"), Ok(7)])

    assert await harness.run(checkout) == Ok("receipt-7")

    assert harness.attempts("fetch") == 3
    assert harness.step("fetch").outcome == Ok(7)
    assert isinstance(harness.clock, FakeClock)
    assert harness.clock.sleeps == [1.0, 2.0]  # the policy's backoff, on the fake clock
    harness.assert_events_include(
        "step_retry:fetch", events.StepRetry, "step_complete:fetch", "step_complete:email"
    )
    retries = [e for e in harness.step("fetch").events if isinstance(e, events.StepRetry)]
    assert [(e.attempt, str(e.error)) for e in retries] == [(1, "slow"), (2, "slower")]
    assert shop.calls == ["charge 7", "email receipt-7"]


async def test_a_single_outcome_answers_every_attempt() -> None:
    harness = make(Shop())
    script = harness.script("fetch", ConnectionError("down"))

    result = await harness.run(checkout)

    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    assert isinstance(result.error.cause, ConnectionError)
    assert harness.attempts("fetch") == 3
    assert (script.used, script.call_count, script.attempts, script.left) == (True, 1, 3, 0)


async def test_a_raised_outcome_goes_through_try_and_its_error_mapping() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> int:
        value: int = await ctx.step.try_(
            "parse", lambda: int("12"), error=lambda exc: f"bad number: {exc}"
        )
        return value

    harness = WorkflowHarness(create_workflow("parse"))
    harness.script("parse", ValueError("nope"))
    assert await harness.run(body) == Err("bad number: nope")
    assert harness.step("parse").status == "err"

    harness.script("parse", REAL)
    assert await harness.run(body) == Ok(12)


async def test_real_and_replace_outcomes() -> None:
    shop = Shop()
    harness = make(shop)
    harness.script("fetch", [ConnectionError("once"), REAL])
    harness.script("email", Replace(lambda: "not sent (test)"))

    assert await harness.run(checkout) == Ok("receipt-100")
    assert shop.calls == ["fetch o-1", "charge 100"]  # fetch's 2nd attempt was real
    assert harness.step("email").outcome == Ok("not sent (test)")


async def test_a_replace_outcome_may_be_async_and_return_a_result() -> None:
    async def declined() -> Result[str, CardDeclined]:
        await anyio.lowlevel.checkpoint()
        return Err(CardDeclined("expired"))

    harness = make(Shop())
    harness.script("charge", Replace(declined))
    assert await harness.run(checkout) == Err(CardDeclined("expired"))


# ---- delays and timeouts ---------------------------------------------------------------


async def test_a_delay_advances_the_fake_clock_then_gives_its_outcome() -> None:
    harness = make(Shop())
    harness.script("charge", Delay(30.0, Ok("late receipt")))

    assert await harness.run(checkout) == Ok("late receipt")
    assert isinstance(harness.clock, FakeClock)
    assert harness.clock.monotonic() == 30.0
    charge_done = harness.step("charge").events[-1]
    assert isinstance(charge_done, events.StepComplete)
    assert charge_done.duration_ms == 30_000.0


async def test_a_delay_past_the_step_timeout_times_the_attempt_out() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> str:
        value: str = await ctx.step.with_timeout("quote", lambda: "real", seconds=5.0)
        return value

    harness = WorkflowHarness(create_workflow("quotes"))
    harness.script("quote", Delay(60.0, Ok("too late")))

    assert await harness.run(body) == Err(StepTimeoutError("quote", 5.0))
    assert isinstance(harness.clock, FakeClock)
    assert harness.clock.monotonic() == 5.0  # the deadline, not the whole delay
    harness.assert_events(
        "workflow_start",
        "step_start:quote",
        "step_timeout:quote",
        "step_error:quote",
        "workflow_error",
    )


async def test_slow_then_fast_attempts_under_a_retry_policy_with_a_timeout() -> None:
    policy = RetryPolicy(3, delay=0.5, timeout=2.0)

    async def body(ctx: WorkflowContext[Deps]) -> int:
        value: int = await ctx.step("price", lambda: 1, retry=policy)
        return value

    harness = WorkflowHarness(create_workflow("prices"))
    harness.script("price", [Delay(10.0), Delay(1.0, Ok(42))])

    assert await harness.run(body) == Ok(42)
    assert harness.attempts("price") == 2
    timeouts = [e for e in harness.events if isinstance(e, events.StepTimeout)]
    assert [(e.attempt, e.seconds) for e in timeouts] == [(1, 2.0)]
    assert isinstance(harness.clock, FakeClock)
    assert harness.clock.sleeps == [2.0, 0.5, 1.0]  # timed out, backoff, the fast attempt


async def test_a_delay_past_with_timeouts_deadline_gives_its_on_timeout_outcome() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> list[str | None]:
        maybe = await ctx.step.with_timeout("maybe", lambda: "real", seconds=5.0, on_timeout=None)
        fast = await ctx.step.with_timeout("fast", lambda: "real", seconds=5.0, on_timeout=None)
        return [maybe, fast]

    harness = WorkflowHarness(create_workflow("quotes"))
    harness.script("maybe", Delay(60.0, Ok("too late")))
    harness.script("fast", Delay(1.0, Ok("in time")))

    assert await harness.run(body) == Ok([None, "in time"])
    harness.assert_events_include(
        "step_timeout:maybe", "step_complete:maybe", "step_complete:fast", "workflow_complete"
    )
    assert [e.type for e in harness.events].count("step_timeout") == 1
    assert harness.step("maybe").attempts == 1
    harness.assert_steps(["maybe", "fast"])  # one record each, not one per inner call

    async def strict_body(ctx: WorkflowContext[Deps]) -> str | None:
        return await ctx.step.with_timeout("maybe", lambda: "real", seconds=5.0, on_timeout="slow")

    assert await harness.run(strict_body) == Err("slow")


async def test_a_scripted_failure_still_runs_the_fallback() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> float:
        rate: float = await ctx.step.with_fallback(
            "rate", lambda: 1.1, lambda: 1.0, on=(ConnectionError, StepTimeoutError), timeout=2.0
        )
        return rate

    harness = WorkflowHarness(create_workflow("rates"))
    harness.script("rate", [ConnectionError("down"), Delay(10.0), Ok(1.2), ValueError("bad")])

    assert await harness.run(body) == Ok(1.0)  # raised ConnectionError: the fallback
    assert await harness.run(body) == Ok(1.0)  # too slow: the fallback
    harness.assert_events_include("step_timeout:rate", "step_complete:rate")
    assert await harness.run(body) == Ok(1.2)
    failed = await harness.run(body)  # an error `on` does not choose: no fallback
    assert isinstance(failed, Err)
    assert isinstance(failed.error, UnexpectedError)
    assert [run.steps[0].attempts for run in harness.runs] == [1, 1, 1, 1]
    assert [len(run.steps) for run in harness.runs] == [1, 1, 1, 1]


# ---- keys, dependencies, groups, waits, skips ------------------------------------------


async def test_a_key_script_wins_over_a_name_script() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> list[str]:
        return [await ctx.step("pay", lambda: "real", key=f"pay:{n}") for n in (1, 2, 3)]

    harness = WorkflowHarness(create_workflow("pay"))
    harness.script("pay", Ok("by name"))
    harness.script(key="pay:2", outcome=Ok("by key"))
    harness.script("pay", Ok("by both"), key="pay:3")

    assert await harness.run(body) == Ok(["by name", "by key", "by both"])
    harness.assert_steps(["pay:1", "pay:2", "pay:3"], by="key")
    assert harness.step(key="pay:2").outcome == Ok("by key")


async def test_dependency_steps_are_scripted_too() -> None:
    class Api:
        async def lookup(self, user: str) -> str:
            return f"real {user}"

    async def body(ctx: WorkflowContext[Deps]) -> list[str]:
        return [await ctx.steps.lookup("ada"), await ctx.steps.lookup("bob")]

    harness = WorkflowHarness(create_workflow("users", {"lookup": Api().lookup}))
    harness.script("lookup#2", Ok("scripted bob"))

    assert await harness.run(body) == Ok(["real ada", "scripted bob"])
    harness.assert_steps(["lookup", "lookup#2"])


async def test_steps_inside_a_group_are_recorded_and_scripted() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> dict[str, int]:
        return await ctx.step.all(
            "prices",
            {
                "eur": lambda: ctx.step("eur", lambda: 1),
                "usd": lambda: ctx.step("usd", lambda: 2),
            },
        )

    harness = WorkflowHarness(create_workflow("prices"))
    harness.script("usd", Ok(20))

    assert await harness.run(body) == Ok({"eur": 1, "usd": 20})
    names = harness.step_names()
    assert names[0] == "prices"
    assert sorted(name or "" for name in names[1:]) == ["eur", "usd"]
    # Each child's events are its own, though the children ran side by side.
    usd = harness.step("usd")
    assert [e.type for e in usd.events] == ["step_start", "step_complete"]
    assert all(getattr(e, "name", None) == "usd" for e in usd.events)


async def test_a_failing_child_cancels_its_scripted_sibling() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> list[int]:
        return await ctx.step.all(
            "both",
            [lambda: ctx.step("slow", lambda: 1), lambda: ctx.step("bad", lambda: 2)],
        )

    clock = ManualClock()
    harness = WorkflowHarness(create_workflow("both"), clock=clock)
    harness.script("slow", Delay(60.0))
    harness.script("bad", Delay(1.0, Err("boom")))

    async with anyio.create_task_group() as tg:
        tg.start_soon(harness.run, body)
        while clock.sleeping < 2:  # both children asleep on the clock the test moves
            await anyio.lowlevel.checkpoint()
        clock.advance(1.0)

    assert harness.result == Err("boom")
    assert harness.step("slow").status == "cancelled"
    assert harness.step("bad").status == "err"
    assert harness.step("both").status == "err"


async def test_a_cached_step_caches_its_scripted_value_and_a_hit_runs_nothing() -> None:
    clock = FakeClock()
    cache = MemoryCache(clock=clock)

    async def body(ctx: WorkflowContext[Deps]) -> float:
        rate: float = await ctx.step.cached(
            "rate", lambda: 1.1, key="rates:EUR", ttl=60, cache=cache
        )
        return rate

    harness = WorkflowHarness(create_workflow("rates"), clock=clock)
    script = harness.script("rate", [ConnectionError("down"), Ok(1.25)])

    failed = await harness.run(body)  # a miss; the scripted failure is not cached
    assert isinstance(failed, Err)
    assert await harness.run(body) == Ok(1.25)  # a miss; the scripted value is cached
    assert await harness.run(body) == Ok(1.25)  # a hit: nothing runs

    hit = harness.step("rate")
    assert (hit.replayed, hit.attempts, hit.status) == (True, 0, "ok")
    assert [e.type for e in hit.events] == ["step_cache_hit", "step_start", "step_complete"]
    assert [len(run.steps) for run in harness.runs] == [1, 1, 1]
    assert (script.call_count, script.attempts, script.left) == (3, 2, 0)


async def test_a_scripted_wait_needs_no_store() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> str:
        answer: str = await ctx.step.wait_for("answer", key="reply")
        return answer

    harness = WorkflowHarness(create_workflow("waits"))
    unscripted = await harness.run(body)  # as in production: no store, no wait
    assert isinstance(unscripted, Err)
    assert "needs a durable run" in str(unscripted.error)

    harness.script("answer", Ok("yes"))
    assert await harness.run(body) == Ok("yes")
    assert harness.step("answer").key == "reply"


async def test_a_scripted_approval_needs_no_store() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> str:
        decision = await ctx.step.wait_for_approval("manager", key="refund:1")
        return decision.by

    harness = WorkflowHarness(create_workflow("approvals"))
    harness.script(key="refund:1", outcome=Ok(Approval(approved=True, by="ada")))
    assert await harness.run(body) == Ok("ada")

    harness.script(key="refund:1", outcome=Ok(Approval(approved=False, by="bob")))
    result = await harness.run(body)
    assert isinstance(result, Err)
    assert isinstance(result.error, ApprovalRejectedError)
    assert result.error.by == "bob"


async def test_skipped_steps_are_recorded() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> None:
        ctx.step.skip("audit", reason="disabled")
        await ctx.step("work", lambda: 1)

    harness = WorkflowHarness(create_workflow("skips"))
    await harness.run(body)
    harness.assert_steps(["audit", "work"])
    assert harness.step("audit").status == "skipped"


async def test_nested_steps_are_recorded_in_start_order() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> int:
        async def outer() -> int:
            inner: int = await ctx.step("inner", lambda: 1)
            return inner + 1

        value: int = await ctx.step("outer", outer)
        return value

    harness = WorkflowHarness(create_workflow("nested"))
    harness.script("inner", Ok(10))
    assert await harness.run(body) == Ok(11)
    harness.assert_steps(["outer", "inner"])
    assert [e.type for e in harness.step("outer").events] == ["step_start", "step_complete"]


# ---- durable runs: resume scenarios ----------------------------------------------------


async def test_a_resumed_run_does_not_execute_its_recorded_steps(
    kit: StoreKit, tmp_path: Path
) -> None:
    async def body(ctx: WorkflowContext[Deps]) -> str:
        cents: int = await ctx.step("fetch", lambda: shop.fetch("o-1"), key="fetch")
        receipt: str = await ctx.step("charge", lambda: shop.charge(cents), key="charge")
        return receipt

    shop = Shop()
    harness = make(shop)
    async with kit.open(tmp_path, FakeClock()) as store:
        harness.script("charge", [Err(CardDeclined("try later")), REAL])

        first = await harness.run(body, store=store, workflow_id="order-1")
        assert first == Err(CardDeclined("try later"))
        harness.assert_steps(["fetch", "charge"])

        second = await harness.run(body, store=store, workflow_id="order-1")
        assert second == Ok("receipt-100")
        harness.assert_steps(["fetch", "charge"])
        harness.assert_steps(["charge"], replayed=False)
        assert harness.step("fetch").replayed
        assert harness.attempts("fetch") == 0
        assert harness.attempts("charge") == 1
        assert shop.calls == ["fetch o-1", "charge 100"]  # fetch ran once in all

    assert [run.result for run in harness.runs] == [first, second]
    harness.runs[0].assert_steps(["fetch", "charge"], replayed=False)
    harness.assert_all_used()


@pytest.mark.parametrize("kit", [MEMORY, SQLITE], ids=["memory", "sqlite"])
async def test_unkeyed_steps_of_a_durable_run_are_replayed_too(
    kit: StoreKit, tmp_path: Path
) -> None:
    async def body(ctx: WorkflowContext[Deps]) -> int:
        first: int = await ctx.step("first", lambda: 1)
        second: int = await ctx.step("second", lambda: 2)
        return first + second

    harness = WorkflowHarness(create_workflow("sums"))
    harness.script("second", [Err("not yet"), REAL])
    async with kit.open(tmp_path, FakeClock()) as store:
        assert await harness.run(body, store=store, workflow_id="sum-1") == Err("not yet")
        assert await harness.run(body, store=store, workflow_id="sum-1") == Ok(3)

    harness.assert_steps(["second"], replayed=False)
    first = harness.step("first")
    assert first.replayed
    assert first.key is not None  # the run's automatic key, as its events carry it
    assert harness.step_names(by="key") == harness.runs[0].step_names(by="key")


# ---- sagas: which compensations ran ----------------------------------------------------


class Bookings:
    def __init__(self) -> None:
        self.released: list[str] = []

    async def release(self, booking: str) -> None:
        self.released.append(booking)


async def trip(ctx: WorkflowContext[Deps]) -> str:
    bookings: Bookings = ctx.deps.bookings
    flight: str = await ctx.step("flight", lambda: "F-1", compensate=bookings.release)
    hotel: str = await ctx.step(
        "hotel",
        lambda: "H-1",
        compensate=Compensation(bookings.release, retry=RetryPolicy(2, timeout=5.0)),
    )
    await ctx.step("car", lambda: "C-1", compensate=bookings.release)
    await ctx.step("charge", lambda: f"paid {flight} {hotel}")
    return "booked"


def travel(bookings: Bookings) -> WorkflowHarness[Deps]:
    return WorkflowHarness(create_workflow("trip", {"bookings": bookings}))


async def test_the_compensations_that_ran_newest_first() -> None:
    bookings = Bookings()
    harness = travel(bookings)
    harness.script("charge", Err("card declined"))

    assert await harness.run(trip) == Err("card declined")

    harness.assert_compensated(["car", "hotel", "flight"])
    assert bookings.released == ["C-1", "H-1", "F-1"]  # each with its step's value
    assert harness.failed_compensations == []
    harness.assert_events_include(
        "step_error:charge",
        "compensation_start:car",
        "compensation_complete:car",
        "compensation_complete:hotel",
        "compensation_complete:flight",
        "workflow_error",
    )
    assert compensations(harness.events) == ["car", "hotel", "flight"]


async def test_no_failure_no_compensation() -> None:
    harness = travel(Bookings())
    assert await harness.run(trip) == Ok("booked")
    harness.assert_compensated([])


async def test_a_scripted_compensation_failure_ends_in_a_compensation_error() -> None:
    bookings = Bookings()
    harness = travel(bookings)
    harness.script("charge", Err("card declined"))
    harness.script_compensation("car", Err("rental desk closed"))

    result = await harness.run(trip)

    assert isinstance(result, Err)
    assert isinstance(result.error, CompensationError)
    assert result.error.original == "card declined"
    assert [(f.name, f.error) for f in result.error.failures] == [("car", "rental desk closed")]
    assert harness.failed_compensations == ["car"]
    harness.assert_compensated(["hotel", "flight"])  # the rollback went on
    assert bookings.released == ["H-1", "F-1"]


async def test_a_compensation_scripted_attempt_by_attempt_under_its_retry_policy() -> None:
    bookings = Bookings()
    harness = travel(bookings)
    harness.script("charge", Err("card declined"))
    undo = harness.script_compensation("hotel", [Delay(60.0), REAL])

    assert await harness.run(trip) == Err("card declined")

    harness.assert_compensated(["car", "hotel", "flight"])
    assert bookings.released == ["C-1", "H-1", "F-1"]  # hotel's second attempt was real
    done = [e for e in harness.events if isinstance(e, events.CompensationComplete)]
    assert [(e.name, e.attempt) for e in done] == [("car", 1), ("hotel", 2), ("flight", 1)]
    assert isinstance(harness.clock, FakeClock)
    assert harness.clock.sleeps[0] == 5.0  # the slow first attempt reached its timeout
    assert (undo.used, undo.attempts, undo.left) == (True, 2, 0)


async def test_an_unreached_compensation_script_is_reported() -> None:
    harness = travel(Bookings())
    harness.script_compensation("hotel", Ok(None))
    await harness.run(trip)  # nothing failed: no rollback
    with pytest.raises(HarnessError, match="compensation of step 'hotel' was scripted but never"):
        harness.assert_all_used()
    with pytest.raises(TypeError, match=r"script_compensation of step 'hotel': .*Ok\('undo'\)"):
        harness.script_compensation("hotel", "undo")  # type: ignore[arg-type]


# ---- strictness and misuse -------------------------------------------------------------


async def test_a_strict_harness_fails_the_run_at_an_unscripted_step() -> None:
    shop = Shop()
    harness = make(shop, strict=True)
    harness.script("fetch", Ok(1))
    harness.script("charge", REAL)

    with pytest.raises(
        HarnessError, match="step 'email' is not scripted and the harness is strict"
    ):
        await harness.run(checkout)

    assert shop.calls == ["charge 1"]  # REAL runs the real fn, email's did not run
    assert harness.step("email").status == "err"
    assert harness.last.result is not None
    assert not harness.last.result.ok


async def test_running_out_of_outcomes_fails_the_run() -> None:
    harness = make(Shop())
    harness.script("charge", [Ok("one")])

    async def twice(ctx: WorkflowContext[Deps]) -> None:
        await ctx.step("charge", lambda: "real")
        await ctx.step("charge", lambda: "real")

    with pytest.raises(HarnessError, match=r"step 'charge' made attempt 2 .* scripted 1 outcome"):
        await harness.run(twice)


async def test_assert_all_used_names_the_scripts_never_reached_or_used_up() -> None:
    harness = make(Shop())
    harness.script("fetch", [Ok(1), Ok(2)])
    harness.script("refund", Ok(None))
    harness.script("charge", Ok("r"))
    await harness.run(checkout)

    with pytest.raises(HarnessError) as failure:
        harness.assert_all_used()
    assert str(failure.value) == (
        "step 'refund' was scripted but never reached\nstep 'fetch' used 1 of its 2 outcomes"
    )


async def test_one_run_at_a_time() -> None:
    harness = WorkflowHarness(create_workflow("w"), clock=ManualClock())
    harness.script("wait", Delay(10.0))

    async def body(ctx: WorkflowContext[Deps]) -> None:
        await ctx.step("wait", lambda: None)

    async with anyio.create_task_group() as tg:
        tg.start_soon(harness.run, body)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(RuntimeError, match="one run at a time"):
            await harness.run(body)
        tg.cancel_scope.cancel()


async def test_cancellation_from_outside_propagates_and_the_run_is_recorded() -> None:
    clock = ManualClock()
    harness = WorkflowHarness(create_workflow("w"), clock=clock)
    harness.script("slow", Delay(3600.0))

    async def body(ctx: WorkflowContext[Deps]) -> None:
        await ctx.step("slow", lambda: None)

    with anyio.move_on_after(0.01) as scope:  # a real deadline: the fake one never comes
        await harness.run(body)
    assert scope.cancelled_caught
    assert harness.result is None
    assert harness.step("slow").status == "cancelled"
    harness.assert_events(
        "workflow_start", "step_start:slow", "step_cancelled:slow", "workflow_cancelled"
    )


async def test_production_steps_are_untouched() -> None:
    seen: list[type] = []

    async def body(ctx: WorkflowContext[Deps]) -> None:
        seen.append(type(ctx.step))

    workflow = create_workflow("w")
    harness = WorkflowHarness(workflow)
    await harness.run(body)
    await workflow.run(body)
    assert seen[0] is not Step
    assert issubclass(seen[0], Step)
    assert seen[1] is Step
    assert workflow.on_event == ()  # the harness listens on its own copy
    assert harness.workflow.clock is harness.clock


# ---- assertion messages ----------------------------------------------------------------


async def test_assert_steps_says_where_the_steps_part() -> None:
    harness = make(Shop())
    await harness.run(checkout)
    with pytest.raises(AssertionError) as failure:
        harness.assert_steps(["fetch", "email"])
    text = str(failure.value)
    assert "expected: ['fetch', 'email']" in text
    assert "actual:   ['fetch', 'charge', 'email']" in text
    assert "first difference at position 1: expected 'email', got 'charge'" in text
    assert "2. charge, ok, 1 attempt, Ok('receipt-100')" in text


async def test_assert_events_and_include_say_what_was_emitted() -> None:
    harness = make(Shop())
    await harness.run(checkout)
    with pytest.raises(AssertionError, match="first difference at position 1"):
        harness.assert_events("workflow_start", "step_start:charge")
    with pytest.raises(
        AssertionError, match=r"did not emit 'step_retry:fetch' \(expected item 1\)"
    ):
        harness.assert_events_include("step_start:fetch", "step_retry:fetch")
    with pytest.raises(AssertionError, match="did not emit 'step_start:fetch'"):
        # in order: fetch started before charge completed
        harness.assert_events_include("step_complete:charge", "step_start:fetch")
    harness.assert_events_include(events.WorkflowStart, "step_complete:email", "workflow_complete")


async def test_step_names_an_unknown_step() -> None:
    harness = make(Shop())
    await harness.run(checkout)
    with pytest.raises(AssertionError, match=r"the run took no step 'refund'; it took \['fetch'"):
        harness.step("refund")
    assert harness.attempts("refund") == 0
    assert isinstance(harness.steps[0], StepCall)
    assert "1. fetch, ok, 1 attempt, Ok(100)" in harness.describe()


def test_nothing_to_assert_before_a_run() -> None:
    harness = make(Shop())
    with pytest.raises(RuntimeError, match="has not run the workflow yet"):
        harness.assert_steps([])


# ---- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "error", "message"),
    [
        (42, TypeError, r"not 42 \(for a value, Ok\(42\)\)"),
        (None, TypeError, r"for a value, Ok\(None\)"),
        (ValueError, TypeError, r"give an exception instance to raise \(ValueError\(...\)\)"),
        (KeyboardInterrupt(), TypeError, "may raise an Exception, not KeyboardInterrupt"),
        (lambda: 1, TypeError, r"wrap it: Replace\("),
        ([], ValueError, "a list of outcomes needs at least one"),
        ([Ok(1), [Ok(2)]], TypeError, "outcome 1 is a list; lists do not nest"),
        ([Ok(1), "two"], TypeError, r"outcome 1: an outcome is Ok\(value\)"),
    ],
)
def test_an_outcome_of_the_wrong_kind_is_refused(
    outcome: Any, error: type[Exception], message: str
) -> None:
    harness = make(Shop())
    with pytest.raises(error, match=message):
        harness.script("fetch", outcome)
    assert harness.scripts == []


@pytest.mark.parametrize(
    ("name", "key", "error", "message"),
    [
        (None, None, TypeError, "give the step's name, or key="),
        ("", None, TypeError, "a step's name is a non-empty string, not ''"),
        (42, None, TypeError, "a step's name is a non-empty string, not 42"),
        ("pay", "", ValueError, "a scripted step key must be a non-empty string"),
        ("pay", "a\x00b", ValueError, "scripted step key must not contain NUL"),
    ],
)
def test_a_target_no_step_can_have_is_refused(
    name: Any, key: Any, error: type[Exception], message: str
) -> None:
    harness = make(Shop())
    with pytest.raises(error, match=message):
        harness.script(name, Ok(1), key=key)


def test_bad_delays_and_replacements_are_refused() -> None:
    with pytest.raises(ValueError, match="Delay: seconds must be a number >= 0, not -1"):
        Delay(-1)
    with pytest.raises(TypeError, match="Delay: seconds must be a number >= 0, not '5'"):
        Delay("5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not inf"):
        Delay(float("inf"))
    with pytest.raises(TypeError, match=r"Delay: then: .* not 3 \(for a value, Ok\(3\)\)"):
        Delay(1, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'fn' must be callable"):
        Replace(3)  # type: ignore[arg-type]


def test_bad_harness_options_are_refused() -> None:
    with pytest.raises(TypeError, match="WorkflowHarness needs a Workflow"):
        WorkflowHarness("checkout")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="strict must be True or False, not 1"):
        make(Shop(), strict=1)
    with pytest.raises(TypeError, match="clock must provide monotonic"):
        make(Shop(), clock=object())


async def test_bad_assertion_arguments_are_refused() -> None:
    harness = make(Shop())
    await harness.run(checkout)
    with pytest.raises(TypeError, match=r"takes a list of step names .* not 'fetch'"):
        harness.assert_steps("fetch")
    with pytest.raises(TypeError, match="step names and keys are strings, not 1"):
        harness.assert_steps([1])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"expected event types .* not 3"):
        harness.assert_events(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='by must be "name" or "key"'):
        harness.step_names(by="id")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="give a step name or key="):
        harness.attempts()
    with pytest.raises(TypeError, match="step names and keys are strings, not 42"):
        harness.step(42)  # type: ignore[arg-type]


async def test_a_body_that_is_not_callable_is_refused_as_in_production() -> None:
    harness = make(Shop())
    with pytest.raises(TypeError, match="body must be an async callable"):
        await harness.run(42)  # type: ignore[call-overload]
    assert harness.runs == []
