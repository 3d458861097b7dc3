"""Saga compensation: undo the completed steps of a run that failed, newest first.

A step given ``compensate=fn`` (or ``compensate=Compensation(fn, retry=...)``) pushes
``(name, key, compensation, value)`` onto its run's `Saga` when it completes (or is
replayed from its record).  When the body ends with ``Err`` (or an unexpected error),
`Saga.rollback` runs the compensations newest first, each once, with the value its
step produced, and returns the ``Err`` the run ends with: the original error when
every compensation succeeded, ``Err(CompensationError(original, failures))`` when
some still failed after their retry policy (the rollback goes on with the older
steps after a failure: an undo left out is worse than an undo that failed loudly).

In a durable run the rollback is checkpointed like steps are: first the rollback's
own record (`ROLLBACK_KEY`, holding the original error, or a `StoredException`
stand-in when the error has no stored form), then one record per compensation
(`compensation_key`).  A run recovered mid-rollback sees the first record
(`recorded_rollback`), replays its recorded steps without executing anything new,
and runs only the compensations that have no record yet.

Cancellation: a run cancelled while its body runs does not compensate
(cancellation is not failure; it propagates untouched).  Outside cancellation that
arrives during a rollback lets the compensation that is running finish under a
shield bounded by its ``shield`` seconds (`COMPENSATION_SHIELD_SECONDS` by default)
and records it; then the cancellation propagates, and the remaining compensations
run when the run is resumed.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable, Iterable, Mapping
from inspect import isawaitable
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

import anyio
import attrs

from ._errors import (
    CompensationError,
    CompensationFailure,
    SerializationError,
    StepTimeoutError,
    StoredException,
    UnexpectedError,
)
from ._loops import cancel_due, deliver_cancellation
from ._result import Err, Ok, Result
from ._retry import RetryPolicy
from ._run import EarlyExit
from ._thunk import as_result
from .events import CompensationComplete, CompensationFailed, CompensationStart

if TYPE_CHECKING:
    from ._run import Checkpoint, RunState

__all__ = [
    "COMPENSATION_SHIELD_SECONDS",
    "ROLLBACK_KEY",
    "Compensation",
    "Saga",
    "check_compensate",
    "compensation_key",
    "compensations",
    "is_saga_key",
    "recorded_rollback",
]

T = TypeVar("T", contravariant=True)

ROLLBACK_KEY = "awaitly.rollback"
"""The step key under which a durable run records that its rollback began (its value
is the original error), so that a run recovered mid-rollback finishes the rollback
instead of executing its body again."""

_COMPENSATION_PREFIX = "awaitly.compensate:"

COMPENSATION_SHIELD_SECONDS = 5.0
"""How long, by default, the compensation that is running when outside cancellation
arrives may go on (shielded) to finish and be recorded before it is cut off."""


def compensation_key(step_key: str) -> str:
    """The step key under which the compensation of step ``step_key`` is checkpointed."""
    return _COMPENSATION_PREFIX + step_key


def is_saga_key(key: str) -> bool:
    """Whether ``key`` is one of the rollback's own records (`ROLLBACK_KEY` or a
    `compensation_key`), not a step of the body."""
    return key == ROLLBACK_KEY or key.startswith(_COMPENSATION_PREFIX)


def _check_fn(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not callable(value):
        raise TypeError(
            f"Compensation {attribute.name} must be a callable taking the step's value, "
            f"not {value!r}"
        )


def _check_retry(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, RetryPolicy):
        raise TypeError(f"Compensation {attribute.name} must be a RetryPolicy, not {value!r}")


def _check_shield(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    allowed = f"Compensation {attribute.name} must be a finite number of seconds > 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{allowed}, not {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{allowed}, not {value!r}")


@attrs.frozen
class Compensation(Generic[T]):
    """The compensation of a step, with its own options: ``ctx.step(name, fn,
    compensate=Compensation(undo, retry=RetryPolicy(3)))``.

    ``fn`` takes the step's value and returns a plain value, a Result, or an
    awaitable of either; an ``Err`` or an exception is a failed attempt.  ``retry``
    retries it (its ``timeout`` bounds each attempt; default: one attempt).
    ``shield`` (seconds, default `COMPENSATION_SHIELD_SECONDS`) is how long it may
    still run to its end when outside cancellation arrives while it runs.

    Raises ``TypeError`` for an ``fn`` that is not callable, a ``retry`` that is not
    a `RetryPolicy` or a ``shield`` that is not a number, and ``ValueError`` for a
    ``shield`` that is not a finite number > 0.
    """

    fn: Callable[[T], Any] = attrs.field(validator=_check_fn)
    retry: RetryPolicy | None = attrs.field(default=None, kw_only=True, validator=_check_retry)
    shield: float = attrs.field(
        default=COMPENSATION_SHIELD_SECONDS, kw_only=True, validator=_check_shield
    )


def check_compensate(name: str, compensate: object) -> Callable[[Any], Any] | Compensation[Any]:
    """``compensate`` if it is a `Compensation` or a callable; ``TypeError`` naming the
    step otherwise."""
    if isinstance(compensate, Compensation) or callable(compensate):
        return compensate  # pyright: ignore[reportUnknownVariableType]
    raise TypeError(
        f"step {name!r}: compensate must be a callable taking the step's value "
        f"(or a Compensation), not {compensate!r}"
    )


def recorded_rollback(completed: Mapping[str, Ok[Any]]) -> Err[Any] | None:
    """The ``Err`` whose rollback a durable run had begun, from its recorded steps
    (the original error, or its `StoredException` stand-in), or ``None`` when
    it had not begun one."""
    found = completed.get(ROLLBACK_KEY)
    return None if found is None else Err(found.value)


def compensations(events: Iterable[object]) -> list[str]:
    """The names of the steps whose compensation completed, in the order they ran, from
    a run's events (``compensation_complete``): for tests."""
    return [event.name for event in events if isinstance(event, CompensationComplete)]


