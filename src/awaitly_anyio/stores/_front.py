"""The store front: `SnapshotStore`, `CheckpointStore`, `LeaseStore`, `MailboxStore`
and `QueueStore`, written once over a `RowDriver`.

Every shipped store is this class over its own driver.  The front validates
arguments, reads the clock and turns TTLs into expiry times, keeps the type
registry, encodes and decodes (``_rows``), owns ``async with`` and the closed state,
and turns the driver's signals (``_driver``) into the library's errors.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

import anyio
import attrs

from .._cache import check_ttl, decode_cached, encode_cached
from .._checks import check_id, check_key, check_lease, ttl_seconds
from .._clock import Clock, SystemClock
from .._errors import (
    AlreadyDeliveredError,
    LeaseLostError,
    RunFinishedError,
    RunStateError,
    SnapshotDecodeError,
)
from .._input import input_conflict
from .._loops import current
from .._result import Ok, Result
from .._rows import (
    RunRow,
    check_list_args,
    claimed_snapshot,
    damaged_entry,
    decode_cursor,
    decode_message,
    decode_metadata,
    decode_problem,
    encode_cursor,
    encode_message,
    encode_metadata,
    listing_entry,
    message_record_parts,
    restarted_row,
    row_problem,
    rows_from_snapshot,
    snapshot_from_rows,
)
from .._run import logger
from .._snapshot import (
    FORMAT_VERSION,
    RUN_STATUSES,
    WAIT_KINDS,
    RunStatus,
    SnapshotInfo,
    SnapshotPage,
    WorkflowSnapshot,
)
from .._step_cache import MISS, CacheLookup
from .._store import SCHEDULES_CHANGED, Claim, EncodedStep, SendWatch, StoredSchedule, Ttl
from ..serialization import TypeRegistry, default_registry
from ._driver import (
    AlreadySent,
    LeaseLost,
    QueueCaps,
    RowDriver,
    RowUnreadable,
    RunEnded,
    RunMissing,
    Steps,
    WaitRow,
)

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["StoreFront"]


_ANY = ()


class _Callback:
    """A local listener for cancel requests that calls a function (`StoreFront.on_push`);
    only in the thread that registered it (a wake from another thread is dropped: that
    run's keeper still renews, and learns at the renewal)."""

    __slots__ = ("_fn", "_thread")

    def __init__(self, fn: Callable[[], object]) -> None:
        self._fn = fn
        self._thread = threading.get_ident()

    def set(self) -> None:
        if threading.get_ident() == self._thread:
            self._fn()


_local: dict[str, dict[tuple[str, ...], set[anyio.Event]]] = {}
"""This process's waiters (`StoreFront.next_send`), by database channel and ``(run id,)``
(``()``: any run): a send from this process wakes them at once, whatever the store
object."""

_hooks: dict[str, dict[str, set[_Callback]]] = {}
"""This process's listeners for cancel requests (`StoreFront.on_push`), by database
channel and run id.  Kept apart from `_local`: a send (the hot path of waiting) never
calls them, only a cancel request (or a dropped push connection) does."""


def _wake_local(channel: str, run_id: str) -> None:
    """Wake the waiters of run ``run_id`` and of any run (a send, an enqueue, an end...)."""
    by_run = _local.get(channel, {})
    for key in ((run_id,), _ANY):
        for wake in list(by_run.get(key, ())):
            _set(wake)


def _wake_cancel(channel: str, run_id: str) -> None:
    """A cancel request for run ``run_id``: its waiters, and its `on_push` listeners."""
    _wake_local(channel, run_id)
    for hook in list(_hooks.get(channel, {}).get(run_id, ())):
        _set(hook)


def _wake_all_local(channel: str) -> None:
    """Everyone of ``channel``, listeners too (a push may have been missed: look again)."""
    for waiters in list(_local.get(channel, {}).values()):
        for wake in list(waiters):
            _set(wake)
    for hooks in list(_hooks.get(channel, {}).values()):
        for hook in list(hooks):
            _set(hook)


def _set(wake: anyio.Event | _Callback) -> None:
    with contextlib.suppress(RuntimeError):  # a waiter of another loop's thread: it polls
        wake.set()


class Sends:
    """A watch for sends to one run (or any), made by `StoreFront.sends`."""

    __slots__ = ("_channel", "_key", "_wake")

    def __init__(self, channel: str, key: tuple[str, ...]) -> None:
        self._channel, self._key = channel, key
        self._wake = anyio.Event()

    def __enter__(self) -> Sends:
        _local.setdefault(self._channel, {}).setdefault(self._key, set()).add(self._wake)
        return self

    def __exit__(self, *exc_info: object) -> None:
        by_run = _local.get(self._channel, {})
        waiters = by_run.get(self._key)
        if waiters is not None:
            waiters.discard(self._wake)
            if not waiters:
                del by_run[self._key]

    async def wait(self) -> None:
        """Return once a send was seen since the watch began or since the last `wait`
        returned; a cancellation point."""
        wake = self._wake
        await wake.wait()
        # Re-armed before the caller looks again: a send during its look is not lost.
        waiters = _local.setdefault(self._channel, {}).setdefault(self._key, set())
        waiters.discard(wake)
        self._wake = anyio.Event()
        waiters.add(self._wake)


def _missing(id: str) -> LookupError:
    return LookupError(f"run {id!r} is not in the store (mark_running first)")


class StoreFront:
    """A `QueueStore` (so also a `MailboxStore`, `LeaseStore`, `CheckpointStore` and
    `SnapshotStore`) over a row driver.

    ``clock`` supplies wall time for TTLs, ``updated_at`` and leases; ``registry``
    names the types step values may hold.  Every method is a cancellation point;
    a closed store raises ``RuntimeError``; a refused write raises ``LookupError``
    (no such run) or `LeaseLostError`; a run that cannot be decoded raises
    `SnapshotDecodeError`; the database's own errors propagate as they are.
    """

    def __init__(
        self,
        driver: RowDriver,
        *,
        clock: Clock | None = None,
        registry: TypeRegistry = default_registry,
        poll_interval: float = 5.0,
    ) -> None:
        self._driver = driver
        self._clock = clock if clock is not None else SystemClock()
        self._registry = registry
        self._closed = False
        self._poll_interval = poll_interval
        self._stop_watching: Callable[[], None] | None = None

    async def __aenter__(self) -> Self:
        """Open the store now (connect, create or migrate its tables); if that fails or
        is cancelled, the store is closed again (shielded: closing is bounded) and the
        error raised."""
        self._check_open()
        try:
            await self._driver.open()
        except BaseException:
            # Connected but could not start (a newer schema, say): let nothing leak.
            with anyio.CancelScope(shield=True):
                await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @property
    def registry(self) -> TypeRegistry:
        """The types this store can save and load."""
        return self._registry

    # ---- plumbing ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")

    def _expiry(self, ttl: Ttl, now: float) -> float | None:
        seconds = ttl_seconds(ttl)
        return None if seconds is None else now + seconds

    # ---- SnapshotStore -----------------------------------------------------------------

    async def save(
        self,
        id: str,
        snapshot: WorkflowSnapshot,
        *,
        ttl: Ttl = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Replace run ``id`` with ``snapshot`` (its steps, status, result and metadata,
        ``metadata`` merged over the snapshot's own), in one atomic write; a lease on
        the run is kept.  ``ttl`` makes it expire.  ``ValueError`` for an invalid id or
        TTL and `SerializationError` for a value that cannot be stored, both before
        anything is written."""
        check_id(id)
        self._check_open()
        now = self._clock.time()
        row, steps = rows_from_snapshot(
            snapshot,
            self._registry,
            now=now,
            expires_at=self._expiry(ttl, now),
            metadata=metadata,
        )
        await self._driver.write_run(id, row, steps)

    async def load(self, id: str) -> WorkflowSnapshot | None:
        """Run ``id``'s snapshot, or ``None`` if there is none or it expired; its steps in
        the order they were recorded.  `SnapshotDecodeError` (naming the run and the
        problem) for one that cannot be decoded."""
        check_id(id)
        self._check_open()
        try:
            found = await self._driver.read(id, self._clock.time(), steps=True)
        except RowUnreadable as exc:
            raise SnapshotDecodeError(id, exc.reason) from None
        if found is None:
            return None
        return snapshot_from_rows(id, found[0], found[1], self._registry)

    async def info(self, id: str) -> SnapshotInfo | None:
        """Run ``id``'s listing entry, read-only: its status, times and lease (holder and
        expiry, see `SnapshotInfo`), without its steps; ``None``
        if there is none or it expired.  A run whose row cannot be read comes back
        flagged ``damaged``, never raised.  A cancellation point; ``ValueError`` for an
        invalid id."""
        check_id(id)
        self._check_open()
        try:
            found = await self._driver.read(id, self._clock.time(), steps=False)
        except RowUnreadable as exc:
            return damaged_entry(id, exc.reason)
        return None if found is None else listing_entry(id, found[0], lease=True)

    async def delete(self, id: str) -> bool:
        """Remove run ``id`` and its steps; whether a live run was there."""
        check_id(id)
        self._check_open()
        return await self._driver.delete(id, self._clock.time())

    async def list(
        self,
        *,
        prefix: str | None = None,
        status: RunStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SnapshotPage:
        """Runs newest first (by ``updated_at``), ``limit`` at a time; pass the page's
        ``next_cursor`` back to continue.  Expired runs are never listed; a run whose
        row cannot be read is listed flagged ``damaged``.  ``ValueError`` or
        ``TypeError`` for bad arguments (a cursor this store did not make included)."""
        check_list_args(prefix, status, limit)
        after = decode_cursor(cursor) if cursor is not None else None
        self._check_open()
        found = await self._driver.list(self._clock.time(), prefix, status, after, limit + 1)
        page = found[:limit]
        infos = [
            damaged_entry(entry.id, entry.damage or "unreadable")
            if entry.row is None
            else listing_entry(entry.id, entry.row, lease=True)
            for entry in page
        ]
        next_cursor = encode_cursor(page[-1].at, page[-1].id) if len(found) > limit else None
        return SnapshotPage(infos, next_cursor)

    async def count_by_status(self, *, prefix: str | None = None) -> dict[RunStatus, int]:
        """How many runs there are of each status: every `RunStatus` is a key, in the
        order of ``RUN_STATUSES``, ``0`` for a status with no run.  Only the runs `list`
        would list with that status are counted: never an expired one; a run with a
        damaged field counts under the status its row stores, while a Redis key that is
        not a run hash at all (listed ``damaged`` by an unfiltered `list` only) is not
        counted.  With ``prefix``, only the runs whose id starts with it.

        SQLite and PostgreSQL count in one ``GROUP BY status`` statement and memory
        directly (one consistent count).  Redis keeps no index by status: it reads each
        run's status and expiry inside Lua scripts of a few thousand runs each (no run
        data crosses the network), so the time grows with the number of runs and runs
        that change status meanwhile may be counted under either status.

        A cancellation point; ``TypeError`` for a prefix that is not a string;
        ``RuntimeError`` once closed; the database's own errors propagate."""
        check_list_args(prefix, None, 1)
        self._check_open()
        found = await self._driver.count(self._clock.time(), prefix or None)
        return {status: int(found.get(status, 0)) for status in RUN_STATUSES}

    async def purge_expired(self) -> int:
        """Delete expired runs for good (they are already invisible); how many went."""
        self._check_open()
        return await self._driver.purge(self._clock.time())

    # ---- the cross-run step cache (issue 22) ------------------------------------------

    async def cache_lookup(self, key: str) -> CacheLookup:
        """The live cache entry ``key`` (`StoreCache`), decoded with this store's
        registry, as a hit; else a miss, or a miss with ``problem`` for an entry that
        cannot be read (never raised).  ``ValueError`` for an invalid key."""
        check_key(key, "cache key")
        self._check_open()
        try:
            text = await self._driver.cache_get(key, self._clock.time())
        except RowUnreadable as exc:
            return CacheLookup(False, problem=exc.reason)
        if text is None:
            return MISS
        return decode_cached(key, text, self._registry)

    async def cache_put(
        self, key: str, value: Any, *, ttl: float | timedelta, step: str = "<cache>"
    ) -> None:
        """Store cache entry ``key`` = ``value`` for ``ttl`` seconds (or a ``timedelta``),
        replacing any entry, in one write.  `SerializationError` naming ``step`` for a
        value that cannot be encoded, ``ValueError`` / ``TypeError`` for a bad key or
        TTL, before anything is written."""
        check_key(key, "cache key")
        seconds = check_ttl(ttl)
        text = encode_cached(step, value, self._registry)
        self._check_open()
        now = self._clock.time()
        await self._driver.cache_put(key, text, now, now + seconds)

    async def cache_invalidate(self, key: str) -> bool:
        """Remove cache entry ``key``; whether a live one was there (one that cannot be
        read counts).  ``ValueError`` for an invalid key."""
        check_key(key, "cache key")
        self._check_open()
        return await self._driver.cache_delete(key, self._clock.time())

    async def cache_purge(self) -> int:
        """Delete expired cache entries for good (they already miss); how many went."""
        self._check_open()
        return await self._driver.cache_purge(self._clock.time())

    async def close(self) -> None:
        """Release the store's connections and files.  Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        if self._stop_watching is not None:
            self._stop_watching()
            self._stop_watching = None
        await self._driver.close()

    # ---- CheckpointStore ---------------------------------------------------------------

    async def mark_running(
        self, id: str, workflow_name: str, *, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Create run ``id`` (status ``running``) or set an existing one back to
        ``running``, keeping its steps and merging ``metadata`` over its own."""
        check_id(id)
        self._check_open()
        registry = self._registry
        now = self._clock.time()

        def restart(row: RunRow | None) -> RunRow:
            return restarted_row(id, row, workflow_name, metadata, now, registry)

        await self._driver.start_run(id, now, restart)

    async def checkpoint(self, id: str, step: EncodedStep, *, owner: str | None = None) -> None:
        """Add or replace one step record of run ``id``; durable once this returns.
        ``ValueError`` for an invalid step key, before anything is written;
        ``LookupError`` if the run is not in the store; with ``owner``,
        `LeaseLostError` unless ``owner`` holds the run's lease."""
        check_key(step.key)
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        try:
            await self._driver.write_step(id, step.key, step.json, self._clock.time(), owner)
        except RunMissing:
            raise _missing(id) from None
        except LeaseLost:
            raise LeaseLostError(id, owner or "") from None

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
        """Record the run's end (status, pre-encoded result, expiry, ``metadata`` merged
        over its own), keeping its steps and releasing the lease.  ``LookupError`` if
        the run is not in the store; with ``owner``, `LeaseLostError` unless
        ``owner`` holds the lease."""
        self._check_open()
        now = self._clock.time()
        # No TTL (the usual end) needs no call to normalize it.
        end = _End(status, result_json, None if ttl is None else self._expiry(ttl, now), owner)
        if metadata:
            registry = self._registry
            patch = encode_metadata(dict(metadata), registry)
            # Plain JSON (no tagged values) may be merged by the database itself.
            if patch.startswith("{") and '"$t"' not in patch:
                end.metadata_patch = patch

            def merge(row: RunRow) -> str:
                merged = decode_metadata(id, row, registry)
                merged.update(metadata)
                return encode_metadata(merged, registry)

            end.merge = merge
        driver = self._driver
        try:
            await driver.end_run(id, now, end)
        except RunMissing:
            raise _missing(id) from None
        except LeaseLost:
            raise LeaseLostError(id, owner or "") from None
        except RowUnreadable as exc:
            raise SnapshotDecodeError(id, exc.reason) from None
        # A handle in this process may await the end (of a queued run): a dict lookup
        # when nobody watches.
        _wake_local(driver.channel, id)

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
        """Take run ``id`` for ``lease`` seconds unless another owner's lease is live,
        the run completed, or it belongs to another workflow (see `Claim`).  An
        existing run is decoded before anything is written: `SnapshotDecodeError`
        if it cannot be, the stored run left as it was.  A new run costs no extra
        read.  ``ValueError`` for an invalid id, owner or lease."""
        check_id(id)
        seconds = check_lease(owner, lease)
        self._check_open()
        now = self._clock.time()
        terms = _Claiming(id, workflow_name, owner, now, now + seconds, metadata, self._registry)
        try:
            return await self._driver.claim(id, now, terms)
        except RowUnreadable as exc:
            raise SnapshotDecodeError(id, exc.reason) from None

    async def renew(self, id: str, *, owner: str, lease: float) -> bool:
        """Extend ``owner``'s lease to ``lease`` seconds from now; ``False`` if it lost it
        or a cancel was requested for the run (see `cancel`)."""
        seconds = check_lease(owner, lease)
        self._check_open()
        now = self._clock.time()
        return await self._driver.renew(id, now, owner, now + seconds)

    async def release(self, id: str, *, owner: str) -> None:
        """Give up ``owner``'s lease (nothing happens if it is not the holder)."""
        self._check_open()
        await self._driver.release(id, owner)

    async def claim_expired(
        self,
        *,
        owner: str,
        lease: float,
        limit: int = 10,
        workflow_names: Sequence[str] | None = None,
    ) -> builtins.list[SnapshotInfo]:
        """Claim up to ``limit`` runs that are ``running`` or ``cancelled`` (or ``waiting``
        and due) and whose lease is free or expired, oldest first; never a ``pending``
        run (`claim_queued` starts those) nor one whose cancel was requested.  Runs
        that cannot be decoded are left as they are and returned after the claimed
        ones, flagged ``damaged``.  On the way, up to ``limit`` running or waiting
        runs whose cancel was requested and whose lease is free or expired (their
        worker died before it stopped them) are ended ``cancelled`` (not returned),
        whatever their workflow (an empty ``workflow_names`` does nothing at all)."""
        seconds = check_lease(owner, lease)
        self._check_open()
        names = None if workflow_names is None else builtins.list(workflow_names)
        if names == []:
            return []
        now = self._clock.time()
        registry = self._registry

        def problem(id: str, row: RunRow, steps: Steps) -> str | None:
            return decode_problem(id, row, steps, registry)

        claimed, damaged = await self._driver.claim_expired(
            now, owner, now + seconds, limit, names, problem
        )
        return [listing_entry(id, row) for id, row in claimed] + [
            damaged_entry(entry.id, entry.damage or "unreadable", entry.row) for entry in damaged
        ]

    # ---- MailboxStore: messages, waits and wake-ups -----------------------------------

    @property
    def poll_interval(self) -> float:
        """How often (real seconds) a waiter looks again without a push: see
        `MailboxStore.poll_interval`.  Set per store (``store.poll_interval = 0.2``)."""
        return self._poll_interval

    @poll_interval.setter
    def poll_interval(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise ValueError(f"poll_interval must be a number of seconds > 0, not {seconds!r}")
        self._poll_interval = float(seconds)

    async def send(self, run_id: str, key: str, value: Any, *, once: str | None = None) -> None:
        """Store ``value`` for run ``run_id`` under ``key``: see `MailboxStore.send`."""
        check_id(run_id)
        check_key(key, "message key")
        if once is not None:
            check_key(once)
        text = encode_message(value, self._registry)
        self._check_open()
        driver = self._driver
        try:
            await driver.send(run_id, key, text, self._clock.time(), once)
        except RunMissing:
            raise LookupError(f"run {run_id!r} is not in the store; nothing was sent") from None
        except RunEnded as exc:
            raise RunFinishedError(run_id, exc.status) from None
        except AlreadySent:
            raise AlreadyDeliveredError(run_id, key) from None
        except RowUnreadable as exc:
            raise SnapshotDecodeError(run_id, exc.reason) from None
        _wake_local(driver.channel, run_id)

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
        """Consume the oldest value sent under ``key`` (at or before ``sent_by``, epoch
        seconds, when given) into step ``step``: see `MailboxStore.receive`.  The
        value is recorded as it was stored, in one write; it is decoded afterwards, so
        a value this store's registry cannot decode stays recorded in the step (nothing
        is lost) and `SnapshotDecodeError` is raised, as for any step that cannot be
        read.  ``ValueError`` for a bad id, key, step or ``sent_by``."""
        check_id(run_id)
        check_key(key, "message key")
        check_key(step)
        if sent_by is not None and (
            isinstance(sent_by, bool)
            or not isinstance(sent_by, (int, float))
            or not math.isfinite(sent_by)
        ):
            raise ValueError(f"sent_by must be a finite epoch time or None, not {sent_by!r}")
        self._check_open()
        now = self._clock.time()
        head, tail = message_record_parts(now)
        try:
            found = await self._driver.receive(
                run_id,
                key,
                step,
                head,
                tail,
                now,
                owner,
                None if sent_by is None else float(sent_by),
            )
        except RunMissing:
            raise _missing(run_id) from None
        except LeaseLost:
            raise LeaseLostError(run_id, owner or "") from None
        except RowUnreadable as exc:
            raise SnapshotDecodeError(run_id, exc.reason) from None
        if found is None:
            return None
        return Ok(decode_message(run_id, found, self._registry))

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
        """Record that run ``run_id`` waits: see `MailboxStore.begin_wait`."""
        check_id(run_id)
        check_key(step)
        if key is not None:
            check_key(key, "message key")
        if kind not in WAIT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(WAIT_KINDS)}, not {kind!r}")
        if wake_at is not None and not math.isfinite(wake_at):
            raise ValueError(f"wake_at must be a finite epoch time, not {wake_at!r}")
        self._check_open()
        try:
            return await self._driver.begin_wait(
                run_id, WaitRow(step, key, kind, wake_at), self._clock.time(), owner
            )
        except RunMissing:
            raise _missing(run_id) from None
        except LeaseLost:
            raise LeaseLostError(run_id, owner or "") from None
        except RowUnreadable as exc:
            raise SnapshotDecodeError(run_id, exc.reason) from None

    async def next_send(self, run_id: str | None = None) -> None:
        """Return once a value is sent to ``run_id`` (``None``: to any run of this
        database) after this call began: see `MailboxStore.next_send`.  Cancel it to
        stop waiting (it holds nothing then)."""
        with self.sends(run_id) as sends:
            await sends.wait()

    def sends(self, run_id: str | None = None) -> SendWatch:
        """Watch for sends to ``run_id`` (``None``: any run) from now on, as a context
        manager: ``with store.sends(id) as sends:`` then look (``receive``), then
        ``await sends.wait()``, which returns at once if a send came after the
        watch began (or after the last ``wait``).  Looking *after* the watch began
        is what keeps a send that lands between the look and the wait from being
        missed.  ``RuntimeError`` if the store is closed."""
        if run_id is not None:
            check_id(run_id)
        self._check_open()
        channel = self._driver.channel
        self._start_watching(channel)
        return Sends(channel, _ANY if run_id is None else (run_id,))

    # ---- QueueStore: queues, run control and schedules -------------------------------

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
        """Store run ``id`` as ``pending`` in ``queue``: see `QueueStore.enqueue`.
        ``None`` when stored; the live run's entry (nothing written) when ``id`` is
        taken.  ``ValueError`` naming a bad id, workflow name, queue, priority or
        partition, `SerializationError` for metadata that cannot be stored, both
        before anything is written."""
        check_id(id)
        _check_name(workflow_name, "workflow name")
        check_key(queue, "queue name")
        _check_priority(priority)
        if partition is not None:
            check_key(partition, "partition")
        row = RunRow(
            workflow_name,
            "pending",
            None,
            encode_metadata(dict(metadata) if metadata else {}, self._registry),
            0.0,
            0.0,
            None,
            queue=queue,
            priority=priority,
            partition=partition,
        )
        self._check_open()
        now = self._clock.time()
        driver = self._driver
        try:
            found = await driver.enqueue(id, attrs.evolve(row, created_at=now, updated_at=now), now)
        except RowUnreadable as exc:
            raise SnapshotDecodeError(id, exc.reason) from None
        if found is not None:
            return listing_entry(id, found, lease=True)
        _wake_local(driver.channel, id)
        return None

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
        """Start up to ``limit`` pending runs of ``queue`` for ``owner``, only runs of
        ``workflow_names`` when given (an empty list claims nothing): see
        `QueueStore.claim_queued`.  ``ValueError`` naming a bad queue, owner, lease,
        limit (1 to 10000), cap (a positive integer or ``None``) or rate (``(n,
        seconds)``, n a positive integer, seconds a positive finite number);
        ``TypeError`` for ``workflow_names`` that is a string or holds a non-string."""
        check_key(queue, "queue name")
        names = _names(workflow_names)
        seconds = check_lease(owner, lease)
        _check_count(limit, "limit", most=10_000)
        caps = QueueCaps(
            None if concurrency is None else _check_count(concurrency, "concurrency"),
            None
            if partition_concurrency is None
            else _check_count(partition_concurrency, "partition_concurrency"),
            None if rate is None else _check_rate(rate),
        )
        self._check_open()
        if names == []:
            await anyio.lowlevel.checkpoint()  # still a cancellation point
            return []
        now = self._clock.time()
        taken = await self._driver.claim_queued(
            queue, now, owner, now + seconds, limit, caps, names
        )
        return [listing_entry(id, row, lease=True) for id, row in taken]

    async def cancel(self, id: str) -> RunStatus:
        """Cancel run ``id``; the status it had: see `QueueStore.cancel`.
        ``LookupError`` for an unknown run, `RunStateError` for one that ended,
        ``ValueError`` for a bad id."""
        check_id(id)
        self._check_open()
        driver = self._driver
        try:
            status = await driver.request_cancel(id, self._clock.time())
        except RunMissing:
            raise LookupError(f"run {id!r} is not in the store; nothing to cancel") from None
        except RunEnded as exc:
            raise RunStateError(id, exc.status, "cancel") from None
        except RowUnreadable as exc:
            raise SnapshotDecodeError(id, exc.reason) from None
        _wake_cancel(driver.channel, id)
        return _status(id, status)

    async def resume(self, id: str) -> RunStatus:
        """Make a failed or cancelled run runnable again; the status it had: see
        `QueueStore.resume`.  Read, then written whole (like `save`): two resumes at
        once leave the same run.  ``LookupError`` for an unknown run, `RunStateError`
        for one in another status, `SnapshotDecodeError` for one that cannot be
        decoded (nothing written)."""
        check_id(id)
        self._check_open()
        found = await self._read_whole(id)
        if found is None:
            raise LookupError(f"run {id!r} is not in the store; nothing to resume")
        row, steps, snapshot = found
        if row.status not in ("failed", "cancelled"):
            raise RunStateError(id, row.status, "resume")
        now = self._clock.time()
        await self._driver.write_run(id, _runnable(row, now), _completed(steps, snapshot))
        await self._notify(id)
        return row.status

    async def fork(self, id: str, new_id: str, *, from_step: str | None = None) -> None:
        """Start run ``new_id`` as a copy of run ``id``: see `QueueStore.fork`.  The new
        run is created empty first (refused if ``new_id`` is live), then written whole
        with its steps.  ``LookupError`` for an unknown ``id``, ``ValueError`` for a
        bad id or a ``from_step`` that is not one of its steps, `RunStateError` if
        ``new_id`` exists, `SnapshotDecodeError` if run ``id`` cannot be decoded."""
        check_id(id)
        check_id(new_id)
        if from_step is not None:
            check_key(from_step)
        self._check_open()
        found = await self._read_whole(id)
        if found is None:
            raise LookupError(f"run {id!r} is not in the store; nothing to fork")
        row, steps, snapshot = found
        if from_step is None:
            kept = _completed(steps, snapshot)
        else:
            keys = [key for key, _ in steps]
            if from_step not in keys:
                raise ValueError(f"from_step {from_step!r} is not a step of run {id!r}")
            kept = builtins.list(steps[: keys.index(from_step)])
        now = self._clock.time()
        fresh = _runnable(row, now, created_at=now)

        def claim_id(existing: RunRow | None) -> RunRow:
            if existing is not None:
                raise _Taken(existing.status)
            # Held back until the whole run is written: no queue, no worker takes it.
            return attrs.evolve(fresh, status="pending", queue=None)

        try:
            await self._driver.start_run(new_id, now, claim_id)
        except _Taken as exc:
            raise RunStateError(new_id, exc.status, "fork into") from None
        except RowUnreadable:
            raise RunStateError(new_id, "unreadable", "fork into") from None
        await self._driver.write_run(new_id, fresh, kept)
        await self._notify(new_id)

    async def _read_whole(self, id: str) -> tuple[RunRow, Steps, WorkflowSnapshot] | None:
        """Run ``id``'s row, steps and decoded snapshot; ``None`` if absent;
        `SnapshotDecodeError` if it cannot be decoded."""
        try:
            found = await self._driver.read(id, self._clock.time(), steps=True)
        except RowUnreadable as exc:
            raise SnapshotDecodeError(id, exc.reason) from None
        if found is None:
            return None
        row, steps = found
        return row, steps, snapshot_from_rows(id, row, steps, self._registry)

    async def _notify(self, id: str) -> None:
        driver = self._driver
        await driver.notify(id)
        _wake_local(driver.channel, id)

    async def put_schedule(self, name: str, spec: Mapping[str, Any]) -> None:
        """Store schedule ``name`` with ``spec`` (a mapping of JSON values), keeping its
        last tick: see `QueueStore.put_schedule`.  ``ValueError`` for a bad name,
        ``TypeError`` for a spec that is not a mapping or not plain JSON."""
        check_key(name, "schedule name")
        if not isinstance(spec, Mapping):
            raise TypeError(f"a schedule spec must be a mapping, not {spec!r}")
        try:
            text = json.dumps(dict(spec), allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"schedule {name!r}: its spec must be plain JSON ({exc})") from None
        self._check_open()
        await self._driver.put_schedule(name, text, self._clock.time())
        await self._schedules_changed()

    async def schedules(self) -> builtins.list[StoredSchedule]:
        """Every stored schedule, by name.  A schedule whose stored spec is not a JSON
        object (damaged) comes back with an empty spec (``{}``), so one damaged schedule
        does not stop the others: its readers report it."""
        self._check_open()
        found: builtins.list[StoredSchedule] = []
        for name, text, last_tick in await self._driver.schedules():
            try:
                spec: object = json.loads(text)
            except ValueError:
                spec = None
            if not isinstance(spec, dict):
                spec = {}  # damaged: the scheduler skips and lists it as unreadable
            found.append(StoredSchedule(name, cast("dict[str, Any]", spec), last_tick))
        return found

    async def delete_schedule(self, name: str) -> bool:
        """Remove schedule ``name``; whether it was there.  ``ValueError`` for a bad name."""
        check_key(name, "schedule name")
        self._check_open()
        found = await self._driver.delete_schedule(name)
        if found:
            await self._schedules_changed()
        return found

    async def _schedules_changed(self) -> None:
        # Best effort, after the write: schedulers that miss it see the change at their
        # recheck interval.
        try:
            await self._notify(SCHEDULES_CHANGED)
        except Exception as exc:
            logger.warning("a schedule changed, but the wake-up failed: %s", exc)

    async def advance_schedule(self, name: str, expected: float | None, tick: float) -> bool:
        """Compare and set schedule ``name``'s last tick from ``expected`` to ``tick``
        (epoch seconds); whether it did.  ``ValueError`` for a bad name or time."""
        check_key(name, "schedule name")
        if expected is not None:
            expected = _check_epoch(expected, "expected")
        tick = _check_epoch(tick, "tick")
        self._check_open()
        return await self._driver.advance_schedule(name, expected, tick)

    def on_push(self, run_id: str, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback()`` (in this thread, synchronously) each time a cancel of run
        ``run_id`` (a checked id) is requested, from any process where the store
        pushes (PostgreSQL, Redis) or from this one, until the returned function is
        called.  A send, enqueue, resume or end does not call it (waiting on a run's
        own messages costs its keeper nothing); a dropped push connection does (a
        cancel may have been missed: look again).  Nearly free: no task per call
        (the durable session's lease keeper listens with it from the run's start).
        ``RuntimeError`` if the store is closed."""
        self._check_open()
        channel = self._driver.channel
        self._start_watching(channel)
        waker = _Callback(callback)
        _hooks.setdefault(channel, {}).setdefault(run_id, set()).add(waker)

        def stop() -> None:
            by_run = _hooks.get(channel, {})
            hooks = by_run.get(run_id)
            if hooks is not None:
                hooks.discard(waker)
                if not hooks:
                    del by_run[run_id]

        return stop

    def _start_watching(self, channel: str) -> None:
        """Start, once per store, the task that turns the database's pushes into local
        wake-ups.  It runs until the store closes; when the push connection drops it
        wakes every local waiter of the channel (so they look again: a missed push is
        caught) and watches again after a pause."""
        if self._stop_watching is not None:
            return
        loop = current()
        call = loop.call_soon_threadsafe()
        driver = self._driver

        home = threading.get_ident()

        def woken(run_id: str) -> None:
            if threading.get_ident() == home:
                # Already in this loop's thread (asyncio drivers, and the hosted loop
                # under trio runs here too): no extra loop turn and pipe write.
                _wake_local(channel, run_id)
            else:  # the hosted asyncio loop in a thread of its own
                call(lambda: _wake_local(channel, run_id))

        def cancelled(run_id: str) -> None:
            if threading.get_ident() == home:
                _wake_cancel(channel, run_id)
            else:
                call(lambda: _wake_cancel(channel, run_id))

        async def watch() -> None:
            pause = 0.05
            while not self._closed:
                try:
                    await driver.watch(woken, cancelled)
                except Exception as exc:
                    logger.warning("store wake-ups interrupted (%s); waiters look again", exc)
                    _wake_all_local(channel)
                    await anyio.sleep(pause)
                    pause = min(pause * 2, self._poll_interval)
                    continue
                return  # a driver without push: waiters poll

        self._stop_watching = loop.start_system_task(watch, name=f"awaitly wake-ups {channel}")


class _Taken(Exception):
    """`StoreFront.fork`'s new id is a live run (with this status)."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def _runnable(row: RunRow, now: float, *, created_at: float | None = None) -> RunRow:
    """``row`` made runnable again (a resume, a fork): ``pending`` in its queue, or
    ``running`` with no lease (recovery takes it) when it has none; no result, expiry,
    wait, start or cancel request."""
    return attrs.evolve(
        row,
        status="running" if row.queue is None else "pending",
        result_json=None,
        created_at=row.created_at if created_at is None else created_at,
        updated_at=now,
        expires_at=None,
        lease_owner=None,
        lease_expires_at=None,
        wait_step=None,
        wait_key=None,
        wait_kind=None,
        wake_at=None,
        started_at=None,
        cancel_at=None,
    )


def _status(id: str, found: str) -> RunStatus:
    """A status a driver reported, as a `RunStatus`; `SnapshotDecodeError` naming run
    ``id`` for one that is none (a damaged row)."""
    for status in RUN_STATUSES:
        if status == found:
            return status
    raise SnapshotDecodeError(id, f"unknown status {found!r}")


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"a {what} must be a non-empty string, not {value!r}")
    return value


def _check_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority < 2**31:
        raise ValueError(f"priority must be an integer from 0 to 2**31-1, not {priority!r}")
    return priority


def _names(workflow_names: object) -> builtins.list[str] | None:
    """``claim_queued``'s ``workflow_names`` as a list (``None``: any workflow)."""
    if workflow_names is None:
        return None
    if isinstance(workflow_names, str) or not isinstance(
        workflow_names, Sequence | frozenset | set
    ):
        raise TypeError(
            f"workflow_names must be a sequence of workflow names or None, not {workflow_names!r}"
        )
    names = builtins.list(cast("Sequence[object]", workflow_names))
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"workflow_names must hold workflow names (str), not {name!r}")
    return cast("builtins.list[str]", names)


