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

from ._result import Ok, Result
from ._resume import StepRecord
from ._snapshot import RunStatus, SnapshotInfo, SnapshotPage, WorkflowSnapshot

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "SCHEDULES_CHANGED",
    "CheckpointStore",
    "Claim",
    "ClaimOutcome",
    "EncodedStep",
    "LeaseStore",
    "MailboxStore",
    "QueueStore",
    "SendWatch",
    "SnapshotStore",
    "StoredSchedule",
]

SCHEDULES_CHANGED = "@schedules"
"""The id a store's push carries when a schedule was written or removed
(`QueueStore.put_schedule`, `QueueStore.delete_schedule`); `run_schedules` watches it.
Not a run's: a schedule's run ids never start with ``"@"``."""

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


ClaimOutcome = Literal["claimed", "held", "completed", "mismatch", "conflict"]
"""What `LeaseStore.claim` found (see `Claim`)."""


@attrs.frozen
class Claim:
    """What `LeaseStore.claim` found.

    - ``"claimed"``: the caller holds the lease until ``lease_expires_at``;
      ``fresh`` says the run did not exist before (so it has no steps to load).
    - ``"held"``: ``owner`` holds a live lease until ``lease_expires_at``.
    - ``"completed"``: the run is finished; nothing changed.
    - ``"mismatch"``: the id belongs to a run of workflow ``workflow_name``.
    - ``"conflict"``: the run exists with another input than the one given (nothing
      changed).

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
        """Extend ``owner``'s lease to ``lease`` seconds from now; ``False`` if it lost it,
        or if a cancel was requested for the run (`QueueStore.cancel`): the holder then
        reads the run (``info``) and stops it."""
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


class SendWatch(Protocol):
    """What `MailboxStore.sends` returns."""

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc_info: object) -> None: ...

    async def wait(self) -> None:
        """Return once a send was seen since the watch began or the last ``wait``."""
        ...


@runtime_checkable
class MailboxStore(LeaseStore, Protocol):
    """Messages addressed to runs, and runs that wait for them (durable waiting).

    Every shipped store is one.  A run's mailbox keeps the messages sent to it in
    the order they were sent; each is consumed once, oldest first per key, into
    the step that waited for it.  Every method is a cancellation point and one
    atomic change: a cancelled call wrote all of it or nothing.
    """

    async def send(self, run_id: str, key: str, value: Any, *, once: str | None = None) -> None:
        """Store ``value`` for run ``run_id`` under ``key``; durable once this returns,
        whether or not a worker is running or the run is waiting yet.

        Raises, with nothing stored: ``ValueError`` for an invalid id or key or a value
        over `MAX_MESSAGE_BYTES` encoded; `SerializationError` for a value that cannot
        be stored; ``LookupError`` when there is no such run; `RunFinishedError` when
        it already completed or failed; with ``once`` (a step key),
        `AlreadyDeliveredError` when a value for ``key`` is pending or that step is
        recorded."""
        ...

    async def receive(
        self,
        run_id: str,
        key: str,
        *,
        step: str,
        name: str,
        owner: str | None = None,
        sent_by: float | None = None,
    ) -> Ok[Any] | None:
        """Consume the oldest value sent under ``key`` into step ``step`` (recorded as
        ``Ok(value)`` under ``name``, the wait cleared) and return it; ``None``,
        with nothing written, when there is none or the step is already recorded.
        With ``sent_by`` (epoch seconds), only values sent at or before it count: a
        value sent after a wait's deadline stays in the mailbox."""
        ...

    async def begin_wait(
        self,
        run_id: str,
        *,
        step: str,
        key: str | None,
        kind: str,
        wake_at: float | None,
        owner: str | None = None,
    ) -> tuple[bool, float | None]:
        """Record that the run waits in step ``step`` for ``key`` until ``wake_at``
        (epoch seconds): ``(True, None)`` when a value for ``key`` is already pending
        (receive it); else ``(False, deadline)``, the deadline stored the first time
        this step began waiting (a resumed run keeps it)."""
        ...

    async def next_send(self, run_id: str | None = None) -> None:
        """Return once a value is sent to ``run_id`` (``None``: any run) after this call
        began: at once
        from this process, through the database's push (PostgreSQL ``NOTIFY``,
        Redis pub/sub) from others.  A push can be missed (a dropped connection):
        callers bound the wait and receive again (see `poll_interval`)."""
        ...

    def sends(self, run_id: str | None = None) -> SendWatch:
        """Watch for sends to ``run_id`` (``None``: any run) from now on: a context
        manager whose ``await watch.wait()`` returns once a send came after the watch
        began (or after the last ``wait``).  Look for the value inside the watch, then
        wait: a send between the look and the wait is not missed."""
        ...

    @property
    def poll_interval(self) -> float:
        """How often (seconds, real time) a waiter should look again without a push:
        short for a store that cannot push (SQLite), long for one that can."""
        ...


