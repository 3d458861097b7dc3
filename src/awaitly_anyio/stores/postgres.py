"""A PostgreSQL store on asyncpg: one table of runs, one of step checkpoints, jsonb bodies.

`PostgresStore` is the store front (``_front``) over a PostgreSQL row driver.
Its schema is created on first use, idempotently and under an advisory lock
(several workers may start at once), and its version is recorded so later
releases migrate with ordinary SQL.  A run's id is stored as text and indexed by
its SHA-256 digest, so ids of any length and content are only ever data.  A
keyed step's checkpoint is one ``INSERT``; checkpoints, new runs' claims and runs'
ends that arrive while one of their kind is being written are committed together,
one statement per batch (group commit).

Messages sent to runs wait in a mailbox table until received; a send wakes the
run's waiters in other processes with ``NOTIFY`` (one channel per schema and
table prefix, the run's id as payload), which `watch` receives on a connection
of its own (``LISTEN``).  A receive is one statement, committed without waiting
for the WAL flush (see ``RECEIVE``).

Queued runs (status ``pending``) start through `claim_queued`: without caps one
statement (``FOR UPDATE SKIP LOCKED``), with caps one transaction per claim under
an advisory lock of the queue.  An enqueue and the end of a queued run are pushed
like a send; a cancel request too, its payload marked ("!" first) so that only it
reaches the run's lease keeper.  Schedules live in a table of their own.

Under trio, asyncpg runs on a private asyncio loop hosted in trio's thread
(the loops layer's driver runner, through `awaitly_anyio._bridge.DriverLoop`); nothing
changes for the caller.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import hashlib
import re
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from .. import _loops
from .._bridge import DriverLoop
from .._clock import Clock
from .._grouping import Pending, WriteBatcher
from .._redact import redact_url
from .._rows import RunRow
from .._snapshot import RunStatus
from .._store import Claim
from .._store_url import check_postgres_dsn
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
    push_router,
)
from ._front import StoreFront
from ._postgres_sql import MIGRATIONS, Statements

if TYPE_CHECKING:
    import asyncpg  # pyright: ignore[reportMissingTypeStubs]

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

#: The schema version this module creates and reads.
SCHEMA_VERSION = 5
"""The version of the tables this release creates and reads: older tables are
upgraded when the store is opened, newer ones are refused."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}")


def _import_asyncpg() -> Any:
    try:
        import asyncpg  # pyright: ignore[reportMissingTypeStubs]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "PostgresStore needs asyncpg: pip install 'awaitly-anyio[postgres]'"
        ) from exc
    return asyncpg


async def select_one(dsn_or_pool: Any) -> object:
    """``SELECT 1`` on a PostgreSQL DSN (a short connection, closed after) or an asyncpg
    pool, on the caller's asyncio loop (callers under trio go through a `DriverLoop`):
    the health check's probe, kept here so that only the driver imports asyncpg."""
    driver: Any = _import_asyncpg()  # untyped (no stubs)
    if isinstance(dsn_or_pool, str):
        connection = await driver.connect(dsn_or_pool, timeout=5)
        try:
            return await connection.fetchval("SELECT 1")
        finally:
            await connection.close()
    return await dsn_or_pool.fetchval("SELECT 1")


class PostgresStore(StoreFront):
    """A `SnapshotStore` (and ``LeaseStore``) in PostgreSQL.

    - ``dsn_or_pool``: a ``postgresql://`` DSN (the store makes and owns an asyncpg
      pool of ``min_size`` to ``max_size`` connections), or an existing
      ``asyncpg.Pool`` (used as it is and not closed; asyncio only, since a pool
      belongs to the loop that made it).
    - ``schema`` and ``table_prefix``: where the tables live (``public.awaitly_runs``,
      ``public.awaitly_steps``, ``public.awaitly_schema_version`` by default);
      letters, digits and underscores only.
    - ``clock`` and ``registry`` as for every store.

    The schema is created when the store is first used (``async with`` does it
    at once).  Every method is one short transaction and a cancellation point:
    a cancelled call's transaction is rolled back by the server, never half
    applied.  Driver errors (``asyncpg.PostgresError``, ``OSError`` when the
    server is gone) propagate; the pool reconnects once the server is back.
    ``ValueError`` or ``TypeError`` for bad options, here, before anything
    connects; ``RuntimeError`` when the tables come from a newer release.
    """

    def __init__(
        self,
        dsn_or_pool: str | asyncpg.Pool,
        *,
        schema: str = "public",
        table_prefix: str = "awaitly_",
        min_size: int = 1,
        max_size: int = 10,
        clock: Clock | None = None,
        registry: TypeRegistry = default_registry,
    ) -> None:
        asyncpg = _import_asyncpg()
        if isinstance(dsn_or_pool, str):
            try:
                check_postgres_dsn(dsn_or_pool)
            except ValueError as exc:
                raise ValueError(f"invalid DSN {redact_url(dsn_or_pool)}: {exc}") from None
            dsn: str | None = dsn_or_pool
            pool: Any = None
        elif isinstance(dsn_or_pool, asyncpg.Pool):
            dsn, pool = None, dsn_or_pool
        else:
            raise TypeError(
                f"expected a DSN string or an asyncpg.Pool, not {type(dsn_or_pool).__name__}"
            )
        for label, name in (("schema", schema), ("table_prefix", table_prefix)):
            if not isinstance(name, str) or (name and not _IDENTIFIER.fullmatch(name)):
                raise ValueError(
                    f"{label} must be letters, digits and underscores (not starting with a"
                    f" digit), not {name!r}"
                )
        if not schema:
            raise ValueError("schema must not be empty")
        if not 1 <= min_size <= max_size:
            raise ValueError(f"need 1 <= min_size <= max_size, not {min_size} and {max_size}")
        where = "a pool" if dsn is None else repr(redact_url(dsn))
        name = f"PostgresStore({where}, schema={schema!r}, prefix={table_prefix!r})"
        self._pg = _PostgresDriver(
            name, dsn, pool, Statements(schema, table_prefix), min_size, max_size
        )
        super().__init__(self._pg, clock=clock, registry=registry)

    def __repr__(self) -> str:
        return self._pg.name

    @property
    def tables(self) -> tuple[str, str]:
        """The quoted names of the runs and steps tables."""
        return self._pg.sql.runs, self._pg.sql.steps

    async def _call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """``await fn(connection, *args)`` with one of the store's connections, on its
        driver loop (for tests and benchmarks that look behind the store)."""
        self._check_open()
        return await self._pg.call(fn, *args)


