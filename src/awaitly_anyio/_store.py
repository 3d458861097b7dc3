"""The `SnapshotStore` protocol, the checkpointing extension durable runs use, and
`open_store`.

A store needs only five coroutines (``save``, ``load``, ``delete``, ``list``,
``close``) and ``async with`` support to work with everything in this library.
Stores that also implement `CheckpointStore` let a durable run write
one small record per keyed step instead of rewriting the whole snapshot.
"""

from __future__ import annotations

import base64
import builtins
import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import attrs

from ._result import Result
from ._resume import StepRecord
from ._snapshot import RUN_STATUSES, RunStatus, SnapshotInfo, SnapshotPage, WorkflowSnapshot

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "CheckpointStore",
    "Claim",
    "ClaimOutcome",
    "EncodedStep",
    "LeaseStore",
    "SnapshotStore",
    "open_store",
]

Ttl = float | timedelta | None


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


ClaimOutcome = Literal["claimed", "held", "completed", "mismatch"]
"""What `LeaseStore.claim` found (see `Claim`)."""


@attrs.frozen
class Claim:
    """What `LeaseStore.claim` found.

    - ``"claimed"``: the caller holds the lease until ``lease_expires_at``;
      ``fresh`` says the run did not exist before (so it has no steps to load).
    - ``"held"``: ``owner`` holds a live lease until ``lease_expires_at``.
    - ``"completed"``: the run is finished; nothing changed.
    - ``"mismatch"``: the id belongs to a run of workflow ``workflow_name``.

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
        """Extend ``owner``'s lease to ``lease`` seconds from now; ``False`` if it lost it."""
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


# ---- helpers every store shares --------------------------------------------------------


def check_id(id: object) -> str:
    """Validate a run id: a non-empty string of valid Unicode without NUL characters
    (every store must be able to keep it as text)."""
    if not isinstance(id, str) or not id:
        raise ValueError(f"a run id must be a non-empty string, not {id!r}")
    if "\x00" in id:
        raise ValueError("a run id must not contain NUL characters")
    try:
        id.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"a run id must be valid Unicode text, not {id!r}") from None
    return id


def check_key(key: object) -> str:
    """Validate a step key with the rules of `check_id`: a non-empty string of
    valid Unicode without NUL characters (every store must be able to keep it as
    text).  Raises ``ValueError`` naming the step key.  Every checkpoint calls it, so
    the usual key (plain ASCII) is checked first, cheaply."""
    if type(key) is str and key.isascii() and key and "\x00" not in key:
        return key
    if type(key) is not str or not key:
        raise ValueError(f"a step key must be a non-empty string, not {key!r}")
    if "\x00" in key:
        raise ValueError(f"a step key must not contain NUL characters, not {key!r}")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"a step key must be valid Unicode text, not {key!r}") from None
    return key


def check_list_args(prefix: object, status: object, limit: object) -> None:
    """Validate the arguments of ``list``."""
    if prefix is not None and not isinstance(prefix, str):
        raise TypeError(f"prefix must be a string, not {prefix!r}")
    if status is not None and status not in RUN_STATUSES:
        raise ValueError(f"status must be one of {', '.join(RUN_STATUSES)}, not {status!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise ValueError(f"limit must be an integer from 1 to 10000, not {limit!r}")


def check_lease(owner: object, lease: object) -> float:
    """Validate a lease owner and duration; the duration in seconds."""
    if not isinstance(owner, str) or not owner:
        raise ValueError(f"a lease owner must be a non-empty string, not {owner!r}")
    if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not 0 < lease < 1e9:
        raise ValueError(f"a lease must be a positive number of seconds, not {lease!r}")
    return float(lease)


def ttl_seconds(ttl: object) -> float | None:
    """Normalize a TTL to seconds (``None`` means no expiry)."""
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        ttl = ttl.total_seconds()
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise ValueError(f"ttl must be a positive number of seconds or a timedelta, not {ttl!r}")
    if not math.isfinite(ttl):
        return None
    return float(ttl)


def from_epoch(seconds: float) -> datetime:
    """An aware UTC datetime from epoch seconds."""
    return datetime.fromtimestamp(seconds, timezone.utc)


_last_second: tuple[float, str] = (math.nan, "")


def iso_from_epoch(seconds: float) -> str:
    """``from_epoch(seconds).isoformat()``, at a tenth of the cost: every keyed step
    writes two of these.  The text up to the second is kept from the last call (steps
    come many to a second), and the microseconds are rounded as ``datetime`` rounds
    them (half to even, carrying into the second)."""
    global _last_second
    fraction, whole = math.modf(seconds)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        micros -= 1_000_000
        whole += 1.0
    elif micros < 0:
        micros += 1_000_000
        whole -= 1.0
    second, prefix = _last_second
    if whole != second:
        prefix = datetime.fromtimestamp(whole, timezone.utc).isoformat()[:-6]  # no "+00:00"
        _last_second = (whole, prefix)
    return f"{prefix}.{micros:06d}+00:00" if micros else f"{prefix}+00:00"


def encode_cursor(updated_at: float, id: str) -> str:
    """An opaque cursor pointing just after (``updated_at``, ``id``) in newest-first order."""
    raw = json.dumps([updated_at, id], ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The inverse of `encode_cursor`; ``ValueError`` for a cursor not made by it."""
    try:
        updated_at, id = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        if isinstance(updated_at, bool) or not isinstance(updated_at, (int, float)):
            raise TypeError
        if not isinstance(id, str):
            raise TypeError
    except (ValueError, TypeError, UnicodeError):
        raise ValueError(f"invalid list cursor {cursor!r}") from None
    return float(updated_at), id


def open_store(url: str, **options: Any) -> LeaseStore:
    """Open the store a URL names; use it with ``async with``.

    - ``memory://``: `MemoryStore`
    - ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``:
      `SQLiteStore`
    - ``postgresql://user@host:5432/db``: `PostgresStore`
      (needs the ``postgres`` extra)
    - ``redis://host:6379/0``: `RedisStore` (needs the
      ``redis`` extra)

    Every one of them is a `LeaseStore` (and so a `CheckpointStore`
    and a `SnapshotStore`), which is the declared return type: the store
    can be given to ``recover``, ``recovery_loop`` and a durable ``run`` as it is.

    ``options`` go to the store's constructor.  Raises ``ValueError`` for a URL
    with an unknown scheme, without a path, or malformed (a port that is not a
    number from 1 to 65535, an unencoded ``@`` or ``/`` in a password...); the
    message names the URL with its password and secret parameters masked.
    Nothing connects here: connection errors come when the store is first used.
    """
    from ._redact import redact_url
    from ._store_url import check_store_url

    try:
        scheme = check_store_url(url)
    except ValueError as exc:
        raise ValueError(f"invalid store URL {redact_url(url)}: {exc}") from None
    rest = url.partition("://")[2]
    if scheme == "memory":
        from .stores.memory import MemoryStore

        return MemoryStore(**options)
    if scheme == "sqlite":
        from .stores.sqlite import SQLiteStore

        return SQLiteStore(rest[1:], **options)
    if scheme in ("postgresql", "postgres"):
        from .stores.postgres import PostgresStore

        return PostgresStore(f"{scheme}://{rest}", **options)
    from .stores.redis import RedisStore

    return RedisStore(f"{scheme}://{rest}", **options)
