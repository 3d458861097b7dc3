"""A PostgreSQL store on asyncpg: one table of runs, one of step checkpoints, jsonb bodies.

Its schema is created on first use, idempotently and under an advisory lock
(several workers may start at once), and its version is recorded so later
releases migrate with ordinary SQL.  A run's id is stored as text and indexed by
its SHA-256 digest, so ids of any length and content are only ever data.  A
keyed step's checkpoint is one ``INSERT`` (with the run's ``updated_at`` bumped
in the same statement).

Under trio, asyncpg runs on a private asyncio loop hosted in trio's thread
(:mod:`awaitly_anyio._bridge`); nothing changes for the caller.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import hashlib
import re
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import anyio

from .._bridge import DriverLoop, current_async_library
from .._grouping import Grouped, Pending
from .._redact import redact_url
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
from .._store_url import check_postgres_dsn
from ..clock import Clock, SystemClock
from ..errors import LeaseLostError, SnapshotDecodeError
from ..result import Result
from ..serialization import TypeRegistry, default_registry
from ..snapshot import FORMAT_VERSION, RunStatus, SnapshotInfo, SnapshotPage, WorkflowSnapshot
from ..store import (
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

if TYPE_CHECKING:
    import asyncpg

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

#: The schema version this module creates and reads.
SCHEMA_VERSION = 1

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}")

# Migrations by target version: reviewed SQL, applied in order, each once.
_MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE IF NOT EXISTS {runs} (
    id text NOT NULL,
    id_digest bytea PRIMARY KEY,
    workflow_name text NOT NULL,
    status text NOT NULL,
    result jsonb,
    metadata jsonb NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    expires_at double precision,
    format_version integer NOT NULL,
    lease_owner text,
    lease_expires_at double precision
);
CREATE INDEX IF NOT EXISTS {prefix}runs_by_update ON {runs} (updated_at DESC);
CREATE INDEX IF NOT EXISTS {prefix}runs_by_expiry ON {runs} (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS {steps} (
    run_digest bytea NOT NULL,
    key text NOT NULL,
    key_digest bytea NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (run_digest, key_digest)
);
""",
}

_RUN_COLUMNS = (
    "workflow_name, status, result::text, metadata::text, created_at, updated_at, expires_at,"
    " format_version, lease_owner, lease_expires_at"
)
_LIVE = "(expires_at IS NULL OR expires_at > {now})"


def _import_asyncpg() -> Any:
    try:
        import asyncpg
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "PostgresStore needs asyncpg: pip install 'awaitly-anyio[postgres]'"
        ) from exc
    return asyncpg


