"""The row model every shipped store uses: one run row plus one JSON text per step record.

Stores keep rows in their own way (a dict, SQLite tables, PostgreSQL tables, Redis
hashes); turning snapshots into rows and back happens here, once.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, cast

import attrs

from ._checks import check_key
from ._errors import SerializationError, SnapshotDecodeError
from ._result import Result
from ._snapshot import (
    FORMAT_VERSION,
    RUN_STATUSES,
    WAIT_KINDS,
    RunStatus,
    SnapshotInfo,
    WaitKind,
    WorkflowSnapshot,
)
from ._times import from_epoch, iso_from_epoch
from .serialization import (
    TypeRegistry,
    _decode,
    _encode,
    _Undecodable,
    _Unstorable,
    dumps,
    encode_step_record,
    format_problem,
    loads,
    result_to_doc,
    snapshot_from_doc,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "decode_message",
    "encode_message",
    "message_record",
    "message_record_parts",
    "RunRow",
    "check_list_args",
    "claimed_snapshot",
    "damaged_entry",
    "decode_cursor",
    "decode_metadata",
    "decode_problem",
    "encode_cursor",
    "encode_metadata",
    "encode_result",
    "listing_entry",
    "restarted_row",
    "row_problem",
    "rows_from_snapshot",
    "snapshot_from_rows",
]


@attrs.frozen
class RunRow:
    """A run without its steps; times are epoch seconds."""

    workflow_name: str
    status: RunStatus
    result_json: str | None
    metadata_json: str
    created_at: float
    updated_at: float
    expires_at: float | None
    format_version: int = FORMAT_VERSION
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    # The pending wait (see `RowDriver.begin_wait`): kept by the driver like the lease.
    wait_step: str | None = None
    wait_key: str | None = None
    wait_kind: str | None = None
    wake_at: float | None = None
    # Queued runs (`RowDriver.enqueue`, `claim_queued`): which queue, in what order,
    # which partition, when a worker started it; and a cancel asked from outside.
    queue: str | None = None
    priority: int = 0
    partition: str | None = None
    started_at: float | None = None
    cancel_at: float | None = None

    def lease_held_by_other(self, owner: str, now: float) -> bool:
        """Whether someone other than ``owner`` holds a live lease on this run."""
        return (
            self.lease_owner is not None
            and self.lease_owner != owner
            and self.lease_expires_at is not None
            and self.lease_expires_at > now
        )


MAX_MESSAGE_BYTES = 1 << 20
"""The largest value (encoded as JSON, in UTF-8 bytes) a run's mailbox takes: 1 MiB."""


def encode_message(value: Any, registry: TypeRegistry) -> str:
    """A message's value as JSON, typed like a step value.  `SerializationError` (step
    ``"<message>"``) for a value with no JSON form; ``ValueError`` naming the size for
    one over `MAX_MESSAGE_BYTES`."""
    try:
        text = dumps(_encode(value, registry))
    except _Unstorable as exc:
        raise SerializationError("<message>", exc.type_name, exc.reason) from None
    except RecursionError:
        raise SerializationError(
            "<message>", type(value).__qualname__, "it is nested too deeply to encode"
        ) from None
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(
            f"a message holds at most {MAX_MESSAGE_BYTES} bytes of JSON; this value takes {size}"
        )
    return text


def decode_message(run_id: str, text: str, registry: TypeRegistry) -> Any:
    """A stored message's value; `SnapshotDecodeError` naming the run if it cannot be
    read (damaged JSON, a type this registry does not know)."""
    try:
        return _decode(loads(text, run_id), registry)
    except _Undecodable as exc:
        raise SnapshotDecodeError(run_id, f"a message: {exc}") from None


