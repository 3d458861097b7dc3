"""Saga compensation: the engine (`awaitly_anyio._saga.Saga`) on its own, then through
``ctx.step(..., compensate=...)`` in plain and durable runs, on every store.

What a user relies on: compensations run newest first, each once, with the value its
step produced; a failing one is retried by its policy and, if it still fails, the run
ends with ``CompensationError`` carrying the original error and every failure; in a
durable run each compensation is recorded, so a rollback interrupted (by a cancel, a
crash) resumes without repeating the finished ones; outside cancellation propagates,
after the compensation that is running has finished under its bounded shield.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import attrs
import pytest

from awaitly_anyio import (
    CompensationError,
    CompensationFailure,
    Deps,
    Err,
    Ok,
    Result,
    RetryPolicy,
    SerializationError,
    StepTimeoutError,
    StoredException,
    StoreError,
    UnexpectedError,
    WorkflowContext,
    create_workflow,
)
from awaitly_anyio._run import RunState, default_map_exception
from awaitly_anyio._saga import (
    ROLLBACK_KEY,
    Compensation,
    Saga,
    check_compensate,
    compensation_key,
    compensations,
    is_saga_key,
    recorded_rollback,
)
from awaitly_anyio.events import (
    CompensationComplete,
    CompensationFailed,
    CompensationStart,
    StepComplete,
    WorkflowEvent,
)
from awaitly_anyio.testing import FakeClock

pytestmark = pytest.mark.anyio


class Recorder:
    """A durable run's checkpoint, kept in memory: every record it was asked to write,
    in order.  ``refuse`` makes values of that type unstorable (as a store would say);
    ``fail_on`` makes the write of that key fail (a store that went away)."""

    def __init__(self, refuse: type | None = None, fail_on: str | None = None) -> None:
        self.records: list[tuple[str, str, Result[Any, Any], int]] = []
        self.refuse = refuse
        self.fail_on = fail_on

    async def __call__(
        self,
        name: str,
        key: str,
        result: Result[Any, Any],
        attempts: int,
        started_at: float,
        type_hint: type | None,
    ) -> Err[Any] | None:
        if (
            self.refuse is not None
            and isinstance(result, Ok)
            and isinstance(result.value, self.refuse)
        ):
            return Err(SerializationError(name, self.refuse.__name__, "it has no JSON form"))
        if key == self.fail_on:
            return Err(StoreError("checkpoint", "run-1", "ConnectionError: gone"))
        self.records.append((name, key, result, attempts))
        return None

    def keys(self) -> list[str]:
        return [key for _, key, _, _ in self.records]


def make_run(
    events: list[WorkflowEvent] | None = None,
    checkpoint: Recorder | None = None,
    completed: Mapping[str, Ok[Any]] | None = None,
    clock: FakeClock | None = None,
) -> RunState:
    return RunState(
        "booking",
        "run-1",
        clock or FakeClock(),
        None if events is None else events.append,
        default_map_exception,
        dict(completed or {}),
        checkpoint,
    )


class Undo:
    """Compensations that append ``(name, value)`` to one shared log."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    def sync(self, name: str) -> Any:
        return lambda value: self.log.append((name, value))

    def async_(self, name: str) -> Any:
        async def undo(value: Any) -> Result[None, Any]:
            await anyio.lowlevel.checkpoint()
            self.log.append((name, value))
            return Ok(None)

        return undo


# ---- the engine -------------------------------------------------------------------------


async def test_compensations_run_newest_first_once_each_with_their_values() -> None:
    undo = Undo()
    saga = Saga()
    saga.push("flight", "flight", undo.sync("flight"), {"seat": "12A"})
    saga.push("hotel", "hotel", undo.async_("hotel"), "room-7")
    saga.push("car", None, undo.sync("car"), 3)
    events: list[WorkflowEvent] = []
    result = await saga.rollback(make_run(events), Err("card declined"))
    assert result == Err("card declined")
    assert undo.log == [("car", 3), ("hotel", "room-7"), ("flight", {"seat": "12A"})]
    assert compensations(events) == ["car", "hotel", "flight"]
    assert [e.type for e in events] == ["compensation_start", "compensation_complete"] * 3
    start, complete = events[0], events[1]
    assert isinstance(start, CompensationStart)
    assert (start.workflow_id, start.workflow_name, start.name, start.step_key) == (
        "run-1",
        "booking",
        "car",
        None,
    )
    assert isinstance(complete, CompensationComplete)
    assert complete.attempt == 1
    assert complete.duration_ms >= 0


