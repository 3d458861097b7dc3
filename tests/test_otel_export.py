"""Telemetry leaves the process: a real Prometheus scrape and a real OTLP/HTTP export.

Both talk over 127.0.0.1 only.  The OTLP receiver is a tiny HTTP server that
decodes the protobuf requests it gets, so the test checks what a collector
would see, not what the SDK meant to send.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.exporter.prometheus")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry, start_http_server

from awaitly_anyio import Err, create_workflow, err
from awaitly_anyio.otel import create_otel_adapter

from .otlp_receiver import otlp_receiver, spans_received

pytestmark = pytest.mark.anyio


async def checkout(ctx: Any) -> str:
    user = await ctx.step("fetch_user", lambda: {"id": 7})
    await ctx.step("charge", lambda: err("CARD_DECLINED"))
    return str(user)


async def test_a_prometheus_scrape_shows_workflow_duration_and_step_errors() -> None:
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry)
    provider = MeterProvider(metric_readers=[reader])
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        otel = create_otel_adapter("checkout-service", meter_provider=provider)
        workflow = create_workflow("checkout", on_event=otel.handle_event)
        for _ in range(3):
            assert await workflow.run(checkout) == Err("CARD_DECLINED")

        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{server.server_port}/metrics")
        assert response.status_code == 200
        series = response.text.splitlines()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        provider.shutdown()

    def sample(prefix: str, *labels: str) -> float:
        found = [
            line
            for line in series
            if line.startswith(prefix) and all(label in line for label in labels)
        ]
        assert len(found) == 1, (prefix, labels, found)
        return float(found[0].rsplit(" ", 1)[1])

    run = ('workflow_name="checkout"', 'workflow_status="failed"')
    assert sample("awaitly_workflow_duration_milliseconds_count", *run) == 3
    assert sample("awaitly_step_errors_total", 'step_name="charge"') == 3
    assert sample("awaitly_step_duration_milliseconds_count", 'step_name="fetch_user"') == 3


@pytest.fixture
def receiver() -> Iterator[tuple[str, dict[str, list[Any]]]]:
    with otlp_receiver() as found:
        yield found


def _attributes(item: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attribute in item.attributes:
        value = attribute.value
        out[attribute.key] = getattr(value, value.WhichOneof("value"))
    return out


async def test_an_otlp_http_export_reaches_the_collector_with_parents_and_errors(
    receiver: tuple[str, dict[str, list[Any]]],
) -> None:
    endpoint, received = receiver
    resource = Resource.create({"service.name": "checkout-service"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"))
    )
    metric_reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics"),
        export_interval_millis=3_600_000,  # exported by the flush below, not by time
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[metric_reader])
    otel = create_otel_adapter(
        "checkout-service", tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    workflow = create_workflow("checkout", on_event=otel.handle_event)
    result = await workflow.run(checkout, workflow_id="order-1")
    assert result == Err("CARD_DECLINED")
    assert tracer_provider.force_flush()
    assert meter_provider.force_flush()
    tracer_provider.shutdown()
    meter_provider.shutdown()

    spans = spans_received(received)
    by_name = {span.name: span for span in spans}
    assert set(by_name) == {"workflow checkout", "step fetch_user", "step charge"}
    run = by_name["workflow checkout"]
    assert _attributes(run)["workflow.id"] == "order-1"
    assert _attributes(run)["workflow.status"] == "failed"
    assert run.status.code == 2  # STATUS_CODE_ERROR
    for step in ("step fetch_user", "step charge"):
        assert by_name[step].parent_span_id == run.span_id
        assert by_name[step].trace_id == run.trace_id
    assert by_name["step charge"].status.code == 2
    assert by_name["step fetch_user"].status.code != 2

    metrics = {
        metric.name: metric
        for request in received["/v1/metrics"]
        for resource_metrics in request.resource_metrics
        for scope in resource_metrics.scope_metrics
        for metric in scope.metrics
    }
    duration = metrics["awaitly.workflow.duration"].histogram.data_points
    assert [_attributes(point) for point in duration] == [
        {"workflow.name": "checkout", "workflow.status": "failed"}
    ]
    assert duration[0].count == 1
    errors = metrics["awaitly.step.errors"].sum.data_points
    assert [(_attributes(point)["step.name"], point.as_int) for point in errors] == [("charge", 1)]
