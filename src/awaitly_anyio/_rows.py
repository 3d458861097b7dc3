"""The row model every shipped store uses: one run row plus one JSON text per step record.

Stores keep rows in their own way (a dict, SQLite tables, PostgreSQL tables, Redis
hashes); turning snapshots into rows and back happens here, once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .errors import SerializationError, SnapshotDecodeError
from .result import Result
from .serialization import (
    TypeRegistry,
    _decode,
    _encode,
    _Undecodable,
    _Unstorable,
    dumps,
    encode_step_record,
    loads,
    result_to_doc,
    snapshot_from_doc,
)
from .snapshot import FORMAT_VERSION, RunStatus, SnapshotInfo, WorkflowSnapshot
from .store import from_epoch, iso_from_epoch

__all__ = [
    "RunRow",
    "assemble",
    "decode_metadata",
    "encode_metadata",
    "encode_result",
    "info",
    "restarted",
    "split",
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

    def lease_held_by_other(self, owner: str, now: float) -> bool:
        """Whether someone other than ``owner`` holds a live lease on this run."""
        return (
            self.lease_owner is not None
            and self.lease_owner != owner
            and self.lease_expires_at is not None
            and self.lease_expires_at > now
        )


def encode_metadata(metadata: Mapping[str, Any], registry: TypeRegistry) -> str:
    """Metadata as JSON; values keep their types like step values do."""
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


def split(
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
    steps = [(key, encode_step_record(key, rec, registry)) for key, rec in snapshot.steps.items()]
    return row, steps


def assemble(
    run_id: str, row: RunRow, steps: Iterable[tuple[str, str]], registry: TypeRegistry
) -> WorkflowSnapshot:
    """Rebuild a snapshot from its rows; raises SnapshotDecodeError naming ``run_id``."""
    try:
        doc = {
            "format": row.format_version,
            "workflow_name": row.workflow_name,
            "workflow_id": run_id,
            "status": row.status,
            "steps": {key: loads(text, run_id) for key, text in steps},
            "result": None if row.result_json is None else loads(row.result_json, run_id),
            "metadata": loads(row.metadata_json, run_id),
            "created_at": iso_from_epoch(row.created_at),
            "updated_at": iso_from_epoch(row.updated_at),
            "expires_at": None if row.expires_at is None else iso_from_epoch(row.expires_at),
        }
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise SnapshotDecodeError(run_id, f"invalid row: {exc}") from None
    return snapshot_from_doc(doc, run_id, registry)


def restarted(
    run_id: str,
    previous: RunRow | None,
    workflow_name: str,
    metadata: Mapping[str, Any] | None,
    now: float,
    registry: TypeRegistry,
) -> RunRow:
    """The row of a run (re)started at ``now``: running, without result, expiry or lease,
    keeping the previous row's creation time and metadata (with ``metadata`` over it)."""
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
    )


def decode_metadata(run_id: str, row: RunRow, registry: TypeRegistry) -> dict[str, Any]:
    """The run's metadata as a dict; raises SnapshotDecodeError naming ``run_id``."""
    try:
        value = _decode(loads(row.metadata_json, run_id), registry)
    except _Undecodable as exc:
        raise SnapshotDecodeError(run_id, f"metadata: {exc}") from None
    if not isinstance(value, dict):
        raise SnapshotDecodeError(run_id, f"metadata should be a mapping, found {value!r}")
    return value


def info(run_id: str, row: RunRow) -> SnapshotInfo:
    """The listing entry for a run row."""
    return SnapshotInfo(
        id=run_id,
        workflow_name=row.workflow_name,
        status=row.status,
        created_at=from_epoch(row.created_at),
        updated_at=from_epoch(row.updated_at),
        expires_at=None if row.expires_at is None else from_epoch(row.expires_at),
    )
