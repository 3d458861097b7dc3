"""The OTel adapter makes the run's and the step's span current for the code they wrap
(real SDK, in-memory exporter, a real httpx instrumentation), retried attempts are
child spans, and a resumed durable run continues the original trace."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("httpx")
pytest.importorskip("opentelemetry.instrumentation.httpx")

import httpx
from opentelemetry import trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from awaitly_anyio import (
    Deps,
    Err,
    Ok,
    ResumeState,
    RetryPolicy,
    WorkflowContext,
    WorkflowRegistry,
    create_workflow,
    recover,
)
from awaitly_anyio.events import TRACE_CONTEXT_KEY
from awaitly_anyio.otel import OtelAdapter, create_otel_adapter
from awaitly_anyio.testing import FakeClock

pytestmark = pytest.mark.anyio


class Crash(BaseException):
    """The worker dies mid-step (the durable run records it as stopped and re-raises)."""


class Traces:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("app")
        self.adapter: OtelAdapter = create_otel_adapter(
            service_name="svc", tracer_provider=self.provider
        )

    def spans(self) -> dict[str, ReadableSpan]:
        return {span.name: span for span in self.exporter.get_finished_spans()}

    def parent_name(self, span: ReadableSpan) -> str | None:
        if span.parent is None:
            return None
        by_id = {s.context.span_id: s for s in self.exporter.get_finished_spans()}
        found = by_id.get(span.parent.span_id)
        return None if found is None else found.name


@pytest.fixture
def traces() -> Iterator[Traces]:
    found = Traces()
    yield found
    found.provider.shutdown()


async def test_a_span_opened_inside_a_step_is_its_child_and_nothing_leaks(
    traces: Traces,
) -> None:
    workflow = create_workflow("checkout", on_event=traces.adapter.handle_event)

    async def charge() -> str:
        with traces.tracer.start_as_current_span("db query"):
            await anyio.lowlevel.checkpoint()
        return "charged"

    async def body(ctx: WorkflowContext[Deps]) -> str:
        with traces.tracer.start_as_current_span("in body"):
            pass
        paid: str = await ctx.step("charge", charge)
        return paid

    with traces.tracer.start_as_current_span("request") as request:
        assert await workflow.run(body) == Ok("charged")
        # The run ended: the caller's span is current again.
        assert trace.get_current_span() is request
    spans = traces.spans()
    assert traces.parent_name(spans["db query"]) == "step charge"
    assert traces.parent_name(spans["in body"]) == "workflow checkout"
    assert traces.parent_name(spans["workflow checkout"]) == "request"
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_nested_steps_group_children_and_cached_steps_nest_under_their_parents(
    traces: Traces,
) -> None:
    workflow = create_workflow("report", on_event=traces.adapter.handle_event)

    def leaf(label: str) -> Any:
        async def work() -> str:
            with traces.tracer.start_as_current_span(f"work {label}"):
                await anyio.lowlevel.checkpoint()
            return label

        return work

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        cached = await ctx.step("cached", leaf("never"), key="k-cached")

        async def outer() -> str:
            inner: str = await ctx.step("inner", leaf("inner"))
            return inner

        nested = await ctx.step("outer", outer)
        parts = await ctx.step.all("parts", {"a": leaf("a"), "b": leaf("b")})
        await ctx.step.race("fastest", [leaf("r")])
        each = await ctx.step.for_each(
            "each",
            ["x", "y", "z"],
            lambda item: ctx.step(f"item {item}", leaf(item)),
            concurrency=3,
        )
        with traces.tracer.start_as_current_span("after"):
            pass
        return cached, nested, parts, each

    resume = ResumeState({"k-cached": Ok("from before")})
    result = await workflow.run(body, resume_state=resume)
    assert result == Ok(("from before", "inner", {"a": "a", "b": "b"}, ["x", "y", "z"]))
    spans = traces.spans()
    assert "work never" not in spans
    assert spans["step cached"].attributes["step.cached"] is True
    assert traces.parent_name(spans["step inner"]) == "step outer"
    assert traces.parent_name(spans["work inner"]) == "step inner"
    assert traces.parent_name(spans["work a"]) == "step parts"
    assert traces.parent_name(spans["work b"]) == "step parts"
    assert traces.parent_name(spans["work r"]) == "step fastest"
    for item in "xyz":
        assert traces.parent_name(spans[f"step item {item}"]) == "step each"
        assert traces.parent_name(spans[f"work {item}"]) == f"step item {item}"
    assert traces.parent_name(spans["after"]) == "workflow report"
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_each_attempt_is_a_child_span_and_work_inside_it_is_its_child(
    traces: Traces,
) -> None:
    clock = FakeClock()
    workflow = create_workflow("pay", on_event=traces.adapter.handle_event, clock=clock)
    calls = [0]

    async def flaky() -> str:
        calls[0] += 1
        with traces.tracer.start_as_current_span(f"call {calls[0]}"):
            if calls[0] == 1:
                await anyio.sleep_forever()  # attempt 1 runs out of its deadline
            if calls[0] == 2:
                raise ConnectionError("reset by postgresql://app:hunter2@db/pay")
        return "ok"

    async def body(ctx: WorkflowContext[Deps]) -> str:
        policy = RetryPolicy(attempts=3, delay=0.5, timeout=0.01)
        done: str = await ctx.step("charge", flaky, retry=policy)
        return done

    assert await workflow.run(body) == Ok("ok")
    spans = traces.spans()
    step = spans["step charge"]
    assert step.attributes["step.attempt"] == 3
    for n, outcome in ((1, "retry"), (2, "retry"), (3, "ok")):
        attempt = spans[f"step charge attempt {n}"]
        assert traces.parent_name(attempt) == "step charge"
        assert attempt.attributes["step.outcome"] == outcome
    assert spans["step charge attempt 1"].attributes["step.timed_out"] is True
    assert spans["step charge attempt 2"].status.status_code is StatusCode.ERROR
    assert "hunter2" not in (spans["step charge attempt 2"].status.description or "")
    assert spans["step charge attempt 3"].status.status_code is StatusCode.UNSET
    # Work of attempts 2 and 3 runs under their own span; attempt 1's under the step's.
    assert traces.parent_name(spans["call 1"]) == "step charge"
    assert traces.parent_name(spans["call 2"]) == "step charge attempt 2"
    assert traces.parent_name(spans["call 3"]) == "step charge attempt 3"


async def test_a_failed_and_a_cancelled_run_leave_the_callers_context_as_it_was(
    traces: Traces,
) -> None:
    workflow = create_workflow("w", on_event=traces.adapter.handle_event)

    async def failing(ctx: WorkflowContext[Deps]) -> None:
        await ctx.step("bad", lambda: Err("no"))

    with traces.tracer.start_as_current_span("request") as request:
        assert await workflow.run(failing) == Err("no")
        assert trace.get_current_span() is request
        with anyio.CancelScope() as scope:

            async def cancelled(ctx: WorkflowContext[Deps]) -> None:
                async def stuck() -> None:
                    scope.cancel()
                    await anyio.sleep_forever()

                await ctx.step("stuck", stuck)

            await workflow.run(cancelled)
        assert scope.cancelled_caught
        assert trace.get_current_span() is request
    spans = [s for s in traces.exporter.get_finished_spans() if s.name == "step stuck"]
    assert spans[0].attributes["step.cancelled"] is True


async def test_an_instrumented_http_client_call_in_a_step_is_its_child(
    traces: Traces,
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"stock: 3"})

    workflow = create_workflow("order", on_event=traces.adapter.handle_event)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://inventory"
    ) as client:
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=traces.provider)
        try:

            async def body(ctx: WorkflowContext[Deps]) -> str:
                async def fetch() -> str:
                    response = await client.get("/stock/sku-1")
                    return response.text

                parts = await ctx.step.all("lookups", [fetch, fetch])
                text: str = await ctx.step("lookup", fetch)
                return text + str(len(parts))

            assert await workflow.run(body) == Ok("stock: 32")
        finally:
            HTTPXClientInstrumentor.uninstrument_client(client)
    http = [s for s in traces.exporter.get_finished_spans() if s.kind is trace.SpanKind.CLIENT]
    assert len(http) == 3
    assert sorted(traces.parent_name(s) or "" for s in http) == [
        "step lookup",
        "step lookups",
        "step lookups",
    ]
    run = traces.spans()["workflow order"]
    assert {s.context.trace_id for s in http} == {run.context.trace_id}


async def test_a_resumed_run_continues_the_original_trace(traces: Traces, store: Any) -> None:
    workflow = create_workflow("ship", on_event=traces.adapter.handle_event)
    crash = [True]

    async def body(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step("pack", lambda: "packed", key="pack")

        async def send() -> str:
            if crash[0]:
                raise Crash  # the worker dies mid-step
            with traces.tracer.start_as_current_span("carrier api"):
                pass
            return "sent"

        sent: str = await ctx.step("send", send, key="send")
        return sent

    with traces.tracer.start_as_current_span("first request") as first, pytest.raises(Crash):
        await workflow.run(body, workflow_id="ship-1", store=store)
    original_trace = first.get_span_context().trace_id
    snapshot = await store.load("ship-1")
    assert snapshot is not None
    assert TRACE_CONTEXT_KEY in snapshot.metadata
    [original_run] = [s for s in traces.exporter.get_finished_spans() if s.name == "workflow ship"]
    traces.exporter.clear()

    crash[0] = False
    with traces.tracer.start_as_current_span("second request") as second:
        assert await workflow.run(body, workflow_id="ship-1", store=store) == Ok("sent")
        assert trace.get_current_span() is second
    spans = traces.exporter.get_finished_spans()
    runs = [s for s in spans if s.name == "workflow ship"]
    [resumed] = [s for s in runs if s.parent and s.parent.span_id == original_run.context.span_id]
    assert resumed.context.trace_id == original_trace
    assert resumed.attributes["workflow.resumed"] is True
    [caller_side] = [s for s in runs if s is not resumed]
    assert caller_side.context.trace_id == second.get_span_context().trace_id
    assert [link.context.span_id for link in resumed.links] == [caller_side.context.span_id]
    by_name = {s.name: s for s in spans}
    for name in ("step pack", "step send", "carrier api"):
        assert by_name[name].context.trace_id == original_trace
    assert traces.parent_name(by_name["carrier api"]) == "step send"
    # The stored context is still the original one (kept only when first created).
    snapshot = await store.load("ship-1")
    assert snapshot is not None
    stored = snapshot.metadata[TRACE_CONTEXT_KEY]["traceparent"]
    assert stored.split("-")[1] == format(original_trace, "032x")


async def test_recovery_resumes_a_run_under_its_stored_trace(traces: Traces, store: Any) -> None:
    if not hasattr(store, "claim_expired"):
        pytest.skip("recovery needs a store with leases")
    workflow = create_workflow("ship", on_event=traces.adapter.handle_event)
    crash = [True]

    async def body(ctx: WorkflowContext[Deps]) -> str:
        async def send() -> str:
            if crash[0]:
                raise Crash
            return "sent"

        sent: str = await ctx.step("send", send, key="send")
        return sent

    with traces.tracer.start_as_current_span("request") as request, pytest.raises(Crash):
        await workflow.run(body, workflow_id="ship-2", store=store)
    crash[0] = False
    registry = WorkflowRegistry()
    registry.register(workflow, body)
    [recovered] = await recover(store, registry)
    assert recovered.result == Ok("sent")
    steps = [s for s in traces.exporter.get_finished_spans() if s.name == "step send"]
    assert {s.context.trace_id for s in steps} == {request.get_span_context().trace_id}


async def test_step_events_interleaved_in_one_task_restore_the_right_context(
    traces: Traces,
) -> None:
    from awaitly_anyio.events import StepComplete, StepStart, WorkflowComplete, WorkflowStart

    handle = traces.adapter.handle_event
    ids = {"workflow_id": "r-1", "workflow_name": "w", "ts": 1.0}
    with traces.tracer.start_as_current_span("caller") as caller:
        handle(WorkflowStart(**ids))
        run_span = trace.get_current_span()
        handle(StepStart(**ids, name="a"))
        handle(StepStart(**ids, name="b"))
        handle(StepComplete(**ids, name="a", duration_ms=0.0))  # a ends first
        assert trace.get_current_span().name == "step b"  # type: ignore[attr-defined]
        handle(StepComplete(**ids, name="b", duration_ms=0.0))
        assert trace.get_current_span() is run_span
        handle(StepStart(**ids, name="left open"))
        handle(WorkflowComplete(**ids, duration_ms=0.0))
        assert trace.get_current_span() is caller
    spans = traces.spans()
    assert traces.parent_name(spans["step b"]) == "step a"
    assert spans["step left open"].end_time is not None


async def test_a_run_started_through_the_host_is_a_child_of_the_starters_span(
    traces: Traces,
) -> None:
    from awaitly_anyio import WorkflowHost

    workflow = create_workflow("order", on_event=traces.adapter.handle_event)

    async def body(ctx: WorkflowContext[Deps]) -> str:
        async def work() -> str:
            with traces.tracer.start_as_current_span("work"):
                await anyio.lowlevel.checkpoint()
            return "done"

        done: str = await ctx.step("work", work)
        return done

    async with WorkflowHost() as host:
        with traces.tracer.start_as_current_span("request"):
            handle = host.start(workflow, body)
        assert trace.get_current_span() is trace.INVALID_SPAN
        assert await handle.result() == Ok("done")
    spans = traces.spans()
    assert traces.parent_name(spans["workflow order"]) == "request"
    assert traces.parent_name(spans["work"]) == "step work"
    assert spans["work"].context.trace_id == spans["request"].context.trace_id


async def test_a_second_start_of_a_run_in_progress_does_not_end_the_first_ones_span(
    traces: Traces,
) -> None:
    import contextvars

    from awaitly_anyio.events import (
        StepComplete,
        StepStart,
        WorkflowComplete,
        WorkflowFailed,
        WorkflowStart,
    )

    handle = traces.adapter.handle_event
    ids = {"workflow_id": "order-1", "workflow_name": "w", "ts": 1.0}
    with traces.tracer.start_as_current_span("first caller") as caller:
        handle(WorkflowStart(**ids))
        first_run = trace.get_current_span()

        def second_start() -> None:  # another task: starts, is refused at once
            handle(WorkflowStart(**ids))
            handle(WorkflowFailed(**ids, duration_ms=0.0, error="RunInProgressError"))

        contextvars.copy_context().run(second_start)
        assert trace.get_current_span() is first_run
        handle(StepStart(**ids, name="s"))
        handle(StepComplete(**ids, name="s", duration_ms=0.0))
        handle(WorkflowComplete(**ids, duration_ms=0.0))
        assert trace.get_current_span() is caller
    runs = [s for s in traces.exporter.get_finished_spans() if s.name == "workflow w"]
    assert sorted(str(s.attributes["workflow.status"]) for s in runs) == ["completed", "failed"]
    step = traces.spans()["step s"]
    [completed] = [s for s in runs if s.attributes["workflow.status"] == "completed"]
    assert step.parent is not None
    assert step.parent.span_id == completed.context.span_id


async def test_a_store_without_leases_keeps_and_resumes_the_trace_context_too(
    traces: Traces,
) -> None:
    from .test_durable import PlainStore

    store = PlainStore()
    workflow = create_workflow("ship", on_event=traces.adapter.handle_event)
    up = [False]

    async def body(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step("pack", lambda: "packed", key="pack")
        booked: str = await ctx.step("book", lambda: Ok("booked") if up[0] else Err("down"))
        return booked

    with traces.tracer.start_as_current_span("first") as first:
        assert await workflow.run(body, workflow_id="s-1", store=store) == Err("down")
    first_context = store.saved["s-1"].metadata[TRACE_CONTEXT_KEY]
    up[0] = True
    with traces.tracer.start_as_current_span("second"):
        assert await workflow.run(body, workflow_id="s-1", store=store) == Ok("booked")
    assert store.saved["s-1"].metadata[TRACE_CONTEXT_KEY] == first_context
    books = [s for s in traces.exporter.get_finished_spans() if s.name == "step book"]
    assert [s.context.trace_id for s in books] == [first.get_span_context().trace_id] * 2
