"""A Redis store on redis-py's asyncio client: a hash per run, a hash of its steps, and
sorted-set indexes, every multi-key change atomic (Lua scripts or WATCH/MULTI).

Keys, under ``prefix`` (default ``awaitly:``):

    {prefix}run:{id}     hash: the run row (status, result, metadata, times, lease)
    {prefix}steps:{id}   hash: step key -> record JSON; and, to keep the steps in the
                         order they were recorded, NUL + step key -> its place (1, 2...)
                         and NUL -> the last place given (a step key has no NUL)
    {prefix}index        sorted set: id by updated_at, for ``list`` (never KEYS or SCAN)
    {prefix}active       sorted set: running and cancelled ids, for recovery

A keyed step's checkpoint is one script call (one round trip).  Expiry is
decided with the store's clock and also set on the keys with ``PEXPIRE``, so
Redis frees them by itself; ``list`` drops index entries whose run is gone.
Under trio the client runs on a private asyncio loop hosted in trio's thread
(`awaitly_anyio._bridge`).  Meant for a single Redis (or a primary with
replicas), not Redis Cluster.
"""

from __future__ import annotations

import builtins
import contextlib
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from .._clock import Clock, SystemClock
from .._errors import LeaseLostError, SnapshotDecodeError
from .._redact import redact_url
from .._redis_client import SharedRedis
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
from .._snapshot import FORMAT_VERSION, RunStatus, SnapshotInfo, SnapshotPage, WorkflowSnapshot
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
from .._store_url import check_redis_url
from ..serialization import TypeRegistry, default_registry

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["RedisStore"]

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
)

# KEYS: run, steps, index, active.  ARGV: id, now, ttl_ms ('' = none), active (0/1),
# then the run's field/value pairs, '--', then the steps' key/json pairs.
_SAVE = """
local lease = redis.call('HMGET', KEYS[1], 'lease_owner', 'lease_expires_at')
redis.call('DEL', KEYS[1], KEYS[2])
local i = 5
local fields = {}
while ARGV[i] ~= '--' do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
  i = i + 2
end
if lease[1] then
  fields[#fields + 1] = 'lease_owner'
  fields[#fields + 1] = lease[1]
  fields[#fields + 1] = 'lease_expires_at'
  fields[#fields + 1] = lease[2]
end
redis.call('HSET', KEYS[1], unpack(fields))
i = i + 1
local batch = {}
while i <= #ARGV do
  batch[#batch + 1] = ARGV[i]
  batch[#batch + 1] = ARGV[i + 1]
  i = i + 2
  if #batch >= 1000 then
    redis.call('HSET', KEYS[2], unpack(batch))
    batch = {}
  end
end
if #batch > 0 then redis.call('HSET', KEYS[2], unpack(batch)) end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
if ARGV[4] == '1' then redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
else redis.call('ZREM', KEYS[4], ARGV[1]) end
if ARGV[3] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 1
"""

# A live run: present and not expired at ARGV now (a damaged expiry counts as live).
_LIVE_FN = """
local function live(key, now)
  local exp = redis.call('HGET', key, 'expires_at')
  if not exp then return false end
  local at = tonumber(exp)
  return exp == '' or at == nil or at > tonumber(now)
end
"""

# KEYS: run, steps.  ARGV: now, owner ('' = any), step key, record json.
# Returns 1 (written), 0 (no such live run), -1 (another owner holds the lease).
# The run's updated_at moves when it starts and ends, not per step (as in PostgreSQL):
# a checkpoint reads the run hash once and writes one field.
_CHECKPOINT = """
local run = redis.call('HMGET', KEYS[1], 'expires_at', 'lease_owner')
if not run[1] or (run[1] ~= '' and tonumber(run[1]) <= tonumber(ARGV[1])) then return 0 end
if ARGV[2] ~= '' and run[2] ~= ARGV[2] then return -1 end
if redis.call('HSET', KEYS[2], ARGV[3], ARGV[4]) == 1 then
  -- A new step goes after the others; one recorded again keeps its place.
  redis.call('HSET', KEYS[2], '\\0' .. ARGV[3], redis.call('HINCRBY', KEYS[2], '\\0', 1))
end
return 1
"""

