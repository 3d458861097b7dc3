"""A Redis store on redis-py's asyncio client: a hash per run, a hash of its steps, and
sorted-set indexes, every multi-key change atomic (Lua scripts or WATCH/MULTI).

Keys, under ``prefix`` (default ``awaitly:``):

    {prefix}run:{id}     hash: the run row (status, result, metadata, times, lease,
                         pending wait); a field it lacks (a run written by an older
                         release) reads as none
    {prefix}steps:{id}   hash: step key -> record JSON; and, to keep the steps in the
                         order they were recorded, NUL + step key -> its place (1, 2...)
                         and NUL -> the last place given (a step key has no NUL)
    {prefix}mail:{id}    hash: the run's mailbox, messages in the order they were sent
                         per key (the layout is in ``_redis_lua``)
    {prefix}index        sorted set: id by updated_at, for ``list`` (never KEYS or SCAN)
    {prefix}active       sorted set: running and cancelled ids, for recovery
    {prefix}waiting      sorted set: waiting ids that have a deadline, by ``wake_at``,
                         so that recovery finds the due ones without reading the others
    {prefix}queue:{q}    sorted set: queue ``q``'s pending runs by priority (members
                         are the runs' ``queue_entry``: creation time, NUL, id)
    {prefix}qrun:{q}     hash: queue ``q``'s started runs that have not ended -> their
                         partition (checked run by run when a cap counts them)
    {prefix}qstart:{q}   sorted set: queue ``q``'s starts by time, for its rate cap
    {prefix}qwindow      hash: queue -> the window of its last rate cap (how long
                         starts are kept)
    {prefix}schedules    hash: schedule name -> spec JSON
    {prefix}schedule-ticks  hash: schedule name -> last tick
    {prefix}cache:{key}  hash: a cross-run step cache entry (``v`` its value JSON,
                         ``e`` its expiry; ``PEXPIRE`` frees it then)
    {prefix}wake:db{n}   the pub/sub channel a send, an enqueue, a cancel request and the
                         end of a queued run publish the run's id on, after ``=``
                         (``!`` for a cancel request: only it reaches the run's lease
                         keeper) (pub/sub is server-wide: the database number keeps
                         two databases apart)

A keyed step's checkpoint is one script call (one round trip).  Expiry is
decided with the store's clock and also set on the keys with ``PEXPIRE``, so
Redis frees them by itself; ``list`` drops index entries whose run is gone.
Under trio the client runs on a private asyncio loop hosted in trio's thread
(the loops layer's driver runner, through `awaitly_anyio._redis_client.SharedRedis`).
Meant for a single Redis (or a primary with replicas), not Redis Cluster.

`RedisStore` is the store front (``_front``) over `_RedisDriver`, which speaks
rows and step JSON only; its Lua scripts live in ``_redis_lua``.
"""

from __future__ import annotations

import builtins
import contextlib
import math
import struct
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from .. import _loops
from .._clock import Clock
from .._redact import redact_url
from .._redis_client import SharedRedis
from .._rows import RunRow
from .._snapshot import RunStatus
from .._store import Claim
from .._store_url import check_redis_url
from ..serialization import TypeRegistry, default_registry
from . import _redis_lua as lua
from ._driver import (
    AlreadySent,
    ClaimTerms,
    EndTerms,
    LeaseLost,
    ListedRow,
    QueueCaps,
    RowUnreadable,
    RunEnded,
    RunMissing,
    Steps,
    WaitRow,
    push_router,
)
from ._front import StoreFront

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["RedisStore"]


def _import_redis() -> Any:
    try:
        import redis.asyncio
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("RedisStore needs redis-py: pip install 'awaitly-anyio[redis]'") from exc
    return redis.asyncio


class RedisStore(StoreFront):
    """A `SnapshotStore` (and ``LeaseStore``) in Redis.

    - ``url_or_client``: a ``redis://`` / ``rediss://`` / ``unix://`` URL (the store
      makes and closes its client), or an existing ``redis.asyncio.Redis`` made
      with ``decode_responses=True`` (used as it is and not closed; asyncio only,
      since a client belongs to its loop).
    - ``prefix``: put before every key, so several applications can share a database.
    - ``clock`` and ``registry`` as for every store.

    ``ValueError`` for a URL that is not a Redis URL (the message masks its
    secrets) or a prefix holding NUL; ``TypeError`` for something that is neither
    a URL nor a client.  Every method is a cancellation point; a cancelled call
    either ran its script (atomically) or not.  Connection errors
    (``redis.ConnectionError``) propagate; the client reconnects once the server is
    back.
    """

    def __init__(
        self,
        url_or_client: str | redis.asyncio.Redis,
        *,
        prefix: str = "awaitly:",
        clock: Clock | None = None,
        registry: TypeRegistry = default_registry,
    ) -> None:
        redis_asyncio = _import_redis()  # the store's own message when redis-py is missing
        if isinstance(url_or_client, str):
            try:
                check_redis_url(url_or_client)
            except ValueError as exc:
                raise ValueError(f"invalid Redis URL {redact_url(url_or_client)}: {exc}") from None
            self._where = repr(redact_url(url_or_client))
        elif isinstance(url_or_client, redis_asyncio.Redis):
            self._where = "a client"
        else:  # not its repr: it could hold a password
            raise TypeError(
                "RedisStore takes a Redis URL or a redis.asyncio.Redis,"
                f" not {type(url_or_client).__name__}"
            )
        if not isinstance(prefix, str) or "\x00" in prefix:
            raise ValueError(f"prefix must be a string without NUL, not {prefix!r}")
        self._prefix = prefix
        self._redis_driver = _RedisDriver(
            SharedRedis(url_or_client, repr(self), argument="RedisStore"), prefix
        )
        super().__init__(self._redis_driver, clock=clock, registry=registry)

    def __repr__(self) -> str:
        return f"RedisStore({self._where}, prefix={self._prefix!r})"

    @property
    def prefix(self) -> str:
        """The prefix of every key this store writes."""
        return self._prefix

    def keys_of(self, id: str) -> tuple[str, str]:
        """The run hash and steps hash keys of run ``id``."""
        return self._redis_driver.keys_of(id)


