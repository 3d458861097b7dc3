"""Circuit breaking for unreliable dependencies.

``create_circuit_breaker("payment-service", failure_threshold=5, reset_timeout=30,
half_open_requests=3)``: after 5 failures in a row the circuit **opens** and
calls are refused at once with ``Err(CircuitOpenError(name, retry_after))``;
after 30 seconds it goes **half-open** and lets 3 trial calls through; if they
all succeed it **closes**, and one failure opens it again.  With
``failure_rate=0.5, window=60, min_calls=10`` it opens instead (or as well) when
at least half of the calls of the last minute failed, once there were 10.
``reset()`` and ``force_open()`` change the state by hand; ``stats()`` returns a
typed `BreakerStats`.

With ``redis=`` the breaker is shared through Redis; when Redis cannot be reached
a call gets ``Err(SharedStateUnavailableError)`` (or, with
``on_unavailable="allow"``, goes through unguarded).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable
from inspect import isawaitable
from types import CoroutineType
from typing import Any, TypeVar, overload

import anyio
import attrs

from . import _loops
from ._clock import Clock, SystemClock
from ._errors import CircuitOpenError, SharedStateUnavailableError
from ._ratelimit import OnUnavailable, check_on_unavailable, check_shared_seconds
from ._result import Err, Ok, Result, _ok
from ._run import logger
from ._thunk import call_thunk
from .events import CircuitStateChange

__all__ = [
    "BreakerStats",
    "CircuitBreaker",
    "CircuitState",
    "RedisCircuitBreaker",
    "create_circuit_breaker",
]

_T = TypeVar("_T")
_E = TypeVar("_E")


class CircuitState(str, enum.Enum):
    """A breaker's state; its value is the name used in JSON (``"CLOSED"``...)."""

    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"

    def __str__(self) -> str:
        return self.value


Listener = Callable[[CircuitStateChange], object]


@attrs.frozen
class BreakerStats:
    """A breaker's state and counters at one moment (`CircuitBreaker.stats`).

    ``consecutive_failures`` counts failures in a row while closed;
    ``window_calls`` / ``window_failures`` / ``failure_rate`` describe the
    failure-rate window (all 0 without ``failure_rate=``).  ``calls``,
    ``successes``, ``failures`` and ``rejected`` are totals since the breaker was
    made (``calls`` includes those still running).  ``opened_at`` is the
    wall-clock time (epoch seconds, from the breaker's clock) the circuit last
    opened, ``None`` while closed; ``retry_after`` the seconds until it lets a
    trial call through (0 unless open); ``forced`` whether `force_open`
    holds it open.  For a Redis-shared breaker ``stats()`` is this process's view
    (its own counters and the state it saw last); ``await fetch_stats()`` reads the
    shared state and failure-rate window from Redis.
    """

    name: str
    state: CircuitState
    forced: bool
    consecutive_failures: int
    window_calls: int
    window_failures: int
    failure_rate: float
    calls: int
    successes: int
    failures: int
    rejected: int
    opened_at: float | None
    retry_after: float

    def as_dict(self) -> dict[str, Any]:
        """The same, ready for JSON (``state`` as its name, ``"CLOSED"``...)."""
        out = attrs.asdict(self)
        out["state"] = self.state.value
        return out


_BUCKETS = 10  # the failure-rate window is counted in tenths