# What the grouped statements take.  A checkpoint: run digest, key, key digest,
# record, owner, now.  A new run's claim: id, digest, workflow name, metadata, now,
# format version, owner, lease expiry.  A run's end: digest, status, result, now,
# expiry, owner, and metadata to merge (or None).
_Step = tuple[bytes, str, bytes, str, "str | None", float]
_Start = tuple[str, bytes, str, str, float, int, "str | None", "float | None"]
_End = tuple[bytes, str, "str | None", float, "float | None", "str | None", "str | None"]
_BATCH = 500

Item = TypeVar("Item", _Step, _Start, _End)


class _PostgresDriver:
    """PostgreSQL rows for `StoreFront` (see ``_driver.RowDriver``): asyncpg on the
    store's driver loop, the SQL in ``_postgres_sql``, and group commit for the three
    writes every durable run makes (claim, checkpoint, end)."""

    def __init__(
        self,
        name: str,
        dsn: str | None,
        pool: Any,
        sql: Statements,
        min_size: int,
        max_size: int,
    ) -> None:
        self.name, self.sql = name, sql
        self._dsn, self._pool = dsn, pool
        self._min_size, self._max_size = min_size, max_size
        # A write goes alone if none of its kind is in flight; else it queues for a batch.
        self._checkpoints = self._batcher(
            self._write_one, sql.checkpoint_batch, _step_of, "writing checkpoints"
        )
        self._starts = self._batcher(
            self._start_one, sql.claim_new_batch, _run_of_start, "claiming runs"
        )
        self._ends = self._batcher(self._end_one, sql.finish_batch, _run_of_end, "recording ends")
        self._loop = DriverLoop(name)
        where = f"pool@{id(pool):x}" if dsn is None else redact_url(dsn)
        self._channel = f"postgresql:{where}#{sql.schema}.{sql.prefix}"
        self._listeners: set[_Listener] = set()
        self._hot: Any = None
        self._hot_busy = False
        self._ready = False
        self._closed = False

    def __repr__(self) -> str:
        return self.name

    # ---- plumbing ----------------------------------------------------------------------

    def _check_usable(self) -> None:
        """``RuntimeError`` if the store is closed, or was given an asyncpg pool and is
        used from another loop than asyncio's (the pool belongs to the loop that made it)."""
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        if self._dsn is None and not _loops.current().drives_asyncio:
            raise RuntimeError(
                "a PostgresStore given an asyncpg pool works on asyncio only (the pool belongs"
                " to the loop that made it); under trio, give it a DSN instead"
            )

    async def call(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, pooled: bool = False
    ) -> Any:
        """``await fn(connection, *args)`` on the driver loop with a connection: the
        store's own one when it is free (and not ``pooled``), else one from the pool."""
        self._check_usable()
        return await self._loop.call(self._with_connection, fn, args, pooled)

    async def _with_connection(self, fn: Any, args: tuple[Any, ...], pooled: bool) -> Any:
        if self._pool is None:
            asyncpg = _import_asyncpg()
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=self._min_size, max_size=self._max_size, reset=_keep_session
            )
        if not self._ready:
            async with self._pool.acquire() as connection:
                await self._migrate(connection)
                self._ready = True
        if self._dsn is None or self._hot_busy or pooled:
            async with self._pool.acquire() as connection:
                return await fn(connection, *args)
        # The store's own connection serves one operation at a time without the pool's
        # bookkeeping; concurrent operations use the pool.
        self._hot_busy = True
        try:
            if self._hot is None or self._hot.is_closed():
                self._hot = await self._connect_hot()
            connection = self._hot
            try:
                return await fn(connection, *args)
            except Exception as exc:
                # Our own refusals (RunMissing, LeaseLost) and SQL errors leave the
                # connection usable; a broken or confused one is replaced.
                if connection.is_closed() or isinstance(exc, _import_asyncpg().InterfaceError):
                    self._hot = None
                    connection.terminate()
                raise
            except BaseException:
                # Cancelled mid-statement: the connection's state is unknown.
                self._hot = None
                connection.terminate()
                raise
        finally:
            self._hot_busy = False

    async def _connect_hot(self) -> Any:
        """A new connection for the store's own use.  A connect whose caller is
        cancelled is not cut off (cut off in its TLS negotiation, it leaves asyncpg's
        handshake future failed and unread): it finishes on its own and its connection
        is closed.  It is not handed to the next caller, which connects afresh: the
        abandoned one may be stuck behind a stalled network until asyncpg's timeout."""
        task = asyncio.ensure_future(_import_asyncpg().connect(self._dsn))
        try:
            return await asyncio.shield(task)
        except BaseException:
            task.add_done_callback(_abandoned_connect)
            raise

    async def _migrate(self, connection: Any) -> None:
        sql = self.sql
        async with connection.transaction():
            await connection.execute(sql.migration_lock, f"awaitly:{sql.versions}")
            await connection.execute(sql.create_schema)
            await connection.execute(sql.create_versions)
            version = await connection.fetchval(sql.select_version) or 0
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{sql.runs} has awaitly schema version {version}; this version of"
                    f" awaitly-anyio knows up to {SCHEMA_VERSION}: upgrade awaitly-anyio"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                await connection.execute(sql.migration(target))
            if version < SCHEMA_VERSION:
                await connection.execute(sql.insert_version, SCHEMA_VERSION)

    async def open(self) -> None:
        await self.call(_noop)

    async def close(self) -> None:
        """Close the pool (if the store made it) and the store's own connection."""
        if self._closed:
            return
        self._closed = True
        try:
            for listener in builtins.list(self._listeners):  # their watchers then raise
                if listener.connected and self._loop.bound:
                    await self._loop.call(listener.stop)
            if self._dsn is not None and self._pool is not None and self._loop.bound:
                await self._loop.call(_close_pool, self._pool)
            if self._hot is not None and self._loop.bound:
                await self._loop.call(_close_connection, self._hot)
        finally:
            self._hot = None
            self._pool = None if self._dsn is not None else self._pool
            self._loop.release()

    # ---- whole runs --------------------------------------------------------------------

    async def read(self, id: str, now: float, *, steps: bool) -> tuple[RunRow, Steps] | None:
        sql, key = self.sql, digest(id)

        async def work(connection: Any) -> tuple[RunRow, Steps] | None:
            if not steps:
                found = await connection.fetchrow(sql.select_live_run, key, now)
                return None if found is None else (RunRow(*found), ())
            async with connection.transaction(isolation="repeatable_read", readonly=True):
                found = await connection.fetchrow(sql.select_live_run, key, now)
                if found is None:
                    return None
                records = await connection.fetch(sql.select_steps, key)
            return RunRow(*found), [(step, text) for step, text in records]

        # A look at the row alone goes to the pool: a lease keeper reads its run when a
        # send to it is pushed, just before the run's own receive, which then keeps
        # the store's own connection (and its place in the delivery's time).
        result: tuple[RunRow, Steps] | None = await self.call(work, pooled=not steps)
        return result

    async def write_run(self, id: str, row: RunRow, steps: Steps) -> None:
        """One transaction: the row upserted (see ``UPSERT_RUN``: over a run expired at
        ``row.updated_at``, the front's now, its lease, wait and messages go), then the
        steps replaced."""
        sql, key = self.sql, digest(id)

        async def work(connection: Any) -> None:
            async with connection.transaction():
                await _upsert(connection, sql, id, key, row)
                await connection.execute(sql.delete_steps, key)
                if steps:
                    await connection.execute(
                        sql.insert_steps,
                        key,
                        [step for step, _ in steps],
                        [digest(step) for step, _ in steps],
                        [text for _, text in steps],
                    )

        await self.call(work)

    async def delete(self, id: str, now: float) -> bool:
        sql = self.sql

        async def work(connection: Any) -> bool:
            return bool(await connection.fetchval(sql.delete_run, digest(id), now))

        result: bool = await self.call(work)
        return result

    async def start_run(
        self, id: str, now: float, restart: Callable[[RunRow | None], RunRow]
    ) -> None:
        sql, key = self.sql, digest(id)

        async def work(connection: Any) -> None:
            async with connection.transaction():
                found = await connection.fetchrow(sql.select_live_run_for_update, key, now)
                row = None if found is None else RunRow(*found)
                if row is None:
                    # Gone or expired: start afresh, without an expired run's steps.
                    await connection.execute(sql.delete_run_and_steps, key)
                await _upsert(connection, sql, id, key, restart(row))

        await self.call(work)

    async def list(
        self,
        now: float,
        prefix: str | None,
        status: RunStatus | None,
        after: tuple[float, str] | None,
        limit: int,
    ) -> builtins.list[ListedRow]:
        params: builtins.list[Any] = [now]
        if prefix:
            params.append(prefix)
        if status is not None:
            params.append(status)
        if after is not None:
            params += after
        params.append(limit)
        query = self.sql.listing(
            prefix=bool(prefix), status=status is not None, after=after is not None
        )

        async def work(connection: Any) -> builtins.list[Any]:
            return builtins.list(await connection.fetch(query, *params))

        found: builtins.list[Any] = await self.call(work)
        return [ListedRow(record[0], record[6], RunRow(*record[1:])) for record in found]

    async def count(self, now: float, prefix: str | None) -> dict[str, int]:
        query = self.sql.counting(prefix=bool(prefix))
        params: builtins.list[Any] = [now, prefix] if prefix else [now]

        async def work(connection: Any) -> dict[str, int]:
            return {str(r[0]): int(r[1]) for r in await connection.fetch(query, *params)}

        result: dict[str, int] = await self.call(work)
        return result

    async def purge(self, now: float) -> int:
        sql = self.sql

        async def work(connection: Any) -> int:
            return int(await connection.fetchval(sql.purge_expired, now))

        result: int = await self.call(work)
        return result

    # ---- a durable run's writes ----------------------------------------------------------

    async def write_step(self, id: str, key: str, json: str, now: float, owner: str | None) -> None:
        """One step row, alone or in a batch with others (see `_batcher`); a lone one is
        one INSERT of one row.  The run's ``updated_at`` stays."""
        if not await self._checkpoints((digest(id), key, digest(key), json, owner, now)):
            await self.call(self._refuse_write, id, now)

    async def _write_one(self, connection: Any, step: _Step) -> bool:
        """Upsert one step row if its run is live (and held by its owner, if given)."""
        run_digest, key, key_digest, record, owner, now = step
        status: str = await connection.execute(
            self.sql.checkpoint, run_digest, key, now, record, key_digest, owner
        )
        return status.split()[-1] == "1"

    async def _refuse_write(self, connection: Any, id: str, now: float) -> NoReturn:
        """Why a write to run ``id`` was refused: it is gone, or another owner has it."""
        if await connection.fetchval(self.sql.run_is_live, digest(id), now) is None:
            raise RunMissing
        raise LeaseLost

    async def end_run(self, id: str, now: float, end: EndTerms) -> None:
        """The usual end (no metadata, or metadata mergeable in SQL) is one statement,
        with other runs' ends if they are being recorded; otherwise, or when that
        statement did not take, one transaction reads, decides and writes."""
        merge, patch = end.merge, end.metadata_patch
        key = digest(id)
        if merge is None or patch is not None:
            item: _End = (key, end.status, end.result_json, now, end.expires_at, end.owner, patch)
            if await self._ends(item):
                return
        sql, owner = self.sql, end.owner

        async def work(connection: Any) -> None:
            async with connection.transaction():
                found = await connection.fetchrow(sql.select_live_run_for_update, key, now)
                if found is None:
                    raise RunMissing
                row = RunRow(*found)
                if owner is not None and row.lease_owner != owner:
                    raise LeaseLost
                await connection.execute(
                    sql.finish_replacing,
                    key,
                    end.status,
                    end.result_json,
                    row.metadata_json if merge is None else merge(row),
                    now,
                    end.expires_at,
                )

        await self.call(work)

    async def _end_one(self, connection: Any, end: _End) -> bool:
        """Record one run's end; ``False`` if it is gone, not its owner's, or its
        metadata cannot be merged in SQL."""
        if end[6] is None:
            return bool(await connection.fetchval(self.sql.finish, *end[:6]))
        return bool(await connection.fetchval(self.sql.finish_merging, *end))

    # ---- leases ------------------------------------------------------------------------

    async def claim(self, id: str, now: float, terms: ClaimTerms) -> Claim:
        """A new run in one statement (with other runs' claims, if they are being made),
        committed without waiting for the WAL flush (see ``CLAIM_NEW``); an existing one
        locked, decided on and decoded (``terms``) before anything is written."""
        key, fresh = digest(id), terms.fresh_row
        start: _Start = (
            id,
            key,
            fresh.workflow_name,
            fresh.metadata_json,
            now,
            fresh.format_version,
            fresh.lease_owner,
            fresh.lease_expires_at,
        )
        if await self._starts(start):
            return terms.fresh
        sql = self.sql

        async def work(connection: Any) -> Claim:
            async with connection.transaction():
                found = await connection.fetchrow(sql.select_run_for_update, key)
                row = None if found is None else RunRow(*found)
                if row is not None and row.expires_at is not None and row.expires_at <= now:
                    await connection.execute(sql.delete_run_and_steps, key)
                    row = None
                if row is None:
                    if await connection.fetchval(sql.insert_claimed, *start):
                        return terms.fresh
                    # Someone inserted it first: decide against their row.
                    row = RunRow(*await connection.fetchrow(sql.select_run_for_update, key))
                refused = terms.check(row)
                if refused is not None:
                    return refused
                records = await connection.fetch(sql.select_steps, key)
                taken, claimed = terms.take(row, [(step, text) for step, text in records])
                await connection.execute(sql.update_claimed, key, *_fields(taken))
                return claimed

        result: Claim = await self.call(work)
        return result

    async def _start_one(self, connection: Any, start: _Start) -> bool:
        """Insert one new run, claimed; ``False`` if the id is taken."""
        return bool(await connection.fetchval(self.sql.claim_new, *start))

    async def renew(self, id: str, now: float, owner: str, until: float) -> bool:
        sql = self.sql

        async def work(connection: Any) -> bool:
            status: str = await connection.execute(sql.renew, digest(id), owner, until, now)
            return status.split()[-1] == "1"

        result: bool = await self.call(work)
        return result

    async def release(self, id: str, owner: str) -> None:
        sql = self.sql

        async def work(connection: Any) -> None:
            await connection.execute(sql.release, digest(id), owner)

        await self.call(work)

    async def claim_expired(
        self,
        now: float,
        owner: str,
        until: float,
        limit: int,
        workflow_names: Sequence[str] | None,
        problem: Callable[[str, RunRow, Steps], str | None],
    ) -> tuple[builtins.list[tuple[str, RunRow]], builtins.list[ListedRow]]:
        """Candidates locked with SKIP LOCKED (so concurrent claimers split them), each
        checked with ``problem`` in the same transaction; the good ones leased in one
        statement per round."""
        sql = self.sql
        names = None if workflow_names is None else builtins.list(workflow_names)

        async def work(
            connection: Any,
        ) -> tuple[builtins.list[tuple[str, RunRow]], builtins.list[ListedRow]]:
            claimed: builtins.list[tuple[str, RunRow]] = []
            damaged: dict[bytes, ListedRow] = {}
            async with connection.transaction():
                # Runs asked to cancel whose worker died: ended here, never claimed.
                await connection.execute(sql.end_orphaned_cancels, now, limit)
                while len(claimed) < limit:
                    found = await connection.fetch(
                        sql.pick_expired, now, names, builtins.list(damaged), limit - len(claimed)
                    )
                    if not found:
                        break
                    steps: dict[bytes, builtins.list[tuple[str, str]]] = {}
                    for run_digest, key, text in await connection.fetch(
                        sql.select_steps_of_runs, [record[1] for record in found]
                    ):
                        steps.setdefault(run_digest, []).append((key, text))
                    good: builtins.list[bytes] = []
                    for record in found:
                        id, run_digest, row = record[0], record[1], RunRow(*record[2:])
                        wrong = problem(id, row, steps.get(run_digest, []))
                        if wrong is not None:
                            damaged[run_digest] = ListedRow(id, row.updated_at, row, wrong)
                        else:
                            good.append(run_digest)
                            claimed.append((id, row))
                    await connection.execute(sql.lease_runs, owner, until, good)
            return claimed, builtins.list(damaged.values())

        result: tuple[builtins.list[tuple[str, RunRow]], builtins.list[ListedRow]]
        result = await self.call(work)
        return result

    # ---- waiting: messages, waits and wake-ups ---------------------------------------------

    @property
    def channel(self) -> str:
        return self._channel

    async def send(self, id: str, key: str, json: str, now: float, once: str | None) -> None:
        """One statement (see ``SEND``): the message inserted, a run waiting for it made
        due and the NOTIFY sent, all when it commits."""
        sql = self.sql
        args = (
            digest(id),
            key,
            _digest(key),
            json,
            now,
            None if once is None else digest(once),
            sql.channel,
            _payload(id),
        )

        async def work(connection: Any) -> str | None:
            outcome: str | None = await connection.fetchval(sql.send, *args)
            return outcome

        outcome = await self.call(work)
        if outcome is None:
            raise RunMissing
        if outcome == "sent":
            raise AlreadySent
        if outcome != "ok":
            raise RunEnded(outcome)

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
        """One statement, one round trip (see ``RECEIVE``): the oldest message with
        ``key`` sent by ``sent_by`` deleted, step ``step`` written as ``head + value +
        tail`` and the wait ended, all or nothing."""
        sql = self.sql
        args = (digest(id), _digest(key), step, digest(step), head, tail, now, owner, sent_by)

        async def work(connection: Any) -> Any:
            return await connection.fetchrow(sql.receive, *args)

        found = await self.call(work)
        if found is None:
            raise RunMissing
        lease_owner, _recorded, value = found
        if owner is not None and lease_owner != owner:
            raise LeaseLost
        message: str | None = value
        return message

    async def begin_wait(
        self, id: str, wait: WaitRow, now: float, owner: str | None
    ) -> tuple[bool, float | None]:
        """One statement (see ``BEGIN_WAIT``), and when it recorded a wait for a message,
        one more look for the message: a send that held the run's lock while the wait's
        statement started is not seen by that statement (its snapshot is older), and
        would otherwise leave a message pending beside a run waiting for it.  (Then the
        wait stays recorded, and the caller's receive of the step ends it.)"""
        sql, run_key = self.sql, digest(id)
        key_digest = None if wait.key is None else _digest(wait.key)

        async def work(connection: Any) -> tuple[bool, float | None]:
            found = await connection.fetchrow(
                sql.begin_wait,
                run_key,
                wait.step,
                wait.key,
                key_digest,
                wait.kind,
                wait.wake_at,
                now,
                owner,
            )
            if found is None:
                raise RunMissing
            lease_owner, ready, same, stored_wake_at = found
            if owner is not None and lease_owner != owner:
                raise LeaseLost
            if ready:
                return True, None
            deadline = stored_wake_at if same else wait.wake_at
            if key_digest is not None and await connection.fetchval(
                sql.message_pending, run_key, key_digest, deadline
            ):
                return True, None
            return False, deadline

        result: tuple[bool, float | None] = await self.call(work)
        return result

    async def watch(
        self, woken: Callable[[str], object], cancelled: Callable[[str], object] | None = None
    ) -> None:
        """``LISTEN`` on a connection of its own (a new one for a DSN, one taken from the
        pool given), and ``woken(run id)`` for each ``NOTIFY`` (``cancelled(run id)``
        for a cancel request's, its payload after "!"), called on the caller's
        loop: as it arrives, from asyncpg's callback (under trio, handed from the hosted
        asyncio loop to the caller's loop directly), or, for an id sent as its
        digest (too long for a payload), once the listener has looked it up.  Raises
        ``ConnectionError`` when that connection is lost, and what connecting raises.
        The connection is closed (or given back) when it ends."""
        self._check_usable()
        loop = _loops.current()
        deliver = push_router(loop, woken, cancelled)
        listener = _Listener(self.name, self.sql, deliver)
        self._listeners.add(listener)
        try:
            await self._loop.call(listener.start, self._dsn, self._pool)
            while not self._closed:
                await self._loop.call(listener.next)
            raise RuntimeError(f"{self.name} is closed")
        finally:
            self._listeners.discard(listener)
            if listener.connected:
                # RuntimeError: the store closed meanwhile, and its driver loop with it.
                with _loops.current().shielded(_STOP_BOUND), contextlib.suppress(RuntimeError):
                    await self._loop.call(listener.stop)

    # ---- queues, run control and schedules -----------------------------------------------

    async def enqueue(self, id: str, row: RunRow, now: float) -> RunRow | None:
        """One statement (see ``ENQUEUE``): the run inserted (or an expired one replaced)
        and the NOTIFY sent at commit; when a live run has the id, its row is read and
        returned (a run inserted by another caller after the statement's snapshot is
        read by a fresh one)."""
        sql, key = self.sql, digest(id)

        async def work(connection: Any) -> RunRow | None:
            while True:
                if await connection.fetchval(sql.enqueue, id, key, *_fields(row), now):
                    return None
                found = await connection.fetchrow(sql.select_live_run, key, now)
                if found is not None:
                    return RunRow(*found)
                # It expired or went meanwhile: enqueue again.

        result: RunRow | None = await self.call(work)
        return result

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
        """Without caps, one statement: the next pending runs, rows another claimer holds
        skipped (``FOR UPDATE SKIP LOCKED``), started.  With caps, one transaction under
        an advisory lock of the queue (so two claimers never exceed a cap together;
        taken in a statement of its own, so that the counts that follow see every
        claim committed before): the queue's running runs and recent starts counted,
        then its pending runs picked in order, a run of a full partition passed over,
        until the room is used, and started in one statement.  Runs of workflows not
        in ``workflow_names`` are passed over in the pick itself."""
        sql = self.sql
        names = None if workflow_names is None else builtins.list(workflow_names)
        if not caps.any:

            async def simple(connection: Any) -> builtins.list[Any]:
                return builtins.list(
                    await connection.fetch(sql.claim_queued, queue, now, limit, owner, until, names)
                )

            found: builtins.list[Any] = await self.call(simple)
            rows = [(record[0], RunRow(*record[1:])) for record in found]
            rows.sort(key=lambda item: (item[1].priority, item[1].created_at, item[0]))
            return rows

        async def capped(connection: Any) -> builtins.list[tuple[str, RunRow]]:
            async with connection.transaction():
                await connection.execute(sql.lock_queue, f"{sql.schema}.{sql.prefix}", queue)
                since = None if caps.rate is None else now - caps.rate[1]
                recent, partitions, counts = await connection.fetchrow(
                    sql.queue_counts, queue, now, since
                )
                running: dict[str | None, int] = dict(
                    zip(partitions or (), counts or (), strict=True)
                )
                room = limit
                if caps.concurrency is not None:
                    room = min(room, caps.concurrency - sum(running.values()))
                if caps.rate is not None:
                    room = min(room, caps.rate[0] - recent)
                cap = caps.partition_concurrency
                taken: builtins.list[tuple[str, bytes]] = []
                after: tuple[Any, Any, Any] = (None, None, None)
                # Pending runs in batches: with a partition cap, runs of full partitions
                # are passed over, so more may be needed than there is room for.
                batch = room if cap is None else max(room * 2, 100)
                while len(taken) < room:
                    found = await connection.fetch(
                        sql.pick_queued, queue, now, batch, *after, names
                    )
                    for id, run_digest, partition, priority, created_at in found:
                        after = (priority, created_at, id)
                        if len(taken) >= room:
                            break
                        if cap is not None and running.get(partition, 0) >= cap:
                            continue
                        running[partition] = running.get(partition, 0) + 1
                        taken.append((id, run_digest))
                    if len(found) < batch:
                        break
                if not taken:
                    return []
                written = await connection.fetch(
                    sql.start_queued, [run_digest for _, run_digest in taken], owner, until, now
                )
                rows = {record[0]: RunRow(*record[1:]) for record in written}
                # A run changed since it was picked (taken by a claimer without caps,
                # cancelled) is left out.
                return [(id, rows[run_digest]) for id, run_digest in taken if run_digest in rows]

        result: builtins.list[tuple[str, RunRow]] = await self.call(capped)
        return result

    async def request_cancel(self, id: str, now: float) -> str:
        """One statement (see ``REQUEST_CANCEL``), its NOTIFY (a cancel request's
        payload) sent at commit."""
        sql = self.sql

        async def work(connection: Any) -> str | None:
            status: str | None = await connection.fetchval(sql.request_cancel, digest(id), now)
            return status

        status: str | None = await self.call(work)
        if status is None:
            raise RunMissing
        if status in ("completed", "failed", "cancelled"):
            raise RunEnded(status)
        return status  # a damaged status was asked to stop like a running run

    async def notify(self, id: str) -> None:
        """``NOTIFY`` run ``id`` (delivered when the statement commits, at once)."""
        sql, payload = self.sql, _payload(id)

        async def work(connection: Any) -> None:
            await connection.execute(sql.notify, sql.channel, payload)

        await self.call(work)

    async def put_schedule(self, name: str, spec_json: str, now: float) -> None:
        sql = self.sql

        async def work(connection: Any) -> None:
            await connection.execute(sql.put_schedule, name, digest(name), spec_json, now)

        await self.call(work)

    async def schedules(self) -> builtins.list[tuple[str, str, float | None]]:
        sql = self.sql

        async def work(connection: Any) -> builtins.list[tuple[str, str, float | None]]:
            return [
                (name, spec, last_tick)
                for name, spec, last_tick in await connection.fetch(sql.select_schedules)
            ]

        result: builtins.list[tuple[str, str, float | None]] = await self.call(work)
        return result

    async def delete_schedule(self, name: str) -> bool:
        sql = self.sql

        async def work(connection: Any) -> bool:
            return await connection.fetchval(sql.delete_schedule, digest(name)) is not None

        result: bool = await self.call(work)
        return result

    async def advance_schedule(self, name: str, expected: float | None, tick: float) -> bool:
        sql = self.sql

        async def work(connection: Any) -> bool:
            found = await connection.fetchval(sql.advance_schedule, digest(name), expected, tick)
            return found is not None

        result: bool = await self.call(work)
        return result

    # ---- the cross-run step cache -------------------------------------------------------

    async def cache_get(self, key: str, now: float) -> str | None:
        sql = self.sql

        async def work(connection: Any) -> str | None:
            found: str | None = await connection.fetchval(sql.cache_get, digest(key), now)
            return found

        result: str | None = await self.call(work)
        return result

    async def cache_put(self, key: str, json: str, now: float, expires_at: float) -> None:
        sql = self.sql

        async def work(connection: Any) -> None:
            await connection.execute(sql.cache_put, key, digest(key), json, now, expires_at)

        await self.call(work)

    async def cache_delete(self, key: str, now: float) -> bool:
        sql = self.sql

        async def work(connection: Any) -> bool:
            return await connection.fetchval(sql.cache_delete, digest(key), now) is True

        result: bool = await self.call(work)
        return result

    async def cache_purge(self, now: float) -> int:
        sql = self.sql

        async def work(connection: Any) -> int:
            status: str = await connection.execute(sql.cache_purge, now)
            return int(status.rsplit(" ", 1)[-1])

        result: int = await self.call(work)
        return result

    # ---- group commit --------------------------------------------------------------------

    def _batcher(
        self,
        one: Callable[[Any, Item], Awaitable[bool]],
        many_sql: str,
        key: Callable[[Item], tuple[bytes, ...]],
        what: str,
    ) -> WriteBatcher[Item, bool]:
        """Writes of one kind, sent alone by ``one(connection, item)`` when none is in
        flight, else in batches by ``many_sql`` (an array per field of the items, and
        the keys of the rows it wrote returned).  Each caller learns whether its own
        write was taken (its run live, and its lease the caller's); a write whose
        caller was cancelled while it was queued is not sent."""

        async def alone(item: Item) -> bool:
            taken: bool = await self.call(one, item)
            return taken

        async def many(connection: Any, items: builtins.list[Item]) -> set[tuple[bytes, ...]]:
            if len(items) == 1:  # its own statement is the cheaper one
                return {key(items[0])} if await one(connection, items[0]) else set()
            columns = [builtins.list(column) for column in zip(*items, strict=True)]
            found = await connection.fetch(many_sql, *columns)
            # bytea comes back as bytes; columns after the key (the ends' pushes) are
            # not part of it.
            width = len(key(items[0]))
            return {tuple(row)[:width] for row in found}

        async def together(batch: builtins.list[Pending[Item, bool]]) -> None:
            waiting = [pending for pending in batch if not pending.done()]
            if not waiting:  # every caller gave up (cancelled) while queued: send nothing
                return
            taken = await self.call(many, [pending.item for pending in waiting])
            for pending in waiting:
                if not pending.done():  # its caller may have been cancelled meanwhile
                    pending.set_result(key(pending.item) in taken)

        return WriteBatcher(alone, together, _distinct(key), f"{self.name} stopped {what}")