# ---- rows as hashes -------------------------------------------------------------------

_FIELDS = (
    "workflow_name",
    "status",
    "result_json",
    "metadata_json",
    "created_at",
    "updated_at",
    "expires_at",
    "format_version",
    "lease_owner",
    "lease_expires_at",
    "wait_step",
    "wait_key",
    "wait_kind",
    "wake_at",
    "queue",
    "priority",
    "partition",
    "started_at",
    "cancel_at",
)
"""The run hash's fields, in `RunRow`'s order.  The queue fields came later: a run
written before them lacks them, and reads as not queued."""

_CANCEL_AT = _FIELDS.index("cancel_at")

_PLACE = "\x00"
"""The steps hash's fields that order the steps start with it (see the module's doc)."""

_ACTIVE = ("running", "cancelled")
"""The statuses the set of active runs holds (recovery's candidates)."""


class _Missing:
    """Stands for a field every run hash has, missing from a damaged one."""

    def __repr__(self) -> str:
        return "(missing)"


_MISSING: Any = _Missing()


# How many index entries one `lua.COUNT` script reads.
_COUNT_SLICE = 5000


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _ttl_ms(expires_at: float | None, now: float) -> str:
    """The ``PEXPIRE`` that frees a run's keys once it expires (``''``: never)."""
    if expires_at is None:
        return ""
    return str(max(1, math.ceil((expires_at - now) * 1000)))


def _parse(fields: Mapping[str, str | None]) -> tuple[RunRow, bool]:
    """A run row from its hash (all strings; '' means None), and whether every field
    parsed.  Never raises: a missing field is `_MISSING` and a number that does not
    parse stays the text it is, for the front to report."""
    whole = True

    def opt(name: str) -> str | None:
        return fields.get(name) or None

    def field(name: str) -> Any:
        nonlocal whole
        value = fields.get(name)
        if value is None:
            whole = False
            return _MISSING
        return value

    def num(name: str) -> Any:
        nonlocal whole
        value = field(name)
        try:
            return float(value)
        except (TypeError, ValueError):
            whole = False
            return value

    def opt_num(name: str) -> Any:
        return None if fields.get(name) == "" else num(name)

    def later_num(name: str) -> Any:
        # A field added in a later release: absent or empty reads as none.
        return num(name) if fields.get(name) else None

    priority: Any = fields.get("priority") or 0
    try:
        priority = int(priority)
    except (TypeError, ValueError):
        whole = False

    version: Any = field("format_version")
    try:
        version = int(version)
    except (TypeError, ValueError):
        whole = False
    row = RunRow(
        workflow_name=field("workflow_name"),
        status=field("status"),
        result_json=opt("result_json"),
        metadata_json=field("metadata_json"),
        created_at=num("created_at"),
        updated_at=num("updated_at"),
        expires_at=opt_num("expires_at"),
        format_version=version,
        lease_owner=opt("lease_owner"),
        lease_expires_at=num("lease_expires_at") if fields.get("lease_expires_at") else None,
        wait_step=opt("wait_step"),
        wait_key=opt("wait_key"),
        wait_kind=opt("wait_kind"),
        wake_at=num("wake_at") if fields.get("wake_at") else None,
        queue=opt("queue"),
        priority=priority,
        partition=opt("partition"),
        started_at=later_num("started_at"),
        cancel_at=later_num("cancel_at"),
    )
    return row, whole


def _row(fields: Mapping[str, str | None]) -> RunRow:
    return _parse(fields)[0]


def _entry(id: str, row: RunRow) -> str:
    """Queued run ``id``'s member in its queue's sorted set (``''`` for a run without a
    queue): its ``created_at`` as 16 hex digits that sort as the times do (the IEEE
    bits, sign bit flipped; all bits flipped for a negative time), NUL, its id.  Equal
    priorities (the score) then come out oldest first, then by id."""
    if row.queue is None:
        return ""
    created: object = row.created_at
    at = created if isinstance(created, float) else 0.0
    (bits,) = struct.unpack(">Q", struct.pack(">d", at))
    bits = bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | 1 << 63
    return f"{bits:016x}\x00{id}"


def _fields(id: str, row: RunRow, *, lease: bool, wait: bool = False) -> dict[str, str]:
    """Run ``id``'s row as its hash's fields, with or without the lease and the pending
    wait."""
    fields = {
        "workflow_name": row.workflow_name,
        "status": row.status,
        "result_json": row.result_json or "",
        "metadata_json": row.metadata_json,
        "created_at": _num(row.created_at),
        "updated_at": _num(row.updated_at),
        "expires_at": _num(row.expires_at),
        "format_version": str(row.format_version),
        "queue": row.queue or "",
        "priority": str(row.priority),
        "partition": row.partition or "",
        "started_at": _num(row.started_at),
        "cancel_at": _num(row.cancel_at),
        "queue_entry": _entry(id, row),
    }
    if lease:
        fields["lease_owner"] = row.lease_owner or ""
        fields["lease_expires_at"] = _num(row.lease_expires_at)
    if wait:
        fields["wait_step"] = row.wait_step or ""
        fields["wait_key"] = row.wait_key or ""
        fields["wait_kind"] = row.wait_kind or ""
        fields["wake_at"] = _num(row.wake_at)
    return fields


