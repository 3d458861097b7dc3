"""The saved form of a run: `WorkflowSnapshot` and the lightweight listing types.

A snapshot is what a `SnapshotStore` saves and loads.
It is also a resume state: ``workflow.run(body, resume_state=snapshot)``
skips the keyed steps it records as completed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, Literal, TypeAlias

import attrs

from ._result import Result
from ._resume import StepRecord, _to_records

__all__ = [
    "FORMAT_VERSION",
    "RunStatus",
    "SnapshotInfo",
    "SnapshotPage",
    "WaitKind",
    "WorkflowSnapshot",
]

FORMAT_VERSION = 1
"""The snapshot format this version writes and reads."""

RunStatus: TypeAlias = Literal["pending", "running", "waiting", "completed", "failed", "cancelled"]
"""A stored run's status: ``pending`` (queued, no worker has started it yet),
``running`` (or abandoned by a dead worker), ``waiting`` (for a message, an approval,
a hook or a timer: see `SnapshotInfo.waiting_for`),
``completed``, ``failed`` or ``cancelled``."""
RUN_STATUSES: tuple[RunStatus, ...] = (
    "pending",
    "running",
    "waiting",
    "completed",
    "failed",
    "cancelled",
)

WaitKind: TypeAlias = Literal["message", "approval", "hook", "timer"]
"""What a waiting run waits for."""
WAIT_KINDS: tuple[WaitKind, ...] = ("message", "approval", "hook", "timer")


def utc_now() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError(f"snapshot times must be timezone-aware, not {value!r}")
    return value


@attrs.frozen
class WorkflowSnapshot:
    """Everything needed to resume run ``workflow_id`` of ``workflow_name``, or to report on it.

    ``steps`` maps step keys to their records, in the order the steps were recorded
    (execution order; a step recorded again keeps its place); ``result`` is the final Result
    once the run has ``completed`` (or ``failed``); ``metadata`` is free-form
    JSON-able data (for example the last error and attempt time).
    """

    workflow_name: str
    workflow_id: str
    status: RunStatus = attrs.field(default="running", validator=attrs.validators.in_(RUN_STATUSES))
    steps: Mapping[str, StepRecord] = attrs.field(
        factory=dict[str, StepRecord], converter=_to_records
    )
    result: Result[Any, Any] | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict[str, Any])
    created_at: datetime = attrs.field(factory=utc_now, validator=lambda s, a, v: _aware(v))
    updated_at: datetime = attrs.field(factory=utc_now, validator=lambda s, a, v: _aware(v))
    expires_at: datetime | None = attrs.field(default=None, validator=lambda s, a, v: _aware(v))
    format_version: int = FORMAT_VERSION

    def info(self) -> SnapshotInfo:
        """The lightweight listing entry for this snapshot."""
        return SnapshotInfo(
            id=self.workflow_id,
            workflow_name=self.workflow_name,
            status=self.status,
            created_at=self.created_at,
            updated_at=self.updated_at,
            expires_at=self.expires_at,
        )


@attrs.frozen
class SnapshotInfo:
    """One row of ``store.list()``: a run's identity, status and times, without its steps.

    ``lease_owner`` and ``lease_expires_at`` say which worker holds the run's lease
    and until when (both ``None`` when no one does); a lease whose time has passed is
    one its holder no longer renews (a dead or stopped worker): the run waits for
    recovery.  Only a store's ``list()`` and ``info()`` fill them in.

    ``damaged`` is ``None`` for a run that reads well.  For a run whose stored row
    cannot be read (a bad time, a missing field, a format version this release
    does not read, a store key of the wrong type) it says what is wrong, and the
    fields that could not be read hold placeholders: ``workflow_name`` ``"?"``,
    ``status`` ``"failed"``, times the epoch (1970-01-01 UTC).  Such a run is
    listed, never repaired or deleted by a read: it is left for an operator
    (``load`` raises `SnapshotDecodeError` for it).

    A ``waiting`` run says what it waits for: ``wait_kind`` (``"message"``,
    ``"approval"``, ``"hook"`` or ``"timer"``), ``waiting_for`` (the message key; ``None``
    for a timer) and ``wake_at``, its durable deadline (``None``: no deadline).

    A queued run (see `QueueStore.enqueue`) names its ``queue``, ``priority`` (smaller
    starts first) and ``partition`` (``None``: none); ``started_at`` is when a worker
    took it from the queue (``None``: not yet, or not queued); ``cancel_requested``
    says a cancel was asked for a run that was running or waiting then (its worker
    stops it and records it ``cancelled``), or that a ``cancelled`` run was cancelled
    on request (it is final: recovery never resumes it; `QueueStore.resume` does).
    """

    id: str
    workflow_name: str
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None
    damaged: str | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    waiting_for: str | None = None
    wait_kind: WaitKind | None = None
    wake_at: datetime | None = None
    queue: str | None = None
    priority: int = 0
    partition: str | None = None
    started_at: datetime | None = None
    cancel_requested: bool = False


@attrs.frozen
class SnapshotPage:
    """One page of ``store.list()``, newest first.  Iterate it for the infos; pass
    ``next_cursor`` back as ``cursor=`` for the next page (``None`` on the last one)."""

    items: list[SnapshotInfo]
    next_cursor: str | None = None

    def __iter__(self) -> Iterator[SnapshotInfo]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)
