"""An in-process store: for tests, demos and single-process use.

It keeps the same JSON rows as the database stores, so a value that could not
be saved to SQLite cannot be saved here either, and a loaded snapshot never
shares objects with the one that was saved.
"""

from __future__ import annotations

import builtins
import itertools
from collections import deque
from collections.abc import Callable, Sequence

import anyio.lowlevel
import attrs

from .._clock import Clock
from .._rows import RunRow
from .._snapshot import RunStatus
from .._store import Claim
from ..serialization import TypeRegistry, default_registry
from ._driver import (
    AlreadySent,
    ClaimTerms,
    EndTerms,
    LeaseLost,
    ListedRow,
    QueueCaps,
    RunEnded,
    RunMissing,
    Steps,
    WaitRow,
)
from ._front import StoreFront

__all__ = ["MemoryStore"]

_STORES = itertools.count(1)  # numbers the stores' channels: each store is its own database


class MemoryStore(StoreFront):
    """A `SnapshotStore` (and ``LeaseStore``) held in a dict.

    ``clock`` supplies wall time for TTLs and ``updated_at``; ``registry`` names
    the types step values may hold.  Every method checkpoints, so it is a
    cancellation point like a real store's.  Closing forgets every run.
    """

    def __init__(
        self, *, clock: Clock | None = None, registry: TypeRegistry = default_registry
    ) -> None:
        driver = _MemoryDriver()
        super().__init__(driver, clock=clock, registry=registry)
        # The rows themselves, for tests that damage them on purpose.
        self._runs = driver.runs
        self._steps = driver.steps
        self._messages = driver.messages
        self._cache = driver.cache

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._runs)} runs)"


