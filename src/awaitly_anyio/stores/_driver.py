"""The row-driver protocol: what one database must do for the store front.

A store is `StoreFront` (in ``_front``) over one `RowDriver`.  The front
implements `SnapshotStore`, `CheckpointStore` and `LeaseStore` once:
it validates arguments, reads the clock and turns TTLs into expiry times, owns the
type registry, encodes and decodes (``_rows``), keeps the closed state and turns
the driver's signals below into the library's errors.  A driver speaks only rows
(`RunRow`) and step JSON text, in its database's own way.

Rules every driver keeps:

- **Times come from the front.** Every method that needs "now" is given ``now``
  (epoch seconds); a driver never reads a clock.  A run is *live* when its
  ``expires_at`` is ``None`` or later than ``now``; a run that is not live is, for
  every method, absent (a driver may delete it and its steps when it meets it).
- **No validation, TTL or encoding.** Ids and keys arrive checked; rows arrive
  encoded.  Where a decision needs a decoded run inside the driver's transaction
  (claiming, recovering, merging metadata), the front passes a *callback*: sync,
  pure, rows in and a decision out.  A callback may raise (`SnapshotDecodeError`,
  `SerializationError`): the driver then writes nothing and lets it propagate.
- **Signals, not library errors.** A refused write raises `RunMissing` or
  `LeaseLost`; a run the database cannot even read as a row (a Redis key of the
  wrong type) raises `RowUnreadable`.  Anything else the database raises
  (``sqlite3.Error``, ``asyncpg.PostgresError``, ``OSError``...) propagates as it is.
- **Atomic and cancellable.** Each method is one transaction (or script, or WATCH
  block): a cancelled call either wrote all of its change or none of it.  Every
  method is a cancellation point.
- **Steps keep their order.** A run's steps are returned in the order they were
  first recorded; a step written again keeps its place.
- **The lease is the driver's to keep.** `write_run` and `start_run` leave the
  stored lease (``lease_owner``, ``lease_expires_at``) as it is; `claim`,
  `claim_expired`, `renew`, `release` and `end_run` change it as documented.
- **So is the pending wait** (``wait_step``, ``wait_key``, ``wait_kind``,
  ``wake_at``): `write_run` and `start_run` leave it as stored; `begin_wait` sets it
  (and status ``waiting``); `write_step` of the wait's own step, `receive` of it and
  `end_run` clear it; `send` of the awaited key makes it due (``wake_at =
  min(wake_at, now)``: a deadline already passed stays).
  The rows `claim`'s ``take`` returns carry it already (the front copies it).
- **A mailbox per run.** Messages are rows apart from the run (``run id, key,
  value JSON, sent at, order``), kept in the order they were sent, consumed oldest
  first per key, each exactly once (`receive` deletes the one it returns in the same
  transaction as it records the step).  They go with the run (`delete`, `purge`,
  `write_run` keeps them; a run that expires takes its messages with it, and a
  `write_run` over an expired run drops its messages and its wait).  Every message
  keeps its ``sent at`` time: `receive` and `begin_wait` compare it with a deadline.
- **Queued runs** (``queue``, ``priority``, ``partition``, ``started_at``,
  ``cancel_at``) are fields of the row like the others: every write path stores
  all of them (`write_run`, `start_run`, `claim`'s rows, `enqueue`,
  `claim_queued`), every read returns them, `end_run` keeps them.  A ``pending``
  run waits in its queue for `claim_queued`; `claim_expired` never takes it, nor a
  run whose ``cancel_at`` is set (a cancel was requested: `request_cancel`; once
  its lease is free or expired, `claim_expired` ends it ``cancelled``).
- **Pushes.** `send`, `enqueue`, `request_cancel`, `notify` and the `end_run` of a
  queued run (``queue`` set) tell other processes, after commit, with the run's id
  (PostgreSQL ``NOTIFY``, Redis ``PUBLISH``, one channel; the payload says whether
  it is a cancel request: see `RowDriver.watch`); memory and SQLite cannot push
  (the front wakes its own process's waiters).
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

import attrs

from .._loops import Loop
from .._rows import RunRow
from .._snapshot import RunStatus
from .._store import Claim

__all__ = [
    "push_router",
    "AlreadySent",
    "ClaimTerms",
    "EndTerms",
    "LeaseLost",
    "ListedRow",
    "QueueCaps",
    "RowDriver",
    "RowUnreadable",
    "RunEnded",
    "RunMissing",
    "Steps",
    "WaitRow",
]

Steps = Sequence[tuple[str, str]]
"""A run's steps as ``(key, record JSON)`` pairs, in the order they were recorded."""