def message_record_parts(now: float) -> tuple[str, str]:
    """The two halves ``(head, tail)`` of the record (JSON) of the step that consumed a
    message at ``now``: ``head + value JSON + tail`` is `message_record`.  A driver
    splices the stored value between them in its database (SQL, Lua), so a receive
    is one round trip and the value is never decoded or encoded on the way."""
    at = iso_from_epoch(now)
    return '{"ok":true,"value":', f',"attempts":1,"started_at":"{at}","finished_at":"{at}"}}'


def message_record(text: str, now: float) -> str:
    """The record (JSON) of the step that consumed a message whose value is ``text``:
    ``Ok(value)``, one attempt, started and finished ``now``.  The value's JSON is
    spliced in as it was stored (it is the same encoding a step value has), so the
    value is not encoded twice."""
    head, tail = message_record_parts(now)
    return head + text + tail


def encode_metadata(metadata: Mapping[str, Any], registry: TypeRegistry) -> str:
    """Metadata as JSON; values keep their types like step values do."""
    if not metadata and type(metadata) is dict:  # most runs have none: every claim asks
        return "{}"
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping, not {metadata!r}")
    try:
        return dumps(_encode(dict(metadata), registry))
    except _Unstorable as exc:
        raise SerializationError("<metadata>", exc.type_name, exc.reason) from None


def encode_result(result: Result[Any, Any] | None, registry: TypeRegistry) -> str | None:
    """A run's final result as JSON (``None`` stays ``None``)."""
    if result is None:
        return None
    try:
        return dumps(result_to_doc(result, registry))
    except _Unstorable as exc:
        raise SerializationError("<result>", exc.type_name, exc.reason) from None


def rows_from_snapshot(
    snapshot: WorkflowSnapshot,
    registry: TypeRegistry,
    *,
    now: float,
    expires_at: float | None,
    metadata: Mapping[str, Any] | None,
) -> tuple[RunRow, list[tuple[str, str]]]:
    """A snapshot as a run row and ``(key, json)`` step rows, saved at ``now`` (epoch
    seconds, the store's clock); raises SerializationError."""
    merged = dict(snapshot.metadata)
    if metadata:
        merged.update(metadata)
    if expires_at is None and snapshot.expires_at is not None:
        expires_at = snapshot.expires_at.timestamp()
    row = RunRow(
        workflow_name=snapshot.workflow_name,
        status=snapshot.status,
        result_json=encode_result(snapshot.result, registry),
        metadata_json=encode_metadata(merged, registry),
        created_at=snapshot.created_at.timestamp(),
        updated_at=now,
        expires_at=expires_at,
        format_version=snapshot.format_version,
    )
    steps = [
        (check_key(key), encode_step_record(key, rec, registry))
        for key, rec in snapshot.steps.items()
    ]
    return row, steps


def snapshot_from_rows(
    run_id: str, row: RunRow, steps: Iterable[tuple[str, str]], registry: TypeRegistry
) -> WorkflowSnapshot:
    """Rebuild a snapshot from its rows; raises SnapshotDecodeError naming ``run_id`` and
    what is wrong (checked in this order: the row, the step records, the result, the
    metadata), never anything else."""
    problem = row_problem(row)
    if problem is not None:
        raise SnapshotDecodeError(run_id, problem)

    def parse(text: object, where: str) -> Any:
        try:
            return loads(text, run_id)  # type: ignore[arg-type]
        except SnapshotDecodeError as exc:
            raise SnapshotDecodeError(run_id, f"{where}: {exc.reason}") from None

    try:
        doc = {
            "format": row.format_version,
            "workflow_name": row.workflow_name,
            "workflow_id": run_id,
            "status": row.status,
            "steps": {key: parse(text, f"step {key!r}") for key, text in steps},
            "result": None if row.result_json is None else parse(row.result_json, "result"),
            "metadata": parse(row.metadata_json, "metadata"),
            "created_at": iso_from_epoch(row.created_at),
            "updated_at": iso_from_epoch(row.updated_at),
            "expires_at": None if row.expires_at is None else iso_from_epoch(row.expires_at),
        }
    except SnapshotDecodeError:
        raise
    except Exception as exc:
        raise SnapshotDecodeError(run_id, f"invalid row: {type(exc).__name__}: {exc}") from None
    return snapshot_from_doc(doc, run_id, registry)