Entry: TypeAlias = tuple[str, str | None, Callable[[Any], Any] | Compensation[Any], Any]

# The outcome of one compensation: a failure, or None (it succeeded); `stop` is set when
# the rollback cannot go on (the record could not be written, the lease was lost).
_Outcome = tuple[CompensationFailure | None, bool]


class Saga:
    """One run's compensation stack (made on the first step with ``compensate=``)."""

    __slots__ = ("_keys", "entries")

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self._keys: set[str] = set()

    def push(
        self,
        name: str,
        key: str | None,
        compensate: Callable[[Any], Any] | Compensation[Any],
        value: Any,
    ) -> None:
        """Register the compensation of step ``name`` (record ``key``), to be called with
        ``value`` if the run fails later.  A key pushed twice (a keyed step called
        again, answered from its record) is registered once: the step ran once."""
        if key is not None:
            if key in self._keys:
                return
            self._keys.add(key)
        self.entries.append((name, key, compensate, value))

    async def rollback(self, run: RunState, error: Err[Any]) -> Err[Any]:
        """Run the registered compensations newest first and return the ``Err`` the run
        ends with: ``error`` (or, for a resumed rollback, the recorded original) when
        every compensation succeeded, or ``Err(CompensationError(...))`` carrying it
        and each failure.

        Never raises for a failing compensation.  Outside cancellation propagates:
        before a compensation starts, at once; while one runs, once it has finished
        (shielded for at most its ``shield`` seconds) and been recorded.
        """
        checkpoint = run.checkpoint
        recorded = recorded_rollback(run.completed)
        original = error if recorded is None else recorded
        entries = self.entries
        if recorded is None and checkpoint is not None:
            problem = await _record_rollback(run, checkpoint, original)
            if problem is not None:
                # Without the rollback's record a crash would run the body again after
                # compensating: nothing is compensated, and the run says why.
                failures = tuple(
                    CompensationFailure(name, key, problem.error, 0)
                    for name, key, _, _ in reversed(entries)
                )
                return Err(CompensationError(original.error, failures))
        failures_found: list[CompensationFailure] = []
        pending = list(reversed(entries))
        for index, (name, key, compensate, value) in enumerate(pending):
            if key is not None and compensation_key(key) in run.completed:
                continue  # done before a crash or a cancel: never twice
            if cancel_due():  # the rest run when the run is resumed
                await deliver_cancellation()
            failure, stop = await _compensate(run, checkpoint, name, key, compensate, value)
            if failure is not None:
                failures_found.append(failure)
            if stop:
                assert failure is not None
                failures_found.extend(
                    CompensationFailure(later, later_key, failure.error, 0)
                    for later, later_key, _, _ in pending[index + 1 :]
                    if later_key is None or compensation_key(later_key) not in run.completed
                )
                break
        if failures_found:
            return Err(CompensationError(original.error, tuple(failures_found)))
        return original


