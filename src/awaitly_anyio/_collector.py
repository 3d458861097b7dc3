"""Collect a run's keyed step results from its events, to save and resume later.

This is the seed's manual pattern: attach ``collector.handle_event`` as an
``on_event`` handler, then ``store.save(id, collector.get_resume_state())``.
Durable runs (``workflow.run(..., store=store)``) do the same automatically,
one checkpoint per step.
"""

from __future__ import annotations

from typing import Any

import attrs

from ._result import Err, Ok, Result
from ._resume import StepRecord
from ._snapshot import RunStatus, WorkflowSnapshot
from ._times import from_epoch
from .events import (
    StepComplete,
    StepFailed,
    WorkflowCancelled,
    WorkflowComplete,
    WorkflowEvent,
    WorkflowFailed,
    WorkflowParked,
    WorkflowStart,
)

__all__ = ["ResumeStateCollector", "create_resume_state_collector"]


class ResumeStateCollector:
    """Records keyed step outcomes from events; `get_resume_state` makes a snapshot.

    One collector follows one run at a time (the last ``workflow_start`` it saw).
    """

    def __init__(self) -> None:
        self._workflow_name = "workflow"
        self._workflow_id = ""
        self._status: RunStatus = "running"
        self._result: Result[Any, Any] | None = None
        self._steps: dict[str, StepRecord] = {}
        self._created: float | None = None

    def handle_event(self, event: WorkflowEvent) -> None:
        """An ``on_event`` handler."""
        if isinstance(event, StepComplete):
            if event.step_key is not None and not event.cached:
                self._steps[event.step_key] = _record(Ok(event.value), event)
            elif event.step_key is not None:
                self._steps.setdefault(event.step_key, StepRecord(Ok(event.value)))
        elif isinstance(event, StepFailed):
            if event.step_key is not None:
                self._steps[event.step_key] = _record(Err(event.error), event)
        elif isinstance(event, WorkflowStart):
            if event.workflow_id != self._workflow_id:
                self._steps = {}
            self._workflow_name = event.workflow_name
            self._workflow_id = event.workflow_id
            self._status, self._result, self._created = "running", None, event.ts
        elif isinstance(event, WorkflowComplete):
            self._status, self._result = "completed", Ok(event.value)
        elif isinstance(event, WorkflowFailed):
            self._status, self._result = "failed", Err(event.error)
        elif isinstance(event, WorkflowCancelled):
            self._status = "cancelled"
        elif isinstance(event, WorkflowParked):
            self._status = "waiting"

    def get_resume_state(self) -> WorkflowSnapshot:
        """A snapshot of what was collected: pass it to ``store.save`` or to
        ``workflow.run(..., resume_state=...)``."""
        snapshot = WorkflowSnapshot(
            workflow_name=self._workflow_name,
            workflow_id=self._workflow_id or "unknown",
            status=self._status,
            steps=dict(self._steps),
            result=self._result,
        )
        if self._created is None:
            return snapshot
        return attrs.evolve(snapshot, created_at=from_epoch(self._created))


def _record(result: Result[Any, Any], event: StepComplete | StepFailed) -> StepRecord:
    return StepRecord(
        result,
        attempts=event.attempt,
        started_at=from_epoch(event.ts - event.duration_ms / 1000.0),
        finished_at=from_epoch(event.ts),
    )


def create_resume_state_collector() -> ResumeStateCollector:
    """A new `ResumeStateCollector`."""
    return ResumeStateCollector()