async def _upsert(connection: Any, sql: Statements, id: str, key: bytes, row: RunRow) -> None:
    """Write run row ``row`` (created if absent; a stored lease is kept)."""
    fields = _fields(row)
    # All but the lease and the wait (kept), then the queue fields.
    await connection.execute(sql.upsert_run, id, *fields[:8], key, *fields[14:])


def _fields(row: RunRow) -> tuple[Any, ...]:
    """Every field of ``row``, in order (the statements' parameters)."""
    return (
        row.workflow_name,
        row.status,
        row.result_json,
        row.metadata_json,
        row.created_at,
        row.updated_at,
        row.expires_at,
        row.format_version,
        row.lease_owner,
        row.lease_expires_at,
        row.wait_step,
        row.wait_key,
        row.wait_kind,
        row.wake_at,
        row.queue,
        row.priority,
        row.partition,
        row.started_at,
        row.cancel_at,
    )


async def _noop(connection: Any) -> None:
    return None


# A NOTIFY payload must stay under 8000 bytes: a run id is sent as "=" + the id, or,
# when that would be too long, as "#" + its digest in hex (the listener looks it up);
# a cancel request's payload is that after "!" (the SQL makes it: ``REQUEST_CANCEL``).
_PAYLOAD_MAX = 7900


def _abandoned_connect(task: asyncio.Future[Any]) -> None:
    """Close the connection of a connect its caller gave up on (and read its error, so
    that asyncio does not report it as never retrieved)."""
    if task.cancelled() or task.exception() is not None:
        return
    task.result().terminate()