# KEYS: run, steps, index, active.  ARGV: id, now, workflow_name, metadata json, owner,
# lease_expires_at, format version.  Creates the run if absent (1), else returns 0.
_CREATE_CLAIMED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'workflow_name', ARGV[3], 'status', 'running',
  'result_json', '', 'metadata_json', ARGV[4], 'created_at', ARGV[2], 'updated_at', ARGV[2],
  'expires_at', '', 'format_version', ARGV[7], 'lease_owner', ARGV[5],
  'lease_expires_at', ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
return 1
"""

# KEYS: run, steps, index, active.  ARGV: id, now, owner ('' = any), status, result json,
# expires_at, ttl_ms.  Records the end of a run whose metadata does not change.
# Returns 1 (done), 0 (no such live run), -1 (another owner holds the lease).
_FINISH = (
    _LIVE_FN
    + """
if not live(KEYS[1], ARGV[2]) then return 0 end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'lease_owner') ~= ARGV[3] then return -1 end
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'result_json', ARGV[5], 'updated_at', ARGV[2],
  'expires_at', ARGV[6], 'lease_owner', '', 'lease_expires_at', '')
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
if ARGV[4] == 'cancelled' then redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
else redis.call('ZREM', KEYS[4], ARGV[1]) end
if ARGV[7] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
return 1
"""
)

# KEYS: run.  ARGV: now, owner, new lease_expires_at.  Returns 1 if renewed.
_RENEW = (
    _LIVE_FN
    + """
if not live(KEYS[1], ARGV[1]) then return 0 end
if redis.call('HGET', KEYS[1], 'lease_owner') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'lease_expires_at', ARGV[3])
return 1
"""
)

# KEYS: run.  ARGV: owner.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'lease_owner') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'lease_owner', '', 'lease_expires_at', '')
end
return 1
"""

# KEYS: run, steps, index, active.  ARGV: id, now.  Returns 1 if a live run was deleted
# (a run key that is not a hash, a damaged run, counts as one).
_DELETE = (
    _LIVE_FN
    + """
local kind = redis.call('TYPE', KEYS[1])['ok']
local was = kind ~= 'none'
if kind == 'hash' and redis.call('HEXISTS', KEYS[1], 'expires_at') == 1 then
  was = live(KEYS[1], ARGV[2])
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if was then return 1 end
return 0
"""
)

# KEYS: run.  ARGV: now, owner, lease_expires_at, names ('' = any, else \\n-joined).
# Claims an abandoned run (running/cancelled, lease free or expired) for owner.
_CLAIM_ABANDONED = (
    _LIVE_FN
    + """
if not live(KEYS[1], ARGV[1]) then return 0 end
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_expires_at', 'workflow_name')
if f[1] ~= 'running' and f[1] ~= 'cancelled' then return 0 end
if f[2] and f[2] ~= '' and tonumber(f[2]) > tonumber(ARGV[1]) then return 0 end
if ARGV[4] ~= '' then
  local found = false
  for name in string.gmatch(ARGV[4], '[^\\n]+') do
    if name == f[3] then found = true end
  end
  if not found then return 0 end
end
redis.call('HSET', KEYS[1], 'lease_owner', ARGV[2], 'lease_expires_at', ARGV[3])
return 1
"""
)


def _import_redis() -> Any:
    try:
        import redis.asyncio
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("RedisStore needs redis-py: pip install 'awaitly-anyio[redis]'") from exc
    return redis.asyncio


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


class _Missing:
    """Stands for a field every run hash has, missing from a damaged one."""

    def __repr__(self) -> str:
        return "(missing)"