class _RateWindow:
    """Calls and failures of the last ``window`` seconds, in ``_BUCKETS`` buckets
    (so the window really covers between 9/10 of ``window`` and ``window``): fixed
    memory, and O(1) per call with running totals, whatever the call rate."""

    __slots__ = ("calls", "failures", "head", "total_calls", "total_failures", "width")

    def __init__(self, window: float) -> None:
        self.width = window / _BUCKETS
        self.calls = [0] * _BUCKETS
        self.failures = [0] * _BUCKETS
        self.head = -1  # the number of the newest bucket (time // width)
        self.total_calls = 0
        self.total_failures = 0

    def _advance(self, now: float) -> int:
        """Move the window to ``now``: empty the buckets that left it."""
        i = int(now // self.width)
        head = self.head
        if i > head:
            if i - head >= _BUCKETS:
                self.clear()
            else:
                calls, failures = self.calls, self.failures
                for number in range(head + 1, i + 1):
                    slot = number % _BUCKETS
                    self.total_calls -= calls[slot]
                    self.total_failures -= failures[slot]
                    calls[slot] = failures[slot] = 0
            self.head = i
        return i

    def record(self, now: float, failed: bool) -> None:
        slot = self._advance(now) % _BUCKETS
        self.calls[slot] += 1
        self.total_calls += 1
        if failed:
            self.failures[slot] += 1
            self.total_failures += 1

    def totals(self, now: float) -> tuple[int, int]:
        self._advance(now)
        return self.total_calls, self.total_failures

    def clear(self) -> None:
        self.calls = [0] * _BUCKETS
        self.failures = [0] * _BUCKETS
        self.total_calls = self.total_failures = 0


def _check_rate_settings(
    failure_threshold: int | None,
    failure_rate: float | None,
    window: float | None,
    min_calls: int | None,
) -> int:
    """Validate the opening rules; returns ``min_calls`` with its default."""
    if failure_threshold is None and failure_rate is None:
        raise ValueError(
            "a circuit breaker needs failure_threshold (failures in a row), failure_rate"
            " (with window), or both"
        )
    if failure_threshold is not None:
        _check_count("failure_threshold", failure_threshold, " or None")
    if failure_rate is None:
        for label, value in (("window", window), ("min_calls", min_calls)):
            if value is not None:
                raise ValueError(f"{label}= only applies with failure_rate=, which is not set")
        return 0
    if (
        isinstance(failure_rate, bool)
        or not isinstance(failure_rate, (int, float))
        or not 0 < failure_rate <= 1
    ):
        raise ValueError(
            f"failure_rate must be a fraction of calls, 0 < rate <= 1, not {failure_rate!r}"
        )
    if window is None:
        raise ValueError("failure_rate= needs window= (the seconds the rate is measured over)")
    if (
        isinstance(window, bool)
        or not isinstance(window, (int, float))
        or not math.isfinite(window)
        or window <= 0
    ):
        raise ValueError(f"window must be a positive number of seconds, not {window!r}")
    if min_calls is None:
        return 10
    _check_count("min_calls", min_calls)
    return min_calls


def _check_count(label: str, value: object, or_else: str = "") -> None:
    """``ValueError`` naming ``label`` unless ``value`` is an integer >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{label} must be a positive integer{or_else}, not {value!r}")


class CircuitBreaker:
    """Stops calling a dependency that keeps failing, and tries it again later.

    ``await breaker(fn)`` calls ``fn`` (a value, a Result or an awaitable of
    either) and returns its Result; while the circuit is open it returns
    ``Err(CircuitOpenError(name, retry_after))`` without calling ``fn``.  A
    failure is an exception (re-raised after counting), an ``Err`` result, or
    whatever ``is_failure(error)`` says (it sees the exception or the ``Err``'s
    error; return ``False`` for errors that say nothing about the dependency's
    health, such as a declined card).  Cancellation is never a failure.

    The circuit opens after ``failure_threshold`` failures in a row, or (with
    ``failure_rate``) when at least that fraction of the calls finished in the
    last ``window`` seconds failed, once there were ``min_calls`` of them
    (default 10); with both, whichever comes first.  ``reset()`` closes it and
    ``force_open()`` holds it open, by hand.

    Half-open, at most ``half_open_requests`` trial calls run at once; other
    calls are refused as if open (``retry_after`` 0).  State changes go to the
    ``listeners`` as `CircuitStateChange` events.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int | None = None,
        reset_timeout: float,
        half_open_requests: int = 1,
        is_failure: Callable[[Any], bool] | None = None,
        listeners: list[Listener] | None = None,
        clock: Clock | None = None,
        failure_rate: float | None = None,
        window: float | None = None,
        min_calls: int | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a circuit breaker needs a non-empty name, not {name!r}")
        min_calls = _check_rate_settings(failure_threshold, failure_rate, window, min_calls)
        _check_count("half_open_requests", half_open_requests)
        if (
            isinstance(reset_timeout, bool)
            or not isinstance(reset_timeout, (int, float))
            or not math.isfinite(reset_timeout)
            or reset_timeout < 0
        ):
            raise ValueError(
                f"reset_timeout must be a number of seconds >= 0, not {reset_timeout!r}"
            )
        if is_failure is not None and not callable(is_failure):
            raise TypeError(f"is_failure must be callable, not {is_failure!r}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.failure_rate = None if failure_rate is None else float(failure_rate)
        self.window = None if window is None else float(window)
        self.min_calls = min_calls
        self.reset_timeout = float(reset_timeout)
        self.half_open_requests = half_open_requests
        self._is_failure = is_failure
        self._listeners: list[Listener] = list(listeners or [])
        self._clock = clock if clock is not None else SystemClock()
        self._state = CircuitState.CLOSED
        # (without a threshold the consecutive count never reaches it)
        self._threshold = failure_threshold if failure_threshold is not None else math.inf
        self._failures = 0  # consecutive, while closed
        self._rate_window = None if self.window is None else _RateWindow(self.window)
        self._rate = self.failure_rate or 0.0  # (used only with the window)
        self._forced = False  # held open by force_open() until reset()
        self._opened_at = 0.0
        self._opened_at_wall: float | None = None
        self._trials = 0  # trial calls in flight, while half-open
        self._trial_successes = 0
        self.calls: int = 0
        self.failures_total: int = 0
        self.successes_total: int = 0
        self.rejected_total: int = 0

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self._state.value})"

    @property
    def state(self) -> CircuitState:
        """The state now (an open circuit whose reset timeout passed reads ``HALF_OPEN``)."""
        self._maybe_half_open(self._clock.monotonic())
        return self._state

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` on every state change."""
        self._listeners.append(listener)

    def stats(self) -> BreakerStats:
        """The state and counters now, as a frozen `BreakerStats`
        (``.as_dict()`` for JSON)."""
        state = self.state
        now = self._clock.monotonic()
        calls, failures = (0, 0) if self._rate_window is None else self._rate_window.totals(now)
        return BreakerStats(
            name=self.name,
            state=state,
            forced=self._forced,
            consecutive_failures=self._failures,
            window_calls=calls,
            window_failures=failures,
            failure_rate=failures / calls if calls else 0.0,
            calls=self.calls,
            successes=self.successes_total,
            failures=self.failures_total,
            rejected=self.rejected_total,
            opened_at=None if state is CircuitState.CLOSED else self._opened_at_wall,
            retry_after=self._retry_after(now) if state is CircuitState.OPEN else 0.0,
        )

    # ---- manual control ----------------------------------------------------------------

    async def reset(self) -> None:
        """Close the circuit now and forget the failures counted so far (also ends a
        `force_open`).  Listeners hear the change.  Calls still running when it
        happens are not counted against the new state.  No checkpoint: it does not
        wait, and cannot be cancelled half-way."""
        self._forced = False
        self._failures = 0
        self._trials = 0
        self._trial_successes = 0
        if self._rate_window is not None:
            self._rate_window.clear()
        self._move(CircuitState.CLOSED)

    async def force_open(self) -> None:
        """Open the circuit now and hold it open, refusing every call, until `reset`
        (no half-open trials meanwhile: for maintenance or an incident).  Refused
        calls get ``CircuitOpenError`` with ``retry_after`` = ``reset_timeout`` (a
        hint; the breaker does not know when it will be reset).  No checkpoint."""
        self._forced = True
        self._open(self._clock.monotonic())

    # ---- transitions -----------------------------------------------------------------

    def _move(self, state: CircuitState) -> None:
        previous, self._state = self._state, state
        if previous is state:
            return
        event = CircuitStateChange(
            name=self.name, previous=previous.value, state=state.value, ts=self._clock.time()
        )
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("circuit breaker %r: a state listener failed", self.name)

    def _maybe_half_open(self, now: float) -> None:
        if (
            self._state is CircuitState.OPEN
            and not self._forced
            and now - self._opened_at >= self.reset_timeout
        ):
            self._trials = 0
            self._trial_successes = 0
            self._move(CircuitState.HALF_OPEN)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._opened_at_wall = self._clock.time()
        self._failures = 0
        if self._rate_window is not None:
            self._rate_window.clear()
        self._move(CircuitState.OPEN)

    def _retry_after(self, now: float) -> float:
        if self._forced:
            return self.reset_timeout
        return max(0.0, self._opened_at + self.reset_timeout - now)

    def _counts_as_failure(self, error: object) -> bool:
        if self._is_failure is None:
            return True
        return bool(self._is_failure(error))

    def _record(self, trial: bool, failed: bool) -> None:
        now = self._clock.monotonic()
        if failed:
            self.failures_total += 1
        else:
            self.successes_total += 1
        if trial:
            self._trials -= 1
            if self._state is not CircuitState.HALF_OPEN:
                return  # another trial already decided
            if failed:
                self._open(now)
            else:
                self._trial_successes += 1
                if self._trial_successes >= self.half_open_requests:
                    self._failures = 0
                    if self._rate_window is not None:
                        self._rate_window.clear()
                    self._move(CircuitState.CLOSED)
            return
        if self._state is not CircuitState.CLOSED:
            return
        if failed:
            self._failures += 1
            if self._failures >= self._threshold:
                self._open(now)
                return
        else:
            self._failures = 0
        window = self._rate_window
        if window is not None:
            window.record(now, failed)
            calls = window.total_calls
            if calls >= self.min_calls and window.total_failures >= self._rate * calls:
                self._open(now)

    # ---- calls -------------------------------------------------------------------------

    @overload
    async def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[[], Awaitable[Result[_T, _E]]]
    ) -> Result[_T, _E | CircuitOpenError]: ...
    @overload
    async def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[[], Result[_T, _E]]
    ) -> Result[_T, _E | CircuitOpenError]: ...
    @overload
    async def __call__(self, fn: Callable[[], Awaitable[_T]]) -> Result[_T, CircuitOpenError]: ...
    @overload
    async def __call__(self, fn: Callable[[], _T]) -> Result[_T, CircuitOpenError]: ...
    async def __call__(self, fn: Callable[[], Any]) -> Result[Any, Any]:
        """Call ``fn`` unless the circuit is open; see the class for what counts."""
        if self._state is CircuitState.CLOSED:
            # The fast path: no clock (unless a failure-rate window counts the call),
            # no bookkeeping beyond the counters.
            self.calls += 1
            try:
                out = fn()
                if out.__class__ is CoroutineType or isawaitable(out):
                    out = await out
            except Exception as exc:
                self._record(False, self._counts_as_failure(exc))
                raise
            if out.__class__ is Err:
                self._record(False, self._counts_as_failure(out.error))
                return out
            window = self._rate_window
            if window is not None:
                # A success in the failure-rate window (_record's closed path, inlined).
                self.successes_total += 1
                self._failures = 0
                now = self._clock.monotonic()
                window.record(now, False)
                calls = window.total_calls
                if calls >= self.min_calls and window.total_failures >= self._rate * calls:
                    self._open(now)
            else:
                self.successes_total += 1
                if self._failures:
                    self._failures = 0
            return out if out.__class__ is Ok else _ok(out)
        return await self._guarded(fn)

    async def _guarded(self, fn: Callable[[], Any]) -> Result[Any, Any]:
        """A call while the circuit is open or half-open."""
        now = self._clock.monotonic()
        self._maybe_half_open(now)
        trial = False
        if self._state is CircuitState.OPEN:
            self.rejected_total += 1
            return Err(CircuitOpenError(self.name, self._retry_after(now)))
        if self._state is CircuitState.HALF_OPEN:
            if self._trials + self._trial_successes >= self.half_open_requests:
                self.rejected_total += 1
                return Err(CircuitOpenError(self.name, 0.0))
            self._trials += 1
            trial = True
        self.calls += 1
        try:
            result = await call_thunk(fn)
        except anyio.get_cancelled_exc_class():
            if trial:
                self._trials -= 1  # the trial did not happen: not a success, not a failure
            raise
        except Exception as exc:
            self._record(trial, self._counts_as_failure(exc))
            raise
        except BaseException:
            if trial:
                self._trials -= 1
            raise
        failed = isinstance(result, Err) and self._counts_as_failure(result.error)
        self._record(trial, failed)
        return result


@overload
def create_circuit_breaker(
    name: str,
    *,
    failure_threshold: int | None = None,
    reset_timeout: float,
    half_open_requests: int = 1,
    is_failure: Callable[[Any], bool] | None = None,
    listeners: list[Listener] | None = None,
    clock: Clock | None = None,
    failure_rate: float | None = None,
    window: float | None = None,
    min_calls: int | None = None,
    redis: None = None,
) -> CircuitBreaker: ...
@overload
def create_circuit_breaker(
    name: str,
    *,
    failure_threshold: int | None = None,
    reset_timeout: float,
    half_open_requests: int = 1,
    is_failure: Callable[[Any], bool] | None = None,
    listeners: list[Listener] | None = None,
    clock: Clock | None = None,
    failure_rate: float | None = None,
    window: float | None = None,
    min_calls: int | None = None,
    redis: Any,
    key_prefix: str = "awaitly:breaker:",
    on_unavailable: OnUnavailable = "error",
) -> RedisCircuitBreaker: ...
def create_circuit_breaker(
    name: str,
    *,
    failure_threshold: int | None = None,
    reset_timeout: float,
    half_open_requests: int = 1,
    is_failure: Callable[[Any], bool] | None = None,
    listeners: list[Listener] | None = None,
    clock: Clock | None = None,
    failure_rate: float | None = None,
    window: float | None = None,
    min_calls: int | None = None,
    redis: Any = None,
    key_prefix: str = "awaitly:breaker:",
    on_unavailable: OnUnavailable = "error",
) -> CircuitBreaker:
    """A breaker that opens after ``failure_threshold`` failures in a row, or when the
    ``failure_rate`` of the last ``window`` seconds' calls is reached (at least
    ``min_calls`` of them, default 10), or either: in this process, or, with
    ``redis=`` (a URL or a ``redis.asyncio.Redis``), shared by every process using
    the breaker's name on that Redis.

    ``on_unavailable`` (shared breakers only) says what a call does when Redis
    cannot be reached: ``"error"`` (the default) refuses it with
    `SharedStateUnavailableError`, ``"allow"`` calls through.
    Raises ``ValueError`` for invalid settings (secrets in a URL are masked).
    """
    if redis is not None:
        return RedisCircuitBreaker(
            name,
            failure_threshold=failure_threshold,
            reset_timeout=reset_timeout,
            redis=redis,
            half_open_requests=half_open_requests,
            is_failure=is_failure,
            listeners=listeners,
            key_prefix=key_prefix,
            clock=clock,
            on_unavailable=on_unavailable,
            failure_rate=failure_rate,
            window=window,
            min_calls=min_calls,
        )
    return CircuitBreaker(
        name,
        failure_threshold=failure_threshold,
        reset_timeout=reset_timeout,
        half_open_requests=half_open_requests,
        is_failure=is_failure,
        listeners=listeners,
        clock=clock,
        failure_rate=failure_rate,
        window=window,
        min_calls=min_calls,
    )


# KEYS: the breaker's hash.  ARGV: reset_timeout (µs), half_open_requests.
# Returns {decision, retry_after_us, previous, state}: decision 1 = call, 2 = call as a
# half-open trial, 0 = refuse.  Times are the Redis server's, shared by every process.
_BEFORE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local f = redis.call('HMGET', KEYS[1], 'state', 'opened_at', 'trials', 'successes', 'forced')
local state = f[1] or 'CLOSED'
local previous = state
if state == 'OPEN' and f[5] == '1' then return {0, tonumber(ARGV[1]), previous, state} end
if state == 'OPEN' and now - tonumber(f[2]) >= tonumber(ARGV[1]) then
  state = 'HALF_OPEN'
  redis.call('HSET', KEYS[1], 'state', state, 'trials', 0, 'successes', 0)
  f[3], f[4] = '0', '0'
end
if state == 'CLOSED' then return {1, 0, previous, state} end
if state == 'OPEN' then
  return {0, tonumber(f[2]) + tonumber(ARGV[1]) - now, previous, state}
end
if tonumber(f[3] or '0') + tonumber(f[4] or '0') >= tonumber(ARGV[2]) then
  return {0, 0, previous, state}
end
redis.call('HINCRBY', KEYS[1], 'trials', 1)
return {2, 0, previous, state}
"""

# The failure-rate window is ten buckets, as in _RateWindow: fields i<k> (the bucket's
# number), c<k> (calls) and f<k> (failures) for k = 0..9.  window_totals(i): the calls
# and failures of the buckets still in the window when bucket number i is the current
# one (the start of _AFTER and _STATS).
_WINDOW_TOTALS = """
local function window_totals(i)
  local calls, failures = 0, 0
  for k = 0, 9 do
    local b = redis.call('HMGET', KEYS[1], 'i' .. k, 'c' .. k, 'f' .. k)
    if tonumber(b[1] or '-1') > i - 10 then
      calls = calls + tonumber(b[2] or '0')
      failures = failures + tonumber(b[3] or '0')
    end
  end
  return calls, failures
end
"""

# KEYS: the hash.  ARGV: trial (0/1), failed (0/1), failure_threshold (0: none),
# half_open_requests, cancelled (0/1), failure_rate (0: none), window (µs), min_calls.
# Returns {previous, state}.
_AFTER = (
    _WINDOW_TOTALS
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local f = redis.call('HMGET', KEYS[1], 'state', 'failures', 'successes')
local state = f[1] or 'CLOSED'
local previous = state
local function clear_window()
  for k = 0, 9 do redis.call('HDEL', KEYS[1], 'i' .. k, 'c' .. k, 'f' .. k) end
end
local function open()
  redis.call('HSET', KEYS[1], 'state', 'OPEN', 'opened_at', now, 'failures', 0)
  clear_window()
  return {previous, 'OPEN'}
end
if ARGV[1] == '1' then
  redis.call('HINCRBY', KEYS[1], 'trials', -1)
  if state ~= 'HALF_OPEN' or ARGV[5] == '1' then return {previous, state} end
  if ARGV[2] == '1' then return open() end
  local successes = redis.call('HINCRBY', KEYS[1], 'successes', 1)
  if successes >= tonumber(ARGV[4]) then
    redis.call('HSET', KEYS[1], 'state', 'CLOSED', 'failures', 0)
    clear_window()
    return {previous, 'CLOSED'}
  end
  return {previous, state}
end
if state ~= 'CLOSED' or ARGV[5] == '1' then return {previous, state} end
if ARGV[2] == '1' then
  local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
  if tonumber(ARGV[3]) > 0 and failures >= tonumber(ARGV[3]) then return open() end
elseif tonumber(f[2] or '0') > 0 then
  redis.call('HSET', KEYS[1], 'failures', 0)
end
local rate = tonumber(ARGV[6])
if rate > 0 then
  local i = math.floor(now / (tonumber(ARGV[7]) / 10))
  local slot = i % 10
  local seen = redis.call('HGET', KEYS[1], 'i' .. slot)
  if tonumber(seen or '-1') ~= i then
    redis.call('HSET', KEYS[1], 'i' .. slot, i, 'c' .. slot, 0, 'f' .. slot, 0)
  end
  redis.call('HINCRBY', KEYS[1], 'c' .. slot, 1)
  if ARGV[2] == '1' then redis.call('HINCRBY', KEYS[1], 'f' .. slot, 1) end
  local calls, failures = window_totals(i)
  if calls >= tonumber(ARGV[8]) and failures >= rate * calls then return open() end
end
return {previous, state}
"""
)

# KEYS: the hash.  ARGV: "reset" or "open".  Returns {previous, state}.  A reset forgets
# everything (counts, window, trials); a forced open holds until the next reset.
_CONTROL = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local previous = redis.call('HGET', KEYS[1], 'state') or 'CLOSED'
redis.call('DEL', KEYS[1])
if ARGV[1] == 'open' then
  redis.call('HSET', KEYS[1], 'state', 'OPEN', 'opened_at', now, 'forced', 1)
  return {previous, 'OPEN'}
end
return {previous, 'CLOSED'}
"""


class RedisCircuitBreaker(CircuitBreaker):
    """A circuit breaker whose state lives in Redis, so every worker of a service sees
    one breaker: failures in one process open it for all.

    The same semantics as `CircuitBreaker`, each transition atomic in one Lua
    script, timed by the Redis server's clock; a call costs two script calls.
    ``state`` is what this process saw last; `fetch_state` asks Redis.
    ``reset_timeout`` is at most 100 years here.

    When Redis cannot be reached (down, unreachable, refusing the login,
    answering an error) before the call, ``await breaker(fn)`` returns
    ``Err(SharedStateUnavailableError(name, reason))`` without calling ``fn``;
    with ``on_unavailable="allow"`` it calls ``fn`` unguarded instead, without
    recording its outcome in Redis (a warning is logged when Redis is first
    missed).  When Redis fails *after* ``fn`` ran,
    ``fn``'s outcome is returned (or its exception raised) as usual and the
    outcome is not counted: a warning is logged.  ``unavailable_total`` counts
    calls that found Redis unavailable.  The error's text names the Redis with
    its password masked.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int | None = None,
        reset_timeout: float,
        redis: Any,
        half_open_requests: int = 1,
        is_failure: Callable[[Any], bool] | None = None,
        listeners: list[Listener] | None = None,
        key_prefix: str = "awaitly:breaker:",
        clock: Clock | None = None,
        on_unavailable: OnUnavailable = "error",
        failure_rate: float | None = None,
        window: float | None = None,
        min_calls: int | None = None,
    ) -> None:
        from ._redis_client import SharedRedis

        super().__init__(
            name,
            failure_threshold=failure_threshold,
            reset_timeout=reset_timeout,
            half_open_requests=half_open_requests,
            is_failure=is_failure,
            listeners=listeners,
            clock=clock,
            failure_rate=failure_rate,
            window=window,
            min_calls=min_calls,
        )
        check_shared_seconds("reset_timeout", self.reset_timeout)
        if self.window is not None:
            check_shared_seconds("window", self.window)
        self.on_unavailable = check_on_unavailable(on_unavailable)
        self.key = f"{key_prefix}{name}"
        self._redis = SharedRedis(redis, f"RedisCircuitBreaker({name!r})")
        self.unavailable_total = 0
        self._missing = False  # whether the last script call found Redis unavailable

    def __repr__(self) -> str:
        return (
            f"RedisCircuitBreaker({self.name!r}, state={self._state.value},"
            f" redis={self._redis.where!r})"
        )

    @property
    def state(self) -> CircuitState:
        """The state this process saw at its last call (see `fetch_state`)."""
        return self._state

    async def fetch_state(self) -> CircuitState:
        """The shared state now (an open breaker past its timeout turns half-open).

        Raises `SharedStateUnavailableError` when Redis cannot be reached
        (whatever ``on_unavailable`` says: there is no call to let through).
        """
        decision = await self._script(_PEEK, [int(self.reset_timeout * 1e6)])
        self._seen(decision[0], decision[1])
        return self._state

    async def fetch_stats(self) -> BreakerStats:
        """`BreakerStats` with the shared part read from Redis: ``state`` (an open
        breaker past its timeout turns half-open, as in `fetch_state`), ``forced``,
        ``consecutive_failures``, the failure-rate window of every process,
        ``opened_at`` and ``retry_after`` by the Redis server's clock.  ``calls``,
        ``successes``, ``failures`` and ``rejected`` stay this process's counts.

        Raises `SharedStateUnavailableError` when Redis cannot be reached.
        """
        reply = await self._script(
            _STATS, [int(self.reset_timeout * 1e6), int((self.window or 0) * 1e6)]
        )
        previous, state, opened_us, forced, failures, calls, failed, retry_us = reply
        self._seen(previous, state)
        self._forced = _text(forced) == "1"
        shared = self._state
        return BreakerStats(
            name=self.name,
            state=shared,
            forced=self._forced,
            consecutive_failures=int(_text(failures)),
            window_calls=int(calls),
            window_failures=int(failed),
            failure_rate=int(failed) / int(calls) if int(calls) else 0.0,
            calls=self.calls,
            successes=self.successes_total,
            failures=self.failures_total,
            rejected=self.rejected_total,
            opened_at=None if shared is CircuitState.CLOSED else int(_text(opened_us)) / 1_000_000,
            retry_after=max(int(retry_us), 0) / 1_000_000 if shared is CircuitState.OPEN else 0.0,
        )

    async def reset(self) -> None:
        """Close the shared circuit now for every process and forget its counts (also
        ends a `force_open`).  Raises `SharedStateUnavailableError` when Redis
        cannot be reached (nothing changed).  Other processes see it at their next
        call; this process's listeners hear the change.  Cancellation: the write is
        one script call; a cancellation before the reply leaves it done or not done."""
        previous, state = await self._script(_CONTROL, ["reset"])
        self._forced = False
        self._seen(previous, state)

    async def force_open(self) -> None:
        """Open the shared circuit now and hold it open for every process until
        `reset` (no half-open trials).  Raises `SharedStateUnavailableError` when
        Redis cannot be reached (nothing changed)."""
        previous, state = await self._script(_CONTROL, ["open"])
        self._forced = True
        self._opened_at_wall = self._clock.time()
        self._seen(previous, state)

    async def _script(self, source: str, args: list[Any]) -> Any:
        """Run one of the breaker's scripts; raises SharedStateUnavailableError."""
        from ._redis_client import unavailable_errors

        try:
            reply = await self._redis.run(source, [self.key], args)
        except unavailable_errors() as exc:
            self.unavailable_total += 1
            if not self._missing:
                self._missing = True
                if self.on_unavailable == "allow":
                    logger.warning(
                        "circuit breaker %r: %s; letting calls through unguarded"
                        ' (on_unavailable="allow") until it answers',
                        self.name,
                        self._redis.describe_failure(exc),
                    )
            raise SharedStateUnavailableError(
                self.name, self._redis.describe_failure(exc)
            ) from None
        if self._missing:
            self._missing = False
            logger.warning("circuit breaker %r: Redis is answering again", self.name)
        return reply

    def _seen(self, previous: object, state: object) -> None:
        """Adopt the shared state, telling listeners if this process changed it."""
        previous, state = _text(previous), _text(state)
        if previous != state:
            self._state = CircuitState(previous)
            if state == CircuitState.OPEN.value:
                self._opened_at_wall = self._clock.time()
            self._move(CircuitState(state))
        else:
            self._state = CircuitState(state)
        if self._state is not CircuitState.OPEN:
            self._forced = False

    # The shared breaker can also answer Err(SharedStateUnavailableError): its error
    # type is wider than the local breaker's, on purpose (hence the override ignore).
    @overload  # type: ignore[override]
    async def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[[], Awaitable[Result[_T, _E]]]
    ) -> Result[_T, _E | CircuitOpenError | SharedStateUnavailableError]: ...
    @overload
    async def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[[], Result[_T, _E]]
    ) -> Result[_T, _E | CircuitOpenError | SharedStateUnavailableError]: ...
    @overload
    async def __call__(
        self, fn: Callable[[], Awaitable[_T]]
    ) -> Result[_T, CircuitOpenError | SharedStateUnavailableError]: ...
    @overload
    async def __call__(
        self, fn: Callable[[], _T]
    ) -> Result[_T, CircuitOpenError | SharedStateUnavailableError]: ...
    async def __call__(  # pyright: ignore[reportIncompatibleMethodOverride]
        self, fn: Callable[[], Any]
    ) -> Result[Any, Any]:
        """Call ``fn`` unless the shared circuit is open.

        Returns ``Err(CircuitOpenError)`` while it is open, and
        ``Err(SharedStateUnavailableError)`` when Redis cannot be reached (with
        ``on_unavailable="error"``), in both cases without calling ``fn``.
        Exceptions from ``fn`` propagate (after counting).  Cancellation: a
        cancelled trial call gives its place back in a short shielded write.
        """
        try:
            decision, retry_us, previous, state = await self._script(
                _BEFORE, [int(self.reset_timeout * 1e6), self.half_open_requests]
            )
        except SharedStateUnavailableError as exc:
            if self.on_unavailable != "allow":
                self.rejected_total += 1
                return Err(exc)
            return await self._unguarded(fn)
        self._seen(previous, state)
        if decision == 0:
            self.rejected_total += 1
            return Err(CircuitOpenError(self.name, max(float(retry_us), 0.0) / 1e6))
        trial = "1" if decision == 2 else "0"
        self.calls += 1
        try:
            result = await call_thunk(fn)
        except Exception as exc:
            await self._after(trial, self._counts_as_failure(exc))
            raise
        except BaseException:
            if trial == "1":
                # Give the trial's place back: a short, bounded write.
                with _loops.current().shielded(5):
                    await self._after(trial, False, cancelled=True)
            raise
        failed = isinstance(result, Err) and self._counts_as_failure(result.error)
        await self._after(trial, failed)
        return result

    async def _unguarded(self, fn: Callable[[], Any]) -> Result[Any, Any]:
        """A call let through while Redis is unavailable (``on_unavailable="allow"``):
        its outcome is counted here only (Redis just failed: not asked again)."""
        self.calls += 1
        try:
            result = await call_thunk(fn)
        except Exception as exc:
            if self._counts_as_failure(exc):
                self.failures_total += 1
            raise
        if isinstance(result, Err) and self._counts_as_failure(result.error):
            self.failures_total += 1
        else:
            self.successes_total += 1
        return result

    async def _after(self, trial: str, failed: bool, *, cancelled: bool = False) -> None:
        """Record the call's outcome in Redis.  If Redis cannot be reached the outcome
        is dropped with a warning (never raised: the call itself has happened)."""
        if failed:
            self.failures_total += 1
        elif not cancelled:
            self.successes_total += 1
        was_missing = self._missing
        try:
            previous, state = await self._script(
                _AFTER,
                [
                    trial,
                    "1" if failed else "0",
                    self.failure_threshold or 0,
                    self.half_open_requests,
                    "1" if cancelled else "0",
                    self.failure_rate or 0,
                    int((self.window or 0) * 1e6),
                    self.min_calls,
                ],
            )
        except SharedStateUnavailableError as exc:
            if not was_missing:  # once per outage, not once per call
                logger.warning(
                    "circuit breaker %r: the outcome of a call was not recorded: %s",
                    self.name,
                    exc.reason,
                )
            return
        self._seen(previous, state)

    async def aclose(self) -> None:
        """Close this breaker's Redis connection."""
        await self._redis.aclose()


def _text(value: object) -> str:
    """A script's reply as text, whether the client decodes replies or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


_PEEK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local f = redis.call('HMGET', KEYS[1], 'state', 'opened_at', 'forced')
local state = f[1] or 'CLOSED'
if state == 'OPEN' and f[3] ~= '1' and now - tonumber(f[2]) >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'state', 'HALF_OPEN', 'trials', 0, 'successes', 0)
  return {state, 'HALF_OPEN'}
end
return {state, state}
"""

# KEYS: the hash.  ARGV: reset_timeout (µs), window (µs, 0: no failure-rate window).
# Returns {previous, state, opened_at (µs), forced, failures, window calls, window failures,
# retry_after (µs)}; an open breaker past its timeout turns half-open, as in _PEEK.
_STATS = (
    _WINDOW_TOTALS
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local f = redis.call('HMGET', KEYS[1], 'state', 'opened_at', 'forced', 'failures')
local state = f[1] or 'CLOSED'
local previous = state
if state == 'OPEN' and f[3] ~= '1' and now - tonumber(f[2]) >= tonumber(ARGV[1]) then
  state = 'HALF_OPEN'
  redis.call('HSET', KEYS[1], 'state', state, 'trials', 0, 'successes', 0)
end
local retry = 0
if state == 'OPEN' then
  if f[3] == '1' then retry = tonumber(ARGV[1])
  else retry = tonumber(f[2]) + tonumber(ARGV[1]) - now end
end
local calls, failures = 0, 0
if tonumber(ARGV[2]) > 0 then
  calls, failures = window_totals(math.floor(now / (tonumber(ARGV[2]) / 10)))
end
return {previous, state, f[2] or '0', f[3] or '0', f[4] or '0', calls, failures, retry}
"""
)
