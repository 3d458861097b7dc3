"""The embedded default store: one SQLite file, in WAL mode, shared safely by many
stores and processes.

Every operation runs in a worker thread (``anyio.to_thread``), one at a time per
store, so the event loop never waits on the disk; a keyed step's checkpoint is
one small transaction (an upsert of one step row), never a rewrite of the whole
snapshot.  Writers take SQLite's write lock up front (``BEGIN IMMEDIATE``) and wait
up to ``busy_timeout`` seconds for it, so several processes on one file queue up
instead of failing.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NoReturn, TypeVar

import anyio
import anyio.to_thread

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

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

#: The schema this module creates; kept in ``PRAGMA user_version``.
SCHEMA_VERSION = 2
"""The version of the tables this release creates and reads: a file of an older
version is upgraded when opened, a newer one is refused."""

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS awaitly_runs (
    id TEXT PRIMARY KEY NOT NULL,
    workflow_name TEXT NOT NULL,
    status TEXT NOT NULL,
    result_json TEXT,
    metadata_json TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    expires_at REAL,
    format_version INTEGER NOT NULL,
    lease_owner TEXT,
    lease_expires_at REAL
);
CREATE INDEX IF NOT EXISTS awaitly_runs_by_update ON awaitly_runs (updated_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS awaitly_runs_by_expiry ON awaitly_runs (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS awaitly_steps (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    record_json TEXT NOT NULL,
    seq INTEGER,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS awaitly_steps_in_order ON awaitly_steps (run_id, seq);
"""

# Version 2: steps keep the order they were recorded in (``seq``, per run).  Steps of a
# version 1 database have none (NULL): they come first, by key.
_MIGRATE_1_TO_2 = """
ALTER TABLE awaitly_steps ADD COLUMN seq INTEGER;
CREATE INDEX IF NOT EXISTS awaitly_steps_in_order ON awaitly_steps (run_id, seq);
"""

# A run's steps in the order they were recorded (first recording; a step recorded again
# keeps its place).
_STEPS_IN_ORDER = (
    "SELECT key, record_json FROM awaitly_steps WHERE run_id = ? ORDER BY seq IS NOT NULL, seq, key"
)

_RUN_COLUMNS = (
    "workflow_name, status, result_json, metadata_json, created_at, updated_at, expires_at,"
    " format_version, lease_owner, lease_expires_at"
)
_WRITE_COLUMNS = (
    "workflow_name, status, result_json, metadata_json, created_at, updated_at, expires_at,"
    " format_version"
)
_LIVE = "(expires_at IS NULL OR expires_at > ?)"


def _connect_sqlite3(path: str) -> Any:
    # Autocommit mode: this module issues BEGIN / COMMIT itself.
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


class _NotADatabaseError(sqlite3.DatabaseError, ValueError):
    """The file is not a SQLite database: a ``ValueError`` (the path is wrong) that is
    still the ``sqlite3.DatabaseError`` SQLite raises."""


def _open_error(path: str, exc: sqlite3.Error) -> sqlite3.Error:
    """``exc``, met while opening ``path``, as an error that names the path: a file that
    is not a database, or one that cannot be opened; others are returned unchanged."""
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_NOTADB" or "file is not a database" in str(exc):
        return _NotADatabaseError(
            f"cannot open SQLite database {path!r}: the file is not a database"
            " (not SQLite, damaged or encrypted)"
        )
    if name == "SQLITE_CANTOPEN" or "unable to open database file" in str(exc):
        return sqlite3.OperationalError(
            f"cannot open SQLite database {path!r}: unable to open the file"
            " (check that it and its folder can be read and written)"
        )
    return exc