class _MemoryDriver:
    """Rows in four dicts: run id to row, run id to its steps (key to JSON, in the order
    they were first recorded, which a dict keeps), run id to its mailbox (message key
    to the pending values' JSON and send times, oldest first) and schedule name to its
    spec JSON and last tick.

    Every method does all of its work after its one checkpoint, without awaiting
    again, so each is atomic."""

    def __init__(self) -> None:
        self.runs: dict[str, RunRow] = {}
        self.steps: dict[str, dict[str, str]] = {}
        self.messages: dict[str, dict[str, deque[tuple[str, float]]]] = {}
        self.schedule_rows: dict[str, tuple[str, float | None]] = {}
        self.cache: dict[str, tuple[str, float]] = {}
        self._channel = f"memory:{next(_STORES)}"

    def _live(self, id: str, now: float) -> RunRow | None:
        row = self.runs.get(id)
        if row is not None and row.expires_at is not None and row.expires_at <= now:
            self._forget(id)
            return None
        return row

    def _forget(self, id: str) -> None:
        self.runs.pop(id, None)
        self.steps.pop(id, None)
        self.messages.pop(id, None)

    async def open(self) -> None:
        await anyio.lowlevel.checkpoint()

    async def close(self) -> None:
        self.runs.clear()
        self.steps.clear()
        self.messages.clear()
        self.schedule_rows.clear()
        self.cache.clear()

    async def read(self, id: str, now: float, *, steps: bool) -> tuple[RunRow, Steps] | None:
        await anyio.lowlevel.checkpoint()
        row = self._live(id, now)
        if row is None:
            return None
        return row, builtins.list(self.steps.get(id, {}).items()) if steps else ()

    async def write_run(self, id: str, row: RunRow, steps: Steps) -> None:
        await anyio.lowlevel.checkpoint()
        old = self.runs.get(id)
        if old is not None and old.expires_at is not None and old.expires_at <= row.updated_at:
            # An expired run is gone: its messages and wait do not pass to the new one.
            self._forget(id)
            old = None
        if old is not None and old.lease_owner is not None:
            row = attrs.evolve(
                row, lease_owner=old.lease_owner, lease_expires_at=old.lease_expires_at
            )
        else:
            row = attrs.evolve(row, lease_owner=None, lease_expires_at=None)
        # The pending wait stays as stored, like the lease (a new run has none).
        row = _with_wait(row, old)
        self.runs[id] = row
        self.steps[id] = dict(steps)

    async def delete(self, id: str, now: float) -> bool:
        await anyio.lowlevel.checkpoint()
        existed = self._live(id, now) is not None
        self._forget(id)
        return existed

    async def start_run(
        self, id: str, now: float, restart: Callable[[RunRow | None], RunRow]
    ) -> None:
        await anyio.lowlevel.checkpoint()
        row = self._live(id, now)
        fresh = restart(row)
        if row is not None:
            fresh = attrs.evolve(
                fresh, lease_owner=row.lease_owner, lease_expires_at=row.lease_expires_at
            )
        self.runs[id] = fresh
        self.steps.setdefault(id, {})

    def _writable(self, id: str, now: float, owner: str | None) -> RunRow:
        row = self._live(id, now)
        if row is None:
            raise RunMissing
        if owner is not None and row.lease_owner != owner:
            raise LeaseLost
        return row

    async def write_step(self, id: str, key: str, json: str, now: float, owner: str | None) -> None:
        await anyio.lowlevel.checkpoint()
        row = self._writable(id, now, owner)
        self._record(id, row, key, json, now)

    def _record(self, id: str, row: RunRow, key: str, json: str, now: float) -> None:
        """Write step ``key`` of run ``id`` (whose row is ``row``), ending its wait if
        it is that step's."""
        self.steps.setdefault(id, {})[key] = json
        if row.wait_step == key:
            row = _with_wait(row, None, status="running" if row.status == "waiting" else None)
        self.runs[id] = attrs.evolve(row, updated_at=now)

    async def end_run(self, id: str, now: float, end: EndTerms) -> None:
        await anyio.lowlevel.checkpoint()
        row = self._writable(id, now, end.owner)
        merge = end.merge
        self.runs[id] = attrs.evolve(
            row,
            status=end.status,
            result_json=end.result_json,
            metadata_json=row.metadata_json if merge is None else merge(row),
            updated_at=now,
            expires_at=end.expires_at,
            lease_owner=None,
            lease_expires_at=None,
            wait_step=None,
            wait_key=None,
            wait_kind=None,
            wake_at=None,
        )

    async def claim(self, id: str, now: float, terms: ClaimTerms) -> Claim:
        await anyio.lowlevel.checkpoint()
        row = self._live(id, now)
        if row is None:
            self.runs[id] = terms.fresh_row
            self.steps[id] = {}
            return terms.fresh
        refused = terms.check(row)
        if refused is not None:
            return refused
        taken, claimed = terms.take(row, builtins.list(self.steps.get(id, {}).items()))
        self.runs[id] = taken
        self.steps.setdefault(id, {})
        return claimed

    async def renew(self, id: str, now: float, owner: str, until: float) -> bool:
        await anyio.lowlevel.checkpoint()
        row = self._live(id, now)
        if row is None or row.lease_owner != owner or row.cancel_at is not None:
            return False
        self.runs[id] = attrs.evolve(row, lease_expires_at=until)
        return True

    async def release(self, id: str, owner: str) -> None:
        await anyio.lowlevel.checkpoint()
        row = self.runs.get(id)
        if row is not None and row.lease_owner == owner:
            self.runs[id] = attrs.evolve(row, lease_owner=None, lease_expires_at=None)

    async def claim_expired(
        self,
        now: float,
        owner: str,
        until: float,
        limit: int,
        workflow_names: Sequence[str] | None,
        problem: Callable[[str, RunRow, Steps], str | None],
    ) -> tuple[builtins.list[tuple[str, RunRow]], builtins.list[ListedRow]]:
        await anyio.lowlevel.checkpoint()
        names = None if workflow_names is None else set(workflow_names)
        candidates: builtins.list[tuple[float, str, RunRow]] = []
        doomed: builtins.list[tuple[float, str, RunRow]] = []
        for id in builtins.list(self.runs):
            row = self._live(id, now)
            if row is None:
                continue
            if _cancel_orphaned(row, now):
                doomed.append((_number(row.updated_at), id, row))
                continue
            if not _claimable(row, now):
                continue
            if names is not None and row.workflow_name not in names:
                continue
            if row.lease_expires_at is not None and row.lease_expires_at > now:
                continue
            candidates.append((_number(row.updated_at), id, row))
        doomed.sort(key=lambda item: (item[0], item[1]))
        for _, id, row in doomed[:limit]:
            # Its worker died before it could stop it: the cancel is carried out here.
            self.runs[id] = _with_wait(
                attrs.evolve(row, lease_owner=None, lease_expires_at=None, updated_at=now),
                None,
                status="cancelled",
            )
        candidates.sort(key=lambda item: (item[0], item[1]))
        claimed: builtins.list[tuple[str, RunRow]] = []
        damaged: builtins.list[ListedRow] = []
        for at, id, row in candidates:
            if len(claimed) >= limit:
                break
            found = problem(id, row, builtins.list(self.steps.get(id, {}).items()))
            if found is not None:
                damaged.append(ListedRow(id, at, row, found))
                continue
            self.runs[id] = attrs.evolve(row, lease_owner=owner, lease_expires_at=until)
            claimed.append((id, row))
        return claimed, damaged

    async def list(
        self,
        now: float,
        prefix: str | None,
        status: RunStatus | None,
        after: tuple[float, str] | None,
        limit: int,
    ) -> builtins.list[ListedRow]:
        await anyio.lowlevel.checkpoint()
        found: builtins.list[ListedRow] = []
        for id in builtins.list(self.runs):
            row = self._live(id, now)
            if row is None or (prefix is not None and not id.startswith(prefix)):
                continue
            if status is not None and row.status != status:
                continue
            at = _number(row.updated_at)
            if after is not None and (at, id) >= after:
                continue
            found.append(ListedRow(id, at, row))
        found.sort(key=lambda entry: (entry.at, entry.id), reverse=True)
        return found[:limit]

    async def count(self, now: float, prefix: str | None) -> dict[str, int]:
        await anyio.lowlevel.checkpoint()
        counts: dict[str, int] = {}
        for id in builtins.list(self.runs):
            row = self._live(id, now)
            if row is not None and (prefix is None or id.startswith(prefix)):
                counts[row.status] = counts.get(row.status, 0) + 1
        return counts

    async def purge(self, now: float) -> int:
        await anyio.lowlevel.checkpoint()
        gone = [
            id
            for id, row in self.runs.items()
            if row.expires_at is not None and row.expires_at <= now
        ]
        for id in gone:
            self._forget(id)
        return len(gone)

    # ---- waiting: messages, waits and wake-ups ---------------------------------------

    @property
    def channel(self) -> str:
        return self._channel

    def _pending(self, id: str, key: str) -> deque[tuple[str, float]] | None:
        """Run ``id``'s pending messages with ``key``, oldest first; ``None`` if none."""
        return self.messages.get(id, {}).get(key) or None

    async def send(self, id: str, key: str, json: str, now: float, once: str | None) -> None:
        await anyio.lowlevel.checkpoint()
        row = self._live(id, now)
        if row is None:
            raise RunMissing
        if row.status in ("completed", "failed"):
            raise RunEnded(row.status)
        if once is not None and (
            self._pending(id, key) is not None or once in self.steps.get(id, {})
        ):
            raise AlreadySent
        self.messages.setdefault(id, {}).setdefault(key, deque()).append((json, now))
        if row.status == "waiting" and row.wait_key == key:
            # min: a value sent after the deadline leaves the deadline in place.
            wake_at = now if row.wake_at is None else min(row.wake_at, now)
            self.runs[id] = attrs.evolve(row, wake_at=wake_at)
        # No push: the front wakes this store's waiters itself (they share the process).

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
        await anyio.lowlevel.checkpoint()
        row = self._writable(id, now, owner)
        if step in self.steps.get(id, {}):
            return None
        pending = self._pending(id, key)
        if pending is None:
            return None
        at = next(
            (n for n, (_, sent_at) in enumerate(pending) if sent_by is None or sent_at <= sent_by),
            None,
        )
        if at is None:
            return None  # every pending one was sent after ``sent_by``
        value = pending[at][0]
        del pending[at]
        if not pending:
            mailbox = self.messages[id]
            del mailbox[key]
            if not mailbox:
                del self.messages[id]
        self._record(id, row, step, head + value + tail, now)
        return value

    async def begin_wait(
        self, id: str, wait: WaitRow, now: float, owner: str | None
    ) -> tuple[bool, float | None]:
        await anyio.lowlevel.checkpoint()
        row = self._writable(id, now, owner)
        resumed = row.wait_step == wait.step
        deadline = row.wake_at if resumed else wait.wake_at
        if wait.key is not None:
            pending = self._pending(id, wait.key) or ()
            # Ready only for a value sent by the deadline: a later one loses to the timeout.
            if any(deadline is None or sent_at <= deadline for _, sent_at in pending):
                return True, None
        if resumed:
            # The same wait, resumed: its deadline stands.
            self.runs[id] = attrs.evolve(row, status="waiting")
            return False, row.wake_at
        self.runs[id] = attrs.evolve(
            row,
            status="waiting",
            wait_step=wait.step,
            wait_key=wait.key,
            wait_kind=wait.kind,
            wake_at=wait.wake_at,
            updated_at=now,
        )
        return False, wait.wake_at

    async def watch(
        self, woken: Callable[[str], object], cancelled: Callable[[str], object] | None = None
    ) -> None:
        # Nothing to listen to: every sender shares the process, and the front wakes
        # its waiters at once.
        await anyio.lowlevel.checkpoint()

    # ---- queues, control and schedules -----------------------------------------------

    async def enqueue(self, id: str, row: RunRow, now: float) -> RunRow | None:
        await anyio.lowlevel.checkpoint()
        found = self._live(id, now)
        if found is not None:
            return found
        self._forget(id)
        self.runs[id] = row
        self.steps[id] = {}
        return None

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
        await anyio.lowlevel.checkpoint()
        names = None if workflow_names is None else set(workflow_names)
        running = 0
        by_partition: dict[str | None, int] = {}
        started = 0
        pending: builtins.list[tuple[int, float, str, RunRow]] = []
        for id in builtins.list(self.runs):
            row = self._live(id, now)
            if row is None or row.queue != queue:
                continue
            if row.status == "running":
                running += 1
                by_partition[row.partition] = by_partition.get(row.partition, 0) + 1
            elif (
                row.status == "pending"
                and row.cancel_at is None
                and (names is None or row.workflow_name in names)
            ):
                pending.append((row.priority, _number(row.created_at), id, row))
            at = row.started_at
            if caps.rate is not None and at is not None and at > now - caps.rate[1]:
                started += 1
        room = limit
        if caps.concurrency is not None:
            room = min(room, caps.concurrency - running)
        if caps.rate is not None:
            room = min(room, caps.rate[0] - started)
        pending.sort(key=lambda item: item[:3])
        taken: builtins.list[tuple[str, RunRow]] = []
        for _, _, id, row in pending:
            if len(taken) >= room:
                break
            cap = caps.partition_concurrency
            if cap is not None and by_partition.get(row.partition, 0) >= cap:
                continue
            by_partition[row.partition] = by_partition.get(row.partition, 0) + 1
            row = attrs.evolve(
                row,
                status="running",
                lease_owner=owner,
                lease_expires_at=until,
                started_at=now,
                updated_at=now,
            )
            self.runs[id] = row
            taken.append((id, row))
        return taken

    async def request_cancel(self, id: str, now: float) -> str:
        await anyio.lowlevel.checkpoint()
        row = self._live(id, now)
        if row is None:
            raise RunMissing
        if row.status in ("completed", "failed", "cancelled"):
            raise RunEnded(row.status)
        if row.status == "pending":
            self.runs[id] = attrs.evolve(row, status="cancelled", cancel_at=now, updated_at=now)
        elif row.status == "waiting":
            self.runs[id] = attrs.evolve(row, cancel_at=now, wake_at=now)
        else:  # running (or a damaged status: asked to stop like a running run)
            self.runs[id] = attrs.evolve(row, cancel_at=now)
        return row.status

    async def notify(self, id: str) -> None:
        # No push: the front wakes this process's waiters itself.
        await anyio.lowlevel.checkpoint()

    async def put_schedule(self, name: str, spec_json: str, now: float) -> None:
        await anyio.lowlevel.checkpoint()
        found = self.schedule_rows.get(name)
        self.schedule_rows[name] = (spec_json, None if found is None else found[1])

    async def schedules(self) -> builtins.list[tuple[str, str, float | None]]:
        await anyio.lowlevel.checkpoint()
        return [(name, spec, tick) for name, (spec, tick) in sorted(self.schedule_rows.items())]

    async def delete_schedule(self, name: str) -> bool:
        await anyio.lowlevel.checkpoint()
        return self.schedule_rows.pop(name, None) is not None

    async def advance_schedule(self, name: str, expected: float | None, tick: float) -> bool:
        await anyio.lowlevel.checkpoint()
        found = self.schedule_rows.get(name)
        if found is None or found[1] != expected:
            return False
        self.schedule_rows[name] = (found[0], tick)
        return True

    # ---- the cross-run step cache ------------------------------------------------------

    async def cache_get(self, key: str, now: float) -> str | None:
        await anyio.lowlevel.checkpoint()
        found = self.cache.get(key)
        if found is None:
            return None
        if found[1] <= now:
            del self.cache[key]
            return None
        return found[0]

    async def cache_put(self, key: str, json: str, now: float, expires_at: float) -> None:
        await anyio.lowlevel.checkpoint()
        self.cache[key] = (json, expires_at)

    async def cache_delete(self, key: str, now: float) -> bool:
        await anyio.lowlevel.checkpoint()
        found = self.cache.pop(key, None)
        return found is not None and found[1] > now

    async def cache_purge(self, now: float) -> int:
        await anyio.lowlevel.checkpoint()
        gone = [key for key, (_, expires_at) in self.cache.items() if expires_at <= now]
        for key in gone:
            del self.cache[key]
        return len(gone)