async def test_a_step_registered_twice_under_one_key_is_compensated_once() -> None:
    # A keyed step called again is answered from its record: it ran once.
    undo = Undo()
    saga = Saga()
    saga.push("charge", "charge", undo.sync("charge"), 1)
    saga.push("charge", "charge", undo.sync("charge"), 1)
    await saga.rollback(make_run(), Err("boom"))
    assert undo.log == [("charge", 1)]


async def test_a_failing_compensation_is_retried_by_its_policy() -> None:
    calls: list[int] = []

    def flaky(value: int) -> Result[None, str]:
        calls.append(value)
        return Err("busy") if len(calls) < 3 else Ok(None)

    clock = FakeClock()
    saga = Saga()
    saga.push("hotel", "hotel", Compensation(flaky, retry=RetryPolicy(3, delay=1.0)), 7)
    events: list[WorkflowEvent] = []
    result = await saga.rollback(make_run(events, clock=clock), Err("declined"))
    assert result == Err("declined")
    assert calls == [7, 7, 7]
    assert clock.sleeps == [1.0, 2.0]  # the policy's backoff, on the workflow's clock
    done = events[-1]
    assert isinstance(done, CompensationComplete)
    assert done.attempt == 3


async def test_a_compensation_that_still_fails_is_reported_and_the_older_ones_still_run() -> None:
    undo = Undo()

    def broken(value: object) -> None:
        raise ConnectionError("hotel API down")

    saga = Saga()
    saga.push("flight", "flight", undo.sync("flight"), "F1")
    saga.push("hotel", "hotel", Compensation(broken, retry=RetryPolicy(2, delay=0)), "H1")
    saga.push("seat", "seat", lambda _: Err("seat locked"), "S1")
    events: list[WorkflowEvent] = []
    result = await saga.rollback(make_run(events), Err("card declined"))
    assert undo.log == [("flight", "F1")]  # the older step is compensated all the same
    assert isinstance(result, Err)
    error = result.error
    assert isinstance(error, CompensationError)
    assert error.original == "card declined"
    seat, hotel = error.failures
    assert seat == CompensationFailure("seat", "seat", "seat locked", 1)
    assert (hotel.name, hotel.step_key, hotel.attempts) == ("hotel", "hotel", 2)
    assert isinstance(hotel.error, UnexpectedError)
    assert isinstance(hotel.error.cause, ConnectionError)
    assert "'hotel'" in str(error)
    assert "card declined" in str(error)
    failed = [e for e in events if isinstance(e, CompensationFailed)]
    assert [(e.name, e.attempt) for e in failed] == [("seat", 1), ("hotel", 2)]
    assert failed[1].error == hotel.error
    assert compensations(events) == ["flight"]


async def test_a_compensation_attempt_has_the_policys_timeout() -> None:
    async def stuck(value: object) -> None:
        await anyio.sleep_forever()

    saga = Saga()
    saga.push("hotel", "hotel", Compensation(stuck, retry=RetryPolicy(2, timeout=0.01)), 1)
    result = await saga.rollback(make_run(), Err("x"))
    assert isinstance(result, Err)
    [failure] = result.error.failures
    assert failure.error == StepTimeoutError("hotel", 0.01)
    assert failure.attempts == 2


# ---- records (durable runs) ---------------------------------------------------------------


async def test_a_durable_rollback_records_its_start_then_each_compensation() -> None:
    undo = Undo()
    saga = Saga()
    saga.push("flight", "flight", undo.sync("flight"), "F1")
    saga.push("hotel", "hotel", undo.sync("hotel"), "H1")
    saga.push("cheap", None, undo.sync("cheap"), 0)  # no key: nothing to record it under
    recorder = Recorder()
    run = make_run(checkpoint=recorder)
    assert await saga.rollback(run, Err("declined")) == Err("declined")
    assert recorder.keys() == [ROLLBACK_KEY, compensation_key("hotel"), compensation_key("flight")]
    assert recorder.records[0][2] == Ok("declined")  # the original error, to resume with
    assert recorded_rollback(run.completed) == Err("declined")
    assert is_saga_key(ROLLBACK_KEY)
    assert is_saga_key(compensation_key("hotel"))
    assert not is_saga_key("hotel")