class SQLiteStore:
    """A `SnapshotStore` (and ``LeaseStore``) in one SQLite file.

    - ``path``: the database file (created with its tables if missing; its folder
      must exist), or ``":memory:"`` for a private in-memory database.
    - ``synchronous``: SQLite's ``PRAGMA synchronous``.  ``"FULL"`` (the default)
      makes every checkpoint survive a power cut; ``"NORMAL"`` is faster and still
      survives a crash of the process.
    - ``busy_timeout``: seconds to wait for another writer's lock before failing.
    - ``connect``: a callable taking the path and returning a DB-API connection of
      the SQLite dialect in autocommit mode (for example ``libsql.connect``);
      the default is `sqlite3.connect`.
    - ``clock`` (wall time for TTLs and ``updated_at``) and ``registry`` (the
      types step values may hold) as for every store.

    The file is opened on first use, in a worker thread.  Each method is a
    cancellation point; a cancelled call still finishes the statement it began
    (the write either lands whole or not at all) before the cancellation is
    delivered.  Driver errors (``sqlite3.Error``) propagate as they are, except
    when opening: a file that is not a database raises ``ValueError`` (also a
    ``sqlite3.DatabaseError``), a folder ``IsADirectoryError``, a file that cannot
    be opened ``sqlite3.OperationalError``, each naming the path.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 30.0,
        connect: Callable[[str], Any] | None = None,
        clock: Clock | None = None,
        registry: TypeRegistry = default_registry,
    ) -> None:
        self._path = os.fspath(path)
        if not isinstance(self._path, str) or not self._path:
            raise ValueError(f"a SQLite path must be a non-empty path, not {path!r}")
        if "\x00" in self._path:
            raise ValueError("a SQLite path must not contain NUL characters")
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(
                f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, not {synchronous!r}"
            )
        if (
            isinstance(busy_timeout, bool)
            or not isinstance(busy_timeout, (int, float))
            or not 0 <= busy_timeout <= 3600
        ):
            raise ValueError(f"busy_timeout must be 0 to 3600 seconds, not {busy_timeout!r}")
        self._synchronous = synchronous
        self._busy_ms = int(busy_timeout * 1000)
        self._connect = connect if connect is not None else _connect_sqlite3
        self._clock = clock if clock is not None else SystemClock()
        self._registry = registry
        self._db: Any = None
        self._lock: anyio.Lock | None = None
        self._closed = False

    async def __aenter__(self) -> SQLiteStore:
        await self._run(lambda db: None)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    @property
    def registry(self) -> TypeRegistry:
        """The types this store can save and load."""
        return self._registry

    # ---- plumbing ----------------------------------------------------------------------

    async def _run(self, work: Callable[[Any], _T]) -> _T:
        """Run ``work(connection)`` in a worker thread, one call at a time."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            return await anyio.to_thread.run_sync(self._call, work)

    def _call(self, work: Callable[[Any], _T]) -> _T:
        if self._db is None:
            self._db = self._open()
        return work(self._db)

    def _open(self) -> Any:
        folder = os.path.dirname(os.path.abspath(self._path))
        if (
            self._path != ":memory:"
            and not self._path.startswith("file:")
            and not os.path.isdir(folder)
        ):
            raise FileNotFoundError(
                f"cannot open SQLite database {self._path!r}: folder {folder!r} does not exist"
            )
        if os.path.isdir(self._path):
            raise IsADirectoryError(
                f"cannot open SQLite database {self._path!r}: it is a folder, not a file"
            )
        try:
            db = self._connect(self._path)
        except sqlite3.Error as exc:
            raise _open_error(self._path, exc) from None
        try:
            db.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() not in ("wal", "memory"):
                raise sqlite3.OperationalError(
                    f"could not switch {self._path!r} to WAL mode (it is in {mode!r} mode)"
                )
            db.execute(f"PRAGMA synchronous = {self._synchronous}")
            self._migrate(db)
        except sqlite3.Error as exc:
            db.close()
            raise _open_error(self._path, exc) from None
        except BaseException:
            db.close()
            raise
        return db

    def _migrate(self, db: Any) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        with _transaction(db):
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self._path!r} holds awaitly schema version {version}; this version of"
                    f" awaitly-anyio knows up to {SCHEMA_VERSION}: upgrade awaitly-anyio"
                )
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
            elif version == 1:
                for statement in _MIGRATE_1_TO_2.split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _now(self) -> float:
        return self._clock.time()

    def _expiry(self, ttl: Ttl) -> float | None:
        seconds = ttl_seconds(ttl)
        return None if seconds is None else self._clock.time() + seconds

    @staticmethod
    def _row(db: Any, id: str, now: float) -> RunRow | None:
        found = db.execute(
            f"SELECT {_RUN_COLUMNS} FROM awaitly_runs WHERE id = ? AND {_LIVE}", (id, now)
        ).fetchone()
        return None if found is None else RunRow(*found)

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
            snapshot, self._registry, now=self._now(), expires_at=expires_at, metadata=metadata
        )

        def work(db: Any) -> None:
            with _transaction(db):
                _upsert_run(db, id, row)
                db.execute("DELETE FROM awaitly_steps WHERE run_id = ?", (id,))
                db.executemany(
                    "INSERT INTO awaitly_steps (run_id, key, record_json, seq) VALUES (?, ?, ?, ?)",
                    [(id, key, text, n) for n, (key, text) in enumerate(steps, 1)],
                )

        await self._run(work)

    async def load(self, id: str) -> WorkflowSnapshot | None:
        """Run ``id``'s snapshot, or ``None``; one consistent read.  Its steps are in the
        order they were recorded (a step recorded again keeps its place)."""
        check_id(id)
        now = self._now()

        def work(db: Any) -> WorkflowSnapshot | None:
            with _transaction(db, "BEGIN"):
                row = self._row(db, id, now)
                if row is None:
                    return None
                steps = db.execute(_STEPS_IN_ORDER, (id,)).fetchall()
            return assemble(id, row, steps, self._registry)

        return await self._run(work)

    async def info(self, id: str) -> SnapshotInfo | None:
        """Run ``id``'s listing entry, read-only: its status, times and lease (holder and
        expiry, see `SnapshotInfo`), without its steps; ``None``
        if there is none or it expired.  A run whose row cannot be read comes back
        flagged ``damaged``, never raised.  A cancellation point; ``ValueError`` for an
        invalid id."""
        check_id(id)
        now = self._now()
        row = await self._run(lambda db: self._row(db, id, now))
        return None if row is None else info(id, row, lease=True)

    async def delete(self, id: str) -> bool:
        """Remove run ``id`` and its steps; whether a live run was there."""
        check_id(id)
        now = self._now()

        def work(db: Any) -> bool:
            with _transaction(db):
                existed = self._row(db, id, now) is not None
                db.execute("DELETE FROM awaitly_steps WHERE run_id = ?", (id,))
                db.execute("DELETE FROM awaitly_runs WHERE id = ?", (id,))
            return existed

        return await self._run(work)

    async def list(
        self,
        *,
        prefix: str | None = None,
        status: RunStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SnapshotPage:
        """Runs newest first, ``limit`` at a time, by index."""
        check_list_args(prefix, status, limit)
        after = decode_cursor(cursor) if cursor is not None else None
        clauses = [_LIVE]
        params: list[Any] = [self._now()]
        if prefix:
            # substr, not LIKE: ids may hold any character, including % and _.
            clauses.append("substr(id, 1, ?) = ?")
            params += [len(prefix), prefix]
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if after is not None:
            clauses.append("(updated_at < ? OR (updated_at = ? AND id < ?))")
            params += [after[0], after[0], after[1]]
        params.append(limit + 1)
        sql = (
            f"SELECT id, {_RUN_COLUMNS} FROM awaitly_runs WHERE {' AND '.join(clauses)}"
            " ORDER BY updated_at DESC, id DESC LIMIT ?"
        )

        def work(db: Any) -> list[Any]:
            return list(db.execute(sql, params).fetchall())

        found = await self._run(work)
        page = found[:limit]
        infos = [info(id, RunRow(*rest), lease=True) for id, *rest in page]
        more = len(found) > limit
        next_cursor = encode_cursor(page[-1][6], page[-1][0]) if more else None
        return SnapshotPage(infos, next_cursor)

    async def purge_expired(self) -> int:
        """Delete expired runs for good (they are already invisible); how many went."""
        now = self._now()

        def work(db: Any) -> int:
            with _transaction(db):
                db.execute(
                    "DELETE FROM awaitly_steps WHERE run_id IN (SELECT id FROM awaitly_runs"
                    " WHERE expires_at IS NOT NULL AND expires_at <= ?)",
                    (now,),
                )
                cursor = db.execute(
                    "DELETE FROM awaitly_runs WHERE expires_at IS NOT NULL AND expires_at <= ?",
                    (now,),
                )
                return int(cursor.rowcount)

        return await self._run(work)

    async def close(self) -> None:
        """Close the database file.  Closing twice is harmless."""
        if self._closed:
            return
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            self._closed = True
            db, self._db = self._db, None
            if db is not None:
                await anyio.to_thread.run_sync(db.close)

    # ---- CheckpointStore ---------------------------------------------------------------

    async def mark_running(
        self, id: str, workflow_name: str, *, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Create run ``id`` or set it back to running, keeping its steps."""
        check_id(id)
        now = self._now()
        registry = self._registry

        def work(db: Any) -> None:
            with _transaction(db):
                row = self._row(db, id, now)
                if row is None:
                    # Gone or expired: start afresh, without an expired run's steps.
                    db.execute("DELETE FROM awaitly_steps WHERE run_id = ?", (id,))
                fresh = restarted(id, row, workflow_name, metadata, now, registry)
                _upsert_run(db, id, fresh)

        await self._run(work)

    async def checkpoint(self, id: str, step: EncodedStep, *, owner: str | None = None) -> None:
        """Add or replace one step record of run ``id``: one small transaction.
        ``ValueError`` for an invalid step key, before anything is written."""
        check_key(step.key)
        now = self._now()

        def work(db: Any) -> None:
            with _transaction(db):
                touched = db.execute(
                    f"UPDATE awaitly_runs SET updated_at = ? WHERE id = ? AND {_LIVE}"
                    " AND (? IS NULL OR lease_owner = ?)",
                    (now, id, now, owner, owner),
                ).rowcount
                if touched != 1:
                    _refuse_write(db, id, now, owner)
                # A new step goes after the run's others; one recorded again keeps its place.
                db.execute(
                    "INSERT INTO awaitly_steps (run_id, key, record_json, seq) VALUES (?, ?, ?,"
                    " (SELECT coalesce(max(seq), 0) + 1 FROM awaitly_steps WHERE run_id = ?))"
                    " ON CONFLICT (run_id, key) DO UPDATE SET record_json = excluded.record_json",
                    (id, step.key, step.json, id),
                )

        await self._run(work)

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
        now = self._now()
        expires_at = self._expiry(ttl)
        registry = self._registry

        def work(db: Any) -> None:
            with _transaction(db):
                row = self._row(db, id, now)
                if row is None or (owner is not None and row.lease_owner != owner):
                    _refuse_write(db, id, now, owner)
                merged = decode_metadata(id, row, registry)
                merged.update(metadata or {})
                db.execute(
                    "UPDATE awaitly_runs SET status = ?, result_json = ?, metadata_json = ?,"
                    " updated_at = ?, expires_at = ?, lease_owner = NULL,"
                    " lease_expires_at = NULL WHERE id = ?",
                    (
                        status,
                        result_json,
                        encode_metadata(merged, registry),
                        now,
                        expires_at,
                        id,
                    ),
                )

        await self._run(work)

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
        """Take run ``id`` for ``lease`` seconds unless it is held or completed; one
        transaction under the write lock, so two claimers never both win."""
        check_id(id)
        seconds = check_lease(owner, lease)
        now = self._now()
        registry = self._registry

        def work(db: Any) -> Claim:
            with _transaction(db):
                row = self._row(db, id, now)
                found = None
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
                    found = assemble(id, row, _steps_of(db, id), registry)
                else:
                    db.execute("DELETE FROM awaitly_steps WHERE run_id = ?", (id,))
                fresh = restarted(id, row, workflow_name, metadata, now, registry)
                _upsert_run(db, id, fresh)
                db.execute(
                    "UPDATE awaitly_runs SET lease_owner = ?, lease_expires_at = ? WHERE id = ?",
                    (owner, now + seconds, id),
                )
                if found is None:
                    return Claim("claimed", owner, now + seconds, fresh=True)
                claimed = as_claimed(found, metadata, now)
                return Claim("claimed", owner, now + seconds, snapshot=claimed)

        return await self._run(work)

    async def renew(self, id: str, *, owner: str, lease: float) -> bool:
        """Extend ``owner``'s lease on run ``id``; ``False`` if it lost it."""
        seconds = check_lease(owner, lease)
        now = self._now()

        def work(db: Any) -> bool:
            with _transaction(db):
                cursor = db.execute(
                    "UPDATE awaitly_runs SET lease_expires_at = ?"
                    f" WHERE id = ? AND lease_owner = ? AND {_LIVE}",
                    (now + seconds, id, owner, now),
                )
                return bool(cursor.rowcount == 1)

        return await self._run(work)

    async def release(self, id: str, *, owner: str) -> None:
        """Give up ``owner``'s lease on run ``id``."""

        def work(db: Any) -> None:
            with _transaction(db):
                db.execute(
                    "UPDATE awaitly_runs SET lease_owner = NULL, lease_expires_at = NULL"
                    " WHERE id = ? AND lease_owner = ?",
                    (id, owner),
                )

        await self._run(work)

    async def claim_expired(
        self,
        *,
        owner: str,
        lease: float,
        limit: int = 10,
        workflow_names: Sequence[str] | None = None,
    ) -> builtins.list[SnapshotInfo]:
        """Claim up to ``limit`` abandoned runs (running or cancelled, lease free or
        expired), oldest first; runs that cannot be decoded are left as they are and
        returned after them, flagged ``damaged``."""
        seconds = check_lease(owner, lease)
        now = self._now()
        names = None if workflow_names is None else builtins.list(workflow_names)
        where = (
            f"{_LIVE} AND status IN ('running', 'cancelled')"
            " AND (lease_expires_at IS NULL OR lease_expires_at <= ?)"
        )
        params: builtins.list[Any] = [now, now]
        if names is not None:
            where += f" AND workflow_name IN ({', '.join('?' * len(names))})"
            params += names

        def work(db: Any) -> builtins.list[SnapshotInfo]:
            claimed: builtins.list[SnapshotInfo] = []
            damaged: dict[str, SnapshotInfo] = {}
            with _transaction(db):
                # Claimed runs leave the candidates; damaged ones stay, so ask for as
                # many more as have been found damaged, until enough are claimed.
                while len(claimed) < limit:
                    found = db.execute(
                        f"SELECT id, {_RUN_COLUMNS} FROM awaitly_runs WHERE {where}"
                        " ORDER BY updated_at, id LIMIT ?",
                        (*params, limit - len(claimed) + len(damaged)),
                    ).fetchall()
                    new = [(row[0], RunRow(*row[1:])) for row in found if row[0] not in damaged]
                    if not new:
                        break
                    for id, row in new:
                        problem = decode_problem(id, row, _steps_of(db, id), self._registry)
                        if problem is not None:
                            damaged[id] = damaged_info(id, problem, row)
                            continue
                        db.execute(
                            "UPDATE awaitly_runs SET lease_owner = ?, lease_expires_at = ?"
                            " WHERE id = ?",
                            (owner, now + seconds, id),
                        )
                        claimed.append(info(id, row))
            return claimed + builtins.list(damaged.values())

        if names == []:
            return []
        return await self._run(work)


def _steps_of(db: Any, id: str) -> list[tuple[str, str]]:
    """Run ``id``'s step rows, in the order they were recorded."""
    return list(db.execute(_STEPS_IN_ORDER, (id,)).fetchall())


def _refuse_write(db: Any, id: str, now: float, owner: str | None) -> NoReturn:
    """Raise why a write to run ``id`` was refused: it is gone, or another owner has it."""
    found = db.execute(f"SELECT 1 FROM awaitly_runs WHERE id = ? AND {_LIVE}", (id, now)).fetchone()
    if found is None:
        raise LookupError(f"run {id!r} is not in the store (mark_running first)")
    raise LeaseLostError(id, owner or "")


def _upsert_run(db: Any, id: str, row: RunRow) -> None:
    db.execute(
        f"INSERT INTO awaitly_runs (id, {_WRITE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET workflow_name = excluded.workflow_name,"
        " status = excluded.status, result_json = excluded.result_json,"
        " metadata_json = excluded.metadata_json, created_at = excluded.created_at,"
        " updated_at = excluded.updated_at, expires_at = excluded.expires_at,"
        " format_version = excluded.format_version",
        (
            id,
            row.workflow_name,
            row.status,
            row.result_json,
            row.metadata_json,
            row.created_at,
            row.updated_at,
            row.expires_at,
            row.format_version,
        ),
    )


class _transaction:
    """``with _transaction(db):`` wraps a block in BEGIN IMMEDIATE / COMMIT, rolling back
    if it raises.  Writers take the write lock at BEGIN so ``busy_timeout`` applies."""

    def __init__(self, db: Any, begin: str = "BEGIN IMMEDIATE") -> None:
        self._db = db
        self._begin = begin

    def __enter__(self) -> None:
        self._db.execute(self._begin)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
            except Exception:
                self._rollback()
                raise
        else:
            self._rollback()

    def _rollback(self) -> None:
        # SQLite may already have rolled back (disk full, I/O error); the error that
        # brought us here is the one worth raising.
        with contextlib.suppress(Exception):
            self._db.execute("ROLLBACK")