def _in_order(steps: Mapping[str, str]) -> builtins.list[tuple[str, str]]:
    """A steps hash's ``(key, record json)`` pairs in the order they were recorded.  Steps
    without a place (written by a release that kept none, or whose place is not a
    number) come first, by key."""
    places: dict[str, int] = {}
    records: builtins.list[tuple[str, str]] = []
    for field, value in steps.items():
        if not field.startswith(_PLACE):
            records.append((field, value))
        elif len(field) > 1:
            with contextlib.suppress(TypeError, ValueError):
                places[field[1:]] = int(value)
    records.sort(key=lambda item: (item[0] in places, places.get(item[0], 0), item[0]))
    return records


def _expired(expires: object, now: float) -> bool:
    """Whether a stored ``expires_at`` text has passed (a damaged one has not)."""
    if not isinstance(expires, str) or not expires:
        return False
    try:
        return float(expires) <= now
    except ValueError:
        return False


def _live(row: RunRow | None, now: float) -> bool:
    """Whether ``row`` is a run that has not expired (a damaged expiry counts as live,
    so that the run is reported, never dropped)."""
    if row is None or row.expires_at is None:
        return row is not None
    expires_at: object = row.expires_at
    return not isinstance(expires_at, float) or expires_at > now


def _due(row: RunRow, now: float) -> bool:
    """Whether ``row`` waits and its ``wake_at`` has come."""
    wake_at: object = row.wake_at
    return row.status == "waiting" and isinstance(wake_at, float) and wake_at <= now


def _abandoned(row: RunRow, now: float, wanted: set[str] | None) -> bool:
    """Whether live ``row`` is one recovery may take: running or cancelled, or waiting
    and due, no cancel requested, its lease free or run out, its workflow among
    ``wanted`` (any, when ``None``)."""
    lease: object = row.lease_expires_at
    return (
        (row.status in _ACTIVE or _due(row, now))
        and row.cancel_at is None
        and (wanted is None or row.workflow_name in wanted)
        and _live(row, now)
        and (lease is None or (isinstance(lease, float) and lease <= now))
    )


def _cancel_orphaned(row: RunRow, now: float) -> bool:
    """Whether live ``row`` is running or waiting with a cancel requested and its lease
    free or run out (its worker died before it stopped it)."""
    lease: object = row.lease_expires_at
    return (
        row.cancel_at is not None
        and row.status in ("running", "waiting")
        and _live(row, now)
        and (lease is None or (isinstance(lease, float) and lease <= now))
    )


def _sort_time(values: Any) -> float:
    """The ``updated_at`` of a run read as `_FIELDS` values (``0`` if it has none that
    reads: a damaged run is reported first)."""
    with contextlib.suppress(TypeError, ValueError, IndexError, KeyError):
        return float(values[_FIELDS.index("updated_at")])
    return 0.0


def _is_wrong_type(error: object) -> bool:
    return isinstance(error, _import_redis().ResponseError) and "WRONGTYPE" in str(error)


def _not_a_hash(key: str, error: BaseException) -> str:
    """What is wrong with a run whose key holds something other than a hash."""
    return f"Redis key {key!r} is not a hash ({error})"


def _unreadable(key: str, error: BaseException) -> BaseException:
    """`RowUnreadable` for a key of the wrong type; any other error as it is."""
    return RowUnreadable(_not_a_hash(key, error)) if _is_wrong_type(error) else error


# A change under WATCH: given the run's row (and steps, when watched), the outcome and a
# function that queues the writes into the MULTI block (None: write nothing).
_Write = Callable[[Any, str, str], None]