async def test_a_resumed_rollback_skips_recorded_compensations_and_keeps_the_original() -> None:
    undo = Undo()
    saga = Saga()  # the body replayed its steps: the compensations are registered again
    saga.push("flight", "flight", undo.sync("flight"), "F1")
    saga.push("hotel", "hotel", undo.sync("hotel"), "H1")
    saga.push("car", "car", undo.sync("car"), "C1")
    recorder = Recorder()
    completed = {
        "flight": Ok("F1"),
        "hotel": Ok("H1"),
        "car": Ok("C1"),
        ROLLBACK_KEY: Ok("card declined"),
        compensation_key("car"): Ok(None),
    }
    run = make_run(checkpoint=recorder, completed=completed)
    error = recorded_rollback(run.completed)
    assert error == Err("card declined")
    result = await saga.rollback(run, Err("something else"))
    assert result == Err("card declined")
    assert undo.log == [("hotel", "H1"), ("flight", "F1")]
    assert recorder.keys() == [compensation_key("hotel"), compensation_key("flight")]


@attrs.define
class Opaque:
    """An error value the store cannot keep."""

    detail: str


async def test_an_error_with_no_stored_form_is_recorded_as_a_stand_in() -> None:
    saga = Saga()
    saga.push("flight", "flight", lambda _: None, "F1")
    recorder = Recorder(refuse=Opaque)
    run = make_run(checkpoint=recorder)
    result = await saga.rollback(run, Err(Opaque("no seats")))
    assert result == Err(Opaque("no seats"))  # this run still returns the real error
    stand_in = recorded_rollback(run.completed)
    assert stand_in is not None
    assert isinstance(stand_in.error, StoredException)
    assert stand_in.error.type_name.endswith("Opaque")
    assert "no seats" in stand_in.error.message


async def test_a_failed_compensation_is_recorded_as_a_failure_and_retried_on_resume() -> None:
    saga = Saga()
    saga.push("hotel", "hotel", lambda _: Err("busy"), "H1")
    recorder = Recorder()
    run = make_run(checkpoint=recorder)
    await saga.rollback(run, Err("declined"))
    _, key, record, _ = recorder.records[-1]
    assert (key, record) == (compensation_key("hotel"), Err("busy"))
    assert compensation_key("hotel") not in run.completed  # not done: a resume retries it


async def test_a_store_failure_stops_the_rollback_and_says_what_was_not_run() -> None:
    undo = Undo()
    saga = Saga()
    saga.push("flight", "flight", undo.sync("flight"), "F1")
    saga.push("hotel", "hotel", undo.sync("hotel"), "H1")
    recorder = Recorder(fail_on=compensation_key("hotel"))
    result = await saga.rollback(make_run(checkpoint=recorder), Err("declined"))
    assert undo.log == [("hotel", "H1")]  # ran, but its record could not be kept
    assert isinstance(result, Err)
    hotel, flight = result.error.failures
    assert isinstance(hotel.error, StoreError)
    assert hotel.attempts == 1
    assert (flight.name, flight.attempts) == ("flight", 0)  # not run
    assert flight.error == hotel.error


async def test_without_the_rollback_record_nothing_is_compensated() -> None:
    undo = Undo()
    saga = Saga()
    saga.push("flight", "flight", undo.sync("flight"), "F1")
    recorder = Recorder(fail_on=ROLLBACK_KEY)
    result = await saga.rollback(make_run(checkpoint=recorder), Err("declined"))
    assert undo.log == []
    assert isinstance(result, Err)
    assert result.error.original == "declined"
    [flight] = result.error.failures
    assert flight.attempts == 0
    assert isinstance(flight.error, StoreError)


# ---- cancellation ---------------------------------------------------------------------------


