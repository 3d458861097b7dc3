"""The cross-run step cache: `MemoryCache` (this process) and `StoreCache` (rows of any
store, so every process sharing the store shares the cache), for ``ctx.step.cached``.

Values are kept as JSON encoded with a type registry, like a durable step's value: a
value that cannot be stored fails the step that produced it (`SerializationError`
naming it), and a hit never shares objects with the value that was stored.  An entry
that cannot be read back (damaged JSON, a type the registry does not know) is a miss
that says why (`CacheLookup.problem`), never an exception.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Protocol

from ._checks import check_key, check_seconds
from ._clock import Clock, SystemClock
from ._errors import SerializationError, SnapshotDecodeError
from ._step_cache import MISS, CacheLookup, StepCache
from .serialization import (
    TypeRegistry,
    _decode,
    _encode,
    _Undecodable,
    _Unstorable,
    default_registry,
    dumps,
    loads,
)

__all__ = [
    "CacheRows",
    "MemoryCache",
    "StoreCache",
    "check_ttl",
    "decode_cached",
    "encode_cached",
]

MAX_CACHED_BYTES = 1 << 20
"""The largest value (as JSON, in UTF-8 bytes) a cache entry takes: 1 MiB, like a
message."""


def encode_cached(step: str, value: Any, registry: TypeRegistry) -> str:
    """``value`` as the JSON of a cache entry, typed like a step value.
    `SerializationError` naming ``step`` for a value with no JSON form or one over
    `MAX_CACHED_BYTES`."""
    try:
        text = dumps(_encode(value, registry))
    except _Unstorable as exc:
        raise SerializationError(step, exc.type_name, exc.reason) from None
    except RecursionError:
        raise SerializationError(
            step, type(value).__qualname__, "it is nested too deeply to encode"
        ) from None
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    if size > MAX_CACHED_BYTES:
        raise SerializationError(
            step,
            type(value).__qualname__,
            f"a cache entry holds at most {MAX_CACHED_BYTES} bytes of JSON;"
            f" this value takes {size}",
        )
    return text


def decode_cached(key: str, text: str, registry: TypeRegistry) -> CacheLookup:
    """A stored entry's value as a hit, or a miss with the problem when it cannot be
    read."""
    try:
        data = loads(text, key)
        if '"$t"' not in text:
            # No tagged value anywhere (the usual dicts, lists, strings, numbers): the
            # JSON is the value, with nothing to walk.
            return CacheLookup(True, data)
        return CacheLookup(True, _decode(data, registry))
    except SnapshotDecodeError as exc:
        return CacheLookup(False, problem=exc.reason)
    except _Undecodable as exc:
        return CacheLookup(False, problem=str(exc))
    except RecursionError:
        return CacheLookup(False, problem="nested too deeply to decode")
    except Exception as exc:  # a damaged tagged value (a tuple of 5...): a miss, reported
        return CacheLookup(False, problem=f"cannot decode it ({type(exc).__name__}: {exc})")


def check_ttl(ttl: object) -> float:
    """A cache TTL (seconds or a ``timedelta``) as finite seconds > 0; ``TypeError`` or
    ``ValueError`` naming ``ttl``."""
    return check_seconds(ttl, "ttl")


class CacheRows(Protocol):
    """The store methods `StoreCache` uses: every shipped store has them (the store
    front, ``awaitly_anyio.stores``)."""

    async def cache_lookup(self, key: str) -> CacheLookup: ...

    async def cache_put(
        self, key: str, value: Any, *, ttl: float | timedelta, step: str = "<cache>"
    ) -> None: ...

    async def cache_invalidate(self, key: str) -> bool: ...

    async def cache_purge(self) -> int: ...


class MemoryCache:
    """A `StepCache` in this process's memory: a dict of encoded entries.

    ``clock`` supplies the wall time entries expire by (a `FakeClock` in tests);
    ``registry`` names the types values may hold (`register_type`).  Entries that
    expired are dropped when met, or all at once by `purge_expired`.  Every method is
    a cancellation point only in that it is ``async``: none waits."""

    __slots__ = ("_clock", "_entries", "_registry", "_time")

    def __init__(
        self, *, clock: Clock | None = None, registry: TypeRegistry = default_registry
    ) -> None:
        if not isinstance(registry, TypeRegistry):
            raise TypeError(f"registry must be a TypeRegistry, not {registry!r}")
        self._clock = clock if clock is not None else SystemClock()
        # The system clock's time is time.time: called directly on the hot path.
        self._time = time.time if clock is None else self._clock.time
        self._registry = registry
        self._entries: dict[str, tuple[str, float]] = {}

    def __repr__(self) -> str:
        return f"MemoryCache({len(self._entries)} entries)"

    def __len__(self) -> int:
        """How many entries are held (expired ones not yet dropped included)."""
        return len(self._entries)

    async def lookup(self, key: str) -> CacheLookup:
        """``key``'s live entry as a hit, else a miss (see `CacheLookup`)."""
        found = self._entries.get(key)
        if found is None:
            return MISS
        text, expires_at = found
        if expires_at <= self._time():
            del self._entries[key]
            return MISS
        return decode_cached(key, text, self._registry)

    async def put(
        self, key: str, value: Any, *, ttl: float | timedelta, step: str = "<cache>"
    ) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (or a ``timedelta``).
        `SerializationError` naming ``step`` for a value that cannot be encoded;
        ``ValueError`` / ``TypeError`` for a bad key or TTL; nothing is written then."""
        check_key(key, "cache key")
        seconds = check_ttl(ttl)
        text = encode_cached(step, value, self._registry)
        self._entries[key] = (text, self._time() + seconds)

    async def invalidate(self, key: str) -> bool:
        """Remove ``key``'s entry; whether a live one was there.  ``ValueError`` for a
        bad key."""
        check_key(key, "cache key")
        found = self._entries.pop(key, None)
        return found is not None and found[1] > self._time()

    async def purge_expired(self) -> int:
        """Drop every expired entry; how many went."""
        now = self._time()
        gone = [key for key, (_, expires_at) in self._entries.items() if expires_at <= now]
        for key in gone:
            del self._entries[key]
        return len(gone)

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()


class StoreCache:
    """A `StepCache` in a store (`MemoryStore`, `SQLiteStore`, `PostgresStore`,
    `RedisStore`, or `open_store`'s): its entries are rows of that store, so every
    process using the store shares them, and they outlive the process.

    The store's clock decides expiry and its type registry encodes values.  The
    cache does not own the store: closing the store is its owner's business.  Every
    method is a cancellation point (a database call); the database's own errors
    propagate as the store raises them."""

    __slots__ = ("_store",)

    def __init__(self, store: CacheRows) -> None:
        if not all(
            callable(getattr(store, name, None))
            for name in ("cache_lookup", "cache_put", "cache_invalidate", "cache_purge")
        ):
            raise TypeError(
                "StoreCache needs a store of awaitly_anyio.stores (MemoryStore, SQLiteStore,"
                f" PostgresStore, RedisStore), not {type(store).__name__}"
            )
        self._store = store

    def __repr__(self) -> str:
        return f"StoreCache({self._store!r})"

    async def lookup(self, key: str) -> CacheLookup:
        """``key``'s live entry as a hit, else a miss (see `CacheLookup`)."""
        return await self._store.cache_lookup(key)

    async def put(
        self, key: str, value: Any, *, ttl: float | timedelta, step: str = "<cache>"
    ) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (or a ``timedelta``), in one
        write.  `SerializationError` naming ``step``, ``ValueError`` / ``TypeError`` for
        a bad key or TTL, before anything is written."""
        await self._store.cache_put(key, value, ttl=ttl, step=step)

    async def invalidate(self, key: str) -> bool:
        """Remove ``key``'s entry; whether a live one was there."""
        return await self._store.cache_invalidate(key)

    async def purge_expired(self) -> int:
        """Delete the store's expired entries for good (they already miss); how many
        went."""
        return await self._store.cache_purge()


# Both are StepCaches (checked by the type checkers here, once).
_CACHES: tuple[type[StepCache], ...] = (MemoryCache, StoreCache)
