"""Rate limiting for calls to external services, exact and fair, on anyio.

``create_rate_limiter("stripe", max_requests=100, window=1.0)`` admits at most
100 calls in *any* window of one second, ``[t, t + 1)`` (a sliding log of the
last ``max_requests`` admission times, not fixed buckets).  A call beyond the rate
waits its turn, first come first served; with ``max_wait`` a call that would
wait longer is refused with ``RateLimitExceededError`` instead.  Use it around
the call, inside a step as the deployment guide does::

    charge = await ctx.step("charge", lambda: stripe_limit(lambda: deps.charge(card)))

or as ``async with stripe_limit: ...``.
"""

from __future__ import annotations

import collections
import math
import uuid
from collections.abc import Callable
from inspect import isawaitable
from types import CoroutineType
from typing import TYPE_CHECKING, Any, overload

import anyio

from ._thunk import call_thunk
from .clock import Clock, SystemClock
from .errors import RateLimitExceededError
from .result import Err, Ok, Result, _ok

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["RateLimiter", "RedisRateLimiter", "create_rate_limiter"]


class _Waiter:
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = anyio.Event()


class _Limiter:
    """What both limiters share: validated settings, ``max_concurrent`` and the
    call / ``async with`` protocol around the subclass's ``acquire``."""

    def __init__(
        self,
        name: str,
        max_requests: int,
        window: float,
        max_wait: float | None,
        max_concurrent: int | None,
        clock: Clock | None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a rate limiter needs a non-empty name, not {name!r}")
        if isinstance(max_requests, bool) or not isinstance(max_requests, int) or max_requests < 1:
            raise ValueError(f"max_requests must be a positive integer, not {max_requests!r}")
        if not _positive(window):
            raise ValueError(f"window must be a positive number of seconds, not {window!r}")
        if max_wait is not None and not (_positive(max_wait) or max_wait == 0):
            raise ValueError(f"max_wait must be a number of seconds >= 0, not {max_wait!r}")
        if max_concurrent is not None and (
            isinstance(max_concurrent, bool)
            or not isinstance(max_concurrent, int)
            or max_concurrent < 1
        ):
            raise ValueError(f"max_concurrent must be a positive integer, not {max_concurrent!r}")
        self.name = name
        self.max_requests = max_requests
        self.window = float(window)
        self.max_wait = None if max_wait is None else float(max_wait)
        self.max_concurrent = max_concurrent
        self._clock = clock if clock is not None else SystemClock()
        self._slots: anyio.Semaphore | None = None
        self.admitted_total = 0
        self.rejected_total = 0

    async def acquire(self) -> None:
        raise NotImplementedError

    async def _acquire_and_call(self, fn: Callable[[], Any]) -> Result[Any, Any]:
        """The general path of ``__call__``: a free place, then a turn, then ``fn``."""
        if self.max_concurrent is None:
            try:
                await self.acquire()
            except RateLimitExceededError as exc:
                return Err(exc)
            return await call_thunk(fn)
        async with self._concurrency():
            try:
                await self.acquire()
            except RateLimitExceededError as exc:
                return Err(exc)
            return await call_thunk(fn)

    async def __call__(self, fn: Callable[[], Any]) -> Result[Any, Any]:
        """Run ``fn`` in its turn and return its Result, or
        ``Err(RateLimitExceededError)`` when the wait would exceed ``max_wait``."""
        return await self._acquire_and_call(fn)

    def _concurrency(self) -> anyio.Semaphore:
        if self._slots is None:
            assert self.max_concurrent is not None
            self._slots = anyio.Semaphore(self.max_concurrent)
        return self._slots

    async def __aenter__(self) -> Self:
        if self.max_concurrent is not None:
            await self._concurrency().acquire()
        try:
            await self.acquire()
        except BaseException:
            if self.max_concurrent is not None:
                self._concurrency().release()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.max_concurrent is not None:
            self._concurrency().release()


class RateLimiter(_Limiter):
    """Admits at most ``max_requests`` calls per ``window`` seconds, in arrival order.

    ``await limiter(fn)`` waits for a slot, calls ``fn`` (a value, a Result or an
    awaitable of either) and returns its Result, or returns
    ``Err(RateLimitExceededError(name, retry_after))`` without calling it when
    the wait would exceed ``max_wait``.  Exceptions from ``fn`` propagate.
    ``async with limiter:`` waits the same way and raises the error instead.

    Cancellation: a caller cancelled while waiting leaves the queue and takes no
    slot; the callers behind it move up.  ``max_concurrent`` additionally bounds
    how many calls run at once (a call waits for a free place before its turn).
    """

    def __init__(
        self,
        name: str,
        *,
        max_requests: int,
        window: float,
        max_wait: float | None = None,
        max_concurrent: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(name, max_requests, window, max_wait, max_concurrent, clock)
        # The last max_requests admission times (monotonic), oldest first.
        self._admitted: collections.deque[float] = collections.deque(maxlen=max_requests)
        self._queue: collections.deque[_Waiter] = collections.deque()

    def __repr__(self) -> str:
        return (
            f"RateLimiter({self.name!r}, max_requests={self.max_requests}, window={self.window:g})"
        )

    # ---- admission -------------------------------------------------------------------

    def _free_at(self, now: float) -> float:
        """When the next slot frees up (``now`` if one is free)."""
        if len(self._admitted) < self.max_requests:
            return now
        return max(now, self._admitted[0] + self.window)

    def _admit(self, now: float) -> None:
        self._admitted.append(now)
        self.admitted_total += 1

    def _expected_wait(self, now: float) -> float:
        """Seconds until a caller arriving now would be admitted, if nobody ahead leaves.

        Admission ``j`` (counting from the next one) happens at
        ``max(now + q * window, e[r] + (q + 1) * window)`` with ``j = q * M + r`` and
        ``e`` the last ``M`` admissions, padded at the front: O(1) whatever the queue.
        """
        ahead = len(self._queue)
        q, r = divmod(ahead, self.max_requests)
        missing = self.max_requests - len(self._admitted)
        earliest = now + q * self.window
        if r < missing:
            return earliest - now
        return max(earliest, self._admitted[r - missing] + (q + 1) * self.window) - now

    async def acquire(self) -> None:
        """Wait for this caller's turn and take a slot.

        Raises :class:`RateLimitExceededError` if the wait would exceed
        ``max_wait`` (nothing is taken).  When a slot is free and nobody waits it
        returns at once, without a checkpoint (so a slot once taken is used).
        """
        now = self._clock.monotonic()
        if not self._queue and self._free_at(now) <= now:
            self._admit(now)  # the fast path: no lock, no queue, no await
            return
        if self.max_wait is not None:
            wait = self._expected_wait(now)
            if wait > self.max_wait:
                self.rejected_total += 1
                raise RateLimitExceededError(self.name, _round_up(wait))
        waiter = _Waiter()
        self._queue.append(waiter)
        try:
            if self._queue[0] is not waiter:
                await waiter.event.wait()
            # At the head of the queue: wait for the next free slot, then take it.
            while True:
                now = self._clock.monotonic()
                free_at = self._free_at(now)
                if free_at <= now:
                    break
                await self._clock.sleep(free_at - now)
            self._admit(self._clock.monotonic())
        finally:
            # Admitted or cancelled, this caller leaves and the next one moves up.
            head = self._queue[0] is waiter
            self._queue.remove(waiter)
            if head and self._queue:
                self._queue[0].event.set()

    async def __call__(self, fn: Callable[[], Any]) -> Result[Any, Any]:
        """Run ``fn`` in its turn and return its Result, or
        ``Err(RateLimitExceededError)`` when the wait would exceed ``max_wait``."""
        admitted = self._admitted
        if self.max_concurrent is None and not self._queue:
            now = self._clock.monotonic()
            if len(admitted) < self.max_requests or now - admitted[0] >= self.window:
                # The fast path: a free slot and nobody waiting.
                admitted.append(now)
                self.admitted_total += 1
                out = fn()
                if out.__class__ is CoroutineType or isawaitable(out):
                    out = await out
                return out if out.__class__ is Ok or out.__class__ is Err else _ok(out)
        return await self._acquire_and_call(fn)

    def stats(self) -> dict[str, Any]:
        """Counters and the current queue, ready for JSON."""
        now = self._clock.monotonic()
        return {
            "name": self.name,
            "max_requests": self.max_requests,
            "window": self.window,
            "admitted": self.admitted_total,
            "rejected": self.rejected_total,
            "waiting": len(self._queue),
            "next_free_in": self._free_at(now) - now,
        }


# KEYS: the sorted set of admissions.  ARGV: max_requests, window (µs), a unique member.
# Returns {1, 0, now} when admitted, {0, wait_us, now} when the caller must wait.
# Times are the Redis server's (TIME), so every process shares one clock.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
  return {1, 0, now}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tonumber(oldest[2]) + window - now, now}
"""


class RedisRateLimiter(_Limiter):
    """A rate limiter shared by every process using the same Redis key: together they
    admit at most ``max_requests`` calls per ``window`` (by the Redis server's clock).

    Same interface as :class:`RateLimiter`.  Each admission is one Lua script
    call; a caller that must wait sleeps until the oldest admission leaves the
    window and asks again, so callers are not served in strict arrival order
    across processes.  ``max_wait`` counts the time waited so far plus the next
    wait.  ``last_admitted_at`` is the server time (µs) of this limiter's last
    admission.
    """

    def __init__(
        self,
        name: str,
        *,
        max_requests: int,
        window: float,
        redis: Any,
        max_wait: float | None = None,
        max_concurrent: int | None = None,
        key_prefix: str = "awaitly:ratelimit:",
        clock: Clock | None = None,
    ) -> None:
        from ._redis_client import SharedRedis

        super().__init__(name, max_requests, window, max_wait, max_concurrent, clock)
        self.key = f"{key_prefix}{name}"
        self._redis = SharedRedis(redis, f"RedisRateLimiter({name!r})")
        self.last_admitted_at = 0

    async def acquire(self) -> None:
        """Wait until the shared window has room, and take a slot; raises
        :class:`RateLimitExceededError` when waiting would exceed ``max_wait``."""
        waited = 0.0
        window_us = int(self.window * 1_000_000)
        while True:
            admitted, wait_us, now = await self._redis.run(
                _ADMIT, [self.key], [self.max_requests, window_us, uuid.uuid4().hex]
            )
            if admitted:
                self.admitted_total += 1
                self.last_admitted_at = int(now)
                return
            wait = max(int(wait_us), 1) / 1_000_000
            if self.max_wait is not None and waited + wait > self.max_wait:
                self.rejected_total += 1
                raise RateLimitExceededError(self.name, _round_up(wait))
            await self._clock.sleep(wait)
            waited += wait

    async def aclose(self) -> None:
        """Close this limiter's Redis connection."""
        await self._redis.aclose()

    def stats(self) -> dict[str, Any]:
        """This process's counters, ready for JSON."""
        return {
            "name": self.name,
            "max_requests": self.max_requests,
            "window": self.window,
            "admitted": self.admitted_total,
            "rejected": self.rejected_total,
            "shared": True,
        }


@overload
def create_rate_limiter(
    name: str,
    *,
    max_requests: int,
    window: float,
    max_wait: float | None = None,
    max_concurrent: int | None = None,
    clock: Clock | None = None,
    redis: None = None,
) -> RateLimiter: ...
@overload
def create_rate_limiter(
    name: str,
    *,
    max_requests: int,
    window: float,
    max_wait: float | None = None,
    max_concurrent: int | None = None,
    clock: Clock | None = None,
    redis: Any,
    key_prefix: str = "awaitly:ratelimit:",
) -> RedisRateLimiter: ...
def create_rate_limiter(
    name: str,
    *,
    max_requests: int,
    window: float,
    max_wait: float | None = None,
    max_concurrent: int | None = None,
    clock: Clock | None = None,
    redis: Any = None,
    key_prefix: str = "awaitly:ratelimit:",
) -> RateLimiter | RedisRateLimiter:
    """A limiter admitting ``max_requests`` calls per ``window`` seconds: in this process,
    or, with ``redis=`` (a URL or a ``redis.asyncio.Redis``), across every process
    sharing the limiter's name on that Redis."""
    if redis is not None:
        return RedisRateLimiter(
            name,
            max_requests=max_requests,
            window=window,
            redis=redis,
            max_wait=max_wait,
            max_concurrent=max_concurrent,
            key_prefix=key_prefix,
            clock=clock,
        )
    return RateLimiter(
        name,
        max_requests=max_requests,
        window=window,
        max_wait=max_wait,
        max_concurrent=max_concurrent,
        clock=clock,
    )


def _positive(value: object) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and value > 0
    )


def _round_up(seconds: float) -> float:
    return math.ceil(seconds * 1000) / 1000
