"""One immutable event class per fact about a run, handed to ``on_event`` handlers.

Every event has a string ``type`` (``event.type == "step_complete"``) plus
``workflow_id``, ``workflow_name`` and ``ts`` (wall-clock seconds since the
epoch, from the workflow's clock).  Step events add ``name`` and ``step_key``;
events that end something add ``duration_ms``, measured on the monotonic clock.

Events are built only when at least one handler listens, so they cost nothing
otherwise.  Handlers are plain callables; one that raises is logged and never
changes the run's outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal, TypeAlias

import attrs

__all__ = [
    "CircuitStateChange",
    "EventHandler",
    "StepCancelled",
    "StepComplete",
    "StepError",
    "StepRetry",
    "StepSkipped",
    "StepStart",
    "StepTimeout",
    "WorkflowCancelled",
    "WorkflowComplete",
    "WorkflowError",
    "WorkflowEvent",
    "WorkflowStart",
]


@attrs.frozen(kw_only=True)
class _Event:
    workflow_id: str
    workflow_name: str
    ts: float


@attrs.frozen(kw_only=True)
class _StepEvent(_Event):
    name: str
    step_key: str | None = None


@attrs.frozen(kw_only=True)
class WorkflowStart(_Event):
    """A run began executing its body."""

    type: ClassVar[Literal["workflow_start"]] = "workflow_start"


@attrs.frozen(kw_only=True)
class WorkflowComplete(_Event):
    """A run finished with ``Ok(value)``."""

    type: ClassVar[Literal["workflow_complete"]] = "workflow_complete"
    duration_ms: float
    value: Any = None


@attrs.frozen(kw_only=True)
class WorkflowError(_Event):
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
class StepError(_StepEvent):
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
class StepCancelled(_StepEvent):
    """A running step was cancelled from outside; cancellation propagates."""

    type: ClassVar[Literal["step_cancelled"]] = "step_cancelled"
    duration_ms: float


WorkflowEvent: TypeAlias = (
    WorkflowStart
    | WorkflowComplete
    | WorkflowError
    | WorkflowCancelled
    | StepStart
    | StepComplete
    | StepError
    | StepRetry
    | StepTimeout
    | StepSkipped
    | StepCancelled
)
"""Every event a run can emit; narrow it on ``event.type`` or with ``match``."""

EventHandler: TypeAlias = Callable[[WorkflowEvent], object]
"""An ``on_event`` handler: a synchronous callable taking one event."""


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