# ---- signals ---------------------------------------------------------------------------


class RunMissing(Exception):
    """The run a write needs is absent (or expired): the front raises ``LookupError``."""


class LeaseLost(Exception):
    """The run is live but the writing owner does not hold its lease: the front raises
    `LeaseLostError`."""


class RowUnreadable(Exception):
    """The run is stored in a form that is not a run row at all (a Redis key holding
    another type); ``reason`` says what is wrong.  The front raises
    `SnapshotDecodeError` naming the run, or lists the run as damaged."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RunEnded(Exception):
    """`RowDriver.send` to a run that already ``completed`` or ``failed``, or
    `RowDriver.request_cancel` of one that ``completed``, ``failed`` or was
    ``cancelled``: nothing is written.  ``status`` is the run's."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class AlreadySent(Exception):
    """`RowDriver.send` with ``once``: a message with the key is already pending, or the
    step ``once`` is already recorded (the value was delivered and consumed)."""


# ---- what the front hands a driver ------------------------------------------------------


@attrs.frozen
class WaitRow:
    """A wait `RowDriver.begin_wait` records: the step that waits (``step``, its key),
    the message key it waits for (``key``; ``None`` for a timer), what kind of wait it
    is (``kind``: ``"message"``, ``"approval"``, ``"hook"``, ``"timer"``) and its
    deadline in epoch seconds (``wake_at``; ``None``: none)."""

    step: str
    key: str | None
    kind: str
    wake_at: float | None


@attrs.frozen
class ListedRow:
    """One run of a listing: its id, the time it sorts by (``updated_at``, or the
    driver's stand-in for a damaged one) and its row, or ``row=None`` with ``damage``
    when the driver could not read a row at all (`RowUnreadable`'s reason)."""

    id: str
    at: float
    row: RunRow | None
    damage: str | None = None


@attrs.frozen
class QueueCaps:
    """The limits `RowDriver.claim_queued` keeps for one queue, across every worker:

    - ``concurrency``: at most this many of the queue's runs ``running`` at once
      (whoever holds them, whatever their lease);
    - ``partition_concurrency``: the same per ``partition`` value (runs whose
      partition is ``None`` form one partition of their own);
    - ``rate``: ``(n, window)``: at most ``n`` starts in any ``window`` seconds
      (rows of the queue whose ``started_at`` is after ``now - window``, counting
      those taken by this call).

    ``None``: no such limit.  The front checks the numbers (positive)."""

    concurrency: int | None = None
    partition_concurrency: int | None = None
    rate: tuple[int, float] | None = None

    @property
    def any(self) -> bool:
        """Whether any limit is set (a driver may then serialize claims per queue)."""
        return (
            self.concurrency is not None
            or self.partition_concurrency is not None
            or self.rate is not None
        )


class ClaimTerms(Protocol):
    """What `RowDriver.claim` needs from the front to take one run.

    The driver, in one transaction:

    1. if there is no live run ``id`` (an expired one is deleted with its steps),
       writes `fresh_row` (a new run, leased to the claimer, no steps) and returns
       `fresh`.  A driver may try this first as an insert that does nothing if the
       id exists, so a new run costs one statement;
    2. else calls ``check(row)``: a `Claim` means "refused" (held, completed, another
       workflow's) and is returned with nothing written; ``check`` raises
       `SnapshotDecodeError` for a row it cannot read;
    3. else reads the run's steps and calls ``take(row, steps)``, which decodes the
       whole run (raising `SnapshotDecodeError`, with nothing written, if it
       cannot) and returns the row to write (every field, lease included) and the
       `Claim` to return.  The steps are kept.
    """

    @property
    def fresh_row(self) -> RunRow: ...

    @property
    def fresh(self) -> Claim: ...

    def check(self, row: RunRow) -> Claim | None: ...

    def take(self, row: RunRow, steps: Steps) -> tuple[RunRow, Claim]: ...