def _check_count(value: object, what: str, *, most: int = 2**31 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ValueError(f"{what} must be an integer from 1 to {most}, not {value!r}")
    return value


def _check_rate(rate: object) -> tuple[int, float]:
    if not isinstance(rate, tuple) or len(rate) != 2:  # pyright: ignore[reportUnknownArgumentType]
        raise ValueError(f"rate must be a pair (starts, seconds), not {rate!r}")
    n, window = cast("tuple[object, object]", rate)
    _check_count(n, "rate's number of starts")
    if (
        isinstance(window, bool)
        or not isinstance(window, (int, float))
        or not math.isfinite(window)
        or not window > 0
    ):
        raise ValueError(f"rate's window must be a positive number of seconds, not {window!r}")
    return cast(int, n), float(window)


def _check_epoch(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite epoch time, not {value!r}")
    return float(value)


def _completed(steps: Steps, snapshot: WorkflowSnapshot) -> builtins.list[tuple[str, str]]:
    """The steps that succeeded (``Ok``), in their order: what a resumed or forked run
    keeps (the failed ones run again)."""
    return [(key, text) for key, text in steps if isinstance(snapshot.steps[key].result, Ok)]


@attrs.define(slots=True)
class _End:
    """`EndTerms`, as the front makes them."""

    status: RunStatus
    result_json: str | None
    expires_at: float | None
    owner: str | None
    metadata_patch: str | None = None
    merge: Callable[[RunRow], str] | None = None


class _Claiming:
    """`ClaimTerms`, as the front makes them: one claim of run ``id``."""

    __slots__ = ("_id", "_metadata", "_name", "_now", "_owner", "_registry", "_until", "fresh_row")

    def __init__(
        self,
        id: str,
        workflow_name: str,
        owner: str,
        now: float,
        until: float,
        metadata: Mapping[str, Any] | None,
        registry: TypeRegistry,
    ) -> None:
        self._id, self._name, self._owner = id, workflow_name, owner
        self._now, self._until = now, until
        self._metadata, self._registry = metadata, registry
        # Positional: every claim makes one, and keywords cost the attrs __init__ a dict.
        self.fresh_row = RunRow(
            workflow_name,
            "running",
            None,  # result_json
            encode_metadata(dict(metadata) if metadata else {}, registry),
            now,  # created_at
            now,  # updated_at
            None,  # expires_at
            FORMAT_VERSION,
            owner,  # lease_owner
            until,  # lease_expires_at
        )

    @property
    def fresh(self) -> Claim:
        return Claim("claimed", self._owner, self._until, fresh=True)

    def check(self, row: RunRow) -> Claim | None:
        problem = row_problem(row)
        if problem is not None:
            raise SnapshotDecodeError(self._id, problem)
        if row.workflow_name != self._name:
            return Claim("mismatch", workflow_name=row.workflow_name)
        # Parses the stored metadata only when this claim gives an input.
        if self._metadata and input_conflict(row.metadata_json, self._metadata, self._registry):
            return Claim("conflict")
        if row.status == "completed":
            return Claim("completed")
        if row.lease_held_by_other(self._owner, self._now):
            return Claim("held", row.lease_owner, row.lease_expires_at)
        return None

    def take(self, row: RunRow, steps: Steps) -> tuple[RunRow, Claim]:
        # Decoded before anything is written: a damaged run stays as it is.
        found = snapshot_from_rows(self._id, row, steps, self._registry)
        taken = attrs.evolve(
            restarted_row(self._id, row, self._name, self._metadata, self._now, self._registry),
            lease_owner=self._owner,
            lease_expires_at=self._until,
        )
        claimed = claimed_snapshot(found, self._metadata, self._now)
        return taken, Claim("claimed", self._owner, self._until, snapshot=claimed)
