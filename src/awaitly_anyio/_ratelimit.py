"""Rate limiting for calls to external services, exact and fair, on anyio.

``create_rate_limiter("stripe", max_requests=100, window=1.0)`` admits at most
100 calls in *any* window of one second, ``[t, t + 1)`` (a sliding log of the
last ``max_requests`` admission times, not fixed buckets).  A call beyond the rate
waits its turn, first come first served; with ``max_wait`` a call that would
wait longer is refused with ``RateLimitExceededError`` instead.  Use it around
the call, inside a step as the deployment guide does:

    charge = await ctx.step("charge", lambda: stripe_limit(lambda: deps.charge(card)))

or as ``async with stripe_limit: ...``.

A call may weigh more than one request: ``await limiter(fn, cost=3)`` (or
``await limiter.acquire(3)``) takes 3 of the ``max_requests`` units, for token or
quota budgets.  ``max_waiters`` bounds the queue: a call that would wait behind that
many is refused at once with `LimiterQueueFullError`.

With ``redis=`` the limiter is shared through Redis; when Redis cannot be reached
a call gets ``Err(SharedStateUnavailableError)`` (or, with
``on_unavailable="allow"``, goes through unlimited).
"""

from __future__ import annotations

import collections
import math
import uuid
from collections.abc import Awaitable, Callable
from inspect import isawaitable
from itertools import repeat
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import anyio

from ._clock import Clock, SystemClock
from ._errors import LimiterQueueFullError, RateLimitExceededError, SharedStateUnavailableError
from ._result import Err, Ok, Result, _ok
from ._run import logger
from ._thunk import call_thunk

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["OnUnavailable", "RateLimiter", "RedisRateLimiter", "create_rate_limiter"]

_T = TypeVar("_T")
_E = TypeVar("_E")

OnUnavailable = Literal["error", "allow"]
"""What a Redis-shared limiter or breaker does when Redis cannot be reached:
``"error"`` refuses the call with `SharedStateUnavailableError`
(fail closed), ``"allow"`` lets it through unguarded and logs a warning (fail open)."""

# The longest window or reset timeout the Redis scripts take: their times are
# microseconds in Lua numbers (doubles), exact up to 2**53, and replies are 64-bit.
MAX_SHARED_SECONDS = 100 * 365 * 24 * 3600.0


def check_on_unavailable(value: object) -> OnUnavailable:
    """``value`` if it is ``"error"`` or ``"allow"``; raises ``ValueError`` otherwise."""
    if value == "error":
        return "error"
    if value == "allow":
        return "allow"
    raise ValueError(f'on_unavailable must be "error" or "allow", not {value!r}')


def check_shared_seconds(label: str, value: float) -> None:
    """Raise ``ValueError`` if ``value`` seconds is beyond what the Redis scripts hold."""
    if value > MAX_SHARED_SECONDS:
        raise ValueError(
            f"{label} must be at most {MAX_SHARED_SECONDS:.0f} seconds (100 years)"
            f" when shared through Redis, not {value!r}"
        )