class _RedisDriver:
    """The rows of `RedisStore` in Redis hashes and sorted sets (see the module's
    doc), through one `SharedRedis`.  Speaks rows and step JSON only; times come
    from the front."""

    def __init__(self, redis: SharedRedis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._index = f"{prefix}index"
        self._active = f"{prefix}active"
        self._waiting = f"{prefix}waiting"
        self._wake = f"{prefix}wake:db{redis.database}"
        self._schedules = [f"{prefix}schedules", f"{prefix}schedule-ticks"]

    def keys_of(self, id: str) -> tuple[str, str]:
        """The run hash and steps hash keys of run ``id``."""
        return f"{self._prefix}run:{id}", f"{self._prefix}steps:{id}"

    def _mail_of(self, id: str) -> str:
        """The mailbox hash key of run ``id``."""
        return f"{self._prefix}mail:{id}"

    def _all_keys(self, id: str) -> builtins.list[str]:
        """What a script changing run ``id`` and the indexes takes as its KEYS."""
        prefix = self._prefix
        return [
            f"{prefix}run:{id}",
            f"{prefix}steps:{id}",
            self._index,
            self._active,
            f"{prefix}mail:{id}",
            self._waiting,
        ]

    # ---- plumbing ----------------------------------------------------------------------

    async def _call(self, fn: Callable[[Any], Awaitable[Any]]) -> Any:
        """``await fn(client)`` on the driver loop."""
        return await self._redis.call(fn)

    async def _script(self, source: str, keys: builtins.list[str], args: builtins.list[Any]) -> Any:
        """One Lua script call (batched with others in flight)."""
        return await self._redis.run(source, keys, args)

    async def _update(self, id: str, change: Any, *, with_steps: bool = False) -> Any:
        """Read run ``id`` under WATCH, let ``change(row)`` (``change(row, steps)`` with
        ``with_steps``, the steps watched too) return (outcome, a `_Write` or None),
        and write atomically; retried if the run changed meanwhile.  A key of the
        wrong type raises `RowUnreadable`; what ``change`` raises propagates with
        nothing written."""
        run_key, steps_key = self.keys_of(id)
        redis = _import_redis()

        async def read(pipe: Any, key: str) -> Any:
            try:
                return await pipe.hgetall(key)
            except redis.ResponseError as exc:
                raise _unreadable(key, exc) from None

        async def transact(client: Any) -> Any:
            async with client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        if with_steps:
                            await pipe.watch(run_key, steps_key)
                        else:
                            await pipe.watch(run_key)
                        fields = await read(pipe, run_key)
                        row = _row(fields) if fields else None
                        if with_steps:
                            outcome, write = change(row, await read(pipe, steps_key))
                        else:
                            outcome, write = change(row)
                        pipe.multi()
                        if write is not None:
                            write(pipe, run_key, steps_key)
                        await pipe.execute()
                        return outcome
                    except redis.WatchError:
                        continue

        return await self._call(transact)

    def _rewrite(
        self,
        id: str,
        row: RunRow,
        now: float,
        *,
        drop: bool,
        lease: bool,
        old: RunRow | None,
        wait: bool = False,
    ) -> _Write:
        """Queue writing ``row`` (a restarted run: running, or pending in its queue) over
        run ``id``, whose stored row was ``old`` (after dropping its keys and messages,
        with ``drop``; with its lease, with ``lease``; with its pending wait, with
        ``wait``, else the stored one stays), never to expire, at ``now``."""
        mail_key = self._mail_of(id)

        def write(pipe: Any, run_key: str, steps_key: str) -> None:
            if old is not None:
                self._unqueue(pipe, id, old)
            if drop:
                pipe.delete(run_key, steps_key, mail_key)
            pipe.hset(run_key, mapping=_fields(id, row, lease=lease, wait=wait))
            pipe.persist(run_key)
            pipe.persist(steps_key)
            pipe.persist(mail_key)
            pipe.zadd(self._index, {id: now})
            if row.status == "running" or (row.status == "cancelled" and row.cancel_at is None):
                pipe.zadd(self._active, {id: now})
            else:
                pipe.zrem(self._active, id)
            pipe.zrem(self._waiting, id)  # a restarted run does not wait
            self._requeue(pipe, id, row)

        return write

    def _unqueue(self, pipe: Any, id: str, row: RunRow) -> None:
        """Queue taking run ``id`` (stored as ``row``) out of its queue's keys."""
        if row.queue is not None:
            pipe.zrem(f"{self._prefix}queue:{row.queue}", _entry(id, row))
            pipe.hdel(f"{self._prefix}qrun:{row.queue}", id)

    def _requeue(self, pipe: Any, id: str, row: RunRow) -> None:
        """Queue putting run ``id`` (written as ``row``) into its queue's keys, as its
        status says (the Lua scripts' ``requeue``)."""
        if row.queue is None:
            return
        if row.status == "pending":
            pipe.zadd(f"{self._prefix}queue:{row.queue}", {_entry(id, row): row.priority})
        elif row.status in ("running", "waiting"):
            pipe.hset(f"{self._prefix}qrun:{row.queue}", id, row.partition or "")

    # ---- RowDriver ---------------------------------------------------------------------

    async def open(self) -> None:
        await self._call(lambda client: client.ping())

    async def close(self) -> None:
        await self._redis.aclose()

    async def read(self, id: str, now: float, *, steps: bool) -> tuple[RunRow, Steps] | None:
        # One script through the runner: read at once, and sent in the same write as
        # the calls in flight (a lease keeper's look at its run beside the receive).
        run_key, steps_key = self.keys_of(id)
        found: builtins.list[Any] = await self._redis.run_read(
            lua.READ, [run_key, steps_key], ["1" if steps else ""]
        )
        if isinstance(found[0], int):  # which key could not be read, and why
            key = (run_key, steps_key)[found[0]]
            error = str(found[1])
            if "WRONGTYPE" in error:
                raise RowUnreadable(_not_a_hash(key, _import_redis().ResponseError(error)))
            raise _import_redis().ResponseError(error)
        fields = _pairs(found[0])
        row = _row(fields) if fields else None
        if row is None or not _live(row, now):
            return None
        return row, (_in_order(_pairs(found[1])) if steps else ())

    async def write_run(self, id: str, row: RunRow, steps: Steps) -> None:
        now = row.updated_at  # the front saves at its "now"
        args: builtins.list[Any] = [
            id,
            _num(now),
            _ttl_ms(row.expires_at, now),
            row.status,
            self._prefix,
            row.queue or "",
            _entry(id, row),
            str(row.priority),
            row.partition or "",
            _num(row.cancel_at),
            *[text for pair in _fields(id, row, lease=False).items() for text in pair],
            "--",
        ]
        for key, text in steps:
            args += [key, text]
        for place, (key, _) in enumerate(steps, 1):
            args += [_PLACE + key, str(place)]
        if steps:
            args += [_PLACE, str(len(steps))]
        await self._script(lua.SAVE, self._all_keys(id), args)

    async def delete(self, id: str, now: float) -> bool:
        return bool(
            await self._script(lua.DELETE, self._all_keys(id), [id, _num(now), self._prefix])
        )

    async def start_run(
        self, id: str, now: float, restart: Callable[[RunRow | None], RunRow]
    ) -> None:
        def change(row: RunRow | None) -> tuple[None, _Write]:
            live = row if _live(row, now) else None
            # Without its lease fields, so a stored lease is kept.
            return None, self._rewrite(
                id, restart(live), now, drop=live is None, lease=False, old=row
            )

        await self._update(id, change)

    async def write_step(self, id: str, key: str, json: str, now: float, owner: str | None) -> None:
        # The hot path: straight to the script runner (no `_script` frame).
        prefix = self._prefix
        done = await self._redis.run(
            lua.CHECKPOINT,
            [f"{prefix}run:{id}", f"{prefix}steps:{id}", self._waiting, self._active],
            [_num(now), owner or "", key, json, id],
        )
        if done == 0:
            raise RunMissing
        if done == -1:
            raise LeaseLost

    async def end_run(self, id: str, now: float, end: EndTerms) -> None:
        expires_at, owner, merge = end.expires_at, end.owner, end.merge
        if merge is None:  # the metadata stays: one script call
            keys = self._all_keys(id)
            try:
                done = await self._script(
                    lua.FINISH,
                    keys,
                    [
                        id,
                        _num(now),
                        owner or "",
                        end.status,
                        end.result_json or "",
                        _num(expires_at),
                        _ttl_ms(expires_at, now),
                        self._prefix,
                        self._wake,
                    ],
                )
            except _import_redis().ResponseError as exc:
                # A run key of another type: unreadable, as when the metadata is merged.
                raise _unreadable(keys[0], exc) from None
            if done == 0:
                raise RunMissing
            if done == -1:
                raise LeaseLost
            return

        def change(row: RunRow | None) -> tuple[None, _Write]:
            if row is None or not _live(row, now):
                raise RunMissing
            if owner is not None and row.lease_owner != owner:
                raise LeaseLost
            metadata_json = merge(row)

            def write(pipe: Any, run_key: str, steps_key: str) -> None:
                pipe.hset(
                    run_key,
                    mapping={
                        "status": end.status,
                        "result_json": end.result_json or "",
                        "metadata_json": metadata_json,
                        "updated_at": _num(now),
                        "expires_at": _num(expires_at),
                        "lease_owner": "",
                        "lease_expires_at": "",
                        "wait_step": "",
                        "wait_key": "",
                        "wait_kind": "",
                        "wake_at": "",
                    },
                )
                pipe.zadd(self._index, {id: now})
                if end.status == "cancelled" and row.cancel_at is None:
                    pipe.zadd(self._active, {id: now})
                else:  # a run cancelled on request is never recovered
                    pipe.zrem(self._active, id)
                pipe.zrem(self._waiting, id)
                ttl_ms = _ttl_ms(expires_at, now)
                if ttl_ms:
                    pipe.pexpire(run_key, int(ttl_ms))
                    pipe.pexpire(steps_key, int(ttl_ms))
                    pipe.pexpire(self._mail_of(id), int(ttl_ms))
                if row.queue is not None:  # its handle may wait in another process
                    self._unqueue(pipe, id, row)
                    pipe.publish(self._wake, "=" + id)

            return None, write

        await self._update(id, change)

    async def claim(self, id: str, now: float, terms: ClaimTerms) -> Claim:
        fresh = terms.fresh_row
        # A new run: one script call, no read.
        created = await self._script(
            lua.CREATE_CLAIMED,
            self._all_keys(id),
            [
                id,
                _num(now),
                fresh.workflow_name,
                fresh.metadata_json,
                fresh.lease_owner or "",
                _num(fresh.lease_expires_at),
                str(fresh.format_version),
            ],
        )
        if created:
            return terms.fresh

        def change(row: RunRow | None, steps: dict[str, str]) -> tuple[Claim, _Write | None]:
            if row is None or not _live(row, now):
                return terms.fresh, self._rewrite(id, fresh, now, drop=True, lease=True, old=row)
            refused = terms.check(row)
            if refused is not None:
                return refused, None
            # Decoded (by the front) before anything is written: a damaged run stays.
            taken, claim = terms.take(row, _in_order(steps))
            return claim, self._rewrite(id, taken, now, drop=False, lease=True, wait=True, old=row)

        outcome: Claim = await self._update(id, change, with_steps=True)
        return outcome

    async def renew(self, id: str, now: float, owner: str, until: float) -> bool:
        renewed = await self._script(
            lua.RENEW, [self.keys_of(id)[0]], [_num(now), owner, _num(until)]
        )
        return bool(renewed)

    async def release(self, id: str, owner: str) -> None:
        await self._script(lua.RELEASE, [self.keys_of(id)[0]], [owner])

    async def claim_expired(
        self,
        now: float,
        owner: str,
        until: float,
        limit: int,
        workflow_names: Sequence[str] | None,
        problem: Callable[[str, RunRow, Steps], str | None],
    ) -> tuple[builtins.list[tuple[str, RunRow]], builtins.list[ListedRow]]:
        wanted = None if workflow_names is None else set(workflow_names)

        async def scan(client: Any) -> Any:
            # The active runs, and the waiting ones whose deadline has come (never the
            # others, however many wait).
            active = await client.zrange(self._active, 0, -1, withscores=True)
            due = await client.zrangebyscore(self._waiting, "-inf", _num(now), withscores=True)
            members = active + [(member, None) for member, _ in due]
            async with client.pipeline(transaction=False) as pipe:
                for member, _ in members:
                    pipe.hmget(self.keys_of(member)[0], *_FIELDS)
                return members, await pipe.execute(raise_on_error=False)

        found, rows = await self._call(scan)
        candidates: builtins.list[tuple[float, str, Any]] = []
        seen: set[str] = set()
        for (member, score), values in zip(found, rows, strict=True):
            if member in seen:
                continue
            seen.add(member)
            if score is None:  # a waiting run: it sorts by its updated_at, like the others
                score = _sort_time(values)
            candidates.append((score, member, values))
        candidates.sort(key=lambda candidate: candidate[0])  # stable: oldest first
        await self._end_orphaned_cancels(candidates, now, limit)
        claimed: builtins.list[tuple[str, RunRow]] = []
        damaged: builtins.list[ListedRow] = []
        for score, member, values in candidates:
            if len(claimed) >= limit:
                break
            if isinstance(values, Exception):
                error = _unreadable(self.keys_of(member)[0], values)
                if not isinstance(error, RowUnreadable):
                    raise error
                damaged.append(ListedRow(member, score, None, error.reason))
                continue
            if all(value is None for value in values):
                continue  # gone
            row, whole = _parse(dict(zip(_FIELDS, values, strict=True)))
            # A row that did not parse is read whole and reported, whatever it says.
            if whole and not _abandoned(row, now, wanted):
                continue
            try:
                took = await self._take_abandoned(
                    member, score, whole, now, owner, until, wanted, problem
                )
            except RowUnreadable as exc:
                damaged.append(ListedRow(member, score, None, exc.reason))
                continue
            if isinstance(took, ListedRow):
                damaged.append(took)
            elif took is not None:
                claimed.append((member, took))
        return claimed, damaged

    async def _end_orphaned_cancels(
        self, candidates: builtins.list[tuple[float, str, Any]], now: float, limit: int
    ) -> None:
        """End (``cancelled``), oldest first, up to ``limit`` of the scanned runs that
        were asked to cancel and whose worker died before it stopped them (running
        or waiting, lease free or run out): one script each, which checks it again
        (such runs are rare; the others cost a field look)."""
        ended = 0
        for _, member, values in candidates:
            if ended >= limit:
                return
            if isinstance(values, Exception) or not values[_CANCEL_AT]:
                continue
            row, whole = _parse(dict(zip(_FIELDS, values, strict=True)))
            if not whole or not _cancel_orphaned(row, now):
                continue
            ended += int(
                await self._script(
                    lua.END_ORPHANED_CANCEL,
                    [self.keys_of(member)[0], self._index, self._active, self._waiting],
                    [member, _num(now), self._prefix, self._wake],
                )
            )

    async def _take_abandoned(
        self,
        id: str,
        at: float,
        whole: bool,
        now: float,
        owner: str,
        until: float,
        wanted: set[str] | None,
        problem: Callable[[str, RunRow, Steps], str | None],
    ) -> RunRow | ListedRow | None:
        """Under WATCH: read run ``id`` and its steps, report it (a damaged `ListedRow`)
        if ``problem`` finds one, else lease it to ``owner`` if recovery may still take
        it; the row as read if it was taken, ``None`` if not.  ``whole``: whether its
        row parsed when it was scanned (if not, it is checked whatever it says)."""

        def change(
            row: RunRow | None, steps: dict[str, str]
        ) -> tuple[RunRow | ListedRow | None, _Write | None]:
            if row is None:
                return None, None
            if whole and not _abandoned(row, now, wanted):
                return None, None
            found = problem(id, row, _in_order(steps))
            if found is not None:
                return ListedRow(id, at, row, found), None
            if not _abandoned(row, now, wanted):
                return None, None

            def write(pipe: Any, run_key: str, steps_key: str) -> None:
                pipe.hset(run_key, mapping={"lease_owner": owner, "lease_expires_at": _num(until)})

            return row, write

        took: RunRow | ListedRow | None = await self._update(id, change, with_steps=True)
        return took

    async def list(
        self,
        now: float,
        prefix: str | None,
        status: RunStatus | None,
        after: tuple[float, str] | None,
        limit: int,
    ) -> builtins.list[ListedRow]:
        batch = max(limit * 2, 100)
        top = "+inf" if after is None else repr(after[0])
        after_id = None if after is None else after[1].encode()
        found: builtins.list[ListedRow] = []
        dangling: builtins.list[str] = []
        offset = 0
        while len(found) < limit:

            async def page(client: Any, top: str = top, offset: int = offset) -> Any:
                members = await client.zrevrangebyscore(
                    self._index, top, "-inf", start=offset, num=batch, withscores=True
                )
                async with client.pipeline(transaction=False) as pipe:
                    for member, _ in members:
                        run_key = self.keys_of(member)[0]
                        pipe.exists(run_key)
                        pipe.hmget(run_key, *_FIELDS)
                    rows = await pipe.execute(raise_on_error=False)
                return members, rows

            members, rows = await self._call(page)
            for (member, score), exists, values in zip(members, rows[::2], rows[1::2], strict=True):
                if after is not None and score == after[0] and member.encode() >= after_id:
                    continue
                if exists == 0:
                    dangling.append(member)
                    continue
                if prefix is not None and not member.startswith(prefix):
                    continue
                if isinstance(values, Exception):
                    error = _unreadable(self.keys_of(member)[0], values)
                    if not isinstance(error, RowUnreadable):
                        raise error
                    if status is None:
                        found.append(ListedRow(member, score, None, error.reason))
                    continue
                row = _row(dict(zip(_FIELDS, values, strict=True)))
                if not _live(row, now):
                    dangling.append(member)
                    continue
                if status is not None and row.status != status:
                    continue
                found.append(ListedRow(member, score, row))
            if len(members) < batch:
                break
            offset += batch
        if dangling:
            await self._forget(dangling, now)
        return found[:limit]

    async def count(self, now: float, prefix: str | None) -> dict[str, int]:
        # No index by status: one script per slice of the index reads each run's status
        # and expiry on the server (a slice is a few milliseconds of Redis's time, so
        # other clients are not held up long; see `lua.COUNT`).
        counts: dict[str, int] = {}
        start = 0
        while True:
            args = [self._prefix, _num(now), start, start + _COUNT_SLICE - 1, prefix or ""]
            found = await self._script(lua.COUNT, [self._index], args)
            for status, n in zip(found[1::2], found[2::2], strict=True):
                key = status.decode() if isinstance(status, bytes) else str(status)
                counts[key] = counts.get(key, 0) + int(n)
            if int(found[0]) < _COUNT_SLICE:
                return counts
            start += _COUNT_SLICE

    async def _forget(self, ids: Sequence[str], now: float) -> int:
        """Drop index entries of runs that are gone or expired (and such runs' keys)."""
        for id in ids:
            await self._script(lua.DELETE, self._all_keys(id), [id, _num(now), self._prefix])
        return len(ids)

    async def purge(self, now: float) -> int:
        async def scan(client: Any) -> Any:
            members = await client.zrange(self._index, 0, -1)
            async with client.pipeline(transaction=False) as pipe:
                for member in members:
                    pipe.exists(self.keys_of(member)[0])
                    pipe.hget(self.keys_of(member)[0], "expires_at")
                return members, await pipe.execute(raise_on_error=False)

        members, found = await self._call(scan)
        gone = [
            member
            for member, exists, expires in zip(members, found[::2], found[1::2], strict=True)
            if exists == 0 or _expired(expires, now)  # damaged runs are left alone
        ]
        return await self._forget(gone, now)

    # ---- waiting: messages, waits and wake-ups -------------------------------------------

    @property
    def channel(self) -> str:
        # The identity names the database (redis://host:port/db): two stores on databases
        # 0 and 1 with one prefix have two channels.
        return f"{self._redis.identity} prefix={self._prefix!r}"

    async def send(self, id: str, key: str, json: str, now: float, once: str | None) -> None:
        keys = [*self.keys_of(id), self._mail_of(id), self._waiting]
        try:
            sent = await self._script(
                lua.SEND, keys, [_num(now), key, json, once or "", id, self._wake]
            )
        except _import_redis().ResponseError as exc:
            raise _unreadable(keys[0], exc) from None
        if sent == 1:
            return
        if sent == 0:
            raise RunMissing
        if sent == 2:
            raise AlreadySent
        raise RunEnded(str(sent))

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
        # One script call: the record is ``head + value + tail``, made in Lua.
        prefix = self._prefix
        run_key = f"{prefix}run:{id}"
        try:
            taken = await self._redis.run(
                lua.RECEIVE,
                [run_key, f"{prefix}steps:{id}", f"{prefix}mail:{id}", self._waiting, self._active],
                [_num(now), owner or "", key, step, head, tail, _num(sent_by), id],
            )
        except _import_redis().ResponseError as exc:
            raise _unreadable(run_key, exc) from None
        if isinstance(taken, str):
            return taken
        if isinstance(taken, bytes):  # a given client that does not decode
            return taken.decode("utf-8")
        if taken == 0:
            raise RunMissing
        if taken == -1:
            raise LeaseLost
        return None  # nothing pending (in time), or the step is recorded

    async def begin_wait(
        self, id: str, wait: WaitRow, now: float, owner: str | None
    ) -> tuple[bool, float | None]:
        run_key = self.keys_of(id)[0]
        try:
            code, wake_at = await self._script(
                lua.BEGIN_WAIT,
                [run_key, self._mail_of(id), self._index, self._active, self._waiting],
                [
                    _num(now),
                    owner or "",
                    wait.step,
                    wait.key or "",
                    wait.kind,
                    _num(wait.wake_at),
                    id,
                ],
            )
        except _import_redis().ResponseError as exc:
            raise _unreadable(run_key, exc) from None
        if code == 0:
            raise RunMissing
        if code == -1:
            raise LeaseLost
        if code == 1:
            return True, None
        return False, (float(wake_at) if wake_at else None)

    async def watch(
        self, woken: Callable[[str], object], cancelled: Callable[[str], object] | None = None
    ) -> None:
        """``SUBSCRIBE`` to the wake-up channel on a connection of its own and call
        ``woken(run id)`` for each ``=`` + id message (a change) and ``cancelled(run
        id)`` (``woken`` if ``None``) for each ``!`` + id (a cancel request); a message
        without either, from an older release, is a change of the run it names.
        Raises what the connection raises when it drops."""
        loop = _loops.current()
        # Read on the hosted asyncio loop and handed over as they come.
        deliver = push_router(loop, woken, cancelled)

        def parse(message: str) -> None:
            kind = message[:1]
            if kind == "=":
                deliver(message[1:], False)
            elif kind == "!":
                deliver(message[1:], True)
            else:
                deliver(message, False)

        subscription = await self._redis.subscribe(self._wake)
        try:
            await subscription.pump(parse)
        finally:
            with anyio.move_on_after(_CLOSE_BOUND, shield=True):
                await subscription.aclose()

    # ---- queues, cancel requests, schedules ----------------------------------------------

    async def enqueue(self, id: str, row: RunRow, now: float) -> RunRow | None:
        keys = [*self.keys_of(id), self._mail_of(id), self._index, self._active, self._waiting]
        args: builtins.list[Any] = [
            id,
            _num(now),
            self._prefix,
            self._wake,
            row.queue or "",
            _entry(id, row),
            str(row.priority),
            row.partition or "",
            _ttl_ms(row.expires_at, now),
        ]
        args += [text for pair in _fields(id, row, lease=True, wait=True).items() for text in pair]
        try:
            stored = await self._script(lua.ENQUEUE, keys, args)
        except _import_redis().ResponseError as exc:
            raise _unreadable(keys[0], exc) from None
        if stored == 1:
            return None
        return _row(_pairs(stored))

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
        prefix = self._prefix
        rate = caps.rate
        keys = [
            f"{prefix}queue:{queue}",
            f"{prefix}qrun:{queue}",
            f"{prefix}qstart:{queue}",
            self._index,
            self._active,
            f"{prefix}qwindow",
        ]
        args = [
            _num(now),
            owner,
            _num(until),
            str(limit),
            "" if caps.concurrency is None else str(caps.concurrency),
            "" if caps.partition_concurrency is None else str(caps.partition_concurrency),
            "" if rate is None else str(rate[0]),
            "" if rate is None else _num(now - rate[1]),
            prefix,
            queue,
            "" if rate is None else _num(rate[1]),
            "" if workflow_names is None else "1",
            *(workflow_names or ()),
        ]
        taken: builtins.list[Any] = await self._script(lua.CLAIM_QUEUED, keys, args)
        return [(str(taken[n]), _row(_pairs(taken[n + 1]))) for n in range(0, len(taken), 2)]

    async def request_cancel(self, id: str, now: float) -> str:
        run_key = self.keys_of(id)[0]
        try:
            had = await self._script(
                lua.REQUEST_CANCEL,
                [run_key, self._waiting, self._active, self._index],
                [_num(now), id, self._prefix, self._wake],
            )
        except _import_redis().ResponseError as exc:
            raise _unreadable(run_key, exc) from None
        if had == 0:
            raise RunMissing
        if isinstance(had, builtins.list):
            ended: builtins.list[Any] = had  # pyright: ignore[reportUnknownVariableType]
            raise RunEnded(str(ended[0]))
        return str(had)

    async def notify(self, id: str) -> None:
        await self._script(lua.NOTIFY, [self._wake], [id])

    async def put_schedule(self, name: str, spec_json: str, now: float) -> None:
        await self._script(lua.PUT_SCHEDULE, self._schedules, [name, spec_json])

    async def schedules(self) -> builtins.list[tuple[str, str, float | None]]:
        specs, ticks = await self._script(lua.SCHEDULES, self._schedules, [])
        last = _pairs(ticks)
        found: builtins.list[tuple[str, str, float | None]] = []
        for name, spec in sorted(_pairs(specs).items()):
            tick: float | None = None
            with contextlib.suppress(TypeError, ValueError):
                tick = float(last[name]) if last.get(name) else None
            found.append((name, spec, tick))
        return found

    async def delete_schedule(self, name: str) -> bool:
        return bool(await self._script(lua.DELETE_SCHEDULE, self._schedules, [name]))

    async def advance_schedule(self, name: str, expected: float | None, tick: float) -> bool:
        moved = await self._script(
            lua.ADVANCE_SCHEDULE, self._schedules, [name, _num(expected), _num(tick)]
        )
        return bool(moved)

    # ---- the cross-run step cache -------------------------------------------------------

    def _cache_key(self, key: str) -> str:
        return f"{self._prefix}cache:{key}"

    async def cache_get(self, key: str, now: float) -> str | None:
        name = self._cache_key(key)
        found: builtins.list[Any] = await self._redis.run_read(lua.CACHE_GET, [name], [])
        if found[0] == 0:
            raise RowUnreadable(_not_a_hash(name, _import_redis().ResponseError(str(found[1]))))
        text, expires = found[1], found[2]
        if text is None and expires is None:
            return None
        try:
            expires_at = float(expires)
        except (TypeError, ValueError):
            raise RowUnreadable(f"cache entry {name!r} has no readable expiry") from None
        if text is None:
            raise RowUnreadable(f"cache entry {name!r} has no value")
        return None if expires_at <= now else str(text)

    async def cache_put(self, key: str, json: str, now: float, expires_at: float) -> None:
        await self._script(
            lua.CACHE_PUT,
            [self._cache_key(key)],
            [json, _num(expires_at), _ttl_ms(expires_at, now)],
        )

    async def cache_delete(self, key: str, now: float) -> bool:
        return bool(await self._script(lua.CACHE_DELETE, [self._cache_key(key)], [_num(now)]))

    async def cache_purge(self, now: float) -> int:
        pattern = _glob_escape(self._cache_key("")) + "*"

        async def scan(client: Any) -> builtins.list[str]:
            return [name async for name in client.scan_iter(match=pattern, count=500)]

        gone = 0
        for name in await self._call(scan):
            gone += int(await self._script(lua.CACHE_PURGE, [name], [_num(now)]))
        return gone


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis ``SCAN MATCH`` pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def _pairs(flat: Any) -> dict[str, str]:
    """A hash Lua returned as ``[field, value, ...]`` as a dict."""
    items: builtins.list[Any] = builtins.list(flat)
    return {str(items[n]): str(items[n + 1]) for n in range(0, len(items) - 1, 2)}


_CLOSE_BOUND = 5.0
"""The most seconds a cancelled `_RedisDriver.watch` spends closing its connection."""
