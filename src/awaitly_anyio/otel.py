"""OpenTelemetry for workflows: a span per run, a child span per step, and metrics, built
from the run's events (the core knows nothing of OpenTelemetry).

    otel = create_otel_adapter(service_name="checkout-service")
    workflow = create_workflow("checkout", deps, on_event=otel.handle_event)

Only ``opentelemetry-api`` is needed at run time (the ``otel`` extra); configure
the SDK and exporters as usual.  Without it installed, the adapter does nothing.
"""

from __future__ import annotations

import traceback
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

from ._redact import redact_text
from .errors import UnexpectedError
from .events import (
    CircuitStateChange,
    StepCancelled,
    StepComplete,
    StepError,
    StepRetry,
    StepSkipped,
    StepStart,
    StepTimeout,
    WorkflowCancelled,
    WorkflowComplete,
    WorkflowError,
    WorkflowStart,
)

__all__ = ["OtelAdapter", "create_otel_adapter"]

EnrichSpan = Callable[[Any, Any], object]


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _describe(error: object) -> str:
    """``error`` as text for a span, passwords in URLs masked."""
    if isinstance(error, BaseException):
        return redact_text(f"{type(error).__name__}: {error}")
    return redact_text(repr(error))


class OtelAdapter:
    """Turns events into spans and metrics; pass :meth:`handle_event` as ``on_event``.

    Spans: ``workflow <name>`` (a child of the span current where ``run`` was
    called) with ``workflow.name`` and ``workflow.id``; ``step <name>`` children
    with ``step.name``, ``step.key``, ``step.cached``, ``step.attempt``; retries
    and timeouts are span events; failures set an error status and record the
    exception.  Concurrent steps with the same name in one run are paired first
    in, first out.  Metrics: ``awaitly.workflow.duration`` and
    ``awaitly.step.duration`` histograms (ms), ``awaitly.step.errors`` and
    ``awaitly.circuit.state_changes`` counters.
    """

    def __init__(
        self,
        service_name: str,
        *,
        enrich_span: EnrichSpan | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> None:
        self.service_name = service_name
        self._enrich = enrich_span
        try:
            from opentelemetry import context, metrics, trace
        except ImportError:  # the cheap no-op: nothing to report to
            self._trace: Any = None
            return
        self._trace = trace
        self._context = context
        self._tracer = trace.get_tracer("awaitly_anyio", tracer_provider=tracer_provider)
        meter = metrics.get_meter("awaitly_anyio", meter_provider=meter_provider)
        self._workflow_duration = meter.create_histogram(
            "awaitly.workflow.duration", unit="ms", description="Workflow run duration"
        )
        self._step_duration = meter.create_histogram(
            "awaitly.step.duration", unit="ms", description="Step duration"
        )
        self._step_errors = meter.create_counter(
            "awaitly.step.errors", description="Steps that ended in an error"
        )
        self._circuit_changes = meter.create_counter(
            "awaitly.circuit.state_changes", description="Circuit breaker state changes"
        )
        self._runs: dict[str, Any] = {}
        self._steps: dict[tuple[str, str], deque[Any]] = defaultdict(deque)

    @property
    def enabled(self) -> bool:
        """Whether OpenTelemetry is installed (otherwise every event is ignored)."""
        return self._trace is not None

    def handle_event(self, event: Any) -> None:
        """Record one event (any event; unknown ones are ignored)."""
        if self._trace is None:
            return
        if isinstance(event, CircuitStateChange):
            self._circuit_changes.add(1, {"circuit.name": event.name, "circuit.state": event.state})
            return
        run = getattr(event, "workflow_id", None)
        if run is None:
            return
        if isinstance(event, WorkflowStart):
            span = self._tracer.start_span(
                f"workflow {event.workflow_name}",
                context=self._context.get_current(),
                start_time=_ns(event.ts),
                attributes={
                    "workflow.name": event.workflow_name,
                    "workflow.id": event.workflow_id,
                    "service.name": self.service_name,
                },
            )
            self._runs[run] = span
            self._enriched(span, event)
        elif isinstance(event, StepStart):
            parent = self._runs.get(run)
            context = None if parent is None else self._trace.set_span_in_context(parent)
            attributes: dict[str, Any] = {"step.name": event.name}
            if event.step_key is not None:
                attributes["step.key"] = event.step_key
            span = self._tracer.start_span(
                f"step {event.name}",
                context=context,
                start_time=_ns(event.ts),
                attributes=attributes,
            )
            self._steps[run, event.name].append(span)
            self._enriched(span, event)
        elif isinstance(event, (StepRetry, StepTimeout)):
            span = self._current_step(run, event.name)
            if span is not None:
                name = "retry" if isinstance(event, StepRetry) else "timeout"
                attrs: dict[str, Any] = {"step.attempt": event.attempt}
                if isinstance(event, StepRetry):
                    attrs["retry.delay"] = event.delay
                span.add_event(name, attrs, timestamp=_ns(event.ts))
        elif isinstance(event, (StepComplete, StepError, StepCancelled)):
            self._end_step(run, event)
        elif isinstance(event, StepSkipped):
            span = self._tracer.start_span(
                f"step {event.name}",
                context=self._parent(run),
                start_time=_ns(event.ts),
                attributes={"step.name": event.name, "step.skipped": True},
            )
            span.end(end_time=_ns(event.ts))
        elif isinstance(event, (WorkflowComplete, WorkflowError, WorkflowCancelled)):
            self._end_run(run, event)

    def _parent(self, run: str) -> Any:
        parent = self._runs.get(run)
        return None if parent is None else self._trace.set_span_in_context(parent)

    def _current_step(self, run: str, name: str) -> Any:
        spans = self._steps.get((run, name))
        return spans[0] if spans else None

    def _enriched(self, span: Any, event: Any) -> None:
        if self._enrich is not None:
            self._enrich(span, event)

    def _error(self, span: Any, error: object) -> None:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, _describe(error)))
        cause = error.cause if isinstance(error, UnexpectedError) else error
        if isinstance(cause, BaseException):
            # The message and traceback as the SDK writes them, passwords masked.
            trace = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
            span.record_exception(
                cause,
                attributes={
                    "exception.message": redact_text(str(cause)),
                    "exception.stacktrace": redact_text(trace),
                },
            )

    def _end_step(self, run: str, event: Any) -> None:
        spans = self._steps.get((run, event.name))
        if not spans:
            return
        span = spans.popleft()
        if not spans:
            del self._steps[run, event.name]
        labels = {"workflow.name": event.workflow_name, "step.name": event.name}
        if isinstance(event, StepComplete):
            span.set_attribute("step.cached", event.cached)
            span.set_attribute("step.attempt", event.attempt)
        elif isinstance(event, StepError):
            self._error(span, event.error)
            self._step_errors.add(1, labels)
        else:
            span.set_attribute("step.cancelled", True)
        self._step_duration.record(event.duration_ms, labels)
        self._enriched(span, event)
        span.end(end_time=_ns(event.ts))

    def _end_run(self, run: str, event: Any) -> None:
        span = self._runs.pop(run, None)
        if span is None:
            return
        for key in [key for key in self._steps if key[0] == run]:
            for step in self._steps.pop(key):  # steps the run never finished
                step.end(end_time=_ns(event.ts))
        if isinstance(event, WorkflowComplete):
            status = "completed"
        elif isinstance(event, WorkflowError):
            status = "failed"
            self._error(span, event.error)
        else:
            status = "cancelled"
        span.set_attribute("workflow.status", status)
        self._workflow_duration.record(
            event.duration_ms, {"workflow.name": event.workflow_name, "workflow.status": status}
        )
        self._enriched(span, event)
        span.end(end_time=_ns(event.ts))


def create_otel_adapter(
    service_name: str = "awaitly",
    *,
    enrich_span: EnrichSpan | None = None,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> OtelAdapter:
    """An :class:`OtelAdapter`; ``enrich_span(span, event)`` may add attributes to
    each span as it starts and ends (as in the deployment guide)."""
    return OtelAdapter(
        service_name,
        enrich_span=enrich_span,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