class _Waiter:
    __slots__ = ("cost", "event")

    def __init__(self, cost: int) -> None:
        self.event = anyio.Event()
        self.cost = cost


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
        max_waiters: int | None = None,
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
        if max_waiters is not None and (
            isinstance(max_waiters, bool) or not isinstance(max_waiters, int) or max_waiters < 0
        ):
            raise ValueError(
                f"max_waiters must be an integer >= 0 (0: never wait) or None, not {max_waiters!r}"
            )
        self.name = name
        self.max_waiters = max_waiters
        self.max_requests = max_requests
        self.window = float(window)
        self.max_wait = None if max_wait is None else float(max_wait)
        self.max_concurrent = max_concurrent
        self._clock = clock if clock is not None else SystemClock()
        self._slots: anyio.Semaphore | None = None
        self.admitted_total: int = 0
        self.rejected_total: int = 0

    async def acquire(self, cost: int = 1) -> None:
        raise NotImplementedError

    def _check_cost(self, cost: object) -> int:
        """``cost`` if it is a whole number of units this limiter can ever admit."""
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise ValueError(f"cost must be a positive integer, not {cost!r}")
        if cost > self.max_requests:
            raise ValueError(
                f"cost={cost} is more than rate limiter {self.name!r} ever admits in one"
                f" window (max_requests={self.max_requests}): the call could never run"
            )
        return cost

    def _queue_full(self, waiting: int, wait: float) -> LimiterQueueFullError | None:
        """The refusal for a caller that would wait ``wait`` seconds behind ``waiting``
        others, if ``max_waiters`` forbids it."""
        if self.max_waiters is None or waiting < self.max_waiters:
            return None
        self.rejected_total += 1
        return LimiterQueueFullError(self.name, _round_up(wait), self.max_waiters)

    async def _acquire_and_call(self, fn: Callable[[], Any], cost: int = 1) -> Result[Any, Any]:
        """The general path of ``__call__``: a free place, then a turn, then ``fn``."""
        if self.max_concurrent is None:
            try:
                await self.acquire(cost)
            except (RateLimitExceededError, SharedStateUnavailableError) as exc:
                return Err(exc)
            return await call_thunk(fn)
        async with self._concurrency():
            try:
                await self.acquire(cost)
            except (RateLimitExceededError, SharedStateUnavailableError) as exc:
                return Err(exc)
            return await call_thunk(fn)

    @overload
    async def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[[], Awaitable[Result[_T, _E]]], *, cost: int = 1
    ) -> Result[_T, _E | RateLimitExceededError | SharedStateUnavailableError]: ...
    @overload
    async def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[[], Result[_T, _E]], *, cost: int = 1
    ) -> Result[_T, _E | RateLimitExceededError | SharedStateUnavailableError]: ...
    @overload
    async def __call__(
        self, fn: Callable[[], Awaitable[_T]], *, cost: int = 1
    ) -> Result[_T, RateLimitExceededError | SharedStateUnavailableError]: ...
    @overload
    async def __call__(
        self, fn: Callable[[], _T], *, cost: int = 1
    ) -> Result[_T, RateLimitExceededError | SharedStateUnavailableError]: ...
    async def __call__(self, fn: Callable[[], Any], *, cost: int = 1) -> Result[Any, Any]:
        """Run ``fn`` in its turn, taking ``cost`` units, and return its Result, or
        ``Err(RateLimitExceededError)`` when the wait would exceed ``max_wait``
        (``Err(LimiterQueueFullError)`` when ``max_waiters`` are already waiting).
        Raises ``ValueError`` for a ``cost`` that is not an integer in
        ``1..max_requests``."""
        return await self._acquire_and_call(fn, self._check_cost(cost))

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

    A call with ``cost=n`` takes ``n`` units of ``max_requests`` at once, in its
    turn (a heavy call at the head is not overtaken by lighter ones behind it).
    ``max_waiters`` bounds the queue: a call that would have to wait while that
    many are waiting gets ``Err(LimiterQueueFullError)`` at once (``0``: never
    wait); callers waiting for a ``max_concurrent`` place are not counted.  The
    limiter keeps one timestamp per unit of ``max_requests``.
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
        max_waiters: int | None = None,
    ) -> None:
        super().__init__(name, max_requests, window, max_wait, max_concurrent, clock, max_waiters)
        # The last max_requests admission times (monotonic), oldest first: a call of
        # cost n is n entries.
        self._admitted: collections.deque[float] = collections.deque(maxlen=max_requests)
        self._queue: collections.deque[_Waiter] = collections.deque()
        self._queued_units = 0  # the costs of the callers in the queue

    def __repr__(self) -> str:
        return (
            f"RateLimiter({self.name!r}, max_requests={self.max_requests}, window={self.window:g})"
        )

    # ---- admission -------------------------------------------------------------------

    def _free_at(self, now: float, cost: int = 1) -> float:
        """When ``cost`` slots are free (``now`` if they are)."""
        oldest = len(self._admitted) + cost - self.max_requests - 1
        if oldest < 0:
            return now
        # The admission that must leave the window for cost slots to be free.
        return max(now, self._admitted[oldest] + self.window)

    def _admit(self, now: float, cost: int = 1) -> None:
        if cost == 1:
            self._admitted.append(now)
        else:
            self._admitted.extend(repeat(now, cost))
        self.admitted_total += 1

    def _expected_wait(self, now: float, cost: int = 1) -> float:
        """Seconds until a caller of ``cost`` arriving now would be admitted, if nobody
        ahead leaves.

        With unit costs, admission ``j`` (counting from the next one) happens at
        ``max(now + q * window, e[r] + (q + 1) * window)`` with ``j = q * M + r`` and
        ``e`` the last ``M`` admissions, padded at the front: O(1) whatever the queue.
        With heavier calls queued the queue is played forward (O(queue + M)).
        """
        if cost != 1 or self._queued_units != len(self._queue):
            return self._played_wait(now, cost)
        ahead = len(self._queue)
        q, r = divmod(ahead, self.max_requests)
        missing = self.max_requests - len(self._admitted)
        earliest = now + q * self.window
        if r < missing:
            return earliest - now
        return max(earliest, self._admitted[r - missing] + (q + 1) * self.window) - now

    def _played_wait(self, now: float, cost: int) -> float:
        """`_expected_wait` by admitting the queue, then this caller, on a copy."""
        admitted = collections.deque(self._admitted, maxlen=self.max_requests)
        at = now
        for units in [*(waiter.cost for waiter in self._queue), cost]:
            oldest = len(admitted) + units - self.max_requests - 1
            if oldest >= 0:
                at = max(at, admitted[oldest] + self.window)
            admitted.extend([at] * units)
        return at - now

    async def acquire(self, cost: int = 1) -> None:
        """Wait for this caller's turn and take ``cost`` slots (default 1).

        Raises `RateLimitExceededError` if the wait would exceed ``max_wait``,
        `LimiterQueueFullError` (a subclass) if ``max_waiters`` callers are
        already waiting (nothing is taken either way), and ``ValueError`` for a
        ``cost`` outside ``1..max_requests``.  When the slots are free and nobody
        waits it returns at once, without a checkpoint (so a slot once taken is
        used).  Cancellation: a caller cancelled while waiting takes nothing.
        """
        if type(cost) is not int or cost != 1:
            cost = self._check_cost(cost)
        now = self._clock.monotonic()
        if not self._queue and self._free_at(now, cost) <= now:
            self._admit(now, cost)  # the fast path: no lock, no queue, no await
            return
        if self.max_wait is not None or (
            self.max_waiters is not None and len(self._queue) >= self.max_waiters
        ):
            # (the expected wait is worked out only when it decides or is reported)
            wait = self._expected_wait(now, cost)
            if self.max_wait is not None and wait > self.max_wait:
                self.rejected_total += 1
                raise RateLimitExceededError(self.name, _round_up(wait))
            full = self._queue_full(len(self._queue), wait)
            if full is not None:
                raise full
        waiter = _Waiter(cost)
        self._queue.append(waiter)
        self._queued_units += cost
        try:
            if self._queue[0] is not waiter:
                await waiter.event.wait()
            # At the head of the queue: wait for the slots to be free, then take them.
            while True:
                now = self._clock.monotonic()
                free_at = self._free_at(now, cost)
                if free_at <= now:
                    break
                await self._clock.sleep(free_at - now)
            self._admit(self._clock.monotonic(), cost)
        finally:
            # Admitted or cancelled, this caller leaves and the next one moves up.
            head = self._queue[0] is waiter
            self._queue.remove(waiter)
            self._queued_units -= cost
            if head and self._queue:
                self._queue[0].event.set()

    @overload
    async def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[[], Awaitable[Result[_T, _E]]], *, cost: int = 1
    ) -> Result[_T, _E | RateLimitExceededError]: ...
    @overload
    async def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[[], Result[_T, _E]], *, cost: int = 1
    ) -> Result[_T, _E | RateLimitExceededError]: ...
    @overload
    async def __call__(
        self, fn: Callable[[], Awaitable[_T]], *, cost: int = 1
    ) -> Result[_T, RateLimitExceededError]: ...
    @overload
    async def __call__(
        self, fn: Callable[[], _T], *, cost: int = 1
    ) -> Result[_T, RateLimitExceededError]: ...
    async def __call__(self, fn: Callable[[], Any], *, cost: int = 1) -> Result[Any, Any]:
        """Run ``fn`` in its turn, taking ``cost`` units, and return its Result, or
        ``Err(RateLimitExceededError)`` when the wait would exceed ``max_wait``
        (``Err(LimiterQueueFullError)`` when ``max_waiters`` are already waiting).
        Raises ``ValueError`` for a ``cost`` that is not an integer in
        ``1..max_requests``."""
        if cost.__class__ is not int or not 0 < cost <= self.max_requests:
            self._check_cost(cost)  # raises ValueError
        admitted = self._admitted
        if self.max_concurrent is None and not self._queue:
            now = self._clock.monotonic()
            # The admission that must have left the window for cost slots to be free.
            oldest = len(admitted) + cost - self.max_requests - 1
            if oldest < 0 or now - admitted[oldest] >= self.window:
                # The fast path: free slots and nobody waiting.
                if cost == 1:
                    admitted.append(now)
                else:
                    admitted.extend(repeat(now, cost))
                self.admitted_total += 1
                out = fn()
                if out.__class__ is CoroutineType or isawaitable(out):
                    out = await out
                return out if out.__class__ is Ok or out.__class__ is Err else _ok(out)
        return await self._acquire_and_call(fn, cost)

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
            "waiting_cost": self._queued_units,
            "max_waiters": self.max_waiters,
            "next_free_in": self._free_at(now) - now,
        }


