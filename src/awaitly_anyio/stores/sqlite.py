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
import itertools
import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Literal, NoReturn, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs

from .._clock import Clock
from .._rows import RunRow
from .._snapshot import RunStatus
from .._store import Claim
from ..serialization import TypeRegistry, default_registry
from . import _sqlite_sql as sql
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
)
from ._front import StoreFront

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

SCHEMA_VERSION = sql.SCHEMA_VERSION
"""The version of the tables this release creates and reads: a file of an older
version is upgraded when opened, a newer one is refused."""

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_T = TypeVar("_T")
_PRIVATE = itertools.count(1)  # numbers the private databases' channels


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


class SQLiteStore(StoreFront):
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
        file = os.fspath(path)
        if not isinstance(file, str) or not file:
            raise ValueError(f"a SQLite path must be a non-empty path, not {path!r}")
        if "\x00" in file:
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
        self._path = file
        driver = _SQLiteDriver(
            file,
            synchronous,
            int(busy_timeout * 1000),
            connect if connect is not None else _connect_sqlite3,
            repr(self),
        )
        super().__init__(driver, clock=clock, registry=registry)

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

    @property
    def path(self) -> str:
        """The database file."""
        return self._path


class _SQLiteDriver:
    """Runs, their steps and their messages in three tables of one SQLite file, one
    worker-thread call at a time."""

    def __init__(
        self, path: str, synchronous: str, busy_ms: int, connect: Callable[[str], Any], name: str
    ) -> None:
        self._path = path
        self._synchronous = synchronous
        self._busy_ms = busy_ms
        self._connect = connect
        self._name = name
        self._db: Any = None
        self._lock: anyio.Lock | None = None
        self._closed = False
        self._channel = "sqlite:" + _resolved(path)

    # ---- plumbing ----------------------------------------------------------------------

    async def _run(self, work: Callable[[Any], _T]) -> _T:
        """Run ``work(connection)`` in a worker thread, one call at a time."""
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self._closed:  # closed while this call waited for the lock
                raise RuntimeError(f"{self._name} is closed")
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
            script = sql.MIGRATIONS.get(version, "")
            for statement in script.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    async def open(self) -> None:
        await self._run(_nothing)

    async def close(self) -> None:
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            self._closed = True
            db, self._db = self._db, None
            if db is not None:
                await anyio.to_thread.run_sync(db.close)

    # ---- rows --------------------------------------------------------------------------

    async def read(self, id: str, now: float, *, steps: bool) -> tuple[RunRow, Steps] | None:
        def work(db: Any) -> tuple[RunRow, Steps] | None:
            if not steps:
                row = _row(db, id, now)
                return None if row is None else (row, ())
            with _transaction(db, "BEGIN"):
                row = _row(db, id, now)
                if row is None:
                    return None
                return row, _steps_of(db, id)

        return await self._run(work)

    async def write_run(self, id: str, row: RunRow, steps: Steps) -> None:
        def work(db: Any) -> None:
            with _transaction(db):
                if db.execute(sql.RUN_IS_EXPIRED, (id, row.updated_at)).fetchone() is not None:
                    # An expired run is gone: its messages, lease and wait do not pass
                    # to the new one.
                    db.execute(sql.DELETE_MESSAGES, (id,))
                    db.execute(sql.DELETE_RUN, (id,))
                _upsert_run(db, id, row)
                db.execute(sql.DELETE_STEPS, (id,))
                db.executemany(
                    sql.INSERT_STEP, [(id, key, text, n) for n, (key, text) in enumerate(steps, 1)]
                )

        await self._run(work)

    async def delete(self, id: str, now: float) -> bool:
        def work(db: Any) -> bool:
            with _transaction(db):
                existed = _row(db, id, now) is not None
                db.execute(sql.DELETE_STEPS, (id,))
                db.execute(sql.DELETE_MESSAGES, (id,))
                db.execute(sql.DELETE_RUN, (id,))
            return existed

        return await self._run(work)

    async def start_run(
        self, id: str, now: float, restart: Callable[[RunRow | None], RunRow]
    ) -> None:
        def work(db: Any) -> None:
            with _transaction(db):
                row = _row(db, id, now)
                fresh = restart(row)
                if row is None:
                    # Gone or expired: start afresh, without an expired run's steps
                    # and messages.
                    db.execute(sql.DELETE_STEPS, (id,))
                    db.execute(sql.DELETE_MESSAGES, (id,))
                # The wait as ``restart`` gives it (the live run's, or none); the lease stays.
                _upsert_run(db, id, fresh, wait=True)

        await self._run(work)

    async def write_step(self, id: str, key: str, json: str, now: float, owner: str | None) -> None:
        def work(db: Any) -> None:
            with _transaction(db):
                touched = db.execute(sql.TOUCH_RUN, (now, id, owner, key)).rowcount
                if touched != 1:
                    _refuse_write(db, id, now)
                db.execute(sql.UPSERT_STEP, (id, key, json, id))

        await self._run(work)

    async def end_run(self, id: str, now: float, end: EndTerms) -> None:
        def work(db: Any) -> None:
            with _transaction(db):
                row = _writable(db, id, now, end.owner)
                metadata = row.metadata_json if end.merge is None else end.merge(row)
                db.execute(
                    sql.END_RUN,
                    (end.status, end.result_json, metadata, now, end.expires_at, id),
                )

        await self._run(work)

    async def claim(self, id: str, now: float, terms: ClaimTerms) -> Claim:
        def work(db: Any) -> Claim:
            with _transaction(db):
                row = _row(db, id, now)
                if row is None:
                    db.execute(sql.DELETE_STEPS, (id,))
                    db.execute(sql.DELETE_MESSAGES, (id,))
                    _upsert_run(db, id, terms.fresh_row, lease=True, wait=True)
                    return terms.fresh
                refused = terms.check(row)
                if refused is not None:
                    return refused
                taken, claimed = terms.take(row, _steps_of(db, id))
                _upsert_run(db, id, taken, lease=True, wait=True)
                return claimed

        return await self._run(work)

    async def renew(self, id: str, now: float, owner: str, until: float) -> bool:
        def work(db: Any) -> bool:
            with _transaction(db):
                return bool(db.execute(sql.RENEW, (until, id, owner, now)).rowcount == 1)

        return await self._run(work)

    async def release(self, id: str, owner: str) -> None:
        def work(db: Any) -> None:
            with _transaction(db):
                db.execute(sql.RELEASE, (id, owner))

        await self._run(work)

    async def claim_expired(
        self,
        now: float,
        owner: str,
        until: float,
        limit: int,
        workflow_names: Sequence[str] | None,
        problem: Callable[[str, RunRow, Steps], str | None],
    ) -> tuple[builtins.list[tuple[str, RunRow]], builtins.list[ListedRow]]:
        params: builtins.list[Any] = [now, now, now]
        names = ""
        if workflow_names is not None:
            if not workflow_names:
                return [], []
            names = sql.ABANDONED_OF.format(marks=", ".join("?" * len(workflow_names)))
            params += workflow_names
        pick = sql.ABANDONED.format(names=names)

        def work(db: Any) -> tuple[builtins.list[tuple[str, RunRow]], builtins.list[ListedRow]]:
            claimed: builtins.list[tuple[str, RunRow]] = []
            damaged: dict[str, ListedRow] = {}
            with _transaction(db):
                # Runs asked to cancel whose worker died: ended here (never claimed).
                db.execute(sql.END_ORPHANED_CANCELS, (now, limit))
                # Claimed runs leave the candidates; damaged ones stay, so ask for as
                # many more as have been found damaged, until enough are claimed.
                while len(claimed) < limit:
                    found = db.execute(
                        pick, (*params, limit - len(claimed) + len(damaged))
                    ).fetchall()
                    new = [(row[0], RunRow(*row[1:])) for row in found if row[0] not in damaged]
                    if not new:
                        break
                    for id, row in new:
                        why = problem(id, row, _steps_of(db, id))
                        if why is not None:
                            damaged[id] = ListedRow(id, _number(row.updated_at), row, why)
                            continue
                        db.execute(sql.SET_LEASE, (owner, until, id))
                        claimed.append((id, row))
            return claimed, builtins.list(damaged.values())

        return await self._run(work)

    async def list(
        self,
        now: float,
        prefix: str | None,
        status: RunStatus | None,
        after: tuple[float, str] | None,
        limit: int,
    ) -> builtins.list[ListedRow]:
        clauses, params = _live_runs(now, prefix)
        if status is not None:
            clauses.append(sql.LIST_STATUS)
            params.append(status)
        if after is not None:
            clauses.append(sql.LIST_AFTER)
            params += [after[0], after[0], after[1]]
        params.append(limit)
        statement = sql.LIST.format(where=" AND ".join(clauses))

        def work(db: Any) -> builtins.list[Any]:
            return builtins.list(db.execute(statement, params).fetchall())

        found = await self._run(work)
        return [ListedRow(id, _number(rest[5]), RunRow(*rest)) for id, *rest in found]

    async def count(self, now: float, prefix: str | None) -> dict[str, int]:
        clauses, params = _live_runs(now, prefix)
        statement = sql.COUNT.format(where=" AND ".join(clauses))

        def work(db: Any) -> dict[str, int]:
            return {str(status): int(n) for status, n in db.execute(statement, params)}

        return await self._run(work)

    async def purge(self, now: float) -> int:
        def work(db: Any) -> int:
            with _transaction(db):
                db.execute(sql.PURGE_STEPS, (now,))
                db.execute(sql.PURGE_MESSAGES, (now,))
                return int(db.execute(sql.PURGE_RUNS, (now,)).rowcount)

        return await self._run(work)

    # ---- waiting: messages, waits and wake-ups ---------------------------------------

    @property
    def channel(self) -> str:
        return self._channel

    async def send(self, id: str, key: str, json: str, now: float, once: str | None) -> None:
        def work(db: Any) -> None:
            with _transaction(db):
                row = _row(db, id, now)
                if row is None:
                    raise RunMissing
                if row.status in ("completed", "failed"):
                    raise RunEnded(row.status)
                if (
                    once is not None
                    and db.execute(sql.ALREADY_SENT, (id, key, id, once)).fetchone()[0]
                ):
                    raise AlreadySent
                db.execute(sql.INSERT_MESSAGE, (id, key, json, now))
                if row.status == "waiting" and row.wait_key == key:
                    db.execute(sql.WAKE_NOW, (now, id))

        # No push: a waiter in another process finds the run due when it sweeps.
        await self._run(work)

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
        def work(db: Any) -> str | None:
            with _transaction(db):
                _writable(db, id, now, owner)
                if db.execute(sql.STEP_IS_RECORDED, (id, step)).fetchone() is not None:
                    return None
                found = db.execute(sql.OLDEST_MESSAGE, (id, key, sent_by)).fetchone()
                if found is None:
                    return None
                seq, value = found
                db.execute(sql.DELETE_MESSAGE, (seq,))
                db.execute(sql.UPSERT_STEP, (id, step, head + value + tail, id))
                db.execute(sql.TOUCH_RUN, (now, id, owner, step))
                return str(value)

        return await self._run(work)

    async def begin_wait(
        self, id: str, wait: WaitRow, now: float, owner: str | None
    ) -> tuple[bool, float | None]:
        def work(db: Any) -> tuple[bool, float | None]:
            with _transaction(db):
                row = _writable(db, id, now, owner)
                resumed = row.wait_step == wait.step
                deadline = row.wake_at if resumed else wait.wake_at
                # Ready only for a value sent by the deadline: a later one loses to the
                # timeout and stays in the mailbox.
                if (
                    wait.key is not None
                    and db.execute(sql.MESSAGE_IS_PENDING, (id, wait.key, deadline)).fetchone()
                    is not None
                ):
                    return True, None
                if resumed:
                    # The same wait, resumed: its deadline stands.
                    db.execute(sql.WAIT_AGAIN, (id,))
                    return False, row.wake_at
                db.execute(sql.BEGIN_WAIT, (wait.step, wait.key, wait.kind, wait.wake_at, now, id))
                return False, wait.wake_at

        return await self._run(work)

    async def watch(
        self, woken: Callable[[str], object], cancelled: Callable[[str], object] | None = None
    ) -> None:
        # SQLite cannot push: waiters poll (and wake at once when the sender shares
        # their process, through the front).
        await anyio.lowlevel.checkpoint()

    # ---- queues, control and schedules -----------------------------------------------

    async def enqueue(self, id: str, row: RunRow, now: float) -> RunRow | None:
        def work(db: Any) -> RunRow | None:
            with _transaction(db):
                found = _row(db, id, now)
                if found is not None:
                    return found
                # Gone or expired: start afresh, without an expired run's steps,
                # messages, lease and wait.
                db.execute(sql.DELETE_STEPS, (id,))
                db.execute(sql.DELETE_MESSAGES, (id,))
                db.execute(sql.DELETE_RUN, (id,))
                _upsert_run(db, id, row, lease=True, wait=True)
                return None

        return await self._run(work)

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
        names = None if workflow_names is None else set(workflow_names)

        def work(db: Any) -> builtins.list[tuple[str, RunRow]]:
            taken: builtins.list[tuple[str, RunRow]] = []
            # BEGIN IMMEDIATE: claimers of the file take turns, so no cap is exceeded.
            with _transaction(db):
                by_partition: dict[str | None, int] = dict(
                    db.execute(sql.QUEUE_RUNNING, (queue, now)).fetchall()
                )
                room = limit
                if caps.concurrency is not None:
                    room = min(room, caps.concurrency - sum(by_partition.values()))
                if caps.rate is not None:
                    (started,) = db.execute(
                        sql.QUEUE_STARTS, (queue, now - caps.rate[1])
                    ).fetchone()
                    room = min(room, caps.rate[0] - int(started))
                if room <= 0:
                    return taken
                cap = caps.partition_concurrency
                cursor = db.execute(sql.QUEUED, (queue, now))
                while len(taken) < room:
                    found = cursor.fetchmany(max(room, 16))
                    if not found:
                        break
                    for id, *rest in found:
                        if len(taken) >= room:
                            break
                        row = RunRow(*rest)
                        if names is not None and row.workflow_name not in names:
                            continue  # left for a worker that has its workflow
                        if cap is not None and by_partition.get(row.partition, 0) >= cap:
                            continue
                        by_partition[row.partition] = by_partition.get(row.partition, 0) + 1
                        taken.append((id, row))
                cursor.close()
                written: builtins.list[tuple[str, RunRow]] = []
                for id, row in taken:
                    db.execute(sql.START_QUEUED, (owner, until, now, now, id))
                    written.append(
                        (
                            id,
                            attrs.evolve(
                                row,
                                status="running",
                                lease_owner=owner,
                                lease_expires_at=until,
                                started_at=now,
                                updated_at=now,
                            ),
                        )
                    )
            return written

        return await self._run(work)

    async def request_cancel(self, id: str, now: float) -> str:
        def work(db: Any) -> str:
            with _transaction(db):
                row = _row(db, id, now)
                if row is None:
                    raise RunMissing
                status = str(row.status)
                if status in ("completed", "failed", "cancelled"):
                    raise RunEnded(status)
                statement = {
                    "pending": sql.CANCEL_PENDING,
                    "running": sql.CANCEL_RUNNING,
                    "waiting": sql.CANCEL_WAITING,
                }.get(status, sql.CANCEL_RUNNING)
                db.execute(statement, (now, id))
                return status

        return await self._run(work)

    async def notify(self, id: str) -> None:
        # SQLite cannot push: the front wakes this process's waiters itself.
        await anyio.lowlevel.checkpoint()

    async def put_schedule(self, name: str, spec_json: str, now: float) -> None:
        def work(db: Any) -> None:
            with _transaction(db):
                db.execute(sql.PUT_SCHEDULE, (name, spec_json, now))

        await self._run(work)

    async def schedules(self) -> builtins.list[tuple[str, str, float | None]]:
        def work(db: Any) -> builtins.list[tuple[str, str, float | None]]:
            return [
                (str(name), str(spec), tick)
                for name, spec, tick in db.execute(sql.SCHEDULES).fetchall()
            ]

        return await self._run(work)

    async def delete_schedule(self, name: str) -> bool:
        def work(db: Any) -> bool:
            with _transaction(db):
                return bool(db.execute(sql.DELETE_SCHEDULE, (name,)).rowcount == 1)

        return await self._run(work)

    async def advance_schedule(self, name: str, expected: float | None, tick: float) -> bool:
        def work(db: Any) -> bool:
            with _transaction(db):
                return bool(db.execute(sql.ADVANCE_SCHEDULE, (tick, name, expected)).rowcount == 1)

        return await self._run(work)

    # ---- the cross-run step cache ------------------------------------------------------

    async def cache_get(self, key: str, now: float) -> str | None:
        def work(db: Any) -> str | None:
            found = db.execute(sql.CACHE_GET, (key,)).fetchone()
            if found is None:
                return None
            text, expires_at = found
            if not isinstance(text, str) or not _is_time(expires_at):
                raise RowUnreadable(f"cache entry {key!r} is damaged (its value or expiry)")
            return None if expires_at <= now else text

        return await self._run(work)

    async def cache_put(self, key: str, json: str, now: float, expires_at: float) -> None:
        def work(db: Any) -> None:
            with _transaction(db):
                db.execute(sql.CACHE_PUT, (key, json, now, expires_at))

        await self._run(work)

    async def cache_delete(self, key: str, now: float) -> bool:
        def work(db: Any) -> bool:
            with _transaction(db):
                found = db.execute(sql.CACHE_GET, (key,)).fetchone()
                if found is None:
                    return False
                db.execute(sql.CACHE_DELETE, (key,))
            return not _is_time(found[1]) or found[1] > now

        return await self._run(work)

    async def cache_purge(self, now: float) -> int:
        def work(db: Any) -> int:
            with _transaction(db):
                return int(db.execute(sql.CACHE_PURGE, (now,)).rowcount)

        return await self._run(work)