_MISSING: Any = _Missing()


def _row(fields: Mapping[str, str | None]) -> RunRow:
    """A run row from its hash (all strings; '' means None).  Never raises: a missing
    field is `_MISSING` and a number that does not parse stays the text it is,
    for `row_problem` to report."""

    def opt(name: str) -> str | None:
        return fields.get(name) or None

    def field(name: str) -> Any:
        value = fields.get(name)
        return _MISSING if value is None else value

    def num(name: str) -> Any:
        value = field(name)
        try:
            return float(value)
        except (TypeError, ValueError):
            return value

    def opt_num(name: str) -> Any:
        return None if fields.get(name) == "" else num(name)

    version: Any = field("format_version")
    with contextlib.suppress(TypeError, ValueError):
        version = int(version)
    return RunRow(
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
    )


_PLACE = "\x00"
"""The steps hash's fields that order the steps start with it (see the module's doc)."""


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


def _wrong_type(id: str, key: str, error: BaseException) -> SnapshotDecodeError:
    """The error for a run whose key holds something other than a hash."""
    return SnapshotDecodeError(id, f"Redis key {key!r} is not a hash ({error})")


def _is_wrong_type(error: object) -> bool:
    return isinstance(error, _import_redis().ResponseError) and "WRONGTYPE" in str(error)


def _hash(row: RunRow) -> list[str]:
    """A run row as field/value pairs (without the lease)."""
    return [
        "workflow_name",
        row.workflow_name,
        "status",
        row.status,
        "result_json",
        row.result_json or "",
        "metadata_json",
        row.metadata_json,
        "created_at",
        _num(row.created_at),
        "updated_at",
        _num(row.updated_at),
        "expires_at",
        _num(row.expires_at),
        "format_version",
        str(row.format_version),
    ]


def _mapping(pairs: list[str]) -> dict[str, str]:
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


def _expired(expires: object, now: float) -> bool:
    """Whether a stored ``expires_at`` has passed (a damaged one has not)."""
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


