"""Group steps beside ``all`` and ``race``: ``all_settled``, ``any``, ``with_fallback``,
``with_timeout(on_timeout=...)`` and batched ``for_each`` (progress, pause, durable resume)."""

from __future__ import annotations

import re
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest

from awaitly_anyio import (
    AllFailedError,
    Deps,
    Err,
    Ok,
    Result,
    StepTimeoutError,
    UnexpectedError,
    WorkflowContext,
    create_resume_state_collector,
    create_workflow,
    events,
    register_type,
    run,
)
from awaitly_anyio.testing import FakeClock

pytestmark = pytest.mark.anyio


@attrs.frozen
class Declined:
    code: str


def types(seen: list[events.WorkflowEvent]) -> list[tuple[str, str | None]]:
    """(type, step name) of each event, the workflow's own with name None."""
    return [(e.type, getattr(e, "name", None)) for e in seen]


async def cancelled_from_outside(body: Any, started: anyio.Event) -> tuple[bool, list[object]]:
    """Run ``body`` and cancel it from outside once ``started`` is set: whether the
    scope caught its own cancellation, and what ``run`` returned (nothing, if it
    propagated)."""
    returned: list[object] = []
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def cancel_when_started() -> None:
                await started.wait()
                scope.cancel()

            tg.start_soon(cancel_when_started)
            returned.append(await run(body))
    return scope.cancelled_caught, returned


async def misuse(body: Any) -> BaseException:
    """The exception a misused step raised in ``body`` (the run reports it as unexpected)."""
    result = await run(body)
    assert isinstance(result, Err), result
    assert isinstance(result.error, UnexpectedError), result
    return result.error.cause


# ---- all_settled -------------------------------------------------------------------------


async def test_all_settled_collects_every_outcome_in_order_and_the_workflow_goes_on() -> None:
    def boom() -> int:
        raise KeyError("gone")

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        outcomes = await ctx.step.all_settled(
            "fetch", [lambda: Ok(1), lambda: Err(Declined("X")), boom, lambda: "plain"]
        )
        after = await ctx.step("after", lambda: "went on")
        return outcomes, after

    result = await run(body)
    assert isinstance(result, Ok)
    outcomes, after = result.value
    assert after == "went on"
    assert outcomes[:2] == [Ok(1), Err(Declined("X"))]
    assert isinstance(outcomes[2], Err)
    assert isinstance(outcomes[2].error, UnexpectedError)
    assert isinstance(outcomes[2].error.cause, KeyError)
    assert outcomes[3] == Ok("plain")


async def test_all_settled_with_a_mapping_gives_a_dict_and_a_failure_cancels_nobody() -> None:
    failed = anyio.Event()
    finished: list[str] = []

    async def fails_first() -> Result[int, str]:
        failed.set()
        return Err("DOWN")

    async def slow() -> str:
        await failed.wait()  # still running after its sibling failed
        await anyio.lowlevel.checkpoint()
        finished.append("slow")
        return "late but kept"

    async def body(ctx: WorkflowContext[Deps]) -> dict[str, Result[Any, Any]]:
        return await ctx.step.all_settled("both", {"slow": slow, "fails": fails_first})

    assert await run(body) == Ok({"slow": Ok("late but kept"), "fails": Err("DOWN")})
    assert finished == ["slow"]


async def test_all_settled_is_one_step_in_events_and_replays_by_key() -> None:
    seen: list[events.WorkflowEvent] = []
    calls: list[int] = []

    def child(n: int) -> Result[int, str]:
        calls.append(n)
        return Ok(n) if n else Err("ZERO")

    async def body(ctx: WorkflowContext[Deps]) -> list[Result[int, Any]]:
        first = await ctx.step.all_settled("g", [lambda: child(0), lambda: child(1)], key="g")
        again = await ctx.step.all_settled("g", [lambda: child(0), lambda: child(1)], key="g")
        assert again == first
        return first

    assert await run(body, on_event=seen.append) == Ok([Err("ZERO"), Ok(1)])
    assert sorted(calls) == [0, 1]  # the second call was answered from the key's record
    assert types(seen) == [
        ("workflow_start", None),
        ("step_start", "g"),
        ("step_complete", "g"),
        ("step_start", "g"),
        ("step_complete", "g"),
        ("workflow_complete", None),
    ]