async def test_cancel_during_a_compensation_lets_it_finish_and_be_recorded_then_propagates() -> (
    None
):
    undo = Undo()
    started = anyio.Event()
    release = anyio.Event()

    async def slow_hotel(value: str) -> None:
        started.set()
        await release.wait()  # cancellation from outside does not reach it (shielded)
        undo.log.append(("hotel", value))

    saga = Saga()
    saga.push("flight", "flight", undo.sync("flight"), "F1")
    saga.push("hotel", "hotel", slow_hotel, "H1")
    recorder = Recorder()
    run = make_run(checkpoint=recorder)
    outcome: list[object] = []
    scope = anyio.CancelScope()

    async def roll_back() -> None:
        with scope:
            outcome.append(await saga.rollback(run, Err("declined")))

    async with anyio.create_task_group() as tg:
        tg.start_soon(roll_back)
        await started.wait()
        scope.cancel()
        for _ in range(5):  # the cancellation reaches everything it can reach
            await anyio.lowlevel.checkpoint()
        assert undo.log == []  # the compensation is still running, shielded
        release.set()
    assert outcome == []  # the cancellation propagated out of the rollback
    assert scope.cancelled_caught
    assert undo.log == [("hotel", "H1")]  # finished, and the older one never started
    assert recorder.keys() == [ROLLBACK_KEY, compensation_key("hotel")]

    # The run resumed: only what is left runs.
    resumed = make_run(checkpoint=recorder, completed=run.completed)
    again = Saga()
    again.push("flight", "flight", undo.sync("flight"), "F1")
    again.push("hotel", "hotel", slow_hotel, "H1")
    assert await again.rollback(resumed, Err("declined")) == Err("declined")
    assert undo.log == [("hotel", "H1"), ("flight", "F1")]


async def test_a_compensation_past_its_shield_is_cut_off_unrecorded() -> None:
    async def stuck(value: object) -> None:
        await anyio.sleep_forever()

    saga = Saga()
    saga.push("hotel", "hotel", Compensation(stuck, shield=0.01), "H1")
    recorder = Recorder()
    events: list[WorkflowEvent] = []
    with anyio.CancelScope() as scope:
        scope.cancel()  # cancelled before the rollback: nothing starts
        await saga.rollback(make_run(events, checkpoint=recorder), Err("x"))
    assert events == []
    run = make_run(events, checkpoint=recorder)
    with anyio.CancelScope() as scope:

        async def cancel_soon() -> None:
            await anyio.lowlevel.checkpoint()
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_soon)
            await saga.rollback(run, Err("x"))
    assert scope.cancelled_caught
    failed = events[-1]
    assert isinstance(failed, CompensationFailed)
    assert isinstance(failed.error, TimeoutError)
    assert "shield of 0.01s" in str(failed.error)
    assert compensation_key("hotel") not in [key for _, key, _, _ in recorder.records]


# ---- bad input ---------------------------------------------------------------------------------


def test_a_compensate_that_is_not_callable_is_refused_naming_the_step() -> None:
    with pytest.raises(TypeError, match=r"step 'hotel': compensate must be a callable.*42"):
        check_compensate("hotel", 42)
    fn = check_compensate("hotel", print)
    assert fn is print
    option = Compensation(print)
    assert check_compensate("hotel", option) is option


