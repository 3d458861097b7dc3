"""One immutable event class per fact about a run, handed to ``on_event`` handlers.

Every event has a string ``type`` (``event.type == "step_complete"``) plus
``workflow_id``, ``workflow_name`` and ``ts`` (wall-clock seconds since the
epoch, from the workflow's clock).  Step events add ``name`` and ``step_key``;
events that end something add ``duration_ms``, measured on the monotonic clock.
Every run event also has ``context``: the mapping given as
``workflow.run(..., context=...)`` (a request id, a tenant), or ``None`` for a run
given none.

Events are built only when at least one handler listens, so they cost nothing
otherwise.  Handlers are plain callables; one that raises is logged and never
changes the run's outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, Protocol, TypeAlias

import attrs

__all__ = [
    "BatchProgress",
    "CircuitStateChange",
    "CompensationComplete",
    "CompensationFailed",
    "CompensationStart",
    "EventHandler",
    "StepCacheHit",
    "StepCacheMiss",
    "StepCancelled",
    "StepComplete",
    "StepFailed",
    "StepFallback",
    "StepRetry",
    "StepSkipped",
    "StepStart",
    "StepTimeout",
    "StepWaiting",
    "TRACE_CONTEXT_KEY",
    "TraceCarrierSource",
    "WorkflowCancelled",
    "WorkflowComplete",
    "WorkflowEvent",
    "WorkflowFailed",
    "WorkflowParked",
    "WorkflowResumed",
    "WorkflowStart",
]


@attrs.frozen(kw_only=True)
class _Event:
    workflow_id: str
    workflow_name: str
    ts: float
    # The run's context (``workflow.run(..., context=...)``), set by the run's emitter
    # only when one was given: a run without one pays nothing, and its events say None.
    context: Mapping[str, Any] | None = None


@attrs.frozen(kw_only=True)
class _StepEvent(_Event):
    name: str
    step_key: str | None = None


@attrs.frozen(kw_only=True)
class WorkflowStart(_Event):
    """A run began executing its body."""

    type: ClassVar[Literal["workflow_start"]] = "workflow_start"


@attrs.frozen(kw_only=True)
class WorkflowResumed(_Event):
    """A durable run claimed a run that already existed and is about to resume it,
    and the run keeps the trace context it was first created under.

    ``trace_context`` is that W3C trace context (``traceparent`` and maybe
    ``tracestate``), as a `TraceCarrierSource` gave it when the run was
    first created (stored in the run's metadata under `TRACE_CONTEXT_KEY`).
    Emitted after ``workflow_start`` and before any step, in the task that runs
    the workflow, and only for runs that carry such a context, so a tracing
    handler can continue the original trace.
    """

    type: ClassVar[Literal["workflow_resumed"]] = "workflow_resumed"
    trace_context: Mapping[str, str]


@attrs.frozen(kw_only=True)
class WorkflowComplete(_Event):
    """A run finished with ``Ok(value)``."""

    type: ClassVar[Literal["workflow_complete"]] = "workflow_complete"
    duration_ms: float
    value: Any = None


@attrs.frozen(kw_only=True)
class WorkflowFailed(_Event):
    """A run finished with ``Err(error)``."""

    type: ClassVar[Literal["workflow_error"]] = "workflow_error"
    duration_ms: float
    error: Any


@attrs.frozen(kw_only=True)
class WorkflowCancelled(_Event):
    """A run was cancelled from outside (its caller's scope, a shutdown); cancellation goes on."""

    type: ClassVar[Literal["workflow_cancelled"]] = "workflow_cancelled"
    duration_ms: float


@attrs.frozen(kw_only=True)
class WorkflowParked(_Event):
    """A durable run waiting in a step was parked by its host (``WorkflowHost``'s
    ``park_after``): this worker stopped executing it and released its lease, and
    the run stays ``waiting`` in its store until a value or its deadline makes it
    due again (then any worker resumes it, with ``workflow_start`` anew).  Emitted
    instead of ``step_cancelled`` and ``workflow_cancelled``: nothing was cancelled.
    ``waiting_for`` is the key the run waits for (``None``: a timer) and
    ``duration_ms`` how long it executed here, measured on the monotonic clock."""

    type: ClassVar[Literal["workflow_parked"]] = "workflow_parked"
    duration_ms: float
    waiting_for: str | None = None


@attrs.frozen(kw_only=True)
class StepStart(_StepEvent):
    """A step is about to run (or to be answered from its key's record)."""

    type: ClassVar[Literal["step_start"]] = "step_start"


@attrs.frozen(kw_only=True)
class StepComplete(_StepEvent):
    """A step produced ``value``; ``cached`` is true when its key's record answered instead."""

    type: ClassVar[Literal["step_complete"]] = "step_complete"
    duration_ms: float
    value: Any = None
    cached: bool = False
    attempt: int = 1


@attrs.frozen(kw_only=True)
class StepFailed(_StepEvent):
    """A step ended with ``Err(error)`` after ``attempt`` attempts; the workflow exits early."""

    type: ClassVar[Literal["step_error"]] = "step_error"
    duration_ms: float
    error: Any
    attempt: int = 1


@attrs.frozen(kw_only=True)
class StepRetry(_StepEvent):
    """Attempt ``attempt`` failed with ``error``; the next one starts after ``delay`` seconds."""

    type: ClassVar[Literal["step_retry"]] = "step_retry"
    attempt: int
    delay: float
    error: Any


@attrs.frozen(kw_only=True)
class StepTimeout(_StepEvent):
    """Attempt ``attempt`` ran out of its ``seconds`` and was cancelled."""

    type: ClassVar[Literal["step_timeout"]] = "step_timeout"
    seconds: float
    attempt: int = 1


@attrs.frozen(kw_only=True)
class StepSkipped(_StepEvent):
    """A step was deliberately not run (``ctx.step.skip``), for example behind a feature flag."""

    type: ClassVar[Literal["step_skipped"]] = "step_skipped"
    reason: str | None = None


@attrs.frozen(kw_only=True)
class StepWaiting(_StepEvent):
    """A durable run's step began waiting (``ctx.step.wait_for`` and friends, a keyed
    ``sleep``): for the value sent under ``waiting_for`` (``None`` for a timer), of
    kind ``wait_kind``, until ``wake_at`` (epoch seconds; ``None``: no deadline).  The
    run is recorded ``waiting`` in its store; its ``step_complete`` follows when the
    value arrives or the timer rings."""

    type: ClassVar[Literal["step_waiting"]] = "step_waiting"
    waiting_for: str | None = None
    wait_kind: str = "message"
    wake_at: float | None = None


@attrs.frozen(kw_only=True)
class StepCacheHit(_StepEvent):
    """A cached step (``ctx.step.cached``) was answered by its cache under ``cache_key``,
    without running; its ``step_complete`` follows with ``cached=True``."""

    type: ClassVar[Literal["step_cache_hit"]] = "step_cache_hit"
    cache_key: str


@attrs.frozen(kw_only=True)
class StepFallback(_StepEvent):
    """The step ``name`` (``ctx.step.with_fallback``) failed with an error its ``on=``
    chose, ``error`` (the exception itself when it raised), and runs its fallback."""

    type: ClassVar[Literal["step_fallback"]] = "step_fallback"
    error: Any


@attrs.frozen(kw_only=True)
class StepCacheMiss(_StepEvent):
    """A cached step found no live entry under ``cache_key`` and runs; ``reason`` says
    why an entry that was there could not be read (a damaged entry, treated as a
    miss), ``None`` when there was none."""

    type: ClassVar[Literal["step_cache_miss"]] = "step_cache_miss"
    cache_key: str
    reason: str | None = None


@attrs.frozen(kw_only=True)
class StepCancelled(_StepEvent):
    """A running step was cancelled from outside; cancellation propagates."""

    type: ClassVar[Literal["step_cancelled"]] = "step_cancelled"
    duration_ms: float


@attrs.frozen(kw_only=True)
class BatchProgress(_StepEvent):
    """Batch ``batch`` (counted from 0) of the batched ``ctx.step.for_each`` step ``name``
    finished: ``done`` of its ``total`` items are done (a resumed run counts the batches
    it replayed from their records too)."""

    type: ClassVar[Literal["batch_progress"]] = "batch_progress"
    done: int
    total: int
    batch: int


@attrs.frozen(kw_only=True)
class CompensationStart(_StepEvent):
    """A failed run's rollback began the compensation of step ``name`` (``step_key``:
    the step's key), with the value that step produced."""

    type: ClassVar[Literal["compensation_start"]] = "compensation_start"
    attempt: int = 1


@attrs.frozen(kw_only=True)
class CompensationComplete(_StepEvent):
    """The compensation of step ``name`` succeeded after ``attempt`` attempts (and, in
    a durable run, is recorded: it never runs again for this run)."""

    type: ClassVar[Literal["compensation_complete"]] = "compensation_complete"
    duration_ms: float
    attempt: int = 1


@attrs.frozen(kw_only=True)
class CompensationFailed(_StepEvent):
    """The compensation of step ``name`` failed with ``error`` after ``attempt``
    attempts (its retry policy gave up, or outside cancellation cut it off at the end
    of its shield); the rollback goes on with the older steps."""

    type: ClassVar[Literal["compensation_error"]] = "compensation_error"
    duration_ms: float
    error: Any
    attempt: int = 1


WorkflowEvent: TypeAlias = (
    WorkflowStart
    | WorkflowResumed
    | WorkflowComplete
    | WorkflowFailed
    | WorkflowCancelled
    | WorkflowParked
    | StepStart
    | StepComplete
    | StepFailed
    | StepRetry
    | StepTimeout
    | StepSkipped
    | StepWaiting
    | StepCacheHit
    | StepCacheMiss
    | StepFallback
    | StepCancelled
    | CompensationStart
    | CompensationComplete
    | CompensationFailed
    | BatchProgress
)
"""Every event a run can emit; narrow it on ``event.type`` or with ``match``."""

EventHandler: TypeAlias = Callable[[WorkflowEvent], object]
"""An ``on_event`` handler: a synchronous callable taking one event."""


TRACE_CONTEXT_KEY = "awaitly.trace_context"
"""The metadata key under which a durable run keeps the trace context it was first
created under (a mapping of W3C trace-context headers), for
`WorkflowResumed`.  Keys starting with ``awaitly.`` are the library's; a run stored
by an earlier release under ``trace_context`` is still read."""


class TraceCarrierSource(Protocol):
    """What an ``on_event`` handler's owner may offer to have a durable run remember
    the trace context it is created under (the OpenTelemetry adapter does).

    A durable run looks, for each of its workflow's handlers (for a bound method,
    its object), for a ``trace_carrier`` method.  If one returns a non-empty
    mapping when the run is about to be created (after ``workflow_start``, in the
    task that runs it), the run stores it in its metadata under
    `TRACE_CONTEXT_KEY`, once: a run that already exists keeps the context
    it was first created under, and a resume of it emits
    `WorkflowResumed` with that context.  Workflows without such a
    handler pay nothing.  Exceptions from ``trace_carrier`` are logged and
    ignored.
    """

    def trace_carrier(self, workflow_id: str) -> Mapping[str, str] | None:
        """The trace context of run ``workflow_id`` as W3C headers, or ``None``."""
        ...


@attrs.frozen(kw_only=True)
class CircuitStateChange:
    """Circuit breaker ``name`` went from ``previous`` to ``state`` (``"CLOSED"``,
    ``"OPEN"`` or ``"HALF_OPEN"``) at ``ts``.  Breakers pass it to their listeners;
    it is not a run event."""

    type: ClassVar[Literal["circuit_state_change"]] = "circuit_state_change"
    name: str
    previous: str
    state: str
    ts: float
