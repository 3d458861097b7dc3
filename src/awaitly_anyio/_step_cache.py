"""The step side of the cross-run step cache: what ``ctx.step.cached`` needs of a cache
(`StepCache`), what a lookup answers (`CacheLookup`) and the step itself.

The caches (``MemoryCache``, ``StoreCache`` in ``awaitly_anyio._cache``) live above the
core: the step reaches them only through the `StepCache` protocol, so the core imports
no store and no encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from inspect import isawaitable
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

import attrs

from ._checks import check_key, check_seconds
from ._errors import SerializationError
from ._loops import cancel_due, deliver_cancellation
from ._result import Err, Result
from ._run import RunState, logger
from ._step import emit_answered
from ._thunk import as_result
from .events import StepCacheHit, StepCacheMiss

if TYPE_CHECKING:
    from ._step import StepCore

__all__ = ["MISS", "CacheLookup", "CacheTtl", "StepCache", "cached_step"]

CacheTtl: TypeAlias = float | timedelta
"""How long a cached value lives: seconds or a ``timedelta``."""


@attrs.frozen(slots=True)
class CacheLookup:
    """What a cache holds for a key: a hit (``hit`` true, the decoded ``value``) or a
    miss.  A miss with ``problem`` set found an entry it could not read (damaged JSON,
    a type the registry does not know, a database value of the wrong kind): the step
    treats it as a miss, reports the problem and overwrites the entry."""

    hit: bool
    value: Any = None
    problem: str | None = None


MISS = CacheLookup(False)
"""The plain miss: no live entry."""


@runtime_checkable
class StepCache(Protocol):
    """What ``ctx.step.cached`` needs of a cache: `MemoryCache`, `StoreCache`, or yours.

    Every method is a cancellation point.  Keys arrive checked (non-empty text without
    NUL); ``ttl`` is finite seconds > 0."""

    async def lookup(self, key: str) -> CacheLookup:
        """The live entry of ``key`` as a hit, else a miss (`MISS`, or one with
        ``problem`` for an entry that cannot be read; never raised)."""
        ...

    async def put(self, key: str, value: Any, *, ttl: float, step: str = "<cache>") -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds, replacing any entry.
        `SerializationError` naming ``step`` for a value that cannot be encoded,
        before anything is written."""
        ...

    async def invalidate(self, key: str) -> bool:
        """Remove ``key``'s entry; whether a live one was there."""
        ...


_CACHE_CLASSES: set[type] = set()
"""The classes already found to be `StepCache`s: the protocol's isinstance check costs
microseconds, a set lookup nothing."""


def _check_cache(name: str, cache: object) -> None:
    if not isinstance(cache, StepCache):
        raise TypeError(
            f"step {name!r}: cache must be a MemoryCache, a StoreCache or another StepCache"
            f" (lookup, put, invalidate), not {cache!r}"
        )
    _CACHE_CLASSES.add(cache.__class__)


async def cached_step(
    step: StepCore,
    run: RunState,
    name: str,
    fn: Callable[[], Any],
    key: str,
    ttl: CacheTtl,
    cache: StepCache,
    timeout: float | None,
) -> Any:
    """``ctx.step.cached``: answer step ``name`` from ``cache`` under ``key``, or run it
    (as ``ctx.step(name, fn, timeout=...)``) and store its ``Ok`` value for
    ``ttl`` seconds.  See `awaitly_anyio.Step.cached`."""
    if name.__class__ is not str or not name:
        raise ValueError(f"a step needs a non-empty string name, not {name!r}")
    if not callable(fn):
        raise TypeError(f"step {name!r}: fn must be a zero-argument callable, not {fn!r}")
    try:
        check_key(key, "cache key")
    except ValueError as exc:
        raise ValueError(f"step {name!r}: {exc}") from None
    seconds = check_seconds(ttl, f"step {name!r}: ttl")
    if cache.__class__ not in _CACHE_CLASSES:
        _check_cache(name, cache)
    if cancel_due():  # a cancellation point before the lookup, like every step
        await deliver_cancellation()
    found = await cache.lookup(key)
    emit = run.emit
    if found.hit:
        value = found.value
        if emit is not None:
            workflow_id, clock = run.workflow_id, run.clock
            ts = clock.time()
            emit(
                StepCacheHit(
                    workflow_id=workflow_id,
                    workflow_name=run.name,
                    ts=ts,
                    name=name,
                    cache_key=key,
                )
            )
            emit_answered(emit, run, ts, name, None, value)
        return value
    if found.problem is not None:
        # Reported even when nobody listens: a damaged entry is worth a look.
        logger.warning(
            "step %r: the cache entry %r cannot be read (%s); treated as a miss",
            name,
            key,
            found.problem,
        )
    if emit is not None:
        emit(
            StepCacheMiss(
                workflow_id=run.workflow_id,
                workflow_name=run.name,
                ts=run.clock.time(),
                name=name,
                cache_key=key,
                reason=found.problem,
            )
        )

    async def fill() -> Result[Any, Any]:
        out = fn()
        if isawaitable(out):
            out = await out
        result = as_result(out)
        if result.ok is True:
            try:
                await cache.put(key, result.value, ttl=seconds, step=name)
            except SerializationError as exc:
                # Like a durable step: the value that cannot be stored fails its step.
                return Err(exc)
        return result

    return await step(name, fill, timeout=timeout)