@attrs.frozen
class StoredSchedule:
    """A schedule as a store keeps it (`QueueStore.schedules`): its ``name``, its
    ``spec`` (the JSON object `QueueStore.put_schedule` stored) and ``last_tick``, the
    last tick fired (epoch seconds; ``None``: never)."""

    name: str
    spec: dict[str, Any]
    last_tick: float | None = None


@runtime_checkable
class QueueStore(MailboxStore, Protocol):
    """Durable queues, run control (cancel, resume, fork) and schedules.

    Every shipped store is one.  Every method is a cancellation point and one
    atomic change (`fork` and `resume` excepted: see each), and raises
    ``ValueError`` naming a bad argument before anything is written."""

    async def info(self, id: str) -> SnapshotInfo | None:
        """Run ``id``'s listing entry (status, times, lease, wait, queue fields, cancel
        request), without its steps; ``None`` if there is none.  A run whose row
        cannot be read comes back flagged ``damaged``.  ``ValueError`` for a bad id."""
        ...

    async def enqueue(
        self,
        id: str,
        workflow_name: str,
        *,
        queue: str,
        metadata: Mapping[str, Any] | None = None,
        priority: int = 0,
        partition: str | None = None,
    ) -> SnapshotInfo | None:
        """Store run ``id`` of ``workflow_name`` as ``pending`` in ``queue`` and return
        ``None``; when a live run ``id`` is already there, write nothing and return its
        entry (the caller decides: the same input is the same run, another one
        `InputConflictError`).  ``priority``: 0 to 2**31-1, smaller starts first;
        ``partition``: runs of one partition count against ``partition_concurrency``
        together.  Wakes watchers (`MailboxStore.sends` with ``None``)."""
        ...

    async def claim_queued(
        self,
        queue: str,
        *,
        owner: str,
        lease: float,
        limit: int = 1,
        concurrency: int | None = None,
        partition_concurrency: int | None = None,
        rate: tuple[int, float] | None = None,
        workflow_names: Sequence[str] | None = None,
    ) -> builtins.list[SnapshotInfo]:
        """Start up to ``limit`` pending runs of ``queue`` (priority, then age order) for
        ``owner``, leased ``lease`` seconds, never exceeding, across every worker,
        ``concurrency`` running runs of the queue, ``partition_concurrency`` per
        partition, or ``rate`` = ``(n, seconds)`` starts per window.  With
        ``workflow_names``, only runs of those workflows are taken (the others stay
        pending, passed over, for a worker that has them; an empty list takes
        nothing), like `LeaseStore.claim_expired`'s filter.  Their entries, in the
        order taken."""
        ...

    async def cancel(self, id: str) -> RunStatus:
        """Cancel run ``id`` and return the status it had: a ``pending`` one is
        ``cancelled`` at once (it never starts); for a ``running`` or ``waiting`` one a
        cancel is requested (its worker stops it, it ends ``cancelled`` and is never
        recovered; `LeaseStore.renew` returns ``False`` from then on; if that worker
        dies first, the next `LeaseStore.claim_expired` ends it ``cancelled`` once its
        lease is free or has run out).
        ``LookupError`` for an unknown run; `RunStateError` for one that ended."""
        ...

    async def resume(self, id: str) -> RunStatus:
        """Make a ``failed`` or ``cancelled`` run runnable again and return the status it
        had: ``pending`` in its queue, or ``running`` with no lease when it has none
        (recovery takes it); its failed steps and result are dropped, its completed
        steps kept.  ``LookupError`` for an unknown run, `RunStateError` for another
        status, `SnapshotDecodeError` for one that cannot be decoded."""
        ...

    async def fork(self, id: str, new_id: str, *, from_step: str | None = None) -> None:
        """Start run ``new_id`` as a copy of run ``id`` (workflow, metadata, queue fields)
        with its steps recorded before ``from_step`` (``None``: its completed ones),
        runnable as `resume` leaves a run.  ``LookupError`` for an unknown ``id``,
        ``ValueError`` if ``from_step`` is not one of its steps, `RunStateError` if
        ``new_id`` exists."""
        ...

    async def put_schedule(self, name: str, spec: Mapping[str, Any]) -> None:
        """Store schedule ``name`` (a JSON object ``spec``), replacing its spec; an
        existing schedule keeps its last tick."""
        ...

    async def schedules(self) -> builtins.list[StoredSchedule]:
        """Every stored schedule, by name."""
        ...

    async def delete_schedule(self, name: str) -> bool:
        """Remove schedule ``name``; whether it was there."""
        ...

    async def advance_schedule(self, name: str, expected: float | None, tick: float) -> bool:
        """Set schedule ``name``'s last tick to ``tick`` if it is ``expected`` now (compare
        and set: of several workers, one wins a tick); whether it did."""
        ...
