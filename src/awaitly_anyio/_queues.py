"""Durable queues: hand a run to any worker (issue 20).

`enqueue` stores a run of a registered workflow as ``pending`` in a queue of the
store and returns a `QueuedRun` handle at once; any worker serving that queue
(`WorkflowHost.serve_queues`) starts it.  A `Queue` says how many of its runs may
run at once across every worker (``concurrency``), in one worker
(``worker_concurrency``), per partition key (``partition_concurrency``), and how
many may start per window of time (``rate``).  The store enforces the global
limits in the claim itself (`QueueStore.claim_queued`), so they hold however many
workers there are; the per-worker limit is the worker's own count.

Nothing here keeps state in memory that a crash could lose: a queued run is a row
of the store until a worker claims it, and from then on a durable run like any
other (leased, checkpointed, recovered when its worker dies).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, cast

import anyio
import attrs

from ._checks import check_id, check_key, check_lease
from ._clock import Clock
from ._errors import InputConflictError, RunStateError, SnapshotDecodeError, WorkflowMismatchError
from ._input import check_user_metadata, metadata_with_input, same_input, stored_input
from ._recovery import WorkflowRegistry
from ._result import Err, Result
from ._run import logger
from ._snapshot import RunStatus, SnapshotInfo, WorkflowSnapshot
from ._workflow import Workflow

if TYPE_CHECKING:
    from ._store import SendWatch
    from .serialization import TypeRegistry

__all__ = [
    "DEFAULT_QUEUE",
    "MAX_PRIORITY",
    "Queue",
    "QueuedRun",
    "claim_from_queue",
    "enqueue",
]

DEFAULT_QUEUE = "default"
"""The queue `enqueue` uses when it is given none."""
MAX_PRIORITY = 2**31 - 1
"""The largest priority (the smallest, 0, starts first)."""

_ENDED: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


class _QueueOps(Protocol):
    """What the queue code needs of a store: the `QueueStore` methods it calls (every
    shipped store has them)."""

    async def enqueue(
        self,
        id: str,
        workflow_name: str,
        *,
        queue: str,
        metadata: Mapping[str, Any] | None = None,
        priority: int = 0,
        partition: str | None = None,
    ) -> SnapshotInfo | None: ...

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
    ) -> list[SnapshotInfo]: ...

    async def cancel(self, id: str) -> RunStatus: ...

    async def info(self, id: str) -> SnapshotInfo | None: ...

    async def load(self, id: str) -> WorkflowSnapshot | None: ...

    async def release(self, id: str, *, owner: str) -> None: ...

    def sends(self, run_id: str | None = None) -> SendWatch: ...

    @property
    def poll_interval(self) -> float: ...

    @property
    def registry(self) -> TypeRegistry: ...


def _limit(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be a positive integer or None, not {value!r}")
    if value < 1:
        raise ValueError(f"{what} must be a positive integer or None, not {value!r}")
    return value


def _rate(value: object) -> tuple[int, float] | None:
    if value is None:
        return None
    if not isinstance(value, tuple):
        raise TypeError(f"rate must be a pair (max_starts, window_seconds) or None, not {value!r}")
    pair = cast("tuple[object, ...]", value)
    if len(pair) != 2:
        raise TypeError(f"rate must be a pair (max_starts, window_seconds) or None, not {pair!r}")
    starts, window = pair
    count = _limit(starts, "rate's max_starts")
    seconds = window.total_seconds() if isinstance(window, timedelta) else window
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"rate's window must be seconds or a timedelta, not {window!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"rate's window must be finite seconds > 0, not {window!r}")
    assert count is not None
    return count, float(seconds)


def _check_name(_: object, __: attrs.Attribute[str], value: str) -> None:
    check_key(value, "queue name")


@attrs.frozen
class Queue:
    """A queue of runs, and the limits its workers keep.

    - ``name``: the queue's name (a non-empty string without NUL characters).
    - ``concurrency``: at most this many of the queue's runs are ``running`` at
      once, counted across every worker (``None``: no limit).
    - ``worker_concurrency``: at most this many of them run in one worker (one
      `WorkflowHost`) at once (``None``: only the host's ``max_active``).
    - ``partition_concurrency``: at most this many running at once per partition
      key (runs enqueued with ``partition=None`` form one partition of their own),
      across every worker.
    - ``rate``: ``(max_starts, window)``: at most ``max_starts`` runs of the queue
      start per ``window`` seconds (or a ``timedelta``), across every worker: the
      notion of `create_rate_limiter`'s ``max_requests`` per ``window``.

    A run resumed by recovery (its worker died) is not counted again: it never
    stopped being ``running``.  Raises ``ValueError`` for a bad name, a limit
    below 1 or a window that is not a positive number of seconds, ``TypeError``
    for a value of the wrong type, each naming the option.
    """

    name: str = attrs.field(validator=_check_name)
    concurrency: int | None = attrs.field(default=None, kw_only=True)
    worker_concurrency: int | None = attrs.field(default=None, kw_only=True)
    partition_concurrency: int | None = attrs.field(default=None, kw_only=True)
    rate: tuple[int, float] | None = attrs.field(default=None, kw_only=True, converter=_rate)

    def __attrs_post_init__(self) -> None:
        for what in ("concurrency", "worker_concurrency", "partition_concurrency"):
            _limit(getattr(self, what), what)


def _queue_name(queue: Queue | str) -> str:
    if isinstance(queue, Queue):
        return queue.name
    return check_key(queue, "queue name")


def _check_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an integer, not {priority!r}")
    if not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(
            f"priority must be from 0 to {MAX_PRIORITY} (0 starts first), not {priority}"
        )
    return priority


@attrs.frozen
class QueuedRun:
    """A handle on an enqueued run: its ``id``, ``workflow_name`` and ``queue``.

    Any process can make one (`enqueue` again with the same id and input, or
    ``QueuedRun(store, id)``), on any store object over the same database: the
    handle keeps nothing but the store and the names.
    """

    store: _QueueOps = attrs.field(repr=False)
    id: str
    workflow_name: str | None = None
    queue: str | None = None

    async def status(self) -> RunStatus:
        """The run's status now (``pending`` until a worker starts it).

        A cancellation point.  ``LookupError`` if there is no such run (deleted or
        expired); `SnapshotDecodeError` if its row cannot be read.
        """
        info = await self.store.info(self.id)
        if info is None:
            raise LookupError(f"there is no run {self.id!r} (deleted or expired)")
        if info.damaged is not None:
            raise SnapshotDecodeError(self.id, info.damaged)
        return info.status

    async def cancel(self) -> RunStatus:
        """Cancel the run; the status it had.  A ``pending`` run never starts; a running or
        waiting one is stopped by the worker running it and recorded ``cancelled``.

        A cancellation point.  ``LookupError`` if there is no such run,
        `RunStateError` if it already ended.
        """
        return await self.store.cancel(self.id)

    async def result(
        self, *, poll_interval: float | None = None, clock: Clock | None = None
    ) -> Result[Any, Any]:
        """Wait for the run to end, in whichever process runs it, and return its Result.

        Woken by the store's push when the run ends (PostgreSQL ``NOTIFY``, Redis
        pub/sub, at once in this process), and it looks again every
        ``poll_interval`` seconds (default: the store's `poll_interval`) on
        ``clock`` (default: real time) in case a push was missed.

        Returns the stored Result of a ``completed`` or ``failed`` run;
        ``Err(SnapshotDecodeError)`` for one that cannot be decoded;
        ``Err(RunStateError(id, "cancelled", ...))`` for a run cancelled on request
        (a run cancelled by a worker's shutdown is not over: another worker resumes
        it, and the wait goes on).  A cancellation point: cancelling the wait
        leaves the run alone.  Raises ``LookupError`` if the run is not (or no
        longer) in the store, and what the store raises when it cannot be reached.
        """
        interval = self.store.poll_interval if poll_interval is None else poll_interval
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            raise ValueError(
                f"poll_interval must be a positive number of seconds, not {interval!r}"
            )
        with self.store.sends(self.id) as watch:
            while True:
                done = await self._outcome()
                if done is not None:
                    return done
                with anyio.move_on_after(None if clock is not None else interval):
                    async with anyio.create_task_group() as group:

                        async def tick(group: anyio.abc.TaskGroup = group) -> None:
                            assert clock is not None
                            await clock.sleep(interval)
                            group.cancel_scope.cancel()

                        if clock is not None:
                            group.start_soon(tick)
                        await watch.wait()
                        group.cancel_scope.cancel()

    async def _outcome(self) -> Result[Any, Any] | None:
        info = await self.store.info(self.id)
        if info is None:
            raise LookupError(f"there is no run {self.id!r} (deleted or expired)")
        if info.damaged is not None:
            return Err(SnapshotDecodeError(self.id, info.damaged))
        if info.status == "cancelled":
            # Cancelled on request (cancel_requested; a run cancelled before it started
            # has no start time either): over.  Otherwise a worker's shutdown stopped
            # it, and recovery resumes it.
            if info.cancel_requested or info.started_at is None:
                return Err(RunStateError(self.id, "cancelled", "get the result of"))
            return None
        if info.status not in _ENDED:
            return None
        try:
            snapshot = await self.store.load(self.id)
        except SnapshotDecodeError as exc:
            return Err(exc)
        if snapshot is None:
            raise LookupError(f"there is no run {self.id!r} (deleted or expired)")
        if snapshot.result is None:
            reason = f"the run is {snapshot.status} but its result was not stored"
            return Err(SnapshotDecodeError(self.id, reason))
        return snapshot.result


async def enqueue(
    store: _QueueOps,
    workflow: Workflow[Any] | str,
    input: Any = None,
    *,
    id: str | None = None,
    queue: Queue | str = DEFAULT_QUEUE,
    priority: int = 0,
    partition: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> QueuedRun:
    """Store a run of ``workflow`` (a `Workflow`, or a registered workflow's name) with
    ``input`` as ``pending`` in ``queue`` and return its handle at once; a worker
    serving the queue starts it (see `WorkflowHost.serve_queues`).

    ``id`` (default: a fresh uuid4) de-duplicates: when run ``id`` already exists
    (pending, running, waiting or ended) with the same workflow and input, nothing
    is written and its handle is returned.  ``priority`` (0 to `MAX_PRIORITY`):
    smaller starts first; runs of equal priority start in the order they were
    enqueued.  ``partition``: the key ``Queue.partition_concurrency`` counts by.
    ``metadata``: free-form JSON-able data kept with the run (its input is kept
    apart, under the library's own key; user keys may not start with ``"awaitly."``).

    A cancellation point (one store write; a cancelled call stored all or nothing).
    Raises `InputConflictError` when run ``id`` exists with another input,
    `WorkflowMismatchError` when it belongs to another workflow, ``ValueError`` /
    ``TypeError`` for a bad id, queue name, priority, partition or metadata (naming
    it), `SerializationError` for an input that cannot be stored, and what the
    store raises when it cannot be reached.
    """
    if isinstance(workflow, Workflow):
        name = workflow.name
    elif isinstance(workflow, str) and workflow:  # pyright: ignore[reportUnnecessaryIsInstance]
        name = workflow
    else:
        raise TypeError(f"workflow must be a Workflow or a workflow name, not {workflow!r}")
    queue_name = _queue_name(queue)
    _check_priority(priority)
    if partition is not None:
        check_key(partition, "partition key")
    check_user_metadata(metadata)
    if id is None:
        import uuid

        id = str(uuid.uuid4())
    check_id(id)
    existing = await store.enqueue(
        id,
        name,
        queue=queue_name,
        metadata=metadata_with_input(metadata, input),
        priority=priority,
        partition=partition,
    )
    if existing is not None:
        if existing.damaged is not None:
            raise SnapshotDecodeError(id, existing.damaged)
        if existing.workflow_name != name:
            raise WorkflowMismatchError(id, existing.workflow_name, name)
        snapshot = await store.load(id)
        stored = None if snapshot is None else stored_input(snapshot.metadata)
        if snapshot is not None and not same_input(stored, input, store.registry):
            raise InputConflictError(id, name)
        queue_name = existing.queue or queue_name
    return QueuedRun(store, id, name, queue_name)


async def claim_from_queue(
    store: _QueueOps,
    queue: Queue,
    registry: WorkflowRegistry,
    *,
    owner: str,
    lease: float,
    limit: int,
) -> tuple[list[SnapshotInfo], list[SnapshotInfo]]:
    """Claim up to ``limit`` pending runs of ``queue`` for ``owner`` (leased ``lease``
    seconds), honouring the queue's global limits, only runs of workflows
    ``registry`` knows (the store passes the others over: they stay ``pending`` for a
    worker that has them); return the runs to start and the runs claimed that
    cannot be started (a row the store could not read: ``damaged``).

    The latter are handed back at once: their lease is released and each is logged
    as a warning.  With no workflow registered nothing is claimed.  The caller must
    start every run of the first list (or they wait for their lease to run out).
    A cancellation point (the claim is one store call); ``ValueError`` for a bad
    owner, lease or limit.
    """
    check_lease(owner, lease)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, not {limit!r}")
    claimed = await store.claim_queued(
        queue.name,
        owner=owner,
        lease=lease,
        limit=limit,
        concurrency=queue.concurrency,
        partition_concurrency=queue.partition_concurrency,
        rate=queue.rate,
        workflow_names=registry.names,
    )
    runnable: list[SnapshotInfo] = []
    unknown: list[SnapshotInfo] = []
    for info in claimed:
        if info.damaged is None and info.workflow_name in registry:
            runnable.append(info)
            continue
        unknown.append(info)
        logger.warning(
            "run %r of queue %r (workflow %r) cannot be started here (%s): handed back",
            info.id,
            queue.name,
            info.workflow_name,
            info.damaged or "its workflow is not registered",
        )
        await store.release(info.id, owner=owner)
    return runnable, unknown