class PostgresStore:
    """A :class:`~awaitly_anyio.SnapshotStore` (and ``LeaseStore``) in PostgreSQL.

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
            self._dsn: str | None = dsn_or_pool
            self._pool: Any = None
        elif isinstance(dsn_or_pool, asyncpg.Pool):
            self._dsn, self._pool = None, dsn_or_pool
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
        self._min_size, self._max_size = min_size, max_size
        self._schema, self._prefix = schema, table_prefix
        self._runs = f'"{schema}"."{table_prefix}runs"'
        self._steps = f'"{schema}"."{table_prefix}steps"'
        # One checkpoint; and many, one per element of the arrays.  Reading the run row
        # in the same statement leaves no gap a claim by another owner could use, short
        # of one committing during this very statement.
        self._checkpoint_sql = (
            f"INSERT INTO {self._steps} (run_digest, key, key_digest, record)"
            f" SELECT id_digest, $2, $5, $4::jsonb FROM {self._runs}"
            f" WHERE id_digest = $1 AND {_LIVE.format(now='$3')}"
            " AND ($6::text IS NULL OR lease_owner = $6)"
            " ON CONFLICT (run_digest, key_digest) DO UPDATE SET record = excluded.record"
        )
        self._batch_sql = (
            f"INSERT INTO {self._steps} (run_digest, key, key_digest, record)"
            " SELECT r.id_digest, b.key, b.key_digest, b.record::jsonb"
            " FROM unnest($1::bytea[], $2::text[], $3::bytea[], $4::text[], $5::text[],"
            " $6::float8[]) AS b(run_digest, key, key_digest, record, owner, now)"
            f" JOIN {self._runs} r ON r.id_digest = b.run_digest"
            " WHERE (r.expires_at IS NULL OR r.expires_at > b.now)"
            " AND (b.owner IS NULL OR r.lease_owner = b.owner)"
            " ON CONFLICT (run_digest, key_digest) DO UPDATE SET record = excluded.record"
            " RETURNING run_digest, key_digest"
        )
        # A new run's claim.  It is committed asynchronously (synchronous_commit off for
        # this one transaction): nothing is promised to a caller when a run starts, and
        # since the WAL is flushed in order, the run's first durable write (a step, or
        # its end) makes the claim durable too.  Only a crash of the server itself in
        # between can lose it, and then the run's next write fails, so its caller
        # learns of it.  A flush is most of a write's cost; this saves one per run.
        self._claim_sql = (
            f"INSERT INTO {self._runs} (id, id_digest, workflow_name, status,"
            " metadata, created_at, updated_at, format_version, lease_owner,"
            " lease_expires_at)"
            " SELECT $1, $2, $3, 'running', $4::jsonb, $5, $5, $6, $7, $8"
            " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS unflushed"
            " ON CONFLICT (id_digest) DO NOTHING RETURNING 1"
        )
        # A run's end in one statement: without metadata, or merging it with jsonb ||
        # (top-level keys) when both sides are plain objects.
        finish = (
            f"UPDATE {self._runs} SET status = $2, result = $3::jsonb, updated_at = $4,"
            " expires_at = $5, lease_owner = NULL, lease_expires_at = NULL{merge}"
            f" WHERE id_digest = $1 AND {_LIVE.format(now='$4')}"
            " AND ($6::text IS NULL OR lease_owner = $6){mergeable} RETURNING 1"
        )
        self._finish_sql = finish.format(merge="", mergeable="")
        self._finish_merging_sql = finish.format(
            merge=", metadata = metadata || $7::jsonb",
            mergeable=" AND jsonb_typeof(metadata) = 'object' AND NOT metadata ? '$t'",
        )
        # Many runs' claims and ends in one statement each, on the same terms as one.
        self._claim_batch_sql = (
            f"INSERT INTO {self._runs} (id, id_digest, workflow_name, status,"
            " metadata, created_at, updated_at, format_version, lease_owner,"
            " lease_expires_at)"
            " SELECT b.id, b.id_digest, b.workflow_name, 'running', b.metadata::jsonb,"
            " b.now, b.now, b.format_version, b.owner, b.lease_expires_at"
            " FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[], $5::float8[],"
            " $6::int4[], $7::text[], $8::float8[]) AS b(id, id_digest, workflow_name,"
            " metadata, now, format_version, owner, lease_expires_at),"
            " (SELECT set_config('synchronous_commit', 'off', true)) AS unflushed"
            " ON CONFLICT (id_digest) DO NOTHING RETURNING id_digest"
        )
        self._finish_batch_sql = (
            f"UPDATE {self._runs} AS r SET status = b.status, result = b.result::jsonb,"
            " updated_at = b.now, expires_at = b.expires_at, lease_owner = NULL,"
            " lease_expires_at = NULL, metadata = CASE WHEN b.extra IS NULL"
            " THEN r.metadata ELSE r.metadata || b.extra::jsonb END"
            " FROM unnest($1::bytea[], $2::text[], $3::text[], $4::float8[], $5::float8[],"
            " $6::text[], $7::text[]) AS b(id_digest, status, result, now, expires_at,"
            " owner, extra)"
            " WHERE r.id_digest = b.id_digest"
            " AND (r.expires_at IS NULL OR r.expires_at > b.now)"
            " AND (b.owner IS NULL OR r.lease_owner = b.owner)"
            " AND (b.extra IS NULL OR (jsonb_typeof(r.metadata) = 'object'"
            " AND NOT r.metadata ? '$t'))"
            " RETURNING r.id_digest"
        )
        # A write goes alone if none of its kind is in flight; else it queues for a batch.
        self._checkpoints = self._grouped(
            self._write_one, self._batch_sql, _step_of, "writing checkpoints"
        )
        self._starts = self._grouped(
            self._start_one, self._claim_batch_sql, _run_of_start, "claiming runs"
        )
        self._ends = self._grouped(
            self._end_one, self._finish_batch_sql, _run_of_end, "recording ends"
        )
        self._versions = f'"{schema}"."{table_prefix}schema_version"'
        self._clock = clock if clock is not None else SystemClock()
        self._registry = registry
        self._loop = DriverLoop(repr(self))
        self._hot: Any = None
        self._hot_busy = False
        self._ready = False
        self._closed = False

    async def __aenter__(self) -> PostgresStore:
        try:
            await self._call(_noop)
        except BaseException:
            # Connected but could not start (say, a newer schema): let nothing leak.
            with anyio.CancelScope(shield=True):
                await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        where = "a pool" if self._dsn is None else repr(redact_url(self._dsn))
        return f"PostgresStore({where}, schema={self._schema!r}, prefix={self._prefix!r})"

    @property
    def registry(self) -> TypeRegistry:
        """The types this store can save and load."""
        return self._registry

    @property
    def tables(self) -> tuple[str, str]:
        """The quoted names of the runs and steps tables."""
        return self._runs, self._steps

    # ---- plumbing ----------------------------------------------------------------------

    async def _call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(connection, *args)`` on the driver loop with a pooled connection."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if self._dsn is None and current_async_library() != "asyncio":
            raise RuntimeError(
                "a PostgresStore given an asyncpg pool works on asyncio only (the pool belongs"
                " to the loop that made it); under trio, give it a DSN instead"
            )
        return await self._loop.call(self._with_connection, fn, args)

    async def _with_connection(self, fn: Any, args: tuple[Any, ...]) -> Any:
        if self._pool is None:
            asyncpg = _import_asyncpg()
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=self._min_size, max_size=self._max_size, reset=_keep_session
            )
        if not self._ready:
            async with self._pool.acquire() as connection:
                await self._migrate(connection)
                self._ready = True
        if self._dsn is None or self._hot_busy:
            async with self._pool.acquire() as connection:
                return await fn(connection, *args)
        # The store's own connection serves one operation at a time without the pool's
        # bookkeeping; concurrent operations use the pool.
        self._hot_busy = True
        try:
            if self._hot is None or self._hot.is_closed():
                self._hot = await _import_asyncpg().connect(self._dsn)
            connection = self._hot
            try:
                return await fn(connection, *args)
            except Exception as exc:
                # Our own refusals (LookupError, LeaseLostError) and SQL errors leave the
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

    async def _migrate(self, connection: Any) -> None:
        async with connection.transaction():
            # One migrator at a time across every process sharing the database.
            await connection.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", f"awaitly:{self._versions}"
            )
            await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
            await connection.execute(
                f"CREATE TABLE IF NOT EXISTS {self._versions} (version integer NOT NULL)"
            )
            version = await connection.fetchval(f"SELECT max(version) FROM {self._versions}")
            version = version or 0
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self._runs} has awaitly schema version {version}; this version of"
                    f" awaitly-anyio knows up to {SCHEMA_VERSION}: upgrade awaitly-anyio"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                sql = _MIGRATIONS[target].format(
                    runs=self._runs, steps=self._steps, prefix=self._prefix
                )
                await connection.execute(sql)
                await connection.execute(f"INSERT INTO {self._versions} VALUES ($1)", target)

    def _expiry(self, ttl: Ttl) -> float | None:
        seconds = ttl_seconds(ttl)
        return None if seconds is None else self._clock.time() + seconds

    async def _row(self, connection: Any, id: str, now: float, lock: bool = False) -> Any:
        return await connection.fetchrow(
            f"SELECT {_RUN_COLUMNS} FROM {self._runs}"
            f" WHERE id_digest = $1 AND {_LIVE.format(now='$2')}" + (" FOR UPDATE" if lock else ""),
            digest(id),
            now,
        )

    async def _upsert(self, connection: Any, id: str, row: RunRow) -> None:
        await connection.execute(
            f"INSERT INTO {self._runs} (id, workflow_name, status, result, metadata, created_at,"
            " updated_at, expires_at, format_version, id_digest)"
            " VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7, $8, $9, $10)"
            " ON CONFLICT (id_digest) DO UPDATE SET workflow_name = excluded.workflow_name,"
            " status = excluded.status, result = excluded.result, metadata = excluded.metadata,"
            " created_at = excluded.created_at, updated_at = excluded.updated_at,"
            " expires_at = excluded.expires_at, format_version = excluded.format_version",
            id,
            row.workflow_name,
            row.status,
            row.result_json,
            row.metadata_json,
            row.created_at,
            row.updated_at,
            row.expires_at,
            row.format_version,
            digest(id),
        )

    # ---- SnapshotStore -----------------------------------------------------------------

    async def save(
        self,
        id: str,
        snapshot: WorkflowSnapshot,
        *,
        ttl: Ttl = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Replace run ``id`` with ``snapshot``, in one transaction."""
        check_id(id)
        expires_at = self._expiry(ttl)
        row, steps = split(
            snapshot,
            self._registry,
            now=self._clock.time(),
            expires_at=expires_at,
            metadata=metadata,
        )

        async def work(connection: Any) -> None:
            async with connection.transaction():
                await self._upsert(connection, id, row)
                run_digest = digest(id)
                await connection.execute(
                    f"DELETE FROM {self._steps} WHERE run_digest = $1", run_digest
                )
                if steps:
                    await connection.execute(
                        f"INSERT INTO {self._steps} (run_digest, key, key_digest, record)"
                        " SELECT $1, key, key_digest, record::jsonb"
                        " FROM unnest($2::text[], $3::bytea[], $4::text[])"
                        " AS s (key, key_digest, record)",
                        run_digest,
                        [key for key, _ in steps],
                        [digest(key) for key, _ in steps],
                        [text for _, text in steps],
                    )

        await self._call(work)

    async def load(self, id: str) -> WorkflowSnapshot | None:
        """Run ``id``'s snapshot, or ``None``; one consistent read."""
        check_id(id)
        now = self._clock.time()

        async def work(connection: Any) -> tuple[Any, list[Any]] | None:
            async with connection.transaction(isolation="repeatable_read", readonly=True):
                row = await self._row(connection, id, now)
                if row is None:
                    return None
                steps = await connection.fetch(
                    f"SELECT key, record::text FROM {self._steps} WHERE run_digest = $1",
                    digest(id),
                )
            return row, steps

        found = await self._call(work)
        if found is None:
            return None
        row, steps = found
        return assemble(id, RunRow(*row), [(key, text) for key, text in steps], self._registry)

    async def delete(self, id: str) -> bool:
        """Remove run ``id`` and its steps; whether a live run was there."""
        check_id(id)
        now = self._clock.time()

        async def work(connection: Any) -> bool:
            live = await connection.fetchval(
                f"WITH run AS (DELETE FROM {self._runs} WHERE id_digest = $1"
                f" RETURNING {_LIVE.format(now='$2')} AS live),"
                f" steps AS (DELETE FROM {self._steps} WHERE run_digest = $1)"
                " SELECT live FROM run",
                digest(id),
                now,
            )
            return bool(live)

        result: bool = await self._call(work)
        return result

    async def list(
        self,
        *,
        prefix: str | None = None,
        status: RunStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SnapshotPage:
        """Runs newest first, ``limit`` at a time (keyset pagination on ``updated_at``)."""
        check_list_args(prefix, status, limit)
        after = decode_cursor(cursor) if cursor is not None else None
        params: list[Any] = [self._clock.time()]
        clauses = [_LIVE.format(now="$1")]
        if prefix:
            params.append(prefix)
            clauses.append(f"starts_with(id, ${len(params)})")
        if status is not None:
            params.append(status)
            clauses.append(f"status = ${len(params)}")
        if after is not None:
            params += [after[0], after[1]]
            at, last = f"${len(params) - 1}", f"${len(params)}"
            clauses.append(
                f'(updated_at < {at} OR (updated_at = {at} AND id COLLATE "C" < {last}))'
            )
        params.append(limit + 1)
        sql = (
            f"SELECT id, {_RUN_COLUMNS} FROM {self._runs} WHERE {' AND '.join(clauses)}"
            f' ORDER BY updated_at DESC, id COLLATE "C" DESC LIMIT ${len(params)}'
        )

        async def work(connection: Any) -> list[Any]:
            return list(await connection.fetch(sql, *params))

        found = await self._call(work)
        page = found[:limit]
        infos = [info(record[0], RunRow(*record[1:])) for record in page]
        more = len(found) > limit
        next_cursor = encode_cursor(page[-1][6], page[-1][0]) if more else None
        return SnapshotPage(infos, next_cursor)

    async def purge_expired(self) -> int:
        """Delete expired runs for good (they are already invisible); how many went."""
        now = self._clock.time()

        async def work(connection: Any) -> int:
            return int(
                await connection.fetchval(
                    f"WITH gone AS (DELETE FROM {self._runs}"
                    " WHERE expires_at IS NOT NULL AND expires_at <= $1 RETURNING id_digest),"
                    f" steps AS (DELETE FROM {self._steps} USING gone"
                    f" WHERE {self._steps}.run_digest = gone.id_digest)"
                    " SELECT count(*) FROM gone",
                    now,
                )
            )

        result: int = await self._call(work)
        return result

    async def close(self) -> None:
        """Close the pool (if the store made it).  Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._dsn is not None and self._pool is not None and self._loop.bound:
                await self._loop.call(_close_pool, self._pool)
            if self._hot is not None and self._loop.bound:
                await self._loop.call(_close_connection, self._hot)
        finally:
            self._hot = None
            self._pool = None if self._dsn is not None else self._pool
            self._loop.release()

    # ---- CheckpointStore ---------------------------------------------------------------

    async def mark_running(
        self, id: str, workflow_name: str, *, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Create run ``id`` or set it back to running, keeping its steps."""
        check_id(id)
        now = self._clock.time()
        registry = self._registry

        async def work(connection: Any) -> None:
            async with connection.transaction():
                found = await self._row(connection, id, now, lock=True)
                row = None if found is None else RunRow(*found)
                if row is None:
                    # Gone or expired: start afresh, without an expired run's steps.
                    await connection.execute(
                        f"WITH run AS (DELETE FROM {self._runs} WHERE id_digest = $1)"
                        f" DELETE FROM {self._steps} WHERE run_digest = $1",
                        digest(id),
                    )
                fresh = restarted(id, row, workflow_name, metadata, now, registry)
                await self._upsert(connection, id, fresh)

        await self._call(work)

    async def checkpoint(self, id: str, step: EncodedStep, *, owner: str | None = None) -> None:
        """Add or replace one step record of run ``id``; durable when this returns.

        Checkpoints that arrive while another is being written are committed
        together, in one statement (group commit): many concurrent runs share a
        round trip and a WAL flush.  A lone checkpoint is one INSERT of one row.
        The run's ``updated_at`` moves when the run starts and ends, not per step.
        ``ValueError`` for an invalid step key, before anything is sent.
        """
        check_key(step.key)
        row = (digest(id), step.key, digest(step.key), step.json, owner, self._clock.time())
        written = await self._checkpoints(row)
        if not written:
            await self._call(self._refuse_write, id, row[5], owner)

    async def _write_one(self, connection: Any, row: _Row) -> bool:
        """Upsert one step row if its run is live (and held by its ``owner``, if given)."""
        run_digest, key, key_digest, record, owner, now = row
        status: str = await connection.execute(
            self._checkpoint_sql, run_digest, key, now, record, key_digest, owner
        )
        return status.split()[-1] == "1"

    async def _refuse_write(
        self, connection: Any, id: str, now: float, owner: str | None
    ) -> NoReturn:
        """Raise why a write to run ``id`` was refused: it is gone, or another owner has it."""
        found = await connection.fetchval(
            f"SELECT 1 FROM {self._runs} WHERE id_digest = $1 AND {_LIVE.format(now='$2')}",
            digest(id),
            now,
        )
        if found is None:
            raise LookupError(f"run {id!r} is not in the store (mark_running first)")
        raise LeaseLostError(id, owner or "")

    async def _start_one(self, connection: Any, start: _Start) -> bool:
        """Insert one new run, claimed; ``False`` if the id is taken."""
        return bool(await connection.fetchval(self._claim_sql, *start))

    async def _end_one(self, connection: Any, end: _End) -> bool:
        """Record one run's end; ``False`` if it is gone or not ``owner``'s."""
        if end[6] is None:
            return bool(await connection.fetchval(self._finish_sql, *end[:6]))
        return bool(await connection.fetchval(self._finish_merging_sql, *end))

    def _grouped(
        self,
        one: Callable[[Any, Item], Awaitable[bool]],
        many_sql: str,
        key: Callable[[Item], tuple[bytes, ...]],
        what: str,
    ) -> Grouped[Item, bool]:
        """Writes of one kind, sent alone by ``one(connection, item)`` when none is in
        flight, else in batches by ``many_sql`` (an array per field of the items, and
        the keys of the rows it wrote returned).  Each caller learns whether its own
        write was taken (its run live, and its lease the caller's); a write whose
        caller was cancelled while it was queued is not sent."""

        async def alone(item: Item) -> bool:
            taken: bool = await self._call(one, item)
            return taken

        async def many(connection: Any, items: builtins.list[Item]) -> set[tuple[bytes, ...]]:
            if len(items) == 1:  # its own statement is the cheaper one
                return {key(items[0])} if await one(connection, items[0]) else set()
            columns = [list(column) for column in zip(*items, strict=True)]
            found = await connection.fetch(many_sql, *columns)
            return {tuple(row) for row in found}  # bytea comes back as bytes

        async def together(batch: builtins.list[Pending[Item, bool]]) -> None:
            waiting = [pending for pending in batch if not pending.done()]
            if not waiting:  # every caller gave up (cancelled) while queued: send nothing
                return
            taken = await self._call(many, [pending.item for pending in waiting])
            for pending in waiting:
                if not pending.done():  # its caller may have been cancelled meanwhile
                    pending.set_result(key(pending.item) in taken)

        return Grouped(alone, together, _distinct(key), f"{self!r} stopped {what}")

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
        """Record how run ``id`` ended, keeping its steps (releasing ``owner``'s lease)."""
        now = self._clock.time()
        expires_at = self._expiry(ttl)
        registry = self._registry

        extra: str | None = None
        in_sql = True
        if metadata:
            extra = encode_metadata(dict(metadata), registry)
            in_sql = extra.startswith("{") and '"$t"' not in extra  # else merged in Python
        end: _End = (digest(id), status, result_json, now, expires_at, owner, extra)
        # The usual case in one statement (with other runs' ends, if they are being
        # recorded); otherwise (the run is gone or not ours, or its metadata cannot be
        # merged in SQL) read, decide and write.
        if in_sql and await self._ends(end):
            return

        async def work(connection: Any) -> None:
            async with connection.transaction():
                found = await self._row(connection, id, now, lock=True)
                if found is None or (owner is not None and found["lease_owner"] != owner):
                    await self._refuse_write(connection, id, now, owner)
                merged = decode_metadata(id, RunRow(*found), registry)
                merged.update(metadata or {})
                await connection.execute(
                    f"UPDATE {self._runs} SET status = $2, result = $3::jsonb,"
                    " metadata = $4::jsonb, updated_at = $5, expires_at = $6,"
                    " lease_owner = NULL, lease_expires_at = NULL WHERE id_digest = $1",
                    digest(id),
                    status,
                    result_json,
                    encode_metadata(merged, registry),
                    now,
                    expires_at,
                )

        await self._call(work)

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
        """Take run ``id`` for ``lease`` seconds unless it is held or completed; the row
        is locked (or inserted with ``ON CONFLICT DO NOTHING``) so two claimers never
        both win."""
        check_id(id)
        seconds = check_lease(owner, lease)
        now = self._clock.time()
        registry = self._registry
        key = digest(id)

        first_metadata = encode_metadata(dict(metadata or {}), registry)
        start: _Start = (
            id,
            key,
            workflow_name,
            first_metadata,
            now,
            FORMAT_VERSION,
            owner,
            now + seconds,
        )
        # The usual case, a new run, in one statement (with other runs' claims, if they
        # are being made), committed without waiting for the WAL flush (see _claim_sql).
        if await self._starts(start):
            return Claim("claimed", owner, now + seconds, fresh=True)

        async def work(connection: Any) -> Claim:
            async with connection.transaction():
                found = await connection.fetchrow(
                    f"SELECT {_RUN_COLUMNS} FROM {self._runs} WHERE id_digest = $1 FOR UPDATE",
                    key,
                )
                row = None if found is None else RunRow(*found)
                if row is not None and row.expires_at is not None and row.expires_at <= now:
                    await connection.execute(
                        f"WITH run AS (DELETE FROM {self._runs} WHERE id_digest = $1)"
                        f" DELETE FROM {self._steps} WHERE run_digest = $1",
                        key,
                    )
                    row = None
                if row is None:
                    fresh = RunRow(
                        workflow_name=workflow_name,
                        status="running",
                        result_json=None,
                        metadata_json=encode_metadata(dict(metadata or {}), registry),
                        created_at=now,
                        updated_at=now,
                        expires_at=None,
                    )
                    inserted = await connection.fetchval(
                        f"INSERT INTO {self._runs} (id, id_digest, workflow_name, status,"
                        " metadata, created_at, updated_at, format_version, lease_owner,"
                        " lease_expires_at)"
                        " VALUES ($1, $2, $3, 'running', $4::jsonb, $5, $5, $6, $7, $8)"
                        " ON CONFLICT (id_digest) DO NOTHING RETURNING 1",
                        id,
                        key,
                        workflow_name,
                        fresh.metadata_json,
                        now,
                        fresh.format_version,
                        owner,
                        now + seconds,
                    )
                    if inserted:
                        return Claim("claimed", owner, now + seconds, fresh=True)
                    # Someone inserted it first: decide against their row.
                    found = await connection.fetchrow(
                        f"SELECT {_RUN_COLUMNS} FROM {self._runs} WHERE id_digest = $1 FOR UPDATE",
                        key,
                    )
                    row = RunRow(*found)
                problem = row_problem(row)
                if problem is not None:
                    raise SnapshotDecodeError(id, problem)
                if row.workflow_name != workflow_name:
                    return Claim("mismatch", workflow_name=row.workflow_name)
                if row.status == "completed":
                    return Claim("completed")
                if row.lease_held_by_other(owner, now):
                    return Claim("held", row.lease_owner, row.lease_expires_at)
                # Decoded before anything is written: a damaged run stays as it is (the
                # transaction ends without a write).
                steps = await connection.fetch(
                    f"SELECT key, record::text FROM {self._steps} WHERE run_digest = $1", key
                )
                found_snapshot = assemble(id, row, [(k, text) for k, text in steps], registry)
                merged = decode_metadata(id, row, registry)
                merged.update(metadata or {})
                await connection.execute(
                    f"UPDATE {self._runs} SET workflow_name = $2, status = 'running',"
                    " result = NULL, metadata = $3::jsonb, updated_at = $4, expires_at = NULL,"
                    " lease_owner = $5, lease_expires_at = $6 WHERE id_digest = $1",
                    key,
                    workflow_name,
                    encode_metadata(merged, registry),
                    now,
                    owner,
                    now + seconds,
                )
                claimed = as_claimed(found_snapshot, metadata, now)
                return Claim("claimed", owner, now + seconds, snapshot=claimed)

        result: Claim = await self._call(work)
        return result

    async def renew(self, id: str, *, owner: str, lease: float) -> bool:
        """Extend ``owner``'s lease on run ``id``; ``False`` if it lost it."""
        seconds = check_lease(owner, lease)
        now = self._clock.time()

        async def work(connection: Any) -> bool:
            status: str = await connection.execute(
                f"UPDATE {self._runs} SET lease_expires_at = $3"
                f" WHERE id_digest = $1 AND lease_owner = $2 AND {_LIVE.format(now='$4')}",
                digest(id),
                owner,
                now + seconds,
                now,
            )
            return status.split()[-1] == "1"

        result: bool = await self._call(work)
        return result

    async def release(self, id: str, *, owner: str) -> None:
        """Give up ``owner``'s lease on run ``id``."""

        async def work(connection: Any) -> None:
            await connection.execute(
                f"UPDATE {self._runs} SET lease_owner = NULL, lease_expires_at = NULL"
                " WHERE id_digest = $1 AND lease_owner = $2",
                digest(id),
                owner,
            )

        await self._call(work)

    async def claim_expired(
        self,
        *,
        owner: str,
        lease: float,
        limit: int = 10,
        workflow_names: Sequence[str] | None = None,
    ) -> builtins.list[SnapshotInfo]:
        """Claim up to ``limit`` abandoned runs (running or cancelled, lease free or
        expired), oldest first, skipping rows another claimer has locked.  Each is
        decoded first, in the same transaction: runs that cannot be are left as
        they are and returned after the claimed ones, flagged ``damaged``."""
        seconds = check_lease(owner, lease)
        now = self._clock.time()
        names = None if workflow_names is None else builtins.list(workflow_names)
        pick = (
            f"SELECT id, id_digest, {_RUN_COLUMNS} FROM {self._runs}"
            f" WHERE {_LIVE.format(now='$1')} AND status IN ('running', 'cancelled')"
            " AND (lease_expires_at IS NULL OR lease_expires_at <= $1)"
            " AND ($2::text[] IS NULL OR workflow_name = ANY($2::text[]))"
            " AND NOT id_digest = ANY($3::bytea[])"
            " ORDER BY updated_at LIMIT $4 FOR UPDATE SKIP LOCKED"
        )
        registry = self._registry

        async def work(connection: Any) -> builtins.list[SnapshotInfo]:
            claimed: builtins.list[SnapshotInfo] = []
            damaged: dict[bytes, SnapshotInfo] = {}
            async with connection.transaction():
                while len(claimed) < limit:
                    found = await connection.fetch(
                        pick, now, names, builtins.list(damaged), limit - len(claimed)
                    )
                    if not found:
                        break
                    steps: dict[bytes, builtins.list[tuple[str, str]]] = {}
                    for run_digest, key, text in await connection.fetch(
                        f"SELECT run_digest, key, record::text FROM {self._steps}"
                        " WHERE run_digest = ANY($1::bytea[])",
                        [record[1] for record in found],
                    ):
                        steps.setdefault(run_digest, []).append((key, text))
                    good: builtins.list[bytes] = []
                    for record in found:
                        id, run_digest, row = record[0], record[1], RunRow(*record[2:])
                        problem = decode_problem(id, row, steps.get(run_digest, []), registry)
                        if problem is not None:
                            damaged[run_digest] = damaged_info(id, problem, row)
                        else:
                            good.append(run_digest)
                            claimed.append(info(id, row))
                    await connection.execute(
                        f"UPDATE {self._runs} SET lease_owner = $1, lease_expires_at = $2"
                        " WHERE id_digest = ANY($3::bytea[])",
                        owner,
                        now + seconds,
                        good,
                    )
            return claimed + builtins.list(damaged.values())

        result: builtins.list[SnapshotInfo] = await self._call(work)
        return result


async def _noop(connection: Any) -> None:
    return None


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


# What the statements take.  A checkpoint: run digest, key, key digest, record, owner,
# now.  A new run's claim: id, digest, workflow name, metadata, now, format version,
# owner, lease expiry.  A run's end: digest, status, result, now, expiry, owner, and
# metadata to merge (or None).
_Row = tuple[bytes, str, bytes, str, "str | None", float]
_Start = tuple[str, bytes, str, str, float, int, str, float]
_End = tuple[bytes, str, "str | None", float, "float | None", "str | None", "str | None"]
_BATCH = 500


Item = TypeVar("Item", _Row, _Start, _End)


def _step_of(row: _Row) -> tuple[bytes, ...]:
    return row[0], row[2]


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
