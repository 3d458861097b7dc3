"""The machinery of `awaitly_anyio.logs`: a per-task chain of open runs and steps in
a context variable, kept up to date by an ``on_event`` handler."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

from .events import (
    StepCancelled,
    StepComplete,
    StepFailed,
    StepStart,
    WorkflowCancelled,
    WorkflowComplete,
    WorkflowFailed,
    WorkflowParked,
    WorkflowStart,
)


class _Frame:
    """An open run (``step`` is ``None``) or step, and the frame it is nested in."""

    __slots__ = ("key", "parent", "run", "step", "workflow")

    def __init__(
        self, run: str, workflow: str, step: str | None, key: str | None, parent: _Frame | None
    ) -> None:
        self.run = run
        self.workflow = workflow
        self.step = step
        self.key = key
        self.parent = parent


_current: ContextVar[_Frame | None] = ContextVar("awaitly_anyio_log_context", default=None)
_get = _current.get
_set = _current.set

_STEP_ENDS = (StepComplete, StepFailed, StepCancelled)
_RUN_ENDS = (WorkflowComplete, WorkflowFailed, WorkflowCancelled, WorkflowParked)


def log_context(event: object) -> None:
    """The ``on_event`` handler that keeps the log context of the task running a run
    and its steps (see `current_log_context`).

    Pass it with the workflow's other handlers:
    ``create_workflow("checkout", on_event=[log_context, otel.handle_event])``.
    It is called in the task that runs the step (as every handler is), so the
    context follows that task and the tasks it starts (``ctx.step.all`` and the
    like); ends restore what was there before, whatever order they arrive in,
    and a run's end restores the context from before the run.  Never raises.
    """
    cls = event.__class__
    if cls is StepStart:
        assert isinstance(event, StepStart)
        _set(_Frame(event.workflow_id, event.workflow_name, event.name, event.step_key, _get()))
    elif cls in _STEP_ENDS:
        _end(event, getattr(event, "name", None), getattr(event, "step_key", None))
    elif cls is WorkflowStart:
        assert isinstance(event, WorkflowStart)
        _set(_Frame(event.workflow_id, event.workflow_name, None, None, _get()))
    elif cls in _RUN_ENDS:
        _end(event, None, None)


def _end(event: Any, step: str | None, key: str | None) -> None:
    run = event.workflow_id
    above: _Frame | None = None
    frame = _get()
    while frame is not None:
        if frame.step == step and frame.run == run and frame.key == key:
            break
        above, frame = frame, frame.parent
    if frame is None:
        return  # not opened in this task
    if above is None:
        _set(frame.parent)
    elif step is None:
        _set(frame.parent)  # a run's end drops whatever of it is still open here
    else:
        above.parent = frame.parent


def current_log_context() -> dict[str, str]:
    """``workflow_id``, ``workflow_name`` and, inside a step, ``step_name`` (and
    ``step_key`` for a keyed step) of the run and step the current task is in;
    empty outside runs.  Raises nothing."""
    frame = _get()
    if frame is None:
        return {}
    found = {"workflow_id": frame.run, "workflow_name": frame.workflow}
    if frame.step is not None:
        found["step_name"] = frame.step
        if frame.key is not None:
            found["step_key"] = frame.key
    return found


class WorkflowLogFilter(logging.Filter):
    """A `logging.Filter` that adds ``workflow_id``, ``workflow_name``,
    ``step_name`` and ``step_key`` attributes to every record (``default``, ``"-"``
    unless given, where there is none), for format strings such as
    ``"%(workflow_name)s %(workflow_id)s %(step_name)s %(message)s"`` and for
    structured formatters.  It never drops a record.

    Add it to the *handlers* that format records (``handler.addFilter(...)``): a
    filter on a logger sees only records logged on that very logger.
    """

    def __init__(self, name: str = "", *, default: str = "-") -> None:
        super().__init__(name)
        self.default = default

    def filter(self, record: logging.LogRecord) -> bool:
        frame = _get()
        default = self.default
        if frame is None:
            record.workflow_id = record.workflow_name = default
            record.step_name = record.step_key = default
            return True
        record.workflow_id = frame.run
        record.workflow_name = frame.workflow
        record.step_name = default if frame.step is None else frame.step
        record.step_key = default if frame.key is None else frame.key
        return True


def add_log_context(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor adding `current_log_context` to each event (keys
    already bound win): ``structlog.configure(processors=[add_log_context, ...])``.
    structlog is not imported: any callable chain with this signature can use it."""
    for name, value in current_log_context().items():
        event_dict.setdefault(name, value)
    return event_dict