# How long the watcher's clean-up (closing its connection) may hold off a cancellation.
_STOP_BOUND = 15.0


def _payload(id: str) -> str:
    """The NOTIFY payload naming run ``id``."""
    if len(id) * 4 < _PAYLOAD_MAX or len(id.encode("utf-8")) < _PAYLOAD_MAX:
        return "=" + id
    return "#" + digest(id).hex()


def _digest(text: str) -> bytes:
    """A message key's digest (not kept, unlike `digest`'s: message keys seldom recur)."""
    return hashlib.sha256(text.encode("utf-8")).digest()


class _Listener:
    """One ``LISTEN`` connection of `_PostgresDriver.watch`, on the driver loop.  A
    notification naming its run is handed to ``woken`` at once, from asyncpg's
    callback (the delivery's hot path: no hop through `next`, which under trio would
    be one more hop between the loops; ``woken`` gets it to the caller's loop).
    One naming a digest (a long id) queues up for `next`, which looks the id up, and
    so do the notifications behind it until it is delivered (wake-ups keep their
    order), and the connection's loss.  `stop` closes it (or gives it back to the
    pool it came from).  Every method runs on the driver loop."""

    def __init__(self, name: str, sql: Statements, woken: Callable[[str, bool], object]) -> None:
        self._name, self._sql, self._woken = name, sql, woken
        self._connection: Any = None
        self._pool: Any = None
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._backlog = 0  # notifications queued and not delivered yet
        self._lost = False

    @property
    def connected(self) -> bool:
        """Whether it holds a connection still (`stop` not called yet)."""
        return self._connection is not None

    @property
    def server_pid(self) -> int | None:
        """The server process of its connection (for tests that cut it)."""
        return None if self._connection is None else int(self._connection.get_server_pid())

    async def start(self, dsn: str | None, pool: Any) -> None:
        if dsn is not None:
            connection = await _import_asyncpg().connect(dsn)
        else:
            connection = await pool.acquire()
            self._pool = pool
        self._connection = connection
        connection.add_termination_listener(self._terminated)
        await connection.add_listener(self._sql.channel, self._notified)

    def _notified(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        if not self._backlog:
            if payload.startswith("="):
                self._deliver(payload[1:], False)
                return
            if payload.startswith("!="):
                self._deliver(payload[2:], True)
                return
        self._backlog += 1
        self._queue.put_nowait(payload)

    def _deliver(self, id: str, cancel: bool) -> None:
        # A wake-up for a caller whose loop has ended meanwhile wakes nobody.
        with contextlib.suppress(RuntimeError):
            self._woken(id, cancel)

    def _terminated(self, connection: Any) -> None:
        self._queue.put_nowait(None)

    async def next(self) -> None:
        """Deliver what queued up (waiting for something to): the ids sent as digests,
        looked up, and the ids behind them, in order.  Raises ``ConnectionError`` once
        the connection is lost (after delivering what it brought)."""
        if self._lost:
            raise ConnectionError(f"{self._name} lost its connection listening for wake-ups")
        payloads = [await self._queue.get()]
        while not self._queue.empty():
            payloads.append(self._queue.get_nowait())
        self._lost = self._lost or None in payloads
        for payload in payloads:
            if payload is None:
                continue
            try:
                cancel = payload.startswith("!")
                if cancel:
                    payload = payload[1:]
                if payload.startswith("="):
                    self._deliver(payload[1:], cancel)
                elif payload.startswith("#") and not self._lost:
                    run_key = bytes.fromhex(payload[1:])
                    found = await self._connection.fetchval(self._sql.select_id, run_key)
                    if found is not None:
                        self._deliver(found, cancel)
            finally:
                self._backlog -= 1
        if self._lost:
            raise ConnectionError(f"{self._name} lost its connection listening for wake-ups")

    async def stop(self) -> None:
        """Close the connection, or UNLISTEN and give it back to the pool it came from."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        connection.remove_termination_listener(self._terminated)
        self._queue.put_nowait(None)  # a `next` in flight ends
        if self._pool is None:
            await _close_connection(connection)
            return
        try:
            if not connection.is_closed():
                await connection.remove_listener(self._sql.channel, self._notified)
        finally:
            await self._pool.release(connection)


async def _keep_session(connection: Any) -> None:
    """Skip asyncpg's reset round trip when a connection goes back to the pool: this
    store leaves no session state behind (no session locks, LISTEN or temp tables)."""
    return None


async def _close_connection(connection: Any) -> None:
    """Close gracefully, but never wait on a dead server for long."""
    try:
        await asyncio.wait_for(connection.close(), timeout=10)
    except (asyncio.TimeoutError, OSError):
        connection.terminate()


async def _close_pool(pool: Any) -> None:
    """Close gracefully, but never wait on a dead server for long."""
    try:
        await asyncio.wait_for(pool.close(), timeout=10)
    except (asyncio.TimeoutError, OSError):
        pool.terminate()


def _step_of(step: _Step) -> tuple[bytes, ...]:
    return step[0], step[2]


def _run_of_start(start: _Start) -> tuple[bytes, ...]:
    return (start[1],)


def _run_of_end(end: _End) -> tuple[bytes, ...]:
    return (end[0],)


def _distinct(key: Callable[[Any], Hashable]) -> Callable[[builtins.list[Pending[Any, bool]]], int]:
    """The next batch of queued writes: at most ``_BATCH``, and no row twice (a
    statement touches a row once, and two claims of one id must not both see it
    inserted).  A write to a row already in the batch waits for the next one, with
    every later write to that row behind it, in the order they came."""

    def take(queued: builtins.list[Pending[Any, bool]]) -> int:
        seen: set[Hashable] = set()
        batch: builtins.list[Pending[Any, bool]] = []
        later: builtins.list[Pending[Any, bool]] = []
        for pending in queued:
            found = key(pending.item)
            if len(batch) < _BATCH and found not in seen:
                seen.add(found)
                batch.append(pending)
            else:
                seen.add(found)  # a row waiting here keeps its later writes waiting too
                later.append(pending)
        if later:
            queued[:] = batch + later
        return len(batch)

    return take


@functools.lru_cache(maxsize=4096)
def digest(text: str) -> bytes:
    """The SHA-256 of a run id or step key: the indexed form, whatever the text's size.

    Kept for the ids and keys in use: a run's id is digested at every write, and a
    workflow's step keys recur in every run."""
    return hashlib.sha256(text.encode("utf-8")).digest()


# The migrations this release knows reach the version it declares.
assert max(MIGRATIONS) == SCHEMA_VERSION