async def _record_rollback(
    run: RunState, checkpoint: Checkpoint, error: Err[Any]
) -> Err[Any] | None:
    """Write the rollback's record (the original error); ``None`` once written, else the
    ``Err`` saying why it could not be.  An error with no stored form is recorded as
    a `StoredException` stand-in (its type name and repr)."""
    now = run.clock.time()
    value: object = error.error
    problem = await checkpoint("rollback", ROLLBACK_KEY, Ok(value), 1, now, None)
    if problem is not None and isinstance(problem.error, SerializationError):
        kind = type(value)
        value = StoredException(f"{kind.__module__}.{kind.__qualname__}", _safe_repr(value))
        problem = await checkpoint("rollback", ROLLBACK_KEY, Ok(value), 1, now, None)
    if problem is None:
        run.remember(ROLLBACK_KEY, Ok(value))
    return problem


def _safe_repr(value: object) -> str:
    """``repr(value)``, abridged (as stored errors are), never raising."""
    try:
        return reprlib.repr(value) if len(text := repr(value)) > 1000 else text
    except Exception:
        return f"<{type(value).__qualname__} that cannot be shown>"


async def _compensate(
    run: RunState,
    checkpoint: Checkpoint | None,
    name: str,
    key: str | None,
    compensate: Callable[[Any], Any] | Compensation[Any],
    value: Any,
) -> _Outcome:
    """Run one compensation (its attempts, then its record) under a shield that outside
    cancellation turns into a deadline ``shield`` seconds away; the cancellation then
    propagates once the compensation is finished and recorded (or cut off)."""
    fn: Callable[[Any], Any]
    if isinstance(compensate, Compensation):
        # (isinstance leaves the type argument unknown to pyright)
        options: Compensation[Any] = compensate  # pyright: ignore[reportUnknownVariableType]
        fn, policy, bound = options.fn, options.retry, options.shield
    else:
        fn, policy, bound = compensate, None, COMPENSATION_SHIELD_SECONDS
    emit = run.emit
    clock = run.clock
    started = clock.monotonic()
    if emit is not None:
        emit(
            CompensationStart(
                workflow_id=run.workflow_id,
                workflow_name=run.name,
                ts=clock.time(),
                name=name,
                step_key=key,
            )
        )
    outcome: _Outcome = (None, False)
    attempts = 0
    finished = anyio.Event()
    async with anyio.create_task_group() as watchers:
        with anyio.CancelScope(shield=True) as shield:
            # The watcher is a task of the group, outside the shield: outside
            # cancellation reaches it, and it gives the shielded work `bound` seconds.
            watchers.start_soon(_watch, shield, finished, bound)
            started_at = clock.time()
            result, attempts = await _attempts(run, name, fn, policy, value)
            outcome = await _settle(run, checkpoint, name, key, result, attempts, started_at)
            if emit is not None:
                failure = outcome[0]
                duration_ms = (clock.monotonic() - started) * 1000.0
                if failure is None:
                    emit(
                        CompensationComplete(
                            workflow_id=run.workflow_id,
                            workflow_name=run.name,
                            ts=clock.time(),
                            name=name,
                            step_key=key,
                            duration_ms=duration_ms,
                            attempt=attempts,
                        )
                    )
                else:
                    emit(_failed(run, name, key, failure.error, duration_ms, attempts))
        finished.set()
        if shield.cancelled_caught:
            # Outside cancellation came and the bound ran out: the compensation was cut
            # off, unrecorded (it runs again when the run is resumed).
            error = TimeoutError(
                f"the compensation of step {name!r} was cut off by cancellation "
                f"after its shield of {bound:g}s"
            )
            outcome = (CompensationFailure(name, key, error, attempts), False)
            if emit is not None:
                duration_ms = (clock.monotonic() - started) * 1000.0
                emit(_failed(run, name, key, error, duration_ms, max(attempts, 1)))
    # A cancellation that reached only the watcher (the group swallowed nothing: the
    # watcher re-raised it) has propagated from the group; this is for a loop where the
    # cancellation is still due after the group ended.
    if cancel_due():
        await deliver_cancellation()
    return outcome