# KEYS: the sorted set of admissions.  ARGV: max_requests, window (µs), a unique member,
# cost (a call of cost n is n members: the unique one, then it suffixed ":2".. ":n").
# Returns {1, 0, now} when admitted, {0, wait_us, now} when the caller must wait.
# Times are the Redis server's (TIME), so every process shares one clock.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[4] or '1')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count + cost <= tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  for k = 2, cost do redis.call('ZADD', KEYS[1], now, ARGV[3] .. ':' .. k) end
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
  return {1, 0, now}
end
local i = count + cost - tonumber(ARGV[1]) - 1
local oldest = redis.call('ZRANGE', KEYS[1], i, i, 'WITHSCORES')
return {0, tonumber(oldest[2]) + window - now, now}
"""


class RedisRateLimiter(_Limiter):
    """A rate limiter shared by every process using the same Redis key: together they
    admit at most ``max_requests`` calls per ``window`` (by the Redis server's clock).

    Same interface as `RateLimiter`.  Each admission is one Lua script
    call; a caller that must wait sleeps until the oldest admission leaves the
    window and asks again, so callers are not served in strict arrival order
    across processes.  ``max_wait`` counts the time waited so far plus the next
    wait.  ``last_admitted_at`` is the server time (µs) of this limiter's last
    admission.

    When Redis cannot be reached (down, unreachable, refusing the login,
    answering an error), ``await limiter(fn)`` returns
    ``Err(SharedStateUnavailableError(name, reason))`` without calling ``fn`` and
    ``async with limiter`` raises it; with ``on_unavailable="allow"`` the call is
    admitted unlimited instead, and a warning is logged when Redis is first
    missed (``unavailable_total`` counts such calls either way).  The error's
    text names the Redis with its password masked.  ``window`` is at most 100
    years here.
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
        on_unavailable: OnUnavailable = "error",
        max_waiters: int | None = None,
    ) -> None:
        from ._redis_client import SharedRedis

        super().__init__(name, max_requests, window, max_wait, max_concurrent, clock, max_waiters)
        check_shared_seconds("window", self.window)
        self.on_unavailable = check_on_unavailable(on_unavailable)
        self.key = f"{key_prefix}{name}"
        self._redis = SharedRedis(redis, f"RedisRateLimiter({name!r})")
        self.last_admitted_at = 0
        self.unavailable_total = 0
        self._missing = False  # whether the last call found Redis unavailable
        self._waiting = 0  # this process's callers sleeping until the window has room

    def __repr__(self) -> str:
        return (
            f"RedisRateLimiter({self.name!r}, max_requests={self.max_requests},"
            f" window={self.window:g}, redis={self._redis.where!r})"
        )

    async def acquire(self, cost: int = 1) -> None:
        """Wait until the shared window has room for ``cost`` units (default 1), and
        take them.

        Raises `RateLimitExceededError` when waiting would exceed
        ``max_wait``, `LimiterQueueFullError` when ``max_waiters`` of this
        process's callers are already waiting (the bound is per process),
        `SharedStateUnavailableError` when Redis cannot be reached (unless
        ``on_unavailable="allow"``, which returns at once), and ``ValueError`` for
        a ``cost`` outside ``1..max_requests``.
        Cancellation: a caller cancelled while waiting takes no further slot (one
        already granted by the server stays counted until it leaves the window).
        """
        from ._redis_client import unavailable_errors

        if type(cost) is not int or cost != 1:
            cost = self._check_cost(cost)
        waited = 0.0
        window_us = int(self.window * 1_000_000)
        while True:
            try:
                admitted, wait_us, now = await self._redis.run(
                    _ADMIT,
                    [self.key],
                    [self.max_requests, window_us, uuid.uuid4().hex, cost],
                )
            except unavailable_errors() as exc:
                if self._unavailable(exc):
                    return
                raise SharedStateUnavailableError(
                    self.name, self._redis.describe_failure(exc)
                ) from None
            if self._missing:
                self._missing = False
                logger.warning("rate limiter %r: Redis is answering again", self.name)
            if admitted:
                self.admitted_total += 1
                self.last_admitted_at = int(now)
                return
            wait = max(int(wait_us), 1) / 1_000_000
            if self.max_wait is not None and waited + wait > self.max_wait:
                self.rejected_total += 1
                raise RateLimitExceededError(self.name, _round_up(wait))
            if not waited:  # joining the waiters (a caller already waiting stays)
                full = self._queue_full(self._waiting, wait)
                if full is not None:
                    raise full
            self._waiting += 1
            try:
                await self._clock.sleep(wait)
            finally:
                self._waiting -= 1
            waited += wait

    def _unavailable(self, exc: BaseException) -> bool:
        """Count a call that found Redis unavailable; whether to let it through."""
        self.unavailable_total += 1
        first, self._missing = not self._missing, True
        if self.on_unavailable == "allow":
            if first:
                logger.warning(
                    "rate limiter %r: %s; letting calls through unlimited"
                    ' (on_unavailable="allow") until it answers',
                    self.name,
                    self._redis.describe_failure(exc),
                )
            self.admitted_total += 1
            return True
        self.rejected_total += 1
        return False

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
            "unavailable": self.unavailable_total,
            "waiting": self._waiting,
            "max_waiters": self.max_waiters,
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
    max_waiters: int | None = None,
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
    max_waiters: int | None = None,
    redis: Any,
    key_prefix: str = "awaitly:ratelimit:",
    on_unavailable: OnUnavailable = "error",
) -> RedisRateLimiter: ...
def create_rate_limiter(
    name: str,
    *,
    max_requests: int,
    window: float,
    max_wait: float | None = None,
    max_concurrent: int | None = None,
    clock: Clock | None = None,
    max_waiters: int | None = None,
    redis: Any = None,
    key_prefix: str = "awaitly:ratelimit:",
    on_unavailable: OnUnavailable = "error",
) -> RateLimiter | RedisRateLimiter:
    """A limiter admitting ``max_requests`` calls (or units of ``cost``) per ``window``
    seconds, with at most ``max_waiters`` waiting if given: in this process,
    or, with ``redis=`` (a URL or a ``redis.asyncio.Redis``), across every process
    sharing the limiter's name on that Redis.

    ``on_unavailable`` (shared limiters only) says what a call does when Redis
    cannot be reached: ``"error"`` (the default) refuses it with
    `SharedStateUnavailableError`, ``"allow"`` lets it through.
    Raises ``ValueError`` for invalid settings (secrets in a URL are masked).
    """
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
            on_unavailable=on_unavailable,
            max_waiters=max_waiters,
        )
    return RateLimiter(
        name,
        max_requests=max_requests,
        window=window,
        max_wait=max_wait,
        max_concurrent=max_concurrent,
        clock=clock,
        max_waiters=max_waiters,
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