def _resolved(path: str) -> str:
    """The database ``path`` names, for its channel: a file's resolved path; a private
    in-memory database is its own (numbered) database."""
    if path == ":memory:":
        return f":memory:{next(_PRIVATE)}"
    if path.startswith("file:"):
        return path
    return os.path.realpath(path)


def _live_runs(now: float, prefix: str | None) -> tuple[builtins.list[str], builtins.list[Any]]:
    """The conditions (and their parameters) of `list` and `count`: the runs live at
    ``now``, under ``prefix`` when one is given."""
    if not prefix:
        return [sql.LIVE], [now]
    return [sql.LIVE, sql.LIST_PREFIX], [now, len(prefix), prefix]


def _nothing(db: Any) -> None:
    return None


def _is_time(value: object) -> bool:
    """Whether a stored expiry is a number (a damaged one is text)."""
    return isinstance(value, float | int) and not isinstance(value, bool)


def _number(value: object) -> float:
    """A time to sort by; a damaged one (not a number) sorts as the epoch."""
    return float(value) if isinstance(value, float | int) else 0.0


def _row(db: Any, id: str, now: float) -> RunRow | None:
    found = db.execute(sql.SELECT_RUN, (id, now)).fetchone()
    return None if found is None else RunRow(*found)


def _steps_of(db: Any, id: str) -> builtins.list[tuple[str, str]]:
    """Run ``id``'s step rows, in the order they were recorded."""
    return builtins.list(db.execute(sql.STEPS_IN_ORDER, (id,)).fetchall())