def test_compensation_options_are_checked() -> None:
    with pytest.raises(TypeError, match=r"Compensation fn must be a callable.*'undo'"):
        Compensation("undo")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Compensation retry must be a RetryPolicy, not 3"):
        Compensation(print, retry=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Compensation shield must be .* > 0, not -1"):
        Compensation(print, shield=-1)
    with pytest.raises(TypeError, match="Compensation shield must be"):
        Compensation(print, shield="5")  # type: ignore[arg-type]
    assert Compensation(print).shield == 5.0


# ---- OpenTelemetry ------------------------------------------------------------------------------


async def test_each_compensation_is_a_span_under_the_runs_span() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    from awaitly_anyio.events import WorkflowFailed, WorkflowStart
    from awaitly_anyio.otel import create_otel_adapter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    adapter = create_otel_adapter("booking-service", tracer_provider=provider)
    tracer = provider.get_tracer("test")
    inner: list[Any] = []

    def release_flight(value: str) -> None:
        # Spans opened inside a compensation are its children.
        with tracer.start_as_current_span("airline.release") as span:
            inner.append(span)

    saga = Saga()
    saga.push("flight", "flight", release_flight, "F1")
    saga.push("hotel", "hotel", lambda _: Err("hotel API down"), "H1")
    clock = FakeClock()
    run = RunState("booking", "run-1", clock, adapter.handle_event, default_map_exception, {}, None)
    adapter.handle_event(WorkflowStart(workflow_id="run-1", workflow_name="booking", ts=1.0))
    result = await saga.rollback(run, Err("card declined"))
    adapter.handle_event(
        WorkflowFailed(
            workflow_id="run-1",
            workflow_name="booking",
            ts=2.0,
            duration_ms=1000.0,
            error=result.error,
        )
    )
    provider.shutdown()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    run_span = spans["workflow booking"]
    hotel, flight = spans["compensation hotel"], spans["compensation flight"]
    for span in (hotel, flight):
        assert span.parent is not None
        assert span.parent.span_id == run_span.context.span_id
        assert span.attributes is not None
        assert span.attributes["compensation"] is True
    assert hotel.attributes is not None
    assert flight.attributes is not None
    assert (hotel.attributes["step.name"], hotel.attributes["step.key"]) == ("hotel", "hotel")
    assert hotel.attributes["compensation.outcome"] == "error"
    assert hotel.status.status_code is StatusCode.ERROR
    assert "hotel API down" in (hotel.status.description or "")
    assert flight.attributes["compensation.outcome"] == "ok"
    assert flight.attributes["compensation.attempt"] == 1
    assert flight.status.status_code is not StatusCode.ERROR
    released = spans["airline.release"]
    assert released.parent is not None
    assert released.parent.span_id == flight.context.span_id


# ---- through ctx.step(..., compensate=...) ---------------------------------------------------


class Trip:
    """A booking body whose charge fails; its compensations log what they release."""

    def __init__(self, *, charge: Any = None) -> None:
        self.released: list[str] = []
        self.calls: list[str] = []
        self.charge = charge if charge is not None else (lambda: Err("card declined"))
        self.hotel_undo: Any = self.release

    def release(self, booking: str) -> None:
        self.released.append(booking)

    async def body(self, ctx: WorkflowContext[Deps]) -> str:
        def reserve(what: str) -> str:
            self.calls.append(what)
            return f"{what}-1"

        flight = await ctx.step(
            "flight", lambda: reserve("flight"), key="flight", compensate=self.release
        )
        hotel = await ctx.step(
            "hotel", lambda: reserve("hotel"), key="hotel", compensate=self.hotel_undo
        )
        self.calls.append("charge")
        await ctx.step("charge", self.charge, key="charge")
        return f"{flight} {hotel}"


async def test_a_failed_run_compensates_its_completed_steps() -> None:
    trip = Trip()
    seen: list[WorkflowEvent] = []
    result = await create_workflow("trip", on_event=seen.append).run(trip.body)
    assert result == Err("card declined")
    assert trip.released == ["hotel-1", "flight-1"]
    assert compensations(seen) == ["hotel", "flight"]
    # The compensations come after the failed step and before the run's end.
    types = [e.type for e in seen]
    assert types.index("step_error") < types.index("compensation_start")
    assert types[-1] == "workflow_error"


async def test_an_unexpected_exception_rolls_back_too_and_success_does_not() -> None:
    def explode() -> None:
        raise RuntimeError("payment gateway bug")

    trip = Trip(charge=explode)
    result = await create_workflow("trip").run(trip.body)
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    assert trip.released == ["hotel-1", "flight-1"]
    paid = Trip(charge=lambda: "receipt")
    assert await create_workflow("trip").run(paid.body) == Ok("flight-1 hotel-1")
    assert paid.released == []


async def test_a_cancelled_run_does_not_compensate() -> None:
    async def never() -> None:
        await anyio.sleep_forever()

    trip = Trip(charge=never)
    with anyio.move_on_after(0.01) as scope:
        await create_workflow("trip").run(trip.body)
    assert scope.cancelled_caught
    assert trip.released == []  # cancellation is not failure


async def test_a_compensation_that_fails_ends_the_run_with_compensation_error() -> None:
    trip = Trip()
    trip.hotel_undo = Compensation(lambda _: Err("hotel API down"), retry=RetryPolicy(2, delay=0))
    result = await create_workflow("trip").run(trip.body)
    assert isinstance(result, Err)
    error = result.error
    assert isinstance(error, CompensationError)
    assert error.original == "card declined"
    assert error.failures == (CompensationFailure("hotel", "hotel", "hotel API down", 2),)
    assert trip.released == ["flight-1"]  # the older step was compensated all the same


async def test_a_compensate_that_is_not_callable_fails_the_step_naming_it() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> None:
        await ctx.step("hotel", lambda: 1, compensate=42)  # type: ignore[call-overload]

    result = await create_workflow("trip").run(body)
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    cause = result.error.cause
    assert isinstance(cause, TypeError)
    assert "step 'hotel': compensate must be a callable" in str(cause)


async def test_a_durable_rollback_is_recorded_and_never_repeated(store: Any) -> None:
    trip = Trip()
    workflow = create_workflow("trip")
    result = await workflow.run(trip.body, workflow_id="trip-1", store=store)
    assert result == Err("card declined")
    saved = await store.load("trip-1")
    assert saved is not None
    assert saved.status == "failed"
    assert saved.steps[ROLLBACK_KEY].result == Ok("card declined")
    assert saved.steps[compensation_key("hotel")].result == Ok(None)
    assert saved.steps[compensation_key("flight")].result == Ok(None)
    # Run again: the rollback is on record, the body is not executed, nothing is undone twice.
    again = await workflow.run(trip.body, workflow_id="trip-1", store=store)
    assert again == Err("card declined")
    assert trip.released == ["hotel-1", "flight-1"]
    assert trip.calls.count("flight") == 1
    assert trip.calls.count("hotel") == 1


async def cancel_mid_compensation(
    workflow: Any,
    body: Any,
    run_id: str,
    store: Any,
    started: anyio.Event,
    release: anyio.Event,
) -> anyio.CancelScope:
    """Run ``body`` as ``run_id`` and cancel it from outside once a compensation has
    begun (``started`` is set); let the cancellation reach everything it can, then
    ``release`` the (shielded) compensation.  The scope, to check what it caught."""
    scope = anyio.CancelScope()

    async def first_attempt() -> None:
        with scope:
            await workflow.run(body, workflow_id=run_id, store=store)

    async with anyio.create_task_group() as tg:
        tg.start_soon(first_attempt)
        await started.wait()
        scope.cancel()
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        release.set()
    return scope


async def test_a_rollback_cancelled_mid_way_resumes_without_repeating(store: Any) -> None:
    trip = Trip()
    started = anyio.Event()
    release = anyio.Event()
    charges: list[int] = []

    def charge() -> Any:
        charges.append(1)
        return Err("card declined")

    async def slow_hotel(booking: str) -> None:
        started.set()
        await release.wait()
        trip.released.append(booking)

    trip.charge = charge
    trip.hotel_undo = slow_hotel
    workflow = create_workflow("trip")
    scope = await cancel_mid_compensation(workflow, trip.body, "trip-2", store, started, release)
    assert scope.cancelled_caught
    assert trip.released == ["hotel-1"]  # finished under its shield; flight's never began
    saved = await store.load("trip-2")
    assert saved is not None
    assert saved.status == "cancelled"
    assert compensation_key("hotel") in saved.steps

    seen: list[WorkflowEvent] = []
    resumed = await create_workflow("trip", on_event=seen.append).run(
        trip.body, workflow_id="trip-2", store=store
    )
    assert resumed == Err("card declined")
    assert trip.released == ["hotel-1", "flight-1"]
    assert compensations(seen) == ["flight"]
    assert charges == [1]  # the failed step is not executed again
    replayed = [e.name for e in seen if isinstance(e, StepComplete) and e.cached]
    assert replayed == ["flight", "hotel"]


@attrs.define
class Declined:
    """An error type the stores cannot keep (not registered)."""

    reason: str


async def test_an_error_with_no_stored_form_resumes_as_a_stand_in(store: Any) -> None:
    trip = Trip(charge=lambda: Err(Declined("insufficient funds")))
    started = anyio.Event()

    async def stuck(booking: str) -> None:
        started.set()
        await anyio.sleep_forever()

    trip.hotel_undo = Compensation(stuck, shield=0.01)
    workflow = create_workflow("trip")
    with anyio.CancelScope() as scope:

        async def cancel_when_started() -> None:
            await started.wait()
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_when_started)
            await workflow.run(trip.body, workflow_id="trip-3", store=store)
    assert trip.released == []  # cut off at the end of its shield: not recorded
    trip.hotel_undo = trip.release
    result = await workflow.run(trip.body, workflow_id="trip-3", store=store)
    assert isinstance(result, Err)
    assert isinstance(result.error, StoredException)
    assert result.error.type_name.endswith("Declined")
    assert "insufficient funds" in result.error.message
    assert trip.released == ["hotel-1", "flight-1"]


