"""Circuit breaking for unreliable dependencies.

``create_circuit_breaker("payment-service", failure_threshold=5, reset_timeout=30,
half_open_requests=3)``: after 5 failures in a row the circuit **opens** and
calls are refused at once with ``Err(CircuitOpenError(name, retry_after))``;
after 30 seconds it goes **half-open** and lets 3 trial calls through; if they
all succeed it **closes**, and one failure opens it again.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from inspect import isawaitable
from types import CoroutineType
from typing import Any

import anyio

from ._run import logger
from ._thunk import call_thunk
from .clock import Clock, SystemClock
from .errors import CircuitOpenError
from .events import CircuitStateChange
from .result import Err, Ok, Result, _ok

__all__ = ["CircuitBreaker", "CircuitState", "create_circuit_breaker"]


class CircuitState(str, enum.Enum):
    """A breaker's state; its value is the name used in JSON (``"CLOSED"``...)."""

    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"

    def __str__(self) -> str:
        return self.value


Listener = Callable[[CircuitStateChange], object]


class CircuitBreaker:
    """Stops calling a dependency that keeps failing, and tries it again later.

    ``await breaker(fn)`` calls ``fn`` (a value, a Result or an awaitable of
    either) and returns its Result; while the circuit is open it returns
    ``Err(CircuitOpenError(name, retry_after))`` without calling ``fn``.  A
    failure is an exception (re-raised after counting), an ``Err`` result, or
    whatever ``is_failure(error)`` says (it sees the exception or the ``Err``'s
    error; return ``False`` for errors that say nothing about the dependency's
    health, such as a declined card).  Cancellation is never a failure.

    Half-open, at most ``half_open_requests`` trial calls run at once; other
    calls are refused as if open (``retry_after`` 0).  State changes go to the
    ``listeners`` as :class:`~awaitly_anyio.events.CircuitStateChange` events.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        reset_timeout: float,
        half_open_requests: int = 1,
        is_failure: Callable[[Any], bool] | None = None,
        listeners: list[Listener] | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a circuit breaker needs a non-empty name, not {name!r}")
        for label, value in (
            ("failure_threshold", failure_threshold),
            ("half_open_requests", half_open_requests),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be a positive integer, not {value!r}")
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
        self.reset_timeout = float(reset_timeout)
        self.half_open_requests = half_open_requests
        self._is_failure = is_failure
        self._listeners: list[Listener] = list(listeners or [])
        self._clock = clock if clock is not None else SystemClock()
        self._state = CircuitState.CLOSED
        self._failures = 0  # consecutive, while closed
        self._opened_at = 0.0
        self._trials = 0  # trial calls in flight, while half-open
        self._trial_successes = 0
        self.calls = 0
        self.failures_total = 0
        self.rejected_total = 0

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self._state.value})"

    @property
    def state(self) -> CircuitState:
        """The state now (an open circuit whose reset timeout passed reads ``HALF_OPEN``)."""
        self._maybe_half_open(self._clock.monotonic())
        return self._state

    def get_state(self) -> str:
        """The state's name, ``"CLOSED"``, ``"OPEN"`` or ``"HALF_OPEN"``, as the guide uses it."""
        return self.state.value

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` on every state change."""
        self._listeners.append(listener)

    def stats(self) -> dict[str, Any]:
        """State and counters, ready for JSON."""
        state = self.state
        return {
            "name": self.name,
            "state": state.value,
            "consecutive_failures": self._failures,
            "calls": self.calls,
            "failures": self.failures_total,
            "rejected": self.rejected_total,
            "retry_after": self._retry_after(self._clock.monotonic())
            if state is CircuitState.OPEN
            else 0.0,
        }

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
        if self._state is CircuitState.OPEN and now - self._opened_at >= self.reset_timeout:
            self._trials = 0
            self._trial_successes = 0
            self._move(CircuitState.HALF_OPEN)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._failures = 0
        self._move(CircuitState.OPEN)

    def _retry_after(self, now: float) -> float:
        return max(0.0, self._opened_at + self.reset_timeout - now)

    def _counts_as_failure(self, error: object) -> bool:
        if self._is_failure is None:
            return True
        return bool(self._is_failure(error))

    def _record(self, trial: bool, failed: bool) -> None:
        now = self._clock.monotonic()
        if failed:
            self.failures_total += 1
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
                    self._move(CircuitState.CLOSED)
            return
        if self._state is not CircuitState.CLOSED:
            return
        if failed:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open(now)
        else:
            self._failures = 0

    # ---- calls -------------------------------------------------------------------------

    async def __call__(self, fn: Callable[[], Any]) -> Result[Any, Any]:
        """Call ``fn`` unless the circuit is open; see the class for what counts."""
        if self._state is CircuitState.CLOSED:
            # The fast path: no clock, no bookkeeping beyond the counters.
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


def create_circuit_breaker(
    name: str,
    *,
    failure_threshold: int,
    reset_timeout: float,
    half_open_requests: int = 1,
    is_failure: Callable[[Any], bool] | None = None,
    listeners: list[Listener] | None = None,
    clock: Clock | None = None,
) -> CircuitBreaker:
    """A :class:`CircuitBreaker` that opens after ``failure_threshold`` failures in a row."""
    return CircuitBreaker(
        name,
        failure_threshold=failure_threshold,
        reset_timeout=reset_timeout,
        half_open_requests=half_open_requests,
        is_failure=is_failure,
        listeners=listeners,
        clock=clock,
    )
