"""What a run needs to know to resume: the recorded results of its keyed steps.

A keyed step (``ctx.step(..., key="charge:42")``) whose key has an ``Ok``
record in the resume state is not executed again; its recorded value is
returned and the event says ``cached=True``.  Records holding an ``Err`` are
not replayed: a step that failed runs again on resume.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol, cast

import attrs

from ._result import Err, Ok, Result
from ._run import NO_RESULTS

__all__ = ["ResumeState", "StepRecord", "SupportsResume"]


def _check_result(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, (Ok, Err)):
        raise TypeError(f"{attribute.name} must be Ok(...) or Err(...), not {value!r}")


@attrs.frozen
class StepRecord:
    """The outcome of one keyed step: its Result, how many attempts it took, and when."""

    result: Result[Any, Any] = attrs.field(validator=_check_result)
    attempts: int = 1
    started_at: datetime | None = None
    finished_at: datetime | None = None


class SupportsResume(Protocol):
    """Anything with step records by key can seed a run: a `ResumeState` or a snapshot."""

    @property
    def steps(self) -> Mapping[str, StepRecord]: ...


def _to_records(steps: Mapping[Any, StepRecord | Result[Any, Any]]) -> dict[str, StepRecord]:
    records: dict[str, StepRecord] = {}
    for key, item in steps.items():
        if not isinstance(key, str):
            raise TypeError(f"step keys must be strings, not {key!r}")
        records[key] = item if isinstance(item, StepRecord) else StepRecord(item)
    return records


@attrs.frozen(init=False)
class ResumeState:
    """Step records by key.  Pass it as ``workflow.run(..., resume_state=state)``.

    ``steps`` accepts plain Results too: ``ResumeState({"user:1": Ok(user)})``;
    each becomes a `StepRecord`.  Raises ``TypeError`` for a key that is
    not a string or a value that is neither a ``StepRecord`` nor a Result.
    """

    # A hand-written __init__ instead of attrs' ``converter=``: type checkers then see
    # ``steps`` as the plain Mapping it is (pyright models a converter field as a
    # descriptor, which no longer matches the SupportsResume protocol).
    steps: Mapping[str, StepRecord]

    def __init__(self, steps: Mapping[str, StepRecord | Result[Any, Any]] | None = None) -> None:
        object.__setattr__(self, "steps", _to_records({} if steps is None else steps))


def completed_results(state: object) -> Mapping[str, Ok[Any]]:
    """The ``Ok`` results by key that a run seeded from ``state`` may replay."""
    if state is None:
        return NO_RESULTS
    steps: object = getattr(state, "steps", None)
    if not isinstance(steps, Mapping):
        raise TypeError(
            f"resume_state must have a 'steps' mapping of key -> StepRecord "
            f"(a ResumeState or a WorkflowSnapshot), not {type(state).__name__}"
        )
    completed: dict[str, Ok[Any]] = {}
    for key, record in cast("Mapping[str, object]", steps).items():
        result = record.result if isinstance(record, StepRecord) else record
        if isinstance(result, Ok):
            completed[key] = result
        elif not isinstance(result, Err):
            raise TypeError(f"resume_state step {key!r} holds {record!r}, not a StepRecord")
    return completed