async def test_a_failed_compensation_is_retried_when_the_run_is_run_again(store: Any) -> None:
    trip = Trip()
    down = [True]

    def hotel_api(booking: str) -> Any:
        if down[0]:
            return Err("hotel API down")
        trip.released.append(booking)
        return None

    trip.hotel_undo = hotel_api
    workflow = create_workflow("trip")
    first = await workflow.run(trip.body, workflow_id="trip-4", store=store)
    assert isinstance(first, Err)
    assert isinstance(first.error, CompensationError)
    assert trip.released == ["flight-1"]
    down[0] = False
    second = await workflow.run(trip.body, workflow_id="trip-4", store=store)
    assert second == Err("card declined")
    assert trip.released == ["flight-1", "hotel-1"]


async def test_unkeyed_steps_of_a_durable_run_are_compensated_once_across_a_resume(
    store: Any,
) -> None:
    # Every step of a durable run has a key (an automatic one here), so every
    # compensation is recorded.
    released: list[str] = []
    reserved: list[str] = []
    started = anyio.Event()
    release = anyio.Event()

    async def slow_release(booking: str) -> None:
        started.set()
        await release.wait()
        released.append(booking)

    async def body(ctx: WorkflowContext[Deps]) -> None:
        for what in ("flight", "hotel"):
            undo = slow_release if what == "hotel" else released.append
            await ctx.step(what, lambda what=what: reserved.append(what) or what, compensate=undo)
        await ctx.step("charge", lambda: Err("card declined"))

    workflow = create_workflow("trip")
    scope = await cancel_mid_compensation(workflow, body, "trip-5", store, started, release)
    assert scope.cancelled_caught
    assert released == ["hotel"]
    assert await workflow.run(body, workflow_id="trip-5", store=store) == Err("card declined")
    assert await workflow.run(body, workflow_id="trip-5", store=store) == Err("card declined")
    assert released == ["hotel", "flight"]
    assert reserved == ["flight", "hotel"]