async def test_all_settled_timeout_ends_the_workflow_and_cancels_the_children() -> None:
    cleaned: list[str] = []

    async def hangs() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cleaned.append("hangs")

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.all_settled("g", [hangs, lambda: 1], timeout=0.01)

    assert await run(body) == Err(StepTimeoutError("g", 0.01))
    assert cleaned == ["hangs"]


async def test_all_settled_outside_cancellation_propagates() -> None:
    started = anyio.Event()
    cleaned: list[str] = []

    async def child() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cleaned.append("child")

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.all_settled("g", [child, child])

    caught, returned = await cancelled_from_outside(body, started)
    assert caught
    assert returned == []
    assert cleaned == ["child", "child"]


async def test_all_settled_rejects_what_is_not_callables() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.all_settled("g", [lambda: 1, "nope"])  # type: ignore[list-item]

    raised = await misuse(body)
    assert isinstance(raised, TypeError)
    assert re.search("step 'g': fn must be a zero-argument callable", str(raised))


# ---- any ---------------------------------------------------------------------------------


async def test_any_gives_the_first_success_and_cancels_the_rest() -> None:
    failed = anyio.Event()
    cancelled: list[str] = []

    async def fails_fast() -> Result[str, str]:
        failed.set()
        return Err("MIRROR_DOWN")

    async def succeeds_after_a_failure() -> str:
        await failed.wait()
        return "from the second mirror"

    async def never_answers() -> str:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append("never_answers")
            raise
        return "unreachable"

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.step.any("download", [fails_fast, never_answers, succeeds_after_a_failure])

    with anyio.fail_after(5):
        assert await run(body) == Ok("from the second mirror")
    assert cancelled == ["never_answers"]


async def test_any_all_failed_lists_every_error_in_child_order() -> None:
    # The children fail in the reverse of their order; the errors keep the child order.
    second_done = anyio.Event()
    third_done = anyio.Event()
    seen: list[events.WorkflowEvent] = []

    async def first() -> Result[int, str]:
        await second_done.wait()
        return Err("FIRST")

    async def second() -> int:
        await third_done.wait()
        try:
            raise ConnectionError("refused")
        finally:
            second_done.set()

    async def third() -> Result[int, Declined]:
        third_done.set()
        return Err(Declined("THIRD"))

    async def body(ctx: WorkflowContext[Deps]) -> int:
        return await ctx.step.any("pick", [first, second, third])

    result = await run(body, on_event=seen.append)
    assert isinstance(result, Err)
    error = result.error
    assert isinstance(error, AllFailedError)
    assert error.step == "pick"
    assert error.errors[0] == "FIRST"
    assert isinstance(error.errors[1], UnexpectedError)
    assert isinstance(error.errors[1].cause, ConnectionError)
    assert error.errors[2] == Declined("THIRD")
    assert str(error) == "every child of step 'pick' failed (3 errors)"
    assert types(seen)[-2:] == [("step_error", "pick"), ("workflow_error", None)]


async def test_any_outside_cancellation_propagates() -> None:
    started = anyio.Event()

    async def child() -> int:
        started.set()
        await anyio.sleep_forever()
        return 1

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.any("pick", [child, child])

    caught, returned = await cancelled_from_outside(body, started)
    assert caught
    assert returned == []