def restarted_row(
    run_id: str,
    previous: RunRow | None,
    workflow_name: str,
    metadata: Mapping[str, Any] | None,
    now: float,
    registry: TypeRegistry,
) -> RunRow:
    """The row of a run (re)started at ``now``: running, without result, expiry, lease
    or cancel request, keeping the previous row's creation time, pending wait, queue
    fields (queue, priority, partition, start time) and metadata (with ``metadata``
    over it)."""
    merged = {} if previous is None else decode_metadata(run_id, previous, registry)
    merged.update(metadata or {})
    return RunRow(
        workflow_name=workflow_name,
        status="running",
        result_json=None,
        metadata_json=encode_metadata(merged, registry),
        created_at=now if previous is None else previous.created_at,
        updated_at=now,
        expires_at=None,
        # A pending wait outlives a restart: the resumed run waits again until the
        # same deadline, not a full wait later.
        wait_step=None if previous is None else previous.wait_step,
        wait_key=None if previous is None else previous.wait_key,
        wait_kind=None if previous is None else previous.wait_kind,
        wake_at=None if previous is None else previous.wake_at,
        queue=None if previous is None else previous.queue,
        priority=0 if previous is None else previous.priority,
        partition=None if previous is None else previous.partition,
        started_at=None if previous is None else previous.started_at,
    )


def decode_metadata(run_id: str, row: RunRow, registry: TypeRegistry) -> dict[str, Any]:
    """The run's metadata as a dict; raises SnapshotDecodeError naming ``run_id``."""
    try:
        value = _decode(loads(row.metadata_json, run_id), registry)
    except _Undecodable as exc:
        raise SnapshotDecodeError(run_id, f"metadata: {exc}") from None
    if not isinstance(value, dict):
        raise SnapshotDecodeError(run_id, f"metadata should be a mapping, found {value!r}")
    return cast("dict[str, Any]", value)  # decoded from a JSON object: its keys are strings


_EPOCH = from_epoch(0.0)