async def test_a_recovered_rollback_finishes_even_if_the_body_no_longer_fails(
    store: Any,
) -> None:
    # The first attempt fails outside any step (a flaky check in the body itself), and
    # its rollback is cancelled after the hotel's compensation.  Resumed, the body
    # replays to its end without failing: the rollback that began must still finish,
    # and the run ends with the original error, not with Ok.
    released: list[str] = []
    started = anyio.Event()
    release = anyio.Event()
    flaky = ["fails once"]

    async def undo_hotel(booking: str) -> None:
        started.set()
        await release.wait()
        released.append(booking)

    async def body(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step("flight", lambda: "flight-1", key="flight", compensate=released.append)
        await ctx.step("hotel", lambda: "hotel-1", key="hotel", compensate=undo_hotel)
        if flaky:
            flaky.clear()
            raise ConnectionError("inventory check failed")
        return "booked"

    workflow = create_workflow("trip")
    scope = await cancel_mid_compensation(workflow, body, "trip-3", store, started, release)
    assert scope.cancelled_caught
    assert released == ["hotel-1"]

    resumed = await workflow.run(body, workflow_id="trip-3", store=store)
    assert isinstance(resumed, Err)
    assert isinstance(resumed.error, UnexpectedError)
    assert released == ["hotel-1", "flight-1"]