async def test_any_rejects_empty_mappings_and_non_callables() -> None:
    async def empty(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.any("pick", [])

    async def mapping(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.any("pick", {"a": lambda: 1})  # type: ignore[call-overload]

    async def not_callable(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.any("pick", [lambda: 1, 2])  # type: ignore[list-item]

    raised = await misuse(empty)
    assert isinstance(raised, ValueError)
    assert re.search("step 'pick': any needs at least one child", str(raised))
    raised = await misuse(mapping)
    assert isinstance(raised, TypeError)
    assert re.search("step 'pick': any takes a list of callables", str(raised))
    raised = await misuse(not_callable)
    assert isinstance(raised, TypeError)
    assert re.search("step 'pick': fn must be a zero-argument callable", str(raised))


# ---- with_fallback -----------------------------------------------------------------------


async def test_fallback_on_a_raised_exception_of_the_chosen_class() -> None:
    seen: list[events.WorkflowEvent] = []

    def live_rates() -> dict[str, float]:
        raise ConnectionError("rates service down")

    async def body(ctx: WorkflowContext[Deps]) -> dict[str, float]:
        return await ctx.step.with_fallback(
            "rates", live_rates, lambda: {"EUR": 1.0}, on=ConnectionError
        )

    assert await run(body, on_event=seen.append) == Ok({"EUR": 1.0})
    assert types(seen) == [
        ("workflow_start", None),
        ("step_start", "rates"),
        ("step_fallback", "rates"),
        ("step_complete", "rates"),
        ("workflow_complete", None),
    ]
    (fell_back,) = [e for e in seen if isinstance(e, events.StepFallback)]
    assert isinstance(fell_back.error, ConnectionError)  # what on= matched


async def test_fallback_on_an_err_value_a_tuple_and_a_predicate() -> None:
    async def declined() -> Result[str, Declined]:
        return Err(Declined("LIMIT"))

    async def body(ctx: WorkflowContext[Deps]) -> list[str]:
        by_class = await ctx.step.with_fallback("a", declined, lambda: "card 2", on=Declined)
        by_tuple = await ctx.step.with_fallback(
            "b", declined, lambda: Ok("card 3"), on=(KeyError, Declined)
        )
        by_predicate = await ctx.step.with_fallback(
            "c",
            declined,
            lambda: "card 4",
            on=lambda failure: isinstance(failure, Declined) and failure.code == "LIMIT",
        )
        return [by_class, by_tuple, by_predicate]

    assert await run(body) == Ok(["card 2", "card 3", "card 4"])


async def test_other_errors_end_the_workflow_and_the_fallback_is_not_called() -> None:
    fallbacks: list[str] = []

    def fallback() -> str:
        fallbacks.append("called")
        return "unused"

    def raises() -> str:
        raise ValueError("bad data")

    async def err_body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.step.with_fallback(
            "a", lambda: Err(Declined("FRAUD")), fallback, on=ConnectionError
        )

    async def raise_body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.step.with_fallback("a", raises, fallback, on=ConnectionError)

    async def predicate_says_no(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.step.with_fallback(
            "a", lambda: Err("NOPE"), fallback, on=lambda failure: failure == "OTHER"
        )

    assert await run(err_body) == Err(Declined("FRAUD"))
    result = await run(raise_body)
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    assert isinstance(result.error.cause, ValueError)
    assert await run(predicate_says_no) == Err("NOPE")
    assert fallbacks == []


async def test_fallback_matches_the_cause_of_a_nested_retry_steps_failure() -> None:
    clock = FakeClock()
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        raise ConnectionError("timeout")

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.step.with_fallback(
            "quote",
            lambda: ctx.step.retry("quote_live", flaky, attempts=3, delay=1.0),
            lambda: "cached quote",
            on=ConnectionError,
        )

    seen: list[events.WorkflowEvent] = []
    workflow = create_workflow("quotes", clock=clock, on_event=seen.append)
    assert await workflow.run(body) == Ok("cached quote")
    assert len(attempts) == 3
    assert clock.sleeps == [1.0, 2.0]
    assert ("step_error", "quote_live") in types(seen)
    assert types(seen)[-2:] == [("step_complete", "quote"), ("workflow_complete", None)]


async def test_fallback_on_timeout_cancels_the_slow_primary() -> None:
    cleaned: list[str] = []
    seen: list[events.WorkflowEvent] = []

    async def slow() -> str:
        try:
            await anyio.sleep_forever()
        finally:
            cleaned.append("slow")
        return "unreachable"

    async def fallback() -> str:
        await anyio.sleep(0.02)  # longer than the timeout: the fallback is not under it
        return "stale copy"

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.step.with_fallback(
            "read", slow, fallback, on=StepTimeoutError, timeout=0.01
        )

    assert await run(body, on_event=seen.append) == Ok("stale copy")
    assert cleaned == ["slow"]
    timeouts = [e for e in seen if isinstance(e, events.StepTimeout)]
    assert [(e.name, e.seconds) for e in timeouts] == [("read", 0.01)]

    async def no_fallback_on_timeout(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.step.with_fallback("read", slow, fallback, on=KeyError, timeout=0.01)

    assert await run(no_fallback_on_timeout) == Err(StepTimeoutError("read", 0.01))


async def test_a_failing_fallback_ends_the_workflow_with_its_error() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.step.with_fallback(
            "a", lambda: Err("PRIMARY"), lambda: Err("FALLBACK"), on=lambda _: True
        )

    assert await run(body) == Err("FALLBACK")


async def test_fallback_outside_cancellation_propagates_and_skips_the_fallback() -> None:
    started = anyio.Event()
    fallbacks: list[str] = []

    async def primary() -> str:
        started.set()
        await anyio.sleep_forever()
        return "unreachable"

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.step.with_fallback(
            "a", primary, lambda: fallbacks.append("x") or "y", on=lambda _: True, timeout=30
        )

    caught, returned = await cancelled_from_outside(body, started)
    assert caught
    assert returned == []
    assert fallbacks == []


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"on": 3}, TypeError, "on must be an error class, a non-empty tuple"),
        ({"on": ()}, TypeError, "on must be an error class, a non-empty tuple"),
        ({"on": (KeyError, "x")}, TypeError, "on must be an error class"),
        ({"on": KeyError, "fallback": "x"}, TypeError, "fallback must be a zero-argument"),
        ({"on": KeyError, "timeout": 0}, ValueError, "timeout"),
        ({"on": KeyError, "timeout": "soon"}, TypeError, "timeout"),
    ],
)
async def test_fallback_bad_options_are_named(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    options = {"fallback": lambda: 2, **kwargs}

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.with_fallback("a", lambda: 1, **options)

    raised = await misuse(body)
    assert isinstance(raised, error)
    assert re.search(f"step 'a'.*{message}", str(raised))


# ---- with_timeout(on_timeout=...) --------------------------------------------------------


async def test_on_timeout_none_gives_none_and_the_workflow_goes_on() -> None:
    seen: list[events.WorkflowEvent] = []
    cleaned: list[str] = []

    async def slow() -> str:
        try:
            await anyio.sleep_forever()
        finally:
            cleaned.append("slow")
        return "unreachable"

    async def body(ctx: WorkflowContext[Deps]) -> tuple[str | None, str]:
        maybe = await ctx.step.with_timeout("enrich", slow, seconds=0.01, on_timeout=None)
        after = await ctx.step("after", lambda: "went on")
        return maybe, after

    assert await run(body, on_event=seen.append) == Ok((None, "went on"))
    assert cleaned == ["slow"]
    assert types(seen)[:4] == [
        ("workflow_start", None),
        ("step_start", "enrich"),
        ("step_timeout", "enrich"),
        ("step_complete", "enrich"),
    ]


async def test_on_timeout_error_ends_the_workflow_with_that_error() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.step.with_timeout(
            "quote", anyio.sleep_forever, seconds=0.01, on_timeout=Declined("TOO_SLOW")
        )

    async def given_err(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.step.with_timeout(
            "quote", anyio.sleep_forever, seconds=0.01, on_timeout=Err("SLOW")
        )

    assert await run(body) == Err(Declined("TOO_SLOW"))
    assert await run(given_err) == Err("SLOW")


async def test_on_timeout_leaves_fast_results_and_errors_alone() -> None:
    async def fast(ctx: WorkflowContext[Deps]) -> int | None:
        return await ctx.step.with_timeout("a", lambda: Ok(5), seconds=30, on_timeout=None)

    async def failing(ctx: WorkflowContext[Deps]) -> int | None:
        return await ctx.step.with_timeout(
            "a", lambda: Err("OWN_ERROR"), seconds=30, on_timeout=None
        )

    assert await run(fast) == Ok(5)
    assert await run(failing) == Err("OWN_ERROR")


async def test_on_timeout_none_is_recorded_under_the_key() -> None:
    calls: list[int] = []

    async def slow() -> str:
        calls.append(1)
        await anyio.sleep_forever()
        return "unreachable"

    async def body(ctx: WorkflowContext[Deps]) -> list[str | None]:
        first = await ctx.step.with_timeout("a", slow, seconds=0.01, on_timeout=None, key="a")
        again = await ctx.step.with_timeout("a", slow, seconds=0.01, on_timeout=None, key="a")
        return [first, again]

    assert await run(body) == Ok([None, None])
    assert calls == [1]


async def test_on_timeout_does_not_turn_outside_cancellation_into_a_value() -> None:
    started = anyio.Event()

    async def slow() -> str:
        started.set()
        await anyio.sleep_forever()
        return "unreachable"

    async def body(ctx: WorkflowContext[Deps]) -> str | None:
        return await ctx.step.with_timeout("a", slow, seconds=30, on_timeout=None)

    caught, returned = await cancelled_from_outside(body, started)
    assert caught
    assert returned == []


async def test_on_timeout_refuses_an_ok() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> int:
        return await ctx.step.with_timeout("a", lambda: 1, seconds=1, on_timeout=Ok(0))

    raised = await misuse(body)
    assert isinstance(raised, TypeError)
    assert re.search("step 'a': on_timeout must be None or an error value", str(raised))


# ---- for_each batches --------------------------------------------------------------------


async def test_batches_run_one_after_another_with_pause_progress_and_events() -> None:
    clock = FakeClock()
    seen: list[events.WorkflowEvent] = []
    progress: list[tuple[int, int]] = []
    running = 0
    peak = 0
    order: list[str] = []

    async def resize(image: int) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        order.append(f"start {image}")
        await anyio.lowlevel.checkpoint()
        running -= 1
        return f"{image}@2x"

    async def body(ctx: WorkflowContext[Deps]) -> list[str]:
        return await ctx.step.for_each(
            "resize",
            range(7),
            resize,
            batch_size=3,
            concurrency=2,
            pause=5.0,
            on_progress=lambda done, total: progress.append((done, total)),
        )

    workflow = create_workflow("images", clock=clock, on_event=seen.append)
    assert await workflow.run(body) == Ok([f"{n}@2x" for n in range(7)])
    assert progress == [(3, 7), (6, 7), (7, 7)]
    assert clock.sleeps == [5.0, 5.0]  # between batches, not before the first
    assert peak == 2
    # A batch starts only once the previous one finished.
    starts = [int(entry.split()[1]) for entry in order]
    assert sorted(starts[:3]) == [0, 1, 2]
    assert sorted(starts[3:6]) == [3, 4, 5]
    assert [e.name for e in seen if isinstance(e, events.StepComplete)] == [
        "resize/batch-0",
        "resize/batch-1",
        "resize/batch-2",
        "resize",
    ]
    batch_events = [e for e in seen if isinstance(e, events.BatchProgress)]
    assert [(e.type, e.name, e.done, e.total, e.batch) for e in batch_events] == [
        ("batch_progress", "resize", 3, 7, 0),
        ("batch_progress", "resize", 6, 7, 1),
        ("batch_progress", "resize", 7, 7, 2),
    ]
    assert all(e.workflow_name == "images" for e in batch_events)


async def test_an_async_progress_callback_is_awaited_and_an_err_stops_later_batches() -> None:
    progress: list[int] = []
    called: list[int] = []

    async def report(done: int, total: int) -> None:
        await anyio.lowlevel.checkpoint()
        progress.append(done)

    def check(n: int) -> Result[int, str]:
        called.append(n)
        return Err(f"BAD {n}") if n == 3 else Ok(n)

    async def body(ctx: WorkflowContext[Deps]) -> list[int]:
        return await ctx.step.for_each("check", range(6), check, batch_size=2, on_progress=report)

    assert await run(body) == Err("BAD 3")
    assert progress == [2]
    assert called == [0, 1, 2, 3]


async def test_a_progress_callback_that_raises_ends_the_workflow() -> None:
    def broken_progress(done: int, total: int) -> None:
        raise RuntimeError("progress bar crashed")

    executed: list[int] = []

    async def body(ctx: WorkflowContext[Deps]) -> list[int]:
        return await ctx.step.for_each(
            "w", range(4), executed.append, batch_size=2, on_progress=broken_progress
        )

    result = await run(body)
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    assert str(result.error.cause) == "progress bar crashed"
    assert executed == [0, 1]  # stopped after the first batch


async def test_empty_items_with_batches_give_an_empty_list() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> list[int]:
        return await ctx.step.for_each("none", [], lambda n: n, batch_size=2)

    assert await run(body) == Ok([])


async def test_a_batched_for_each_outside_cancellation_propagates() -> None:
    started = anyio.Event()

    async def work(n: int) -> int:
        started.set()
        await anyio.sleep_forever()
        return n

    async def body(ctx: WorkflowContext[Deps]) -> list[int]:
        return await ctx.step.for_each("w", range(4), work, batch_size=2, concurrency=2)

    caught, returned = await cancelled_from_outside(body, started)
    assert caught
    assert returned == []


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"batch_size": 0}, ValueError, "batch_size must be an integer >= 1, not 0"),
        ({"batch_size": True}, ValueError, "batch_size must be an integer >= 1, not True"),
        ({"batch_size": "2"}, ValueError, "batch_size must be an integer >= 1, not '2'"),
        ({"batch_size": 2, "pause": -1}, ValueError, "pause must be a number >= 0, not -1"),
        ({"batch_size": 2, "pause": float("nan")}, ValueError, "pause must be a number >= 0"),
        ({"batch_size": 2, "pause": "1s"}, TypeError, "pause must be a number >= 0, not '1s'"),
        ({"batch_size": 2, "on_progress": 3}, TypeError, "on_progress must be a callable"),
        ({"pause": 1.0}, ValueError, "pause and on_progress need batch_size"),
        ({"on_progress": print}, ValueError, "pause and on_progress need batch_size"),
    ],
)
async def test_bad_batch_options_are_named(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    async def body(ctx: WorkflowContext[Deps]) -> list[int]:
        return await ctx.step.for_each("each", [1], lambda n: n, **kwargs)

    raised = await misuse(body)
    assert isinstance(raised, error)
    assert re.search(f"step 'each': {message}", str(raised))


async def test_batches_resume_from_a_collected_resume_state_without_a_store() -> None:
    executed: list[int] = []
    broken = [True]

    def send(n: int) -> Result[int, str]:
        if n == 3 and broken[0]:
            return Err("DOWN")
        executed.append(n)
        return Ok(n)

    async def body(ctx: WorkflowContext[Deps]) -> list[int]:
        return await ctx.step.for_each("send", range(5), send, batch_size=2, key="send")

    collector = create_resume_state_collector()
    workflow = create_workflow("batches", on_event=collector.handle_event)
    assert await workflow.run(body) == Err("DOWN")
    broken[0] = False
    executed.clear()
    result = await workflow.run(body, resume_state=collector.get_resume_state())
    assert result == Ok([0, 1, 2, 3, 4])
    assert executed == [2, 3, 4]  # batch 0 came from the resume state


# ---- durable resume of batches, on every store --------------------------------------------


async def test_a_resumed_run_restarts_from_the_first_unfinished_batch(
    store: Any, clock: FakeClock
) -> None:
    executed: list[int] = []
    progress: list[tuple[int, int]] = []
    broken = [True]

    def send(n: int) -> Result[str, str]:
        if n == 5 and broken[0]:
            return Err("MAIL_SERVER_DOWN")
        executed.append(n)
        return Ok(f"sent {n}")

    async def body(ctx: WorkflowContext[Deps]) -> list[str]:
        return await ctx.step.for_each(
            "send",
            range(8),
            send,
            batch_size=2,
            concurrency=2,
            pause=60.0,
            on_progress=lambda done, total: progress.append((done, total)),
            key="newsletter",
        )

    workflow = create_workflow("newsletter", clock=clock)
    assert await workflow.run(body, workflow_id="n-1", store=store) == Err("MAIL_SERVER_DOWN")
    assert sorted(executed) == [0, 1, 2, 3, 4]
    assert progress == [(2, 8), (4, 8)]
    assert clock.sleeps == [60.0, 60.0]
    snapshot = await store.load("n-1")
    assert snapshot.steps["newsletter/batch-0"].result == Ok(["sent 0", "sent 1"])
    assert snapshot.steps["newsletter/batch-1"].result == Ok(["sent 2", "sent 3"])
    # One record per batch (the failed one too), none for the for_each itself.
    assert set(snapshot.steps) == {f"newsletter/batch-{n}" for n in range(3)}
    assert snapshot.steps["newsletter/batch-2"].result == Err("MAIL_SERVER_DOWN")

    broken[0] = False
    executed.clear()
    progress.clear()
    clock.sleeps.clear()
    result = await workflow.run(body, workflow_id="n-1", store=store)
    assert result == Ok([f"sent {n}" for n in range(8)])
    assert sorted(executed) == [4, 5, 6, 7]  # batches 0 and 1 were replayed, not executed
    assert progress == [(2, 8), (4, 8), (6, 8), (8, 8)]
    assert clock.sleeps == [60.0]  # no pause before the first batch this run executed


async def test_any_fallback_and_on_timeout_values_are_replayed_by_a_resumed_run(
    store: Any, clock: FakeClock
) -> None:
    calls: list[str] = []
    stop = ["once"]

    async def mirror(name: str, up: bool) -> Result[str, str]:
        calls.append(name)
        return Ok(f"from {name}") if up else Err(f"{name} down")

    def live() -> str:
        calls.append("live")
        raise ConnectionError("refused")

    async def slow() -> str:
        calls.append("slow")
        await anyio.sleep_forever()
        return "unreachable"

    async def body(ctx: WorkflowContext[Deps]) -> list[str | None]:
        fetched = await ctx.step.any(
            "fetch", [lambda: mirror("eu", False), lambda: mirror("us", True)], key="fetch"
        )
        rates = await ctx.step.with_fallback(
            "rates", live, lambda: "cached rates", on=ConnectionError, key="rates"
        )
        extra = await ctx.step.with_timeout(
            "extra", slow, seconds=0.01, on_timeout=None, key="extra"
        )
        if stop:  # the first run stops here
            stop.clear()
            await ctx.step("ship", lambda: Err("WAREHOUSE_DOWN"), key="ship")
        return [fetched, rates, extra]

    workflow = create_workflow("durable-groups", clock=clock)
    assert await workflow.run(body, workflow_id="g-1", store=store) == Err("WAREHOUSE_DOWN")
    assert {"live", "slow", "us"} <= set(calls)  # ("eu" too, unless "us" won first)
    snapshot = await store.load("g-1")
    assert snapshot.steps["fetch"].result == Ok("from us")
    assert snapshot.steps["rates"].result == Ok("cached rates")
    assert snapshot.steps["extra"].result == Ok(None)
    calls.clear()
    result = await workflow.run(body, workflow_id="g-1", store=store)
    assert result == Ok(["from us", "cached rates", None])
    assert calls == []  # every group answered from its record


async def test_all_settled_outcomes_are_stored_and_replayed_by_a_resumed_run(
    store: Any, clock: FakeClock
) -> None:
    calls: list[int] = []
    stop = ["once"]

    def child(n: int) -> Result[int, Declined]:
        calls.append(n)
        return Ok(n) if n else Err(Declined("ZERO"))

    async def body(ctx: WorkflowContext[Deps]) -> list[Result[int, Any]]:
        outcomes = await ctx.step.all_settled(
            "check", [lambda: child(0), lambda: child(1)], key="check"
        )
        if stop:
            stop.clear()
            await ctx.step("ship", lambda: Err("WAREHOUSE_DOWN"), key="ship")
        return outcomes

    register_type(Declined, name="tests.step_groups.Declined")
    workflow = create_workflow("durable-settled", clock=clock)
    assert await workflow.run(body, workflow_id="s-1", store=store) == Err("WAREHOUSE_DOWN")
    calls.clear()
    result = await workflow.run(body, workflow_id="s-1", store=store)
    assert result == Ok([Err(Declined("ZERO")), Ok(1)])
    assert calls == []


async def test_unkeyed_groups_in_a_durable_run(store: Any, clock: FakeClock) -> None:
    # A batched for_each and an all_settled without a key resume under automatic keys:
    # the all_settled's Results are stored with the run, so nothing runs again.
    executed: list[str] = []
    stop = ["once"]

    def send(n: int) -> int:
        executed.append(f"send {n}")
        return n

    def check(n: int) -> Result[int, str]:
        executed.append(f"check {n}")
        return Ok(n) if n else Err("ZERO")

    async def body(ctx: WorkflowContext[Deps]) -> list[Any]:
        sent = await ctx.step.for_each("send", range(4), send, batch_size=2)
        outcomes = await ctx.step.all_settled("check", [lambda: check(0), lambda: check(1)])
        if stop:
            stop.clear()
            await ctx.step("ship", lambda: Err("WAREHOUSE_DOWN"))
        return [sent, [o.ok for o in outcomes]]

    workflow = create_workflow("unkeyed-groups", clock=clock)
    assert await workflow.run(body, workflow_id="u-1", store=store) == Err("WAREHOUSE_DOWN")
    executed.clear()
    result = await workflow.run(body, workflow_id="u-1", store=store)
    assert result == Ok([[0, 1, 2, 3], [False, True]])
    assert executed == []


async def test_all_failed_error_is_stored_with_each_childs_error(
    store: Any, clock: FakeClock
) -> None:
    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.step.any("pick", [lambda: Err("EU_DOWN"), lambda: Err("US_DOWN")])

    workflow = create_workflow("all-failed", clock=clock)
    expected = Err(AllFailedError("pick", ("EU_DOWN", "US_DOWN")))
    assert await workflow.run(body, workflow_id="f-1", store=store) == expected
    snapshot = await store.load("f-1")
    assert snapshot.status == "failed"
    assert snapshot.result == expected  # each child's error, not just a message
