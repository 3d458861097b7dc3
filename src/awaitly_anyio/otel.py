"""OpenTelemetry for workflows: a span per run, a child span per step (and per retried
attempt), and metrics, built from the run's events (the core knows nothing of
OpenTelemetry).

    otel = create_otel_adapter(service_name="checkout-service")
    workflow = create_workflow("checkout", deps, on_event=otel.handle_event)

Only ``opentelemetry-api`` is needed at run time (the ``otel`` extra); configure
the SDK and exporters as usual.  Without it installed, the adapter does nothing.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, cast

from ._errors import UnexpectedError
from ._redact import redact_text
from .events import (
    CircuitStateChange,
    CompensationComplete,
    CompensationFailed,
    CompensationStart,
    StepCancelled,
    StepComplete,
    StepFailed,
    StepRetry,
    StepSkipped,
    StepStart,
    StepTimeout,
    WorkflowCancelled,
    WorkflowComplete,
    WorkflowFailed,
    WorkflowParked,
    WorkflowResumed,
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


class _Frame:
    """One open run or step, as the OpenTelemetry context of the task that runs it
    carries it (under the adapter's key): its span, the context current before it
    began (restored when it ends) and the frame it is nested in, in this task."""

    __slots__ = (
        "attempt_span",
        "extra",
        "key",
        "name",
        "open",
        "parent",
        "prev",
        "run",
        "run_frame",
        "span",
        "start_ns",
        "timed_out",
    )

    def __init__(
        self,
        span: Any,
        run: str,
        name: str | None,
        key: str | None,
        prev: Any,
        parent: _Frame | None,
        run_frame: _Frame | None,
        start_ns: int,
    ) -> None:
        self.span = span
        self.run = run
        self.name = name  # None for a run's own frame
        self.key = key
        self.prev = prev
        self.parent = parent
        self.run_frame = run_frame
        self.start_ns = start_ns
        self.attempt_span: Any = None
        # Set only where used: ``timed_out`` (the attempt that ran out of time) by a
        # step's timeout; ``open`` (its steps not ended yet) and ``extra`` (for a
        # resumed run, the span it was started with) on a run's own frame.
        self.timed_out: int
        self.open: set[_Frame] | None
        self.extra: Any


class OtelAdapter:
    """Turns events into spans and metrics; pass `handle_event` as ``on_event``.

    Spans: ``workflow <name>`` (a child of the span current where ``run`` was
    called) with ``workflow.name`` and ``workflow.id``; ``step <name>`` children
    with ``step.name``, ``step.key``, ``step.cached``, ``step.attempt``.  A step
    that is retried gets a child span per attempt, ``step <name> attempt <n>``,
    with ``step.attempt`` and ``step.outcome`` (``"retry"``, ``"ok"``,
    ``"error"``, ``"cancelled"``; ``step.timed_out`` when its deadline ran out);
    retries and timeouts are also span events of the step.  Failures set an
    error status and record the exception, passwords masked.

    **Context.**  The run's span is the current span for the whole run, and each
    step's span (or its current attempt's span) for the code of that step, on
    asyncio and trio alike: spans opened inside a step (an instrumented HTTP
    client, a database driver, ``tracer.start_as_current_span``) are its
    children, and so are the steps and spans of tasks a step starts
    (``ctx.step.all``/``race``/``for_each``), since a new task copies the
    context of the task that starts it.  The handler is called in the task
    that runs the step, so it sets the current context there when a run or
    step starts and restores it when it ends (whatever order ends arrive in);
    when a run ends, the context of its task is back to what it was before the
    run, so nothing leaks past it.

    **Resumed runs.**  As a trace-context source (`trace_carrier`) the
    adapter gives a durable run the W3C trace context of its span, which the run
    keeps when it is first created.  When a durable run resumes a stored run
    (after a crash, through recovery or a later start), it emits
    `WorkflowResumed` with that context: the
    adapter then opens a second ``workflow <name>`` span, a child of the
    original run's span (so the resumed run continues the original trace) and
    linked to the span of the caller that resumed it, and makes it current for
    the rest of the run.

    **Compensations.**  A failed run's rollback gets a ``compensation <name>`` span per
    compensation (a child of the run's span, current while it runs), with
    ``step.name``, ``step.key``, ``compensation: true``, ``compensation.attempt`` and
    ``compensation.outcome`` (``"ok"`` or ``"error"``, with an error status).

    Metrics: ``awaitly.workflow.duration`` and ``awaitly.step.duration``
    histograms (ms), ``awaitly.step.errors`` and ``awaitly.circuit.state_changes``
    counters.  Handling an event never raises for a well-formed event.
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
            from opentelemetry.context import Context
            from opentelemetry.trace.propagation import _SPAN_KEY
        except ImportError:  # the cheap no-op: nothing to report to
            self._trace: Any = None
            return
        self._trace = trace
        self._context = context
        self._Context = Context
        self._span_key = _SPAN_KEY
        self._frame_key = context.create_key("awaitly_anyio.frame")
        self._get_current: Callable[[], Any] = context.get_current
        self._attach: Callable[[Any], object] = context.attach
        # The default runtime context is one ContextVar behind two layers of calls:
        # use it directly (it is what context.get_current/attach do), else the API.
        var = getattr(getattr(context, "_RUNTIME_CONTEXT", None), "_current_context", None)
        if isinstance(var, ContextVar):
            var = cast("ContextVar[object]", var)  # (isinstance: type argument unknown)
            self._get_current = var.get
            self._attach = var.set
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
        self._runs: dict[str, _Frame] = {}
        self._labels: dict[tuple[str, str], dict[str, str]] = {}
        self._handlers: dict[type, Callable[[Any], None]] = {
            StepStart: self._step_start,
            StepComplete: self._step_end,
            StepFailed: self._step_end,
            StepCancelled: self._step_end,
            StepRetry: self._step_retry,
            StepTimeout: self._step_timeout,
            StepSkipped: self._step_skipped,
            WorkflowStart: self._run_start,
            WorkflowResumed: self._run_resumed,
            WorkflowComplete: self._end_run,
            WorkflowFailed: self._end_run,
            WorkflowCancelled: self._end_run,
            WorkflowParked: self._end_run,
            CircuitStateChange: self._circuit,
            CompensationStart: self._compensation_start,
            CompensationComplete: self._compensation_end,
            CompensationFailed: self._compensation_end,
        }

    @property
    def enabled(self) -> bool:
        """Whether OpenTelemetry is installed (otherwise every event is ignored)."""
        return self._trace is not None

    def handle_event(self, event: Any) -> None:
        """Record one event (any event; unknown ones are ignored).

        Call it synchronously from the task that emits the event (as ``on_event``
        handlers are called): a run's and a step's start make their span current
        in that task, their end restores what was current before.
        """
        if self._trace is None:
            return
        handler = self._handlers.get(event.__class__)
        if handler is not None:
            handler(event)

    def trace_carrier(self, workflow_id: str) -> dict[str, str] | None:
        """The W3C trace context (``traceparent``, ``tracestate``) of run
        ``workflow_id``'s span while it is open, else ``None``; a durable run keeps
        it in its metadata when it first creates the run (see
        `TRACE_CONTEXT_KEY`)."""
        if self._trace is None:
            return None
        frame = self._runs.get(workflow_id)
        if frame is None:
            return None
        from opentelemetry.trace.propagation.tracecontext import (
            TraceContextTextMapPropagator,
        )

        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(
            carrier, context=self._trace.set_span_in_context(frame.span)
        )
        return carrier or None

    # ---- runs -------------------------------------------------------------------

    def _run_start(self, event: WorkflowStart) -> None:
        current = self._get_current()
        outer = current.get(self._frame_key)
        start = _ns(event.ts)
        span = self._tracer.start_span(
            f"workflow {event.workflow_name}",
            context=current,
            start_time=start,
            attributes={
                "workflow.name": event.workflow_name,
                "workflow.id": event.workflow_id,
                "service.name": self.service_name,
            },
        )
        if event.context:
            _context_attributes(span, event.context)
        frame = _Frame(span, event.workflow_id, None, None, current, outer, None, start)
        frame.run_frame = frame
        frame.open = set()
        frame.extra = None
        self._runs[event.workflow_id] = frame
        self._attach(self._Context({**current, self._span_key: span, self._frame_key: frame}))
        self._enriched(span, event)

    def _run_resumed(self, event: WorkflowResumed) -> None:
        frame = self._runs.get(event.workflow_id)
        if frame is None or frame.extra is not None:
            return
        from opentelemetry.trace import Link
        from opentelemetry.trace.propagation.tracecontext import (
            TraceContextTextMapPropagator,
        )

        carrier = {str(k): str(v) for k, v in dict(event.trace_context).items()}
        original = TraceContextTextMapPropagator().extract(carrier)
        stored = self._trace.get_current_span(original).get_span_context()
        if not stored.is_valid:
            return
        first = frame.span
        span = self._tracer.start_span(
            f"workflow {event.workflow_name}",
            context=original,
            start_time=_ns(event.ts),
            links=[Link(first.get_span_context(), {"awaitly.link": "resumed_by"})],
            attributes={
                "workflow.name": event.workflow_name,
                "workflow.id": event.workflow_id,
                "service.name": self.service_name,
                "workflow.resumed": True,
            },
        )
        first.set_attribute("workflow.resumed", True)
        if hasattr(first, "add_link"):
            first.add_link(span.get_span_context(), {"awaitly.link": "resumed_as"})
        frame.extra = first
        frame.span = span
        current = self._get_current()
        if current.get(self._frame_key) is frame:
            self._attach(self._Context({**current, self._span_key: span}))
        self._enriched(span, event)

    def _end_run(self, event: Any) -> None:
        run = event.workflow_id
        # The run's frame in this task's context (two runs may share an id: a second
        # start of a run in progress ends at once with RunInProgressError), else the
        # last one started with that id.
        in_task = self._get_current().get(self._frame_key)
        while in_task is not None and not (in_task.name is None and in_task.run == run):
            in_task = in_task.parent
        found: _Frame | None = in_task if in_task is not None else self._runs.get(run)
        if found is None:
            return
        frame = found
        if self._runs.get(run) is frame:
            del self._runs[run]
        end = _ns(event.ts)
        for step in list(frame.open or ()):  # steps the run never finished
            if step.attempt_span is not None:
                step.attempt_span.end(end_time=end)
            step.span.end(end_time=end)
        frame.open = None
        # Restore the context of this task as it was before the run (dropping any
        # step context left behind), if the run's frame is in it.
        if in_task is not None:
            self._attach(frame.prev)
        spans = [frame.span] if frame.extra is None else [frame.span, frame.extra]
        if isinstance(event, WorkflowComplete):
            status = "completed"
        elif isinstance(event, WorkflowFailed):
            status = "failed"
            for span in spans:
                self._error(span, event.error)
        elif isinstance(event, WorkflowParked):
            status = "parked"  # it waits in its store; a later run resumes it
        else:
            status = "cancelled"
        self._workflow_duration.record(
            event.duration_ms, {"workflow.name": event.workflow_name, "workflow.status": status}
        )
        for span in spans:
            span.set_attribute("workflow.status", status)
            self._enriched(span, event)
            span.end(end_time=end)

    # ---- steps ------------------------------------------------------------------

    def _step_start(self, event: StepStart) -> None:
        run = event.workflow_id
        current, outer, parent, run_frame = self._where(run)
        key = event.step_key
        start = _ns(event.ts)
        span = self._tracer.start_span(
            f"step {event.name}",
            context=parent,
            start_time=start,
            # The usual outcome's attributes from the start (one write less at the end).
            attributes={"step.name": event.name, "step.cached": False, "step.attempt": 1}
            if key is None
            else {
                "step.name": event.name,
                "step.key": key,
                "step.cached": False,
                "step.attempt": 1,
            },
        )
        self._open(_Frame(span, run, event.name, key, current, outer, run_frame, start))
        if self._enrich is not None:
            self._enrich(span, event)

    def _where(self, run: str) -> tuple[Any, _Frame | None, Any, _Frame | None]:
        """Where a step (or a compensation) of run ``run`` starts in this task: the
        current context, the frame it is nested in, the context its span is a child
        of, and the run's frame."""
        current = self._get_current()
        outer = current.get(self._frame_key)
        if outer is not None and outer.run == run:
            return current, outer, current, outer.run_frame
        # Not in this run's task context (yet): parent it to the run's span.
        run_frame = self._runs.get(run)
        if run_frame is None:
            return current, outer, current, None
        parent = self._Context({**current, self._span_key: run_frame.span})
        return current, outer, parent, run_frame

    def _open(self, frame: _Frame) -> None:
        """``frame`` (just started) becomes current in this task and open in its run."""
        run_frame = frame.run_frame
        if run_frame is not None and run_frame.open is not None:
            run_frame.open.add(frame)
        self._attach(
            self._Context({**frame.prev, self._span_key: frame.span, self._frame_key: frame})
        )

    def _close(self, frame: _Frame, innermost: bool) -> None:
        """``frame`` ended: what was current before it is current again (when frames
        opened after it are still current, it is unlinked from under them instead) and
        it is no longer open in its run."""
        if innermost:
            self._attach(frame.prev)
        else:
            self._unlink(frame)
        run_frame = frame.run_frame
        if run_frame is not None and run_frame.open is not None:
            run_frame.open.discard(frame)

    def _find(self, event: Any) -> tuple[_Frame | None, bool]:
        """The open frame of step ``event`` and whether it is the innermost one of this
        task; a frame found deeper is unlinked from the frames above it."""
        current = self._get_current()
        top = current.get(self._frame_key)
        run, name, key = event.workflow_id, event.name, event.step_key
        above: _Frame | None = None
        frame = top
        while frame is not None:
            if frame.name == name and frame.run == run and frame.key == key:
                return frame, above is None
            above, frame = frame, frame.parent
        # Not in this task's context: the oldest open step of that name in the run.
        run_frame = self._runs.get(run)
        if run_frame is None or not run_frame.open:
            return None, False
        found = [f for f in run_frame.open if f.name == name and f.key == key]
        if not found:
            return None, False
        return min(found, key=lambda f: f.start_ns), False

    def _unlink(self, frame: _Frame) -> None:
        """Take ``frame`` (ending, but not innermost) out of this task's chain, so that
        the frames opened after it restore what was current before it."""
        above = self._get_current().get(self._frame_key)
        while above is not None and above.parent is not frame:
            above = above.parent
        if above is not None:
            above.parent = frame.parent
            above.prev = frame.prev

    def _step_end(self, event: Any) -> None:
        frame = self._get_current().get(self._frame_key)
        if (
            frame is not None
            and frame.name == event.name
            and frame.run == event.workflow_id
            and frame.key == event.step_key
        ):  # the usual case: the innermost open frame of this task
            self._close(frame, True)
        else:
            frame, innermost = self._find(event)
            if frame is None:
                return
            self._close(frame, innermost)
        span = frame.span
        end = _ns(event.ts)
        labels = self._labels.get((event.workflow_name, event.name))
        if labels is None:
            labels = self._step_labels(event.workflow_name, event.name)
        attempt = frame.attempt_span
        if event.__class__ is StepComplete:
            if event.cached:
                span.set_attribute("step.cached", True)
            if event.attempt != 1:
                span.set_attribute("step.attempt", event.attempt)
            if attempt is not None:
                attempt.set_attribute("step.outcome", "ok")
        elif isinstance(event, StepFailed):
            span.set_attribute("step.attempt", event.attempt)
            self._error(span, event.error)
            self._step_errors.add(1, labels)
            if attempt is not None:
                attempt.set_attribute("step.outcome", "error")
                self._error(attempt, event.error, record=False)
        else:
            span.set_attribute("step.cancelled", True)
            if attempt is not None:
                attempt.set_attribute("step.outcome", "cancelled")
        if attempt is not None:
            attempt.end(end_time=end)
        self._step_duration.record(event.duration_ms, labels)
        if self._enrich is not None:
            self._enrich(span, event)
        span.end(end_time=end)

    def _step_labels(self, workflow_name: str, name: str) -> dict[str, str]:
        """The metric labels of a step (kept for the names seen most, bounded)."""
        labels = {"workflow.name": workflow_name, "step.name": name}
        if len(self._labels) < 1024:
            self._labels[workflow_name, name] = labels
        return labels

    def _step_retry(self, event: StepRetry) -> None:
        frame, innermost = self._find(event)
        if frame is None:
            return
        ts = _ns(event.ts)
        frame.span.add_event(
            "retry", {"step.attempt": event.attempt, "retry.delay": event.delay}, timestamp=ts
        )
        attempt = frame.attempt_span
        if attempt is None:  # the first attempt failed: its span, after the fact
            attempt = self._attempt(frame, event.attempt, frame.start_ns)
        attempt.set_attribute("step.outcome", "retry")
        self._error(attempt, event.error, record=False)
        attempt.end(end_time=ts)
        frame.attempt_span = attempt = self._attempt(
            frame, event.attempt + 1, ts + _ns(event.delay)
        )
        if innermost:
            current = self._get_current()
            self._attach(self._Context({**current, self._span_key: attempt}))

    def _attempt(self, frame: _Frame, number: int, start: int) -> Any:
        attributes: dict[str, Any] = {"step.name": frame.name, "step.attempt": number}
        if getattr(frame, "timed_out", 0) == number:
            attributes["step.timed_out"] = True
        return self._tracer.start_span(
            f"step {frame.name} attempt {number}",
            context=self._trace.set_span_in_context(frame.span),
            start_time=start,
            attributes=attributes,
        )

    def _step_timeout(self, event: StepTimeout) -> None:
        frame, _ = self._find(event)
        if frame is None:
            return
        frame.span.add_event(
            "timeout",
            {"step.attempt": event.attempt, "timeout.seconds": event.seconds},
            timestamp=_ns(event.ts),
        )
        frame.timed_out = event.attempt
        if frame.attempt_span is not None:
            frame.attempt_span.set_attribute("step.timed_out", True)

    def _step_skipped(self, event: StepSkipped) -> None:
        run_frame = self._runs.get(event.workflow_id)
        parent = None if run_frame is None else self._trace.set_span_in_context(run_frame.span)
        span = self._tracer.start_span(
            f"step {event.name}",
            context=parent,
            start_time=_ns(event.ts),
            attributes={"step.name": event.name, "step.skipped": True},
        )
        span.end(end_time=_ns(event.ts))

    # ---- compensations ------------------------------------------------------------

    def _compensation_start(self, event: CompensationStart) -> None:
        """A ``compensation <name>`` span, a child of the run's span (the rollback runs
        in the run's task, after its steps ended), current while the compensation runs."""
        run = event.workflow_id
        current, outer, parent, run_frame = self._where(run)
        attributes: dict[str, Any] = {"step.name": event.name, "compensation": True}
        if event.step_key is not None:
            attributes["step.key"] = event.step_key
        start = _ns(event.ts)
        name = _compensation_frame(event.name)
        span = self._tracer.start_span(
            name, context=parent, start_time=start, attributes=attributes
        )
        self._open(_Frame(span, run, name, event.step_key, current, outer, run_frame, start))
        self._enriched(span, event)

    def _compensation_end(self, event: CompensationComplete | CompensationFailed) -> None:
        frame, innermost = self._find(
            _Probe(event.workflow_id, _compensation_frame(event.name), event.step_key)
        )
        if frame is None:
            return
        self._close(frame, innermost)
        span = frame.span
        span.set_attribute("compensation.attempt", event.attempt)
        if isinstance(event, CompensationFailed):
            span.set_attribute("compensation.outcome", "error")
            self._error(span, event.error)
        else:
            span.set_attribute("compensation.outcome", "ok")
        self._enriched(span, event)
        span.end(end_time=_ns(event.ts))

    def _circuit(self, event: CircuitStateChange) -> None:
        self._circuit_changes.add(1, {"circuit.name": event.name, "circuit.state": event.state})

    # ---- helpers ----------------------------------------------------------------

    def _enriched(self, span: Any, event: Any) -> None:
        if self._enrich is not None:
            self._enrich(span, event)

    def _error(self, span: Any, error: object, *, record: bool = True) -> None:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, _describe(error)))
        if not record:
            return
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