def _time_problem(value: object, name: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{name} is not a number: {value!r}"
    try:
        from_epoch(value)
    except (ValueError, OverflowError, OSError):
        return f"{name} is not a time: {value!r}"
    return None


def row_problem(row: RunRow) -> str | None:
    """What makes a run row unreadable (a bad time, workflow name or status, a format
    version this release does not read), or ``None`` if it reads well.  Only the
    row: its step records, result and metadata are checked by `snapshot_from_rows`."""
    problem = format_problem(row.format_version)
    if problem is not None:
        return problem
    if not isinstance(row.workflow_name, str) or not row.workflow_name:
        return f"the workflow name is not a non-empty string: {row.workflow_name!r}"
    if row.status not in RUN_STATUSES:
        return f"unknown status {row.status!r}"
    for name in (
        "created_at",
        "updated_at",
        "expires_at",
        "lease_expires_at",
        "wake_at",
        "started_at",
        "cancel_at",
    ):
        value = getattr(row, name)
        if value is not None or name in ("created_at", "updated_at"):
            problem = _time_problem(value, name)
            if problem is not None:
                return problem
    return None


def damaged_entry(run_id: str, problem: str, row: RunRow | None = None) -> SnapshotInfo:
    """The listing entry of a run whose row cannot be read: ``damaged`` says why, and
    what could not be read holds the placeholders `SnapshotInfo` documents."""

    def when(value: object) -> datetime:
        return _EPOCH if _time_problem(value, "") is not None else from_epoch(value)  # type: ignore[arg-type]

    name = getattr(row, "workflow_name", None)
    status = getattr(row, "status", None)
    expires_at = getattr(row, "expires_at", None)
    return SnapshotInfo(
        id=run_id,
        workflow_name=name if isinstance(name, str) and name else "?",
        status=status if status in RUN_STATUSES else "failed",
        created_at=when(getattr(row, "created_at", None)),
        updated_at=when(getattr(row, "updated_at", None)),
        expires_at=None if expires_at is None else when(expires_at),
        damaged=problem,
    )


def listing_entry(run_id: str, row: RunRow, *, lease: bool = False) -> SnapshotInfo:
    """The listing entry for a run row; flagged ``damaged`` if the row cannot be read
    (see `row_problem`), never an exception.  With ``lease``, the row's lease
    holder and expiry too (a lease without a holder, or a holder without a time, is
    no lease)."""
    problem = row_problem(row)
    if problem is not None:
        return damaged_entry(run_id, problem, row)
    until = row.lease_expires_at if lease and row.lease_owner else None
    return SnapshotInfo(
        id=run_id,
        workflow_name=row.workflow_name,
        status=row.status,
        created_at=from_epoch(row.created_at),
        updated_at=from_epoch(row.updated_at),
        expires_at=None if row.expires_at is None else from_epoch(row.expires_at),
        lease_owner=None if until is None else row.lease_owner,
        lease_expires_at=None if until is None else from_epoch(until),
        waiting_for=row.wait_key if row.status == "waiting" else None,
        wait_kind=_wait_kind(row) if row.status == "waiting" else None,
        wake_at=None if row.status != "waiting" or row.wake_at is None else from_epoch(row.wake_at),
        queue=row.queue,
        priority=row.priority,
        partition=row.partition,
        started_at=None if row.started_at is None else from_epoch(row.started_at),
        cancel_requested=row.cancel_at is not None
        and row.status in ("running", "waiting", "cancelled"),
    )


def _wait_kind(row: RunRow) -> WaitKind | None:
    kind = row.wait_kind
    return kind if kind in WAIT_KINDS else None


def decode_problem(
    run_id: str, row: RunRow, steps: Iterable[tuple[str, str]], registry: TypeRegistry
) -> str | None:
    """Why run ``run_id`` cannot be decoded (row, step records, result or metadata), or
    ``None`` if it can: what recovery checks before it claims a run."""
    try:
        snapshot_from_rows(run_id, row, steps, registry)
    except SnapshotDecodeError as exc:
        return exc.reason
    return None


def claimed_snapshot(
    snapshot: WorkflowSnapshot, metadata: Mapping[str, Any] | None, now: float
) -> WorkflowSnapshot:
    """An existing run's snapshot as a claim leaves it (running, no result or expiry,
    ``metadata`` merged), for `snapshot`."""
    merged = dict(snapshot.metadata)
    merged.update(metadata or {})
    return attrs.evolve(
        snapshot,
        status="running",
        result=None,
        metadata=merged,
        updated_at=from_epoch(now),
        expires_at=None,
    )


def check_list_args(prefix: object, status: object, limit: object) -> None:
    """Validate the arguments of ``list``."""
    if prefix is not None and not isinstance(prefix, str):
        raise TypeError(f"prefix must be a string, not {prefix!r}")
    if status is not None and status not in RUN_STATUSES:
        raise ValueError(f"status must be one of {', '.join(RUN_STATUSES)}, not {status!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise ValueError(f"limit must be an integer from 1 to 10000, not {limit!r}")


def encode_cursor(updated_at: float, id: str) -> str:
    """An opaque cursor pointing just after (``updated_at``, ``id``) in newest-first order."""
    raw = json.dumps([updated_at, id], ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The inverse of `encode_cursor`; ``ValueError`` for a cursor not made by it."""
    try:
        updated_at, id = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        if isinstance(updated_at, bool) or not isinstance(updated_at, (int, float)):
            raise TypeError
        if not isinstance(id, str):
            raise TypeError
    except (ValueError, TypeError, UnicodeError):
        raise ValueError(f"invalid list cursor {cursor!r}") from None
    return float(updated_at), id
