"""An in-process store: for tests, demos and single-process use.

It keeps the same JSON rows as the database stores, so a value that could not
be saved to SQLite cannot be saved here either, and a loaded snapshot never
shares objects with the one that was saved.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any

import anyio.lowlevel
import attrs

from .._clock import Clock, SystemClock
from .._errors import LeaseLostError, SnapshotDecodeError
from .._result import Result
from .._rows import (
    RunRow,
    as_claimed,
    assemble,
    damaged_info,
    decode_metadata,
    decode_problem,
    encode_metadata,
    info,
    restarted,
    row_problem,
    split,
)
from .._snapshot import RunStatus, SnapshotInfo, SnapshotPage, WorkflowSnapshot
from .._store import (
    Claim,
    EncodedStep,
    Ttl,
    check_id,
    check_key,
    check_lease,
    check_list_args,
    decode_cursor,
    encode_cursor,
    ttl_seconds,
)
from ..serialization import TypeRegistry, default_registry

__all__ = ["MemoryStore"]


class MemoryStore:
    """A `SnapshotStore` (and ``LeaseStore``) held in a dict.

    ``clock`` supplies wall time for TTLs and ``updated_at``; ``registry`` names
    the types step values may hold.  Every method checkpoints, so it is a
    cancellation point like a real store's.
    """

    def __init__(
        self, *, clock: Clock | None = None, registry: TypeRegistry = default_registry
    ) -> None:
        self._clock = clock if clock is not None else SystemClock()
        self._registry = registry
        self._runs: dict[str, RunRow] = {}
        self._steps: dict[str, dict[str, str]] = {}
        self._closed = False

    async def __aenter__(self) -> MemoryStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._runs)} runs)"

    @property
    def registry(self) -> TypeRegistry:
        """The types this store can save and load."""
        return self._registry

    def _live(self, id: str) -> RunRow | None:
        if self._closed:
            raise RuntimeError("this MemoryStore is closed")
        row = self._runs.get(id)
        if row is not None and row.expires_at is not None and row.expires_at <= self._clock.time():
            del self._runs[id]
            self._steps.pop(id, None)
            return None
        return row

    def _expiry(self, ttl: Ttl) -> float | None:
        seconds = ttl_seconds(ttl)
        return None if seconds is None else self._clock.time() + seconds

    async def save(
        self,
        id: str,
        snapshot: WorkflowSnapshot,
        *,
        ttl: Ttl = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Replace run ``id`` with ``snapshot``."""
        check_id(id)
        row, steps = split(
            snapshot,
            self._registry,
            now=self._clock.time(),
            expires_at=self._expiry(ttl),
            metadata=metadata,
        )
        await anyio.lowlevel.checkpoint()
        self._live(id)
        self._runs[id] = row
        self._steps[id] = dict(steps)

    async def load(self, id: str) -> WorkflowSnapshot | None:
        """Run ``id``'s snapshot, or ``None``; its steps in the order they were recorded."""
        check_id(id)
        await anyio.lowlevel.checkpoint()
        row = self._live(id)
        if row is None:
            return None
        return assemble(id, row, self._steps.get(id, {}).items(), self._registry)

    async def info(self, id: str) -> SnapshotInfo | None:
        """Run ``id``'s listing entry, read-only: its status, times and lease (holder and
        expiry, see `SnapshotInfo`), without its steps; ``None``
        if there is none or it expired.  A run whose row cannot be read comes back
        flagged ``damaged``, never raised.  A cancellation point; ``ValueError`` for an
        invalid id."""
        check_id(id)
        await anyio.lowlevel.checkpoint()
        row = self._live(id)
        return None if row is None else info(id, row, lease=True)

    async def delete(self, id: str) -> bool:
        """Remove run ``id``."""
        check_id(id)
        await anyio.lowlevel.checkpoint()
        existed = self._live(id) is not None
        self._runs.pop(id, None)
        self._steps.pop(id, None)
        return existed

    async def list(
        self,
        *,
        prefix: str | None = None,
        status: RunStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SnapshotPage:
        """Runs newest first, ``limit`` at a time."""
        check_list_args(prefix, status, limit)
        after = decode_cursor(cursor) if cursor is not None else None
        await anyio.lowlevel.checkpoint()
        rows: builtins.list[tuple[float, str, RunRow]] = []
        for id in list(self._runs):
            row = self._live(id)
            if row is None or (prefix is not None and not id.startswith(prefix)):
                continue
            if status is not None and row.status != status:
                continue
            if after is not None and (row.updated_at, id) >= after:
                continue
            rows.append((row.updated_at, id, row))
        rows.sort(key=lambda item: (_number(item[0]), item[1]), reverse=True)
        page = rows[:limit]
        infos = [info(id, row, lease=True) for _, id, row in page]
        more = len(rows) > limit
        next_cursor = encode_cursor(page[-1][0], page[-1][1]) if more and page else None
        return SnapshotPage(infos, next_cursor)

    async def close(self) -> None:
        """Forget every run."""
        self._closed = True
        self._runs.clear()
        self._steps.clear()

    # ---- CheckpointStore ---------------------------------------------------------------

    async def mark_running(
        self, id: str, workflow_name: str, *, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Create run ``id`` or set it back to running, keeping its steps."""
        check_id(id)
        await anyio.lowlevel.checkpoint()
        now = self._clock.time()
        row = self._live(id)
        self._runs[id] = restarted(id, row, workflow_name, metadata, now, self._registry)
        self._steps.setdefault(id, {})

    def _writable(self, id: str, owner: str | None) -> RunRow:
        row = self._live(id)
        if row is None:
            raise LookupError(f"run {id!r} is not in the store (mark_running first)")
        if owner is not None and row.lease_owner != owner:
            raise LeaseLostError(id, owner)
        return row

    async def checkpoint(self, id: str, step: EncodedStep, *, owner: str | None = None) -> None:
        """Add one step record to run ``id``; ``ValueError`` for an invalid step key."""
        check_key(step.key)
        await anyio.lowlevel.checkpoint()
        row = self._writable(id, owner)
        self._steps[id][step.key] = step.json
        self._runs[id] = attrs.evolve(row, updated_at=self._clock.time())

    async def finish(
        self,
        id: str,
        status: RunStatus,
        result: Result[Any, Any] | None,
        result_json: str | None,
        *,
        ttl: Ttl = None,
        metadata: Mapping[str, Any] | None = None,
        owner: str | None = None,
    ) -> None:
        """Record how run ``id`` ended (releasing ``owner``'s lease)."""
        await anyio.lowlevel.checkpoint()
        row = self._writable(id, owner)
        merged = decode_metadata(id, row, self._registry)
        merged.update(metadata or {})
        self._runs[id] = attrs.evolve(
            row,
            status=status,
            result_json=result_json,
            metadata_json=encode_metadata(merged, self._registry),
            updated_at=self._clock.time(),
            expires_at=self._expiry(ttl),
            lease_owner=None,
            lease_expires_at=None,
        )

    # ---- LeaseStore --------------------------------------------------------------------

    async def claim(
        self,
        id: str,
        workflow_name: str,
        *,
        owner: str,
        lease: float,
        metadata: Mapping[str, Any] | None = None,
    ) -> Claim:
        """Take run ``id`` for ``lease`` seconds unless it is held or completed."""
        check_id(id)
        seconds = check_lease(owner, lease)
        await anyio.lowlevel.checkpoint()
        now = self._clock.time()
        row = self._live(id)
        found: WorkflowSnapshot | None = None
        if row is not None:
            problem = row_problem(row)
            if problem is not None:
                raise SnapshotDecodeError(id, problem)
            if row.workflow_name != workflow_name:
                return Claim("mismatch", workflow_name=row.workflow_name)
            if row.status == "completed":
                return Claim("completed")
            if row.lease_held_by_other(owner, now):
                return Claim("held", row.lease_owner, row.lease_expires_at)
            # Decoded before anything is written: a damaged run stays as it is.
            found = assemble(id, row, self._steps.get(id, {}).items(), self._registry)
        self._runs[id] = attrs.evolve(
            restarted(id, row, workflow_name, metadata, now, self._registry),
            lease_owner=owner,
            lease_expires_at=now + seconds,
        )
        self._steps.setdefault(id, {})
        if found is None:  # (no run before: found is set whenever row is)
            return Claim("claimed", owner, now + seconds, fresh=True)
        return Claim("claimed", owner, now + seconds, snapshot=as_claimed(found, metadata, now))

    async def renew(self, id: str, *, owner: str, lease: float) -> bool:
        """Extend ``owner``'s lease on run ``id``."""
        seconds = check_lease(owner, lease)
        await anyio.lowlevel.checkpoint()
        row = self._live(id)
        if row is None or row.lease_owner != owner:
            return False
        self._runs[id] = attrs.evolve(row, lease_expires_at=self._clock.time() + seconds)
        return True

    async def release(self, id: str, *, owner: str) -> None:
        """Give up ``owner``'s lease on run ``id``."""
        await anyio.lowlevel.checkpoint()
        row = self._live(id)
        if row is not None and row.lease_owner == owner:
            self._runs[id] = attrs.evolve(row, lease_owner=None, lease_expires_at=None)

    async def claim_expired(
        self,
        *,
        owner: str,
        lease: float,
        limit: int = 10,
        workflow_names: Sequence[str] | None = None,
    ) -> builtins.list[SnapshotInfo]:
        """Claim up to ``limit`` abandoned runs, oldest first; runs that cannot be
        decoded are left as they are and returned after them, flagged ``damaged``."""
        seconds = check_lease(owner, lease)
        await anyio.lowlevel.checkpoint()
        now = self._clock.time()
        names = None if workflow_names is None else set(workflow_names)
        candidates: builtins.list[tuple[float, str, RunRow]] = []
        for id in list(self._runs):
            row = self._live(id)
            if row is None or row.status not in ("running", "cancelled"):
                continue
            if names is not None and row.workflow_name not in names:
                continue
            if row.lease_expires_at is not None and row.lease_expires_at > now:
                continue
            candidates.append((row.updated_at, id, row))
        candidates.sort(key=lambda item: (_number(item[0]), item[1]))
        claimed: builtins.list[SnapshotInfo] = []
        damaged: builtins.list[SnapshotInfo] = []
        for _, id, row in candidates:
            if len(claimed) >= limit:
                break
            problem = decode_problem(id, row, self._steps.get(id, {}).items(), self._registry)
            if problem is not None:
                damaged.append(damaged_info(id, problem, row))
                continue
            row = attrs.evolve(row, lease_owner=owner, lease_expires_at=now + seconds)
            self._runs[id] = row
            claimed.append(info(id, row))
        return claimed + damaged


def _number(value: object) -> float:
    """A time to sort by; a damaged one (not a number) sorts as the epoch."""
    return value if isinstance(value, float | int) else 0.0