class RedisStore:
    """A `SnapshotStore` (and ``LeaseStore``) in Redis.

    - ``url_or_client``: a ``redis://`` / ``rediss://`` / ``unix://`` URL (the store
      makes and closes its client), or an existing ``redis.asyncio.Redis`` made
      with ``decode_responses=True`` (used as it is and not closed; asyncio only,
      since a client belongs to its loop).
    - ``prefix``: put before every key, so several applications can share a database.
    - ``clock`` and ``registry`` as for every store.

    Every method is a cancellation point; a cancelled call either ran its script
    (atomically) or not.  Connection errors (``redis.ConnectionError``) propagate;
    the client reconnects once the server is back.
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
        self._index = f"{prefix}index"
        self._active = f"{prefix}active"
        self._clock = clock if clock is not None else SystemClock()
        self._registry = registry
        self._redis = SharedRedis(url_or_client, repr(self), argument="RedisStore")
        self._closed = False

    async def __aenter__(self) -> RedisStore:
        try:
            await self._call(lambda client: client.ping())
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"RedisStore({self._where}, prefix={self._prefix!r})"

    @property
    def registry(self) -> TypeRegistry:
        """The types this store can save and load."""
        return self._registry

    @property
    def prefix(self) -> str:
        """The prefix of every key this store writes."""
        return self._prefix

    def keys_of(self, id: str) -> tuple[str, str]:
        """The run hash and steps hash keys of run ``id``."""
        return f"{self._prefix}run:{id}", f"{self._prefix}steps:{id}"

    # ---- plumbing ----------------------------------------------------------------------

    async def _call(self, fn: Callable[[Any], Awaitable[Any]]) -> Any:
        """Run ``fn(client)`` (a coroutine) on the driver loop."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        return await self._redis.call(fn)

    async def _run_script(self, source: str, keys: list[str], args: list[Any]) -> Any:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        return await self._redis.run(source, keys, args)

    def _expiry(self, ttl: Ttl) -> float | None:
        seconds = ttl_seconds(ttl)
        return None if seconds is None else self._clock.time() + seconds

    @staticmethod
    def _ttl_ms(expires_at: float | None, now: float) -> str:
        if expires_at is None:
            return ""
        return str(max(1, math.ceil((expires_at - now) * 1000)))

    async def _fetch(self, id: str) -> tuple[RunRow | None, dict[str, str]]:
        """The run row and steps of ``id``, read together (MULTI/EXEC)."""
        run_key, steps_key = self.keys_of(id)

        async def read(client: Any) -> list[Any]:
            async with client.pipeline(transaction=True) as pipe:
                pipe.hgetall(run_key)
                pipe.hgetall(steps_key)
                result: list[Any] = await pipe.execute(raise_on_error=False)
                return result

        fields, steps = await self._call(read)
        for key, found in ((run_key, fields), (steps_key, steps)):
            if isinstance(found, Exception):
                if _is_wrong_type(found):
                    raise _wrong_type(id, key, found)
                raise found
        return (_row(fields) if fields else None), steps

    async def _update(self, id: str, change: Any, *, with_steps: bool = False) -> Any:
        """Read run ``id`` under WATCH, let ``change(row)`` (``change(row, steps)`` with
        ``with_steps``, the steps watched too) return (outcome, a function writing the
        change into the MULTI pipeline, or None), and write atomically; retried if the
        run changed meanwhile.  A key of the wrong type raises SnapshotDecodeError."""
        run_key, steps_key = self.keys_of(id)
        redis = _import_redis()

        async def read(pipe: Any, key: str) -> Any:
            try:
                return await pipe.hgetall(key)
            except redis.ResponseError as exc:
                if _is_wrong_type(exc):
                    raise _wrong_type(id, key, exc) from None
                raise

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

    # ---- SnapshotStore -----------------------------------------------------------------

    async def save(
        self,
        id: str,
        snapshot: WorkflowSnapshot,
        *,
        ttl: Ttl = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Replace run ``id`` with ``snapshot``, in one script."""
        check_id(id)
        now = self._clock.time()
        expires_at = self._expiry(ttl)
        row, steps = split(
            snapshot, self._registry, now=now, expires_at=expires_at, metadata=metadata
        )
        args: list[Any] = [
            id,
            _num(now),
            self._ttl_ms(row.expires_at, now),
            "1" if row.status in ("running", "cancelled") else "0",
            *_hash(row),
            "--",
        ]
        for key, text in steps:
            args += [key, text]
        for place, (key, _) in enumerate(steps, 1):
            args += [_PLACE + key, str(place)]
        if steps:
            args += [_PLACE, str(len(steps))]
        await self._run_script(_SAVE, [*self.keys_of(id), self._index, self._active], args)

    async def load(self, id: str) -> WorkflowSnapshot | None:
        """Run ``id``'s snapshot, or ``None``; one consistent read.  Its steps are in the
        order they were recorded (a step recorded again keeps its place)."""
        check_id(id)
        now = self._clock.time()
        row, steps = await self._fetch(id)
        if row is None or not _live(row, now):
            return None
        return assemble(id, row, _in_order(steps), self._registry)

    async def info(self, id: str) -> SnapshotInfo | None:
        """Run ``id``'s listing entry, read-only: its status, times and lease (holder and
        expiry, see `SnapshotInfo`), without its steps; ``None``
        if there is none or it expired.  A run whose row cannot be read comes back
        flagged ``damaged``, never raised.  A cancellation point; ``ValueError`` for an
        invalid id."""
        check_id(id)
        now = self._clock.time()
        run_key = self.keys_of(id)[0]

        async def read(client: Any) -> Any:
            async with client.pipeline(transaction=False) as pipe:
                pipe.hgetall(run_key)
                found: list[Any] = await pipe.execute(raise_on_error=False)
                return found[0]

        fields = await self._call(read)
        if isinstance(fields, Exception):
            if _is_wrong_type(fields):
                return damaged_info(id, _wrong_type(id, run_key, fields).reason)
            raise fields
        if not fields:
            return None
        row = _row(fields)
        return info(id, row, lease=True) if _live(row, now) else None

    async def delete(self, id: str) -> bool:
        """Remove run ``id`` and its index entries; whether a live run was there."""
        check_id(id)
        keys = [*self.keys_of(id), self._index, self._active]
        done = await self._run_script(_DELETE, keys, [id, _num(self._clock.time())])
        return bool(done)

    async def list(
        self,
        *,
        prefix: str | None = None,
        status: RunStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SnapshotPage:
        """Runs newest first from the ``updated_at`` index, ``limit`` at a time.

        A run whose hash cannot be read (a missing or bad field, a key of the wrong
        type) is listed flagged ``damaged`` and left as it is; only index entries
        whose run is gone or expired are dropped."""
        check_list_args(prefix, status, limit)
        after = decode_cursor(cursor) if cursor is not None else None
        now = self._clock.time()
        batch = max(limit * 2, 100)
        top = "+inf" if after is None else repr(after[0])
        after_id = None if after is None else after[1].encode()
        found: builtins.list[tuple[float, str, RunRow | str]] = []  # str: what is damaged
        dangling: builtins.list[str] = []
        offset = 0
        while len(found) <= limit:

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
                    if not _is_wrong_type(values) or status is not None:
                        if not _is_wrong_type(values):
                            raise values
                        continue
                    damaged = _wrong_type(member, self.keys_of(member)[0], values)
                    found.append((score, member, damaged.reason))
                    continue
                row = _row(dict(zip(_FIELDS, values, strict=True)))
                if not _live(row, now):
                    dangling.append(member)
                    continue
                if status is not None and row.status != status:
                    continue
                found.append((score, member, row))
            if len(members) < batch:
                break
            offset += batch
        if dangling:
            await self._forget(dangling, now)
        page_rows = found[:limit]
        infos = [
            damaged_info(member, row) if isinstance(row, str) else info(member, row, lease=True)
            for _, member, row in page_rows
        ]
        more = len(found) > limit
        last = page_rows[-1] if page_rows else None
        next_cursor = encode_cursor(last[0], last[1]) if more and last else None
        return SnapshotPage(infos, next_cursor)

    async def _forget(self, ids: Sequence[str], now: float) -> int:
        """Drop index entries of runs that are gone or expired (and such runs' keys)."""
        forgotten = 0
        for id in ids:
            keys = [*self.keys_of(id), self._index, self._active]
            await self._run_script(_DELETE, keys, [id, _num(now)])
            forgotten += 1
        return forgotten

    async def purge_expired(self) -> int:
        """Delete expired runs and dangling index entries now; how many went.  (Redis
        also expires the keys by itself; this cleans the indexes.)"""
        now = self._clock.time()

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

    async def close(self) -> None:
        """Close the client (if the store made it).  Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        await self._redis.aclose()

    # ---- CheckpointStore ---------------------------------------------------------------

    async def mark_running(
        self, id: str, workflow_name: str, *, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Create run ``id`` or set it back to running, keeping its steps."""
        check_id(id)
        now = self._clock.time()
        registry = self._registry

        def change(row: RunRow | None) -> tuple[None, Any]:
            live = row if _live(row, now) else None
            fresh = restarted(id, live, workflow_name, metadata, now, registry)

            def write(pipe: Any, run_key: str, steps_key: str) -> None:
                if live is None:
                    pipe.delete(run_key, steps_key)
                pipe.hset(run_key, mapping=_mapping(_hash(fresh)))
                pipe.persist(run_key)
                pipe.persist(steps_key)
                pipe.zadd(self._index, {id: now})
                pipe.zadd(self._active, {id: now})

            return None, write

        await self._update(id, change)

    async def checkpoint(self, id: str, step: EncodedStep, *, owner: str | None = None) -> None:
        """Add or replace one step record of run ``id``: one script, one round trip.
        The run's ``updated_at`` moves when the run starts and ends, not per step.
        ``ValueError`` for an invalid step key, before anything is sent."""
        check_key(step.key)
        now = self._clock.time()
        done = await self._run_script(
            _CHECKPOINT, [*self.keys_of(id)], [_num(now), owner or "", step.key, step.json]
        )
        if done == 0:
            raise LookupError(f"run {id!r} is not in the store (mark_running first)")
        if done == -1:
            raise LeaseLostError(id, owner or "")

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
        if not metadata:
            # Nothing to merge: one script call.
            done = await self._run_script(
                _FINISH,
                [*self.keys_of(id), self._index, self._active],
                [
                    id,
                    _num(now),
                    owner or "",
                    status,
                    result_json or "",
                    _num(expires_at),
                    self._ttl_ms(expires_at, now),
                ],
            )
            if done == 0:
                raise LookupError(f"run {id!r} is not in the store (mark_running first)")
            if done == -1:
                raise LeaseLostError(id, owner or "")
            return

        def change(row: RunRow | None) -> tuple[None, Any]:
            if row is None or not _live(row, now):
                raise LookupError(f"run {id!r} is not in the store (mark_running first)")
            if owner is not None and row.lease_owner != owner:
                raise LeaseLostError(id, owner)
            merged = decode_metadata(id, row, registry)
            merged.update(metadata or {})

            def write(pipe: Any, run_key: str, steps_key: str) -> None:
                pipe.hset(
                    run_key,
                    mapping={
                        "status": status,
                        "result_json": result_json or "",
                        "metadata_json": encode_metadata(merged, registry),
                        "updated_at": _num(now),
                        "expires_at": _num(expires_at),
                        "lease_owner": "",
                        "lease_expires_at": "",
                    },
                )
                pipe.zadd(self._index, {id: now})
                if status == "cancelled":
                    pipe.zadd(self._active, {id: now})
                else:
                    pipe.zrem(self._active, id)
                ttl_ms = self._ttl_ms(expires_at, now)
                if ttl_ms:
                    pipe.pexpire(run_key, int(ttl_ms))
                    pipe.pexpire(steps_key, int(ttl_ms))

            return None, write

        await self._update(id, change)

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
        """Take run ``id`` for ``lease`` seconds unless it is held or completed; a new run
        is created by one script, an existing one changed under WATCH."""
        check_id(id)
        seconds = check_lease(owner, lease)
        now = self._clock.time()
        until = now + seconds
        registry = self._registry
        created = await self._run_script(
            _CREATE_CLAIMED,
            [*self.keys_of(id), self._index, self._active],
            [
                id,
                _num(now),
                workflow_name,
                encode_metadata(dict(metadata or {}), registry),
                owner,
                _num(until),
                str(FORMAT_VERSION),
            ],
        )
        if created:
            return Claim("claimed", owner, until, fresh=True)

        def change(row: RunRow | None, steps: dict[str, str]) -> tuple[Claim, Any]:
            live = row if _live(row, now) else None
            found = None
            if live is not None:
                problem = row_problem(live)
                if problem is not None:
                    raise SnapshotDecodeError(id, problem)
                if live.workflow_name != workflow_name:
                    return Claim("mismatch", workflow_name=live.workflow_name), None
                if live.status == "completed":
                    return Claim("completed"), None
                if live.lease_held_by_other(owner, now):
                    return Claim("held", live.lease_owner, live.lease_expires_at), None
                # Decoded before anything is written: a damaged run stays as it is.
                found = assemble(id, live, _in_order(steps), registry)
            fresh = restarted(id, live, workflow_name, metadata, now, registry)

            def write(pipe: Any, run_key: str, steps_key: str) -> None:
                if live is None:
                    pipe.delete(run_key, steps_key)
                pairs = [*_hash(fresh), "lease_owner", owner, "lease_expires_at", _num(until)]
                pipe.hset(run_key, mapping=_mapping(pairs))
                pipe.persist(run_key)
                pipe.persist(steps_key)
                pipe.zadd(self._index, {id: now})
                pipe.zadd(self._active, {id: now})

            if found is None:
                return Claim("claimed", owner, until, fresh=True), write
            return Claim("claimed", owner, until, snapshot=as_claimed(found, metadata, now)), write

        outcome: Claim = await self._update(id, change, with_steps=True)
        return outcome

    async def renew(self, id: str, *, owner: str, lease: float) -> bool:
        """Extend ``owner``'s lease on run ``id``; ``False`` if it lost it."""
        seconds = check_lease(owner, lease)
        now = self._clock.time()
        renewed = await self._run_script(
            _RENEW, [self.keys_of(id)[0]], [_num(now), owner, _num(now + seconds)]
        )
        return bool(renewed)

    async def release(self, id: str, *, owner: str) -> None:
        """Give up ``owner``'s lease on run ``id``."""
        await self._run_script(_RELEASE, [self.keys_of(id)[0]], [owner])

    async def claim_expired(
        self,
        *,
        owner: str,
        lease: float,
        limit: int = 10,
        workflow_names: Sequence[str] | None = None,
    ) -> builtins.list[SnapshotInfo]:
        """Claim up to ``limit`` abandoned runs (running or cancelled, lease free or
        expired), oldest first, from the index of active runs.  Each candidate is read
        and decoded before the script claims it (the script checks the lease again):
        runs that cannot be decoded are left as they are and returned after the
        claimed ones, flagged ``damaged``."""
        seconds = check_lease(owner, lease)
        if workflow_names is not None and not workflow_names:
            return []
        now = self._clock.time()
        names = "" if workflow_names is None else "\n".join(workflow_names)
        wanted = None if workflow_names is None else set(workflow_names)

        async def scan(client: Any) -> Any:
            members = await client.zrange(self._active, 0, -1)
            async with client.pipeline(transaction=False) as pipe:
                for member in members:
                    pipe.hmget(self.keys_of(member)[0], *_FIELDS)
                return members, await pipe.execute(raise_on_error=False)

        members, rows = await self._call(scan)
        claimed: builtins.list[SnapshotInfo] = []
        damaged: builtins.list[SnapshotInfo] = []
        for member, values in zip(members, rows, strict=True):
            if len(claimed) >= limit:
                break
            if isinstance(values, Exception):
                if not _is_wrong_type(values):
                    raise values
                wrong = _wrong_type(member, self.keys_of(member)[0], values)
                damaged.append(damaged_info(member, wrong.reason))
                continue
            fields: dict[str, str | None] = dict(zip(_FIELDS, values, strict=True))
            if all(value is None for value in values):
                continue  # gone
            row = _row(fields)
            problem = row_problem(row)
            if problem is None:
                if not _live(row, now) or row.status not in ("running", "cancelled"):
                    continue
                if wanted is not None and row.workflow_name not in wanted:
                    continue
                if row.lease_expires_at is not None and row.lease_expires_at > now:
                    continue
                try:
                    whole, steps = await self._fetch(member)
                except SnapshotDecodeError as exc:
                    problem = exc.reason
                else:
                    if whole is None:
                        continue
                    row = whole
                    problem = decode_problem(member, whole, _in_order(steps), self._registry)
            if problem is not None:
                damaged.append(damaged_info(member, problem, row))
                continue
            took = await self._run_script(
                _CLAIM_ABANDONED,
                [self.keys_of(member)[0]],
                [_num(now), owner, _num(now + seconds), names],
            )
            if took:
                claimed.append(info(member, row))
        return claimed + damaged
