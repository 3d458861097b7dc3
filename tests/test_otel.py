"""The OpenTelemetry adapter, against the real SDK with in-memory exporters."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

from awaitly_anyio import (
    Deps,
    Err,
    ResumeState,
    WorkflowContext,
    create_circuit_breaker,
    create_workflow,
)
from awaitly_anyio.otel import OtelAdapter, create_otel_adapter
from awaitly_anyio.testing import FakeClock

pytestmark = pytest.mark.anyio


@pytest.fixture
def telemetry() -> Iterator[tuple[OtelAdapter, InMemorySpanExporter, InMemoryMetricReader]]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    adapter = create_otel_adapter(
        service_name="checkout-service",
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        enrich_span=lambda span, event: span.set_attribute("enriched.by", event.type),
    )
    yield adapter, exporter, reader
    tracer_provider.shutdown()
    meter_provider.shutdown()


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = list(metric.data.data_points)
    return found


async def test_a_run_is_a_span_with_a_child_per_step(telemetry: Any) -> None:
    adapter, exporter, reader = telemetry
    clock = FakeClock()
    workflow = create_workflow("checkout", on_event=adapter.handle_event, clock=clock)
    attempts = [0]

    def flaky() -> str:
        attempts[0] += 1
        if attempts[0] < 3:
            raise ConnectionError("reset")
        return "charged"

    async def body(ctx: WorkflowContext[Deps]) -> str:
        user = await ctx.step("fetch_user", lambda: "ada", key="user:ada")
        paid = await ctx.step.retry("charge", flaky, attempts=3, delay=0.1)
        return f"{user}:{paid}"

    result = await workflow.run(body, workflow_id="order-1", resume_state=ResumeState({}))
    assert result.ok
    spans = {span.name: span for span in exporter.get_finished_spans()}
    attempts_spans = {f"step charge attempt {n}" for n in (1, 2, 3)}
    assert set(spans) == {"workflow checkout", "step fetch_user", "step charge"} | attempts_spans
    run = spans["workflow checkout"]
    assert run.attributes["workflow.name"] == "checkout"
    assert run.attributes["workflow.id"] == "order-1"
    assert run.attributes["workflow.status"] == "completed"
    assert run.attributes["enriched.by"] == "workflow_complete"
    for name in ("step fetch_user", "step charge"):
        assert spans[name].parent is not None
        assert spans[name].parent.span_id == run.context.span_id
    assert spans["step fetch_user"].attributes["step.key"] == "user:ada"
    assert spans["step fetch_user"].attributes["step.cached"] is False
    charge = spans["step charge"]
    assert charge.attributes["step.attempt"] == 3
    assert [event.name for event in charge.events] == ["retry", "retry"]
    outcomes = []
    for n in (1, 2, 3):
        attempt = spans[f"step charge attempt {n}"]
        assert attempt.parent is not None
        assert attempt.parent.span_id == charge.context.span_id
        assert attempt.attributes["step.attempt"] == n
        outcomes.append((attempt.attributes["step.outcome"], attempt.status.status_code))
    assert outcomes == [
        ("retry", StatusCode.ERROR),
        ("retry", StatusCode.ERROR),
        ("ok", StatusCode.UNSET),
    ]

    points = metric_points(reader)
    [duration] = points["awaitly.workflow.duration"]
    assert duration.attributes == {"workflow.name": "checkout", "workflow.status": "completed"}
    assert duration.count == 1
    assert sum(point.count for point in points["awaitly.step.duration"]) == 2


async def test_failures_set_error_status_and_record_the_exception(telemetry: Any) -> None:
    adapter, exporter, reader = telemetry
    workflow = create_workflow("checkout", on_event=adapter.handle_event)

    def boom() -> None:
        raise KeyError("sku-9")

    async def body(ctx: WorkflowContext[Deps]) -> None:
        await ctx.step("reserve", boom)

    result = await workflow.run(body)
    assert isinstance(result, Err)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    for name in ("workflow checkout", "step reserve"):
        assert spans[name].status.status_code is StatusCode.ERROR
    [exception] = [e for e in spans["step reserve"].events if e.name == "exception"]
    assert exception.attributes["exception.type"] == "KeyError"
    points = metric_points(reader)
    [errors] = points["awaitly.step.errors"]
    assert errors.value == 1
    assert points["awaitly.workflow.duration"][0].attributes["workflow.status"] == "failed"


async def test_concurrent_runs_parent_their_own_steps_under_the_callers_span(
    telemetry: Any,
) -> None:
    adapter, exporter, _ = telemetry
    workflow = create_workflow("report", on_event=adapter.handle_event)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("caller")

    async def body(ctx: WorkflowContext[Deps]) -> int:
        parts = await ctx.step.all("parts", {"a": lambda: 1, "b": lambda: 2})
        total: int = await ctx.step("sum", lambda: sum(parts.values()))
        return total

    with tracer.start_as_current_span("http request") as request:
        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(lambda n=n: workflow.run(body, workflow_id=f"r-{n}"))
    finished = exporter.get_finished_spans()
    runs = {
        span.attributes["workflow.id"]: span
        for span in finished
        if span.name.startswith("workflow")
    }
    assert len(runs) == 20
    for span in runs.values():
        assert span.parent is not None
        assert span.parent.span_id == request.get_span_context().span_id
    by_id = {span.context.span_id: span for span in finished}
    steps = [span for span in finished if span.name.startswith("step")]
    assert len(steps) == 20 * 2
    for step in steps:
        assert step.parent is not None
        assert by_id[step.parent.span_id].name == "workflow report"


async def test_breaker_state_changes_are_counted(telemetry: Any) -> None:
    adapter, _, reader = telemetry
    breaker = create_circuit_breaker(
        "payment", failure_threshold=1, reset_timeout=30, listeners=[adapter.handle_event]
    )
    await breaker(lambda: Err("DOWN"))
    [point] = metric_points(reader)["awaitly.circuit.state_changes"]
    assert point.attributes == {"circuit.name": "payment", "circuit.state": "OPEN"}


def test_without_opentelemetry_the_adapter_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    adapter = create_otel_adapter(service_name="x")
    assert not adapter.enabled
    adapter.handle_event(object())  # anything goes, nothing happens


async def test_the_run_context_is_on_the_workflow_span(telemetry: Any) -> None:
    adapter, exporter, _ = telemetry
    workflow = create_workflow("checkout", on_event=adapter.handle_event, clock=FakeClock())

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.step("fetch_user", lambda: "ada")

    context = {"request_id": "r-1", "tenant": {"id": 7, "tags": ("a", "b")}, "none": None}
    assert (await workflow.run(body, context=context)).ok
    (run,) = [s for s in exporter.get_finished_spans() if s.name == "workflow checkout"]
    assert run.attributes["awaitly.context.request_id"] == "r-1"
    assert run.attributes["awaitly.context.tenant"] == '{"id": 7, "tags": ["a", "b"]}'
    assert "awaitly.context.none" not in run.attributes