class _Probe:
    """What `OtelAdapter._find` looks a frame up by, for a frame that is not a step's."""

    __slots__ = ("name", "step_key", "workflow_id")

    def __init__(self, workflow_id: str, name: str, step_key: str | None) -> None:
        self.workflow_id = workflow_id
        self.name = name
        self.step_key = step_key


def _compensation_frame(name: str) -> str:
    """The span (and frame) name of step ``name``'s compensation."""
    return f"compensation {name}"


def create_otel_adapter(
    service_name: str = "awaitly",
    *,
    enrich_span: EnrichSpan | None = None,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> OtelAdapter:
    """An `OtelAdapter`; ``enrich_span(span, event)`` may add attributes to
    each span as it starts and ends (as in the deployment guide)."""
    return OtelAdapter(
        service_name,
        enrich_span=enrich_span,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )


def _context_attributes(span: Any, context: Mapping[str, Any]) -> None:
    """The run's context (``workflow.run(..., context=...)``) as ``awaitly.context.*``
    attributes of its span: scalars as they are, anything else as JSON text (an
    attribute holds only scalars and lists of them)."""
    for key, value in context.items():
        if value is None:
            continue
        if not isinstance(value, (str, bool, int, float)):
            value = json.dumps(_plain(value), sort_keys=True)
        span.set_attribute(f"awaitly.context.{key}", value)


def _plain(value: Any) -> Any:
    # A run's context holds read-only mappings and tuples: json wants dicts and lists.
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in cast("Mapping[object, object]", value).items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in cast("tuple[object, ...]", value)]
    return value
