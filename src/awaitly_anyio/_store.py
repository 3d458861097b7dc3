"""The store protocols: `SnapshotStore`, the checkpointing extension durable runs
use (`CheckpointStore`) and leases (`LeaseStore`), with the values they exchange.

A store needs only five coroutines (``save``, ``load``, ``delete``, ``list``,
``close``) and ``async with`` support to work with everything in this library.
Stores that also implement `CheckpointStore` let a durable run write
one small record per keyed step instead of rewriting the whole snapshot.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import attrs

from ._result import Result
from ._resume import StepRecord
from ._snapshot import RunStatus, SnapshotInfo, SnapshotPage, WorkflowSnapshot

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "CheckpointStore",
    "Claim",
    "ClaimOutcome",
    "EncodedStep",
    "LeaseStore",
    "SnapshotStore",
]

Ttl = float | timedelta | None
"""A time to live: seconds, a timedelta, or ``None`` for none."""


@runtime_checkable
class SnapshotStore(Protocol):
    """Where snapshots live.  Every method is a cancellation point; a failure of the
    underlying storage raises (the durable runner turns it into ``Err(StoreError)``)."""

    async def save(
        self,
        id: str,
        snapshot: WorkflowSnapshot,
        *,
        ttl: Ttl = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Store ``snapshot`` under ``id``, replacing what was there.

        ``ttl`` (seconds or a timedelta) makes it expire; ``metadata`` is merged
        over the snapshot's own.
        """
        ...

    async def load(self, id: str) -> WorkflowSnapshot | None:
        """The snapshot stored under ``id``, or ``None`` if there is none or it expired.

        Raises `SnapshotDecodeError` for a corrupt or foreign one.
        """
        ...

    async def delete(self, id: str) -> bool:
        """Remove ``id``; return whether there was anything to remove."""
        ...

    async def list(
        self,
        *,
        prefix: str | None = None,
        status: RunStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SnapshotPage:
        """Snapshots newest first (by ``updated_at``), ``limit`` at a time; pass the
        page's ``next_cursor`` back to continue.  Expired snapshots are never listed."""
        ...

    async def close(self) -> None:
        """Release connections and files.  Closing twice is harmless."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...


@attrs.frozen
class EncodedStep:
    """One keyed step's record, with its JSON form already made (so encoding errors
    are reported at the step, and stores need not encode again).

    ``record`` may be given as a function that makes it, called each time the
    record is read: a durable run gives one, since only stores that keep whole
    snapshots read the record (the JSON is what the others write), and making it
    costs a sixteenth of a checkpoint.  Two are equal when their key and JSON are.
    """

    key: str
    _record: StepRecord | Callable[[], StepRecord] = attrs.field(alias="record", eq=False)
    json: str

    @property
    def record(self) -> StepRecord:
        """The step's record (made now, if it was given as a function)."""
        found = self._record
        return found if isinstance(found, StepRecord) else found()


@runtime_checkable
class CheckpointStore(SnapshotStore, Protocol):
    """The operations a durable run uses, each one small write."""

    async def mark_running(
        self, id: str, workflow_name: str, *, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Create the run (status ``running``) or set an existing one back to ``running``,
        keeping its step records."""
        ...

    async def checkpoint(self, id: str, step: EncodedStep, *, owner: str | None = None) -> None:
        """Add or replace one step record of run ``id``; durable once this returns.

        With ``owner``, write only while ``owner`` holds the run's lease, else raise
        `LeaseLostError`.
        """
        ...

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
        """Record the run's end: its status, final result (also pre-encoded), expiry and
        metadata, leaving the step records as they are.

        With ``owner``, only while ``owner`` holds the lease (else
        `LeaseLostError`); the lease is released.
        """
        ...


ClaimOutcome = Literal["claimed", "held", "completed", "mismatch"]
"""What `LeaseStore.claim` found (see `Claim`)."""


@attrs.frozen
class Claim:
    """What `LeaseStore.claim` found.

    - ``"claimed"``: the caller holds the lease until ``lease_expires_at``;
      ``fresh`` says the run did not exist before (so it has no steps to load).
    - ``"held"``: ``owner`` holds a live lease until ``lease_expires_at``.
    - ``"completed"``: the run is finished; nothing changed.
    - ``"mismatch"``: the id belongs to a run of workflow ``workflow_name``.

    A run whose stored snapshot cannot be decoded (a damaged row or step record,
    a format version this release does not read) is never claimed: ``claim``
    raises `SnapshotDecodeError` and leaves it untouched.
    """

    outcome: ClaimOutcome
    owner: str | None = None
    lease_expires_at: float | None = None
    fresh: bool = False
    workflow_name: str | None = None
    snapshot: WorkflowSnapshot | None = attrs.field(default=None, repr=False, eq=False)
    """For a ``"claimed"`` run that existed: the run as claimed (its steps and
    metadata), when the store read it while claiming, so the caller need not load
    it again; ``None`` when the store did not (the caller then loads it)."""


@runtime_checkable
class LeaseStore(CheckpointStore, Protocol):
    """Leases, so that one worker at a time executes a run and others can take over
    runs whose worker died.  Every operation is atomic in the store."""

    async def claim(
        self,
        id: str,
        workflow_name: str,
        *,
        owner: str,
        lease: float,
        metadata: Mapping[str, Any] | None = None,
    ) -> Claim:
        """Take run ``id`` for ``lease`` seconds unless another owner's lease is live,
        the run completed, or it belongs to another workflow; a claimed run is
        ``running`` (created if absent), keeps its steps and merges ``metadata``.

        An existing run is decoded before anything is written: if its snapshot
        cannot be decoded, `SnapshotDecodeError` (naming the run
        and the problem) is raised and the stored run is left exactly as it was.
        A new run costs no extra read.
        """
        ...

    async def renew(self, id: str, *, owner: str, lease: float) -> bool:
        """Extend ``owner``'s lease to ``lease`` seconds from now; ``False`` if it lost it."""
        ...

    async def release(self, id: str, *, owner: str) -> None:
        """Give up ``owner``'s lease (nothing happens if it is not the holder)."""
        ...

    async def claim_expired(
        self,
        *,
        owner: str,
        lease: float,
        limit: int = 10,
        workflow_names: Sequence[str] | None = None,
    ) -> builtins.list[SnapshotInfo]:
        """Claim up to ``limit`` runs that are ``running`` or ``cancelled`` and whose lease
        is free or expired (their worker died or shut down), oldest first.

        Candidates whose snapshot cannot be decoded are not claimed and not changed:
        they are returned too, after the claimed ones, as entries whose
        `damaged` says what is wrong (so that
        recovery can report them), and they do not count towards ``limit``.
        """
        ...