class EndTerms(Protocol):
    """How a run ends (`RowDriver.end_run`): the fields to write over the live run.

    ``lease_owner`` and ``lease_expires_at`` become ``None``.  The metadata:

    - ``merge is None``: keep the stored ``metadata_json``;
    - else the new ``metadata_json`` is ``merge(row)`` (decoding the stored one;
      may raise `SnapshotDecodeError` or `SerializationError`, nothing written).
      When ``metadata_patch`` is not ``None`` it is a JSON object whose top-level
      keys replace the stored metadata's: a driver may apply it itself (in SQL)
      instead of calling ``merge``, but only when the stored metadata is a JSON
      object without a ``"$t"`` key; otherwise it must call ``merge``.
    """

    @property
    def status(self) -> RunStatus: ...

    @property
    def result_json(self) -> str | None: ...

    @property
    def expires_at(self) -> float | None: ...

    @property
    def owner(self) -> str | None: ...

    @property
    def metadata_patch(self) -> str | None: ...

    @property
    def merge(self) -> Callable[[RunRow], str] | None: ...


# ---- the protocol ------------------------------------------------------------------------


class RowDriver(Protocol):
    """One database's rows under `StoreFront`.  See the module's rules; every
    method is a cancellation point and one atomic change."""

    async def open(self) -> None:
        """Connect (and create or migrate the tables) now instead of at first use;
        ``async with store`` calls it.  Raises what connecting raises."""
        ...

    async def close(self) -> None:
        """Release connections and files.  The front calls it once; a call in flight
        may still be finishing."""
        ...

    async def read(self, id: str, now: float, *, steps: bool) -> tuple[RunRow, Steps] | None:
        """Live run ``id``'s row and, with ``steps``, its steps in order (else ``()``),
        read consistently; ``None`` if absent.  `RowUnreadable` for a run that is not
        a row.  Never decodes."""
        ...

    async def write_run(self, id: str, row: RunRow, steps: Steps) -> None:
        """Replace run ``id`` (created if absent) with ``row`` (its lease and wait fields
        are ignored: a stored lease and wait are kept) and exactly ``steps``, in this
        order.  A stored run that expired by ``row.updated_at`` (the front's now) is
        replaced whole: its messages, lease and wait are dropped."""
        ...

    async def delete(self, id: str, now: float) -> bool:
        """Remove run ``id`` and its steps; whether a live run was there (a run that
        cannot be read counts as live)."""
        ...

    async def start_run(
        self, id: str, now: float, restart: Callable[[RunRow | None], RunRow]
    ) -> None:
        """``mark_running``: write ``restart(live row or None)`` over run ``id``, keeping
        its steps and lease; when no live run was there, any expired one's steps are
        dropped first."""
        ...

    async def write_step(self, id: str, key: str, json: str, now: float, owner: str | None) -> None:
        """Add or replace step ``key`` of live run ``id`` (a new key goes last, an old one
        keeps its place); durable once this returns.  With ``owner``, only while the
        run's ``lease_owner`` is ``owner``.  `RunMissing` or `LeaseLost` otherwise.
        A driver may move the run's ``updated_at`` to ``now`` or leave it.  When the
        stored ``wait_step`` is ``key`` the wait is cleared (the four wait fields
        ``None``) and a ``waiting`` run becomes ``running`` again."""
        ...

    async def end_run(self, id: str, now: float, end: EndTerms) -> None:
        """Record live run ``id``'s end (see `EndTerms`): status, result, ``updated_at =
        now``, expiry, metadata; lease and pending wait cleared; steps, messages and
        the queue fields (``queue``, ``priority``, ``partition``, ``started_at``,
        ``cancel_at``) kept.  With ``end.owner``, only while it holds the lease.
        `RunMissing` or `LeaseLost` otherwise.  The end of a run with a ``queue`` is
        pushed after commit like a `send` (a handle in another process waits for
        it); a run without one pushes nothing."""
        ...

    async def claim(self, id: str, now: float, terms: ClaimTerms) -> Claim:
        """Take run ``id`` on ``terms`` (see `ClaimTerms`); two claimers never both win."""
        ...

    async def renew(self, id: str, now: float, owner: str, until: float) -> bool:
        """Set live run ``id``'s ``lease_expires_at`` to ``until`` if ``owner`` holds its
        lease and no cancel was requested (``cancel_at`` is ``None``); whether it did.
        ``False`` for a cancel request tells the lease keeper to read the run and
        stop its body."""
        ...

    async def release(self, id: str, owner: str) -> None:
        """Clear run ``id``'s lease if ``owner`` holds it."""
        ...

    async def claim_expired(
        self,
        now: float,
        owner: str,
        until: float,
        limit: int,
        workflow_names: Sequence[str] | None,
        problem: Callable[[str, RunRow, Steps], str | None],
    ) -> tuple[list[tuple[str, RunRow]], list[ListedRow]]:
        """Lease to ``owner`` until ``until`` up to ``limit`` live runs whose status is
        ``running`` or ``cancelled``, or ``waiting`` and due (``wake_at`` not ``None`` and
        not after ``now``), with no cancel requested (``cancel_at`` ``None``; never a
        ``pending`` run: those are `claim_queued`'s), whose lease is free or expired
        (``lease_expires_at`` ``None`` or not after ``now``) and whose workflow is one of
        ``workflow_names`` (any, when ``None``; an empty list claims nothing), oldest
        ``updated_at`` first.

        In the same transaction, up to ``limit`` live runs that are ``running`` or
        ``waiting`` with a cancel requested (``cancel_at`` set) and whose lease is free
        or expired (their worker died before it could stop them) are ended: status
        ``cancelled``, lease and pending wait cleared, ``updated_at = now`` (whatever
        their workflow; a queued one is pushed like `end_run` pushes it).  They are not
        returned.

        Each candidate is checked with ``problem(id, row, steps)`` before it is
        claimed, in the same transaction: a candidate with a problem (or one that is
        `RowUnreadable`) is not changed and comes back as a damaged `ListedRow`
        (``damage`` set), not counting towards ``limit``.  Returns the claimed runs'
        ``(id, row as read)`` and the damaged ones.
        """
        ...

    async def list(
        self,
        now: float,
        prefix: str | None,
        status: RunStatus | None,
        after: tuple[float, str] | None,
        limit: int,
    ) -> list[ListedRow]:
        """Up to ``limit`` live runs newest first (``updated_at`` descending, then id
        descending by code point), those whose id starts with ``prefix``, whose
        status is ``status`` (any `RunStatus`, ``pending`` included) and which come
        strictly after position ``after`` (an
        ``(at, id)`` from an earlier `ListedRow`).  A run that cannot be read is listed
        too (as a `ListedRow` with ``damage``), unless ``status`` is given.  The front
        asks for one more run than a page holds, to learn whether another page follows,
        and makes the next page's cursor from the last `ListedRow`'s ``at`` and ``id``."""
        ...

    async def count(self, now: float, prefix: str | None) -> dict[str, int]:
        """How many live runs there are of each stored status, those whose id starts
        with ``prefix`` only (all, when ``None``), in one read where the database
        allows (``GROUP BY status``); statuses with no run may be left out.  A run
        that cannot be read as a row is not counted (as `list` with a ``status`` does
        not list it); a status the front does not know may appear (the front drops
        it).  Where the database can only count by reading the runs (Redis: no index
        by status), the count may be read in several atomic parts, so runs changing
        meanwhile may be counted under their old or their new status."""
        ...

    async def purge(self, now: float) -> int:
        """Delete runs expired at ``now`` (and whatever indexes point at gone runs) for
        good; how many went."""
        ...

    # ---- waiting: messages, waits and wake-ups ---------------------------------------

    @property
    def channel(self) -> str:
        """Names the database (and schema or prefix) this driver writes to, so that the
        front can wake waiters of the same database in the same process at once (a
        SQLite file's resolved path, ``memory:<name>``, the PostgreSQL DSN and schema,
        the Redis URL and prefix).  Never holds a password (redact it)."""
        ...

    async def send(self, id: str, key: str, json: str, now: float, once: str | None) -> None:
        """Append a message (``key``, value ``json``) to live run ``id``'s mailbox, in one
        transaction, after any message sent before it.

        `RunMissing` if there is no live run; `RunEnded` if its status is
        ``completed`` or ``failed``.  With ``once`` (a step key): `AlreadySent` if a
        message with ``key`` is pending or step ``once`` is recorded.  Nothing is
        written when it raises.

        When the run is ``waiting`` with ``wait_key == key``, sets its ``wake_at`` to
        ``min(stored wake_at, now)`` (``now`` when none is stored), so the sweep
        (`claim_expired`) finds it due, while a value sent after the deadline leaves
        the deadline where it was.  Then tells other
        processes (`watch`): PostgreSQL ``NOTIFY`` after commit, Redis ``PUBLISH``;
        a driver without push does nothing more."""
        ...

    async def receive(
        self,
        id: str,
        key: str,
        step: str,
        head: str,
        tail: str,
        now: float,
        owner: str | None,
        sent_by: float | None,
    ) -> str | None:
        """Consume the oldest pending message with ``key`` of live run ``id`` sent at or
        before ``sent_by`` (any, when ``None``) into step ``step``, in one transaction
        (one round trip where the database allows: a statement, a pipelined
        transaction, a script): delete the message, write step ``step`` with the JSON
        ``head + message json + tail`` (as `write_step` does: a new step goes last; the
        pending wait is cleared when it is ``step``'s) and return the message's JSON.
        The front made ``head`` and ``tail`` (``_rows.message_record_parts``); the
        driver splices the stored text between them, never decoding it.

        ``None`` with nothing written when no such message is pending, or when step
        ``step`` is already recorded.  `RunMissing` / `LeaseLost` (with ``owner``) as
        `write_step`."""
        ...

    async def begin_wait(
        self, id: str, wait: WaitRow, now: float, owner: str | None
    ) -> tuple[bool, float | None]:
        """Record that live run ``id`` waits (see `WaitRow`), in one transaction, and
        return ``(ready, wake_at)``:

        - ``wait.key`` set and a message with it pending that was sent at or before
          the effective deadline (the stored ``wake_at`` when the wait is resumed, as
          below, else ``wait.wake_at``; no deadline: any message): ``(True, None)``,
          nothing written (the caller receives it at once).  A value sent after the
          deadline loses to the timeout and stays in the mailbox;
        - else, if the stored ``wait_step`` is ``wait.step`` (the same wait, resumed):
          the stored wait is kept, status becomes ``waiting``, and the *stored*
          ``wake_at`` is returned (a restart does not restart the clock);
        - else the wait fields become ``wait``'s, status ``waiting``, ``updated_at``
          ``now``; returns ``(False, wait.wake_at)``.

        `RunMissing` / `LeaseLost` (with ``owner``) as `write_step`."""
        ...

    async def watch(
        self, woken: Callable[[str], object], cancelled: Callable[[str], object] | None = None
    ) -> None:
        """Call ``woken(run id)`` for every push to this database from any process
        (`send`, `enqueue`, `notify`, a queued run's end), and ``cancelled(run id)``
        for `request_cancel`'s (``woken`` when ``cancelled`` is ``None``), until
        cancelled: PostgreSQL ``LISTEN``, Redis ``SUBSCRIBE``.  The front tells the
        two apart so that only a cancel request reaches the run's lease keeper (a
        send does not make it read the run).  Every payload starts with its kind:
        ``=`` (PostgreSQL also ``#``, an id given by its digest) for a change,
        ``!`` before that for a cancel request (a run id may hold any character but
        NUL, so the kind cannot go after it).  A driver without push (memory,
        SQLite) returns at once.  Raises what the connection raises when it drops
        (the front wakes every waiter, then watches again)."""
        ...

    # ---- queues, control and schedules (issue 20) ------------------------------------

    async def enqueue(self, id: str, row: RunRow, now: float) -> RunRow | None:
        """Insert run ``id`` as ``row`` (status ``pending``, its queue fields set, no
        lease, no steps) when there is no live run ``id`` (an expired one is replaced,
        its steps and messages dropped) and return ``None``; then push like `send`.
        A live run ``id`` already there: nothing written, its row returned (the front
        decides whether that is the same run or a conflict).  `RowUnreadable` for a
        run that is not a row."""
        ...

    async def claim_queued(
        self,
        queue: str,
        now: float,
        owner: str,
        until: float,
        limit: int,
        caps: QueueCaps,
        workflow_names: Sequence[str] | None = None,
    ) -> builtins.list[tuple[str, RunRow]]:
        """Start up to ``limit`` (>= 1) queued runs of ``queue`` for ``owner``, in one
        transaction serialized per queue (so two claimers never exceed a cap together):
        live rows with status ``pending``, ``queue == queue``, ``cancel_at`` ``None``
        and a workflow among ``workflow_names`` (any, when ``None``; the front never
        passes an empty list: it claims nothing), in order (``priority`` ascending,
        ``created_at`` ascending, id ascending),
        skipping a row whose partition is full and stopping when a cap of `caps` is
        reached (counting the rows this call takes).  Each taken row becomes
        ``running`` with ``lease_owner = owner``, ``lease_expires_at = until``,
        ``started_at = now`` and ``updated_at = now``.  Returns ``(id, row as
        written)`` in the order taken."""
        ...

    async def request_cancel(self, id: str, now: float) -> str:
        """Ask live run ``id`` to stop, and return the status it had: ``pending``
        becomes ``cancelled`` (``cancel_at = updated_at = now``: it never starts);
        ``running`` or ``waiting`` gets ``cancel_at = now`` (status and lease kept; a
        waiting run also ``wake_at = now``, so the sweep finds it).  `RunMissing` if
        absent; `RunEnded` (its status) if ``completed``, ``failed`` or ``cancelled``,
        nothing written.  Then pushes a cancel request (`watch`'s ``cancel``: the
        worker running it learns at once)."""
        ...

    async def notify(self, id: str) -> None:
        """Push the notification `send` pushes, for run ``id`` (after the front changed
        the run in another way: a resume, a fork).  Memory and SQLite do nothing."""
        ...

    async def put_schedule(self, name: str, spec_json: str, now: float) -> None:
        """Insert schedule ``name`` with ``spec_json`` or replace its spec; an existing
        schedule keeps its ``last_tick``."""
        ...

    async def schedules(self) -> builtins.list[tuple[str, str, float | None]]:
        """Every schedule as ``(name, spec JSON, last_tick)``, by name (code point)."""
        ...

    async def delete_schedule(self, name: str) -> bool:
        """Remove schedule ``name``; whether it was there."""
        ...

    async def advance_schedule(self, name: str, expected: float | None, tick: float) -> bool:
        """Compare and set: schedule ``name``'s ``last_tick`` becomes ``tick`` if it is
        ``expected`` now (``None``: never ticked); ``False``, nothing written, if it
        differs or the schedule is gone."""
        ...

    # ---- the cross-run step cache (issue 22) ------------------------------------------
    #
    # Cache entries are rows apart from the runs: ``(key, value JSON, expires_at)``,
    # one per key.  An entry is live while ``expires_at > now``; a driver may delete
    # an expired one when it meets it.  A database with its own expiry (Redis) may
    # also let it go then, but must compare ``expires_at`` with ``now`` on every read:
    # the front's clock decides.

    async def cache_get(self, key: str, now: float) -> str | None:
        """Live cache entry ``key``'s value JSON, as stored (never decoded); ``None`` if
        absent or expired.  `RowUnreadable` for an entry that is not one at all (a
        Redis key of another type, a damaged expiry)."""
        ...

    async def cache_put(self, key: str, json: str, now: float, expires_at: float) -> None:
        """Write cache entry ``key`` (value ``json``, expiring at ``expires_at``),
        replacing any entry, live or not, in one atomic change."""
        ...

    async def cache_delete(self, key: str, now: float) -> bool:
        """Remove cache entry ``key``; whether a live one was there (an entry that
        cannot be read counts as live)."""
        ...

    async def cache_purge(self, now: float) -> int:
        """Delete the cache entries expired at ``now`` for good; how many went."""
        ...


def push_router(
    loop: Loop,
    woken: Callable[[str], object],
    cancelled: Callable[[str], object] | None,
) -> Callable[[str, bool], object]:
    """How a driver with push (`RowDriver.watch`) hands a notification ``(run id, is a
    cancel request)`` to ``woken`` or ``cancelled`` (``woken`` if ``None``) in the
    caller's loop.  On asyncio the driver's callbacks already run there.  Under trio
    the hosted asyncio loop runs either inside trio's thread (straight through: no
    hop) or in a thread of its own (one hop, `Loop.call_soon_threadsafe`), never the
    way back of a driver-loop call and then another."""
    on_cancel = woken if cancelled is None else cancelled

    def route(id: str, cancel: bool) -> None:
        (on_cancel if cancel else woken)(id)

    if loop.drives_asyncio:
        return route
    call, here = loop.call_soon_threadsafe(), threading.get_ident()

    def to_caller(id: str, cancel: bool) -> None:
        if threading.get_ident() == here:
            route(id, cancel)
        else:
            call(lambda: route(id, cancel))

    return to_caller