def _claimable(row: RunRow, now: float) -> bool:
    """Whether ``claim_expired`` may take the run, its lease aside: abandoned (running or
    cancelled) or waiting and due."""
    if row.cancel_at is not None:
        return False  # a cancel was requested: its worker ends it, nobody recovers it
    if row.status in ("running", "cancelled"):
        return True
    return row.status == "waiting" and isinstance(row.wake_at, float | int) and row.wake_at <= now


def _cancel_orphaned(row: RunRow, now: float) -> bool:
    """Whether live ``row`` is running or waiting with a cancel requested and nobody
    holding it (its lease free or run out): ``claim_expired`` ends it."""
    lease: object = row.lease_expires_at
    return (
        row.cancel_at is not None
        and row.status in ("running", "waiting")
        and (lease is None or (isinstance(lease, float | int) and lease <= now))
    )


def _with_wait(row: RunRow, source: RunRow | None, *, status: RunStatus | None = None) -> RunRow:
    """``row`` with ``source``'s pending wait (none when ``source`` is ``None``) and, if
    given, ``status``."""
    return attrs.evolve(
        row,
        status=row.status if status is None else status,
        wait_step=None if source is None else source.wait_step,
        wait_key=None if source is None else source.wait_key,
        wait_kind=None if source is None else source.wait_kind,
        wake_at=None if source is None else source.wake_at,
    )


def _number(value: object) -> float:
    """A time to sort by; a damaged one (not a number) sorts as the epoch."""
    return float(value) if isinstance(value, float | int) else 0.0