async def _watch(shield: anyio.CancelScope, finished: anyio.Event, bound: float) -> None:
    try:
        await finished.wait()
    finally:
        if not finished.is_set():  # outside cancellation: the work has `bound` seconds more
            shield.deadline = min(shield.deadline, anyio.current_time() + bound)


async def _attempts(
    run: RunState,
    name: str,
    fn: Callable[[Any], Any],
    policy: RetryPolicy | None,
    value: Any,
) -> tuple[Result[Any, Any], int]:
    """Call ``fn(value)`` until it succeeds or ``policy`` gives up: the last Result (an
    exception mapped as the workflow maps them) and the number of attempts."""
    attempts = 1 if policy is None else policy.attempts
    timeout = None if policy is None else policy.timeout
    attempt = 0
    while True:
        attempt += 1
        result = await _attempt(run, name, fn, value, timeout)
        if isinstance(result, Ok) or attempt >= attempts:
            return result, attempt
        assert policy is not None
        if policy.retry_on is not None and not policy.retry_on(result.error):
            return result, attempt
        await run.clock.sleep(policy.delay_for(attempt))


async def _attempt(
    run: RunState, name: str, fn: Callable[[Any], Any], value: Any, timeout: float | None
) -> Result[Any, Any]:
    with anyio.move_on_after(math.inf if timeout is None else timeout):
        try:
            out = fn(value)
            if isawaitable(out):
                out = await out
        except EarlyExit as exc:
            # A step inside the compensation ended with Err: the compensation failed.
            if exc.run is not run:
                raise
            return exc.result
        except Exception as exc:
            return Err(_mapped(run, exc))
        return as_result(out)
    # Only the attempt's own deadline lands here: outside cancellation propagates.
    assert timeout is not None
    return Err(StepTimeoutError(name, timeout))


def _mapped(run: RunState, exc: Exception) -> object:
    """``exc`` as the workflow maps foreign exceptions; `UnexpectedError` if its mapper
    fails (the rollback must go on)."""
    try:
        return run.map_exception(exc)
    except Exception:
        return UnexpectedError(exc)


async def _settle(
    run: RunState,
    checkpoint: Checkpoint | None,
    name: str,
    key: str | None,
    result: Result[Any, Any],
    attempts: int,
    started_at: float,
) -> _Outcome:
    """Record a compensation's outcome (a durable run's keyed step only) and say how
    the rollback goes on."""
    if checkpoint is not None and key is not None:
        record = compensation_key(key)
        # The record keeps that it ran, not what it returned (which may have no stored
        # form): None for a success; the failure is recorded for the run's history
        # (an Err record is not replayed: it is retried when the run is resumed).
        stored: Result[Any, Any] = Ok(None) if result.ok else result
        unsaved = await checkpoint(f"compensate {name}", record, stored, attempts, started_at, None)
        if unsaved is not None and result.ok:
            # It ran but its record is not stored: a later resume would repeat it, and
            # the next records would fail the same way.  Stop here and say why.
            return CompensationFailure(name, key, unsaved.error, attempts), True
        if result.ok:
            run.remember(record, Ok(None))
    if isinstance(result, Err):
        return CompensationFailure(name, key, result.error, attempts), False
    return None, False


def _failed(
    run: RunState, name: str, key: str | None, error: object, duration_ms: float, attempt: int
) -> CompensationFailed:
    return CompensationFailed(
        workflow_id=run.workflow_id,
        workflow_name=run.name,
        ts=run.clock.time(),
        name=name,
        step_key=key,
        duration_ms=duration_ms,
        error=error,
        attempt=attempt,
    )