def _refuse_write(db: Any, id: str, now: float) -> NoReturn:
    """Signal why a write to run ``id`` was refused: it is gone, or another owner has it."""
    if db.execute(sql.RUN_IS_LIVE, (id, now)).fetchone() is None:
        raise RunMissing
    raise LeaseLost


def _writable(db: Any, id: str, now: float, owner: str | None) -> RunRow:
    """Live run ``id``'s row, if ``owner`` (when given) holds its lease; else the signal."""
    row = _row(db, id, now)
    if row is None:
        raise RunMissing
    if owner is not None and row.lease_owner != owner:
        raise LeaseLost
    return row


def _upsert_run(db: Any, id: str, row: RunRow, *, lease: bool = False, wait: bool = False) -> None:
    """Write ``row`` over run ``id``; its lease too with ``lease`` and its pending wait
    with ``wait``, else the stored ones stay (a new run has neither)."""
    params: tuple[Any, ...] = (
        id,
        row.workflow_name,
        row.status,
        row.result_json,
        row.metadata_json,
        row.created_at,
        row.updated_at,
        row.expires_at,
        row.format_version,
        row.queue,
        row.priority,
        row.partition,
        row.started_at,
        row.cancel_at,
    )
    if not wait:
        db.execute(sql.UPSERT_RUN, params)
        if lease:
            db.execute(sql.SET_LEASE, (row.lease_owner, row.lease_expires_at, id))
        return
    waiting = (row.wait_step, row.wait_key, row.wait_kind, row.wake_at)
    if lease:
        db.execute(sql.UPSERT_RUN_ALL, (*params, row.lease_owner, row.lease_expires_at, *waiting))
    else:
        db.execute(sql.UPSERT_RUN_WAIT, (*params, *waiting))


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
