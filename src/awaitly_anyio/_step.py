"""Steps: the unit of work inside a workflow, and their variants.

``await ctx.step(name, fn)`` calls ``fn()`` (a zero-argument callable returning
a Result, a plain value, or an awaitable of either) and gives back the value.
A step that ends in ``Err`` ends the workflow: ``run`` returns that ``Err``.
An exception raised by ``fn`` becomes ``Err(UnexpectedError(exc))`` (or what
the workflow's ``catch_unexpected`` maps it to).

Cancellation: every step is a cancellation point.  Cancellation from outside
the step (the caller's cancel scope, a shutdown) always propagates and is
never turned into a Result.  Only the step's own timeout, which owns its
deadline, turns its cancellation into ``Err(StepTimeoutError)``.

`StepCore` is the single step; `awaitly_anyio._step_groups.Step` (``ctx.step``) adds
the group variants.  What the run's steps share lives in
its `RunState` (``awaitly_anyio._run``).  The keyword options are declared once,
in ``awaitly_anyio._step_options``; the retry policy in ``awaitly_anyio._retry``.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable
from datetime import timedelta
from inspect import isawaitable
from types import CoroutineType
from typing import Any, TypeVar, overload

import anyio
from typing_extensions import Unpack

from ._checks import check_key, check_seconds
from ._errors import ApprovalRejectedError, StepTimeoutError, UnexpectedError
from ._loops import cancel_due, deliver_cancellation
from ._result import Err, Ok, Result
from ._retry import Backoff, RetryPolicy, check_timeout
from ._run import EarlyExit, Emit, RunState
from ._saga import Saga, check_compensate
from ._step_options import (
    Compensate,
    RetryOptions,
    RetryPolicyOptions,
    StepOptions,
    TryOptions,
)
from ._thunk import as_result
from ._versions import check_user_key, enter_child, enter_scope, leave_child, leave_scope
from ._waits import Approval, DurableWaits, Hook, hook_key, new_hook_token, parked_in
from .events import (
    StepCancelled,
    StepComplete,
    StepFailed,
    StepRetry,
    StepSkipped,
    StepStart,
    StepTimeout,
)

__all__ = ["Backoff", "RetryPolicy", "StepCore"]

T = TypeVar("T")
K = TypeVar("K")
I = TypeVar("I")  # noqa: E741

_RESULTS = (Ok, Err)

# The classes of plain step values seen so far (not Ok, Err or a subclass of either): a
# set lookup tells a plain value from a Result faster than issubclass, which costs a
# plain step a twentieth of its time.  Bounded: past the bound, issubclass each time.
_PLAIN: set[type[Any]] = set()
_PLAIN_BOUND = 1024


def _is_result_class(cls: type[Any]) -> bool:
    if issubclass(cls, _RESULTS):
        return True
    if len(_PLAIN) < _PLAIN_BOUND:
        _PLAIN.add(cls)
    return False


# What an attempt ended with: its Result, and the exception if it raised (kept apart so
# that the error mapper sees the exception only once the step has given up).
AttemptOutcome = tuple[Result[Any, Any], Exception | None]


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a step needs a non-empty string name, not {name!r}")


def _check_fn(name: str, fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"step {name!r}: fn must be a zero-argument callable, not {fn!r}")


def _check_checkpoint(name: str, key: str | None, checkpoint: object) -> None:
    if checkpoint is not False:
        raise TypeError(f"step {name!r}: checkpoint must be True or False, not {checkpoint!r}")
    if key is not None:
        raise ValueError(
            f"step {name!r}: a step with a key is checkpointed (its key names its record); "
            "give it no key, or drop checkpoint=False"
        )


def _check_type(name: str, type: object) -> None:
    raise TypeError(
        f"step {name!r}: type must be a class (the class of the step's value), not {type!r}"
    )


def timed_out(
    run: RunState, name: str, key: str | None, seconds: float, attempt: int = 1
) -> Err[StepTimeoutError]:
    """What a call that ran out of its ``seconds`` gives: a ``step_timeout`` event (if
    anyone listens) and ``Err(StepTimeoutError)``.  The one place every deadline of a
    step (the step's own, ``with_timeout``'s, ``with_fallback``'s, a policy's) reports
    from."""
    emit = run.emit
    if emit is not None:
        emit(
            StepTimeout(
                workflow_id=run.workflow_id,
                workflow_name=run.name,
                ts=run.clock.time(),
                name=name,
                step_key=key,
                seconds=seconds,
                attempt=attempt,
            )
        )
    return Err(StepTimeoutError(name, seconds))


def emit_answered(
    emit: Emit, run: RunState, ts: float, name: str, key: str | None, value: object
) -> None:
    """The events of a step answered without running it (from its record, or from a
    cache): ``step_start`` and ``step_complete`` (``cached``, 0 ms), both at ``ts``."""
    workflow_id, workflow_name = run.workflow_id, run.name
    emit(
        StepStart(
            workflow_id=workflow_id, workflow_name=workflow_name, ts=ts, name=name, step_key=key
        )
    )
    emit(
        StepComplete(
            workflow_id=workflow_id,
            workflow_name=workflow_name,
            ts=ts,
            name=name,
            step_key=key,
            duration_ms=0.0,
            value=value,
            cached=True,
        )
    )


class StepCore:
    """The core of ``ctx.step``: one step, and the variants that are one step
    (``retry``, ``try_``, ``sleep``, ``skip``, the durable waits).  The variants that
    run several children (``all``, ``race``, ``for_each``, ...) and ``with_timeout``
    are added by `awaitly_anyio._step_groups.Step`, the class ``ctx.step`` is.

    Every variant accepts ``key=``: a keyed step whose key already completed
    (earlier in this run, or in the resume state) is not executed again.
    The options each takes are declared once (``StepOptions``, ``TryOptions``,
    ``RetryOptions`` in ``awaitly_anyio._step_options``).
    """

    __slots__ = ("_run",)

    def __init__(self, run: RunState) -> None:
        self._run = run

    def __repr__(self) -> str:
        return f"<Step of workflow {self._run.name!r}>"

    @overload
    async def __call__(
        self,
        name: str,
        fn: Callable[[], Awaitable[Result[T, Any]]],
        **options: Unpack[StepOptions],
    ) -> T: ...
    @overload
    async def __call__(
        self, name: str, fn: Callable[[], Result[T, Any]], **options: Unpack[StepOptions]
    ) -> T: ...
    @overload
    async def __call__(
        self, name: str, fn: Callable[[], Awaitable[T]], **options: Unpack[StepOptions]
    ) -> T: ...
    @overload
    async def __call__(
        self, name: str, fn: Callable[[], T], **options: Unpack[StepOptions]
    ) -> T: ...
    async def __call__(
        self,
        name: str,
        fn: Callable[[], Any],
        *,
        # The options of `StepOptions`, spelt out: a **options dict would cost every step.
        key: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        type: builtins.type[Any] | None = None,
        compensate: Compensate | None = None,
        checkpoint: bool = True,
    ) -> Any:
        """Run ``fn`` as the step ``name`` and return its value.

        ``Ok(v)`` and plain values give ``v``; ``Err(e)`` ends the workflow with
        ``Err(e)``.  ``retry`` is a `RetryPolicy`; ``timeout`` (seconds)
        cancels the work when it runs out and ends the workflow with
        ``Err(StepTimeoutError)``.  ``type`` names the class of the value for a
        durable run's snapshot (see `register_type`).  ``compensate`` is called with
        the step's value if the workflow fails later (see docs/sagas.md): it is
        registered when the step completes, or is replayed from its record.
        Raises nothing of its own: failures travel as the workflow's ``Err``;
        cancellation from outside propagates.  A bad argument raises ``TypeError``
        or ``ValueError`` naming the step.
        """
        run = self._run
        if name.__class__ is not str or not name:
            _check_name(name)
        if cancel_due():  # every step is a cancellation point, before its work
            await deliver_cancellation()
        # One test for the common case (no key, no store, checkpointed by default).
        if key is not None or checkpoint is not True or run.track is not None:
            if checkpoint is not True:
                _check_checkpoint(name, key, checkpoint)  # (so key is None)
            else:
                key = self._record_key(name, key)
                if key is not None and key in run.completed:
                    return self._replay(name, key, compensate)
        emit = run.emit
        if (
            timeout is not None
            or compensate is not None
            or (key is not None and run.checkpoint is not None)
            or type is not None
            or (
                retry is not None
                and (
                    emit is not None
                    or retry.__class__ is not RetryPolicy
                    or retry.timeout is not None
                )
            )
        ):
            if not callable(fn):
                _check_fn(name, fn)
            if retry is not None and not isinstance(retry, RetryPolicy):
                raise TypeError(f"step {name!r}: retry must be a RetryPolicy, not {retry!r}")
            if timeout is not None:
                timeout = check_timeout(timeout, f"step {name!r}: timeout")
            if type is not None and not isinstance(type, builtins.type):
                _check_type(name, type)
            undo = None if compensate is None else check_compensate(name, compensate)
            return await self._execute(
                name, fn, key, retry, timeout, run.map_exception, type, None, undo
            )
        # Fast path: one attempt, between two events if someone listens; no timeout,
        # checkpoint or type check.  A retry policy (without listeners) costs nothing
        # until the first attempt fails.
        started = 0.0
        if emit is not None:
            if not callable(fn):
                _check_fn(name, fn)
            clock = run.clock
            workflow_id = run._workflow_id or run.workflow_id  # the property makes one
            started = clock.monotonic()
            emit(
                StepStart(
                    workflow_id=workflow_id,
                    workflow_name=run.name,
                    ts=clock.time(),
                    name=name,
                    step_key=key,
                )
            )
        try:
            out = fn()
            # A coroutine (an async fn) is told apart without calling isawaitable.
            if out.__class__ is CoroutineType or isawaitable(out):
                out = await out
        except EarlyExit as exc:
            # A nested step inside fn ended the workflow: this step failed with it.
            if emit is not None:
                emit(self._failed_event(name, key, started, exc.result.error, 1))
            raise
        except Exception as exc:
            if not callable(fn):
                _check_fn(name, fn)
            if retry is not None:
                return await self._execute(
                    name, fn, key, retry, None, run.map_exception, type, (Err(exc), exc)
                )
            try:
                failed = Err(run.map_exception(exc))
            except Exception as failure:  # catch_unexpected raised: it propagates
                if emit is not None:
                    emit(self._failed_event(name, key, started, failure, 1))
                raise
            if emit is not None:
                emit(self._failed_event(name, key, started, failed.error, 1))
            raise EarlyExit(run, failed) from None
        except BaseException:
            if emit is not None:
                emit(self._cancelled_event(name, key, started))
            raise
        # Ok and Err told apart by their class: `out` stays Any for the type checkers
        # (isinstance would narrow it to Ok[Unknown]), and a subclass of either, which
        # nobody should write, takes the typed way round through as_result.
        cls = out.__class__
        if cls is Ok:
            value = out.value
        elif cls is Err or (cls not in _PLAIN and _is_result_class(cls)):
            result = as_result(out)
            if result.ok is False:
                if retry is not None:
                    return await self._execute(
                        name, fn, key, retry, None, run.map_exception, type, (result, None)
                    )
                if emit is not None:
                    emit(self._failed_event(name, key, started, result.error, 1))
                raise EarlyExit(run, result)
            value = result.value
        else:
            value = out
        if key is not None:
            run.remember(key, out if cls is Ok else Ok(value))
        if emit is not None:
            clock = run.clock
            emit(
                StepComplete(
                    workflow_id=run.workflow_id,
                    workflow_name=run.name,
                    ts=clock.time(),
                    name=name,
                    step_key=key,
                    duration_ms=(clock.monotonic() - started) * 1000.0,
                    value=value,
                )
            )
        return value

    def _record_key(self, name: str, key: str | None) -> str | None:
        """The key step ``name`` is recorded under: in a durable run always one (``key``,
        or an automatic one; see `_durable_key`), otherwise ``key`` (``None``: the step
        is not recorded).  A given key is checked against the rules every store keeps,
        so that a run on memory:// or without a store refuses what a database would."""
        if self._run.track is not None:
            # A durable run: every step has a key, checked against the records.
            return self._durable_key(name, key)
        if key is not None:
            check_key(key)
            check_user_key(key)
        return key

    def _durable_key(self, name: str, key: str | None) -> str:
        """The key of step ``name`` of a durable run: ``key``, or an automatic one.  The
        step is checked against the run's records (drift, a rollback in progress)
        before it may execute: an early exit ends the body instead."""
        run = self._run
        track = run.track
        assert track is not None
        if key is None:
            key = track.auto_key(name)
            check_key(key)
        else:
            check_key(key)
            check_user_key(key)
        if key in run.completed:
            drift = track.replayed(name, key)
        elif run.rolling_back is not None:
            # Recovered mid-rollback: the body has replayed what completed; it ends
            # here, and the rollback goes on (see RunState.rolling_back).
            raise EarlyExit(run, run.rolling_back)
        else:
            drift = track.fresh(name)
        if drift is not None:
            raise EarlyExit(run, drift)
        return key

    def _replay(self, name: str, key: str, compensate: Any = None) -> Any:
        run = self._run
        value = run.completed[key].value
        if compensate is not None:
            # A replayed step's compensation is registered again: a run recovered after
            # it completed may still have to undo it.
            self._register(name, key, check_compensate(name, compensate), value)
        emit = run.emit
        if emit is not None:
            emit_answered(emit, run, run.clock.time(), name, key, value)
        return value

    async def _attempt_with_timeout(
        self, name: str, key: str | None, fn: Callable[[], Any], timeout: float, attempt: int
    ) -> AttemptOutcome:
        """One call of ``fn`` under a deadline: its Result, and the exception if it raised."""
        with anyio.move_on_after(timeout):
            try:
                out = fn()
                if isawaitable(out):
                    out = await out
            except Exception as exc:
                return Err(exc), exc
            return as_result(out), None
        # Only our own deadline lands here: outside cancellation propagates through the scope.
        return timed_out(self._run, name, key, timeout, attempt), None

    async def _execute(
        self,
        name: str,
        fn: Callable[[], Any],
        key: str | None,
        retry: RetryPolicy | None,
        timeout: float | None,
        map_exception: Callable[[Exception], object],
        type_hint: type[Any] | None = None,
        made: AttemptOutcome | None = None,
        compensate: Any = None,
    ) -> Any:
        """The full step: events, attempts with backoff, per-attempt timeout, checkpoint.

        ``made`` is the outcome of the attempt the fast path already made (it
        emits no events, so it is only given when nobody listens).
        """
        run = self._run
        emit = run.emit
        clock = run.clock
        started = clock.monotonic() if emit is not None else 0.0
        if emit is not None:
            emit(
                StepStart(
                    workflow_id=run.workflow_id,
                    workflow_name=run.name,
                    ts=clock.time(),
                    name=name,
                    step_key=key,
                )
            )
        checkpoint = run.checkpoint if key is not None else None
        started_at = clock.time() if checkpoint is not None else 0.0
        attempts = 1 if retry is None else retry.attempts
        if retry is not None and timeout is None:
            timeout = retry.timeout
        attempt = 0
        track = run.track
        scope: object = None
        ident: tuple[str, str] | None = None
        if track is not None and key is not None:
            if track.unsaved:
                await self._save_markers()
            # An unkeyed step counts as running (two of one name at once are refused);
            # the steps its work calls run inside it (their automatic keys and their
            # drift checks are its own).
            ident = track.start(name, key)
            scope = enter_scope(key)
        try:
            while True:
                attempt += 1
                if made is not None:
                    (result, raised), made = made, None
                elif timeout is None:
                    try:
                        out = fn()
                        if isawaitable(out):
                            out = await out
                        result, raised = as_result(out), None
                    except Exception as exc:
                        result, raised = Err(exc), exc
                else:
                    result, raised = await self._attempt_with_timeout(
                        name, key, fn, timeout, attempt
                    )
                if result.ok is True or attempt >= attempts:
                    break
                assert retry is not None
                failure = result.error
                if retry.retry_on is not None and not retry.retry_on(failure):
                    break
                delay = retry.delay_for(attempt)
                if emit is not None:
                    emit(
                        StepRetry(
                            workflow_id=run.workflow_id,
                            workflow_name=run.name,
                            ts=clock.time(),
                            name=name,
                            step_key=key,
                            attempt=attempt,
                            delay=delay,
                            error=failure,
                        )
                    )
                await clock.sleep(delay)
            if raised is not None:
                result = Err(map_exception(raised))
            if checkpoint is not None:
                assert key is not None
                unsaved = await checkpoint(name, key, result, attempt, started_at, type_hint)
                if unsaved is not None and isinstance(result, Ok):
                    result = unsaved
        except EarlyExit as exc:
            # A nested step inside fn ended the workflow: this step failed with it.
            if emit is not None:
                emit(self._failed_event(name, key, started, exc.result.error, attempt))
            raise
        except BaseException as exc:
            if emit is not None and exc is run.mapper_failure:
                # The error mapper itself raised: the step failed, nothing was cancelled.
                emit(self._failed_event(name, key, started, exc, attempt))
            elif emit is not None and not parked_in(exc):
                # A run its host parks is not cancelled: the run emits workflow_parked.
                emit(self._cancelled_event(name, key, started))
            raise
        finally:
            if scope is not None:
                leave_scope(scope)
                if ident is not None:
                    assert track is not None
                    track.running[ident] -= 1
        if isinstance(result, Ok):
            if key is not None:
                run.remember(key, result)
            if compensate is not None:
                self._register(name, key, compensate, result.value)
            if emit is not None:
                emit(
                    StepComplete(
                        workflow_id=run.workflow_id,
                        workflow_name=run.name,
                        ts=clock.time(),
                        name=name,
                        step_key=key,
                        duration_ms=(clock.monotonic() - started) * 1000.0,
                        value=result.value,
                        attempt=attempt,
                    )
                )
            return result.value
        if emit is not None:
            emit(self._failed_event(name, key, started, result.error, attempt))
        raise EarlyExit(run, result)

    async def _save_markers(self) -> None:
        """Write the patch markers `WorkflowContext.patched` left unsaved, before the
        next step's work: a run that records a step after a patch point records the
        marker first."""
        run = self._run
        track = run.track
        checkpoint = run.checkpoint
        assert track is not None
        while track.unsaved:
            marker, applies = track.unsaved.pop(0)
            if checkpoint is not None:
                failed = await checkpoint(marker, marker, Ok(applies), 1, run.clock.time(), None)
                if failed is not None:
                    raise EarlyExit(run, failed)

    def _register(self, name: str, key: str | None, compensate: Any, value: Any) -> None:
        """Push step ``name``'s compensation onto the run's saga (made on first use)."""
        run = self._run
        saga = run.saga
        if saga is None:
            saga = run.saga = Saga()
        saga.push(name, key, compensate, value)

    def _cancelled_event(self, name: str, key: str | None, started: float) -> StepCancelled:
        run = self._run
        return StepCancelled(
            workflow_id=run.workflow_id,
            workflow_name=run.name,
            ts=run.clock.time(),
            name=name,
            step_key=key,
            duration_ms=(run.clock.monotonic() - started) * 1000.0,
        )

    def _failed_event(
        self, name: str, key: str | None, started: float, error: object, attempt: int
    ) -> StepFailed:
        run = self._run
        return StepFailed(
            workflow_id=run.workflow_id,
            workflow_name=run.name,
            ts=run.clock.time(),
            name=name,
            step_key=key,
            duration_ms=(run.clock.monotonic() - started) * 1000.0,
            error=error,
            attempt=attempt,
        )

    async def _settle(self, fn: Callable[[], Any]) -> Result[Any, Any]:
        """Run a child of a group step to a Result; a nested step's early exit becomes its Err.

        Each child is a cancellation point, before its work (a group's children that
        never yield would otherwise all run in a cancelled scope)."""
        run = self._run
        if cancel_due():
            await deliver_cancellation()
        # In a durable run, a child in a task of its own is a branch of its own: its
        # steps and its siblings' have no order among themselves.
        branch = None if run.track is None else enter_child()
        try:
            out = fn()
            if isawaitable(out):
                out = await out
        except EarlyExit as exc:
            if exc.run is not run:
                raise
            return exc.result
        except Exception as exc:
            return Err(run.map_exception(exc))
        finally:
            if branch is not None:
                leave_child(branch)
        return as_result(out)

    # ---- variants -----------------------------------------------------------------

    @overload
    async def retry(
        self,
        name: str,
        fn: Callable[[], Awaitable[Result[T, Any]]],
        *,
        attempts: int,
        **options: Unpack[RetryOptions],
    ) -> T: ...
    @overload
    async def retry(
        self,
        name: str,
        fn: Callable[[], Result[T, Any]],
        *,
        attempts: int,
        **options: Unpack[RetryOptions],
    ) -> T: ...
    @overload
    async def retry(
        self,
        name: str,
        fn: Callable[[], Awaitable[T]],
        *,
        attempts: int,
        **options: Unpack[RetryOptions],
    ) -> T: ...
    @overload
    async def retry(
        self, name: str, fn: Callable[[], T], *, attempts: int, **options: Unpack[RetryOptions]
    ) -> T: ...
    async def retry(
        self,
        name: str,
        fn: Callable[[], Any],
        *,
        attempts: int,
        key: str | None = None,
        type: builtins.type[Any] | None = None,
        compensate: Compensate | None = None,
        **policy: Unpack[RetryPolicyOptions],
    ) -> Any:
        """Run ``fn`` up to ``attempts`` times, waiting on the workflow's clock in between.

        The other options are those of `RetryPolicy` (the schedule, ``retry_on``, and
        ``timeout``, which bounds each attempt) and the step's ``key`` and ``type``.
        The last failure ends the workflow.  Cancellation during an attempt or a wait
        propagates.  A bad option raises ``TypeError`` or ``ValueError`` (see
        `RetryPolicy`) naming the step and the option.
        """
        try:
            retry = RetryPolicy(attempts, **policy)
        except (TypeError, ValueError) as exc:
            raise exc.__class__(f"step {name!r}: {exc}") from None
        return await self(name, fn, key=key, retry=retry, type=type, compensate=compensate)

    @overload
    async def try_(
        self,
        name: str,
        fn: Callable[[], Awaitable[Result[T, Any]]],
        *,
        error: Callable[[Exception], object] | object,
        **options: Unpack[TryOptions],
    ) -> T: ...
    @overload
    async def try_(
        self,
        name: str,
        fn: Callable[[], Result[T, Any]],
        *,
        error: Callable[[Exception], object] | object,
        **options: Unpack[TryOptions],
    ) -> T: ...
    @overload
    async def try_(
        self,
        name: str,
        fn: Callable[[], Awaitable[T]],
        *,
        error: Callable[[Exception], object] | object,
        **options: Unpack[TryOptions],
    ) -> T: ...
    @overload
    async def try_(
        self,
        name: str,
        fn: Callable[[], T],
        *,
        error: Callable[[Exception], object] | object,
        **options: Unpack[TryOptions],
    ) -> T: ...
    async def try_(
        self,
        name: str,
        fn: Callable[[], Any],
        *,
        error: Callable[[Exception], object] | object,
        key: str | None = None,
        timeout: float | None = None,
        type: builtins.type[Any] | None = None,
        compensate: Compensate | None = None,
    ) -> Any:
        """Run ``fn``, turning an exception it raises into ``Err(error)``.

        ``error`` is the typed error to use, or a function (not a class) that
        builds one from the exception: ``error=lambda exc: PaymentDeclined(str(exc))``.
        The other options are those of ``ctx.step`` but ``retry``.
        """
        _check_name(name)
        _check_fn(name, fn)
        mapper: Callable[[Exception], object]
        if callable(error) and not isinstance(error, builtins.type):
            mapper = error
        else:

            def constant(_: Exception) -> object:
                return error

            mapper = constant

        if timeout is not None:
            timeout = check_timeout(timeout, f"step {name!r}: timeout")
        undo = None if compensate is None else check_compensate(name, compensate)
        if cancel_due():
            await deliver_cancellation()
        key = self._record_key(name, key)
        if key is not None and key in self._run.completed:
            return self._replay(name, key, undo)
        if type is not None and not isinstance(type, builtins.type):
            _check_type(name, type)
        return await self._execute(name, fn, key, None, timeout, mapper, type, None, undo)

    def sleep(self, name: str, seconds: float, *, key: str | None = None) -> Awaitable[None]:
        """Wait ``seconds`` on the workflow's clock, as a step (so it is evented and keyable).

        With ``key``, in a durable run, the sleep is a durable timer: its wake time is
        stored when it starts (the run is listed ``waiting``), and a restarted run
        wakes at that time, not a full sleep later.

        Without a key or listeners there is nothing to record, and the clock's own
        coroutine is returned to be awaited (a waiting run keeps no frame of ours).
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"step {name!r}: seconds must be a number >= 0, not {seconds!r}")
        if not seconds >= 0:
            raise ValueError(f"step {name!r}: seconds must be a number >= 0, not {seconds!r}")
        if key is None and self._run.emit is None:
            if name.__class__ is not str or not name:
                _check_name(name)
            return self._run.clock.sleep(seconds)
        return self._recorded_sleep(name, seconds, key)

    async def _recorded_sleep(self, name: str, seconds: float, key: str | None) -> None:
        run = self._run
        if key is not None and seconds > 0 and isinstance(run.checkpoint, DurableWaits):
            # A keyed sleep of a durable run is a durable timer: its wake time is stored
            # the first time, so a restarted run wakes then, not a full sleep later.
            await self._wait(name, key, None, "timer", seconds)
            return
        clock = run.clock
        # An unkeyed sleep is not checkpointed, with listeners or without (a keyed one
        # of a durable run is a durable timer, above).
        if key is None:
            await self(name, lambda: clock.sleep(seconds), checkpoint=False)
        else:
            await self(name, lambda: clock.sleep(seconds), key=key)

    def skip(self, name: str, *, key: str | None = None, reason: str | None = None) -> None:
        """Record that the step ``name`` was deliberately not run (emits ``step_skipped``)."""
        _check_name(name)
        run = self._run
        if run.emit is not None:
            run.emit(
                StepSkipped(
                    workflow_id=run.workflow_id,
                    workflow_name=run.name,
                    ts=run.clock.time(),
                    name=name,
                    step_key=key,
                    reason=reason,
                )
            )

    # ---- durable waiting ----------------------------------------------------------------

    def _waits(self, name: str, what: str) -> DurableWaits:
        waits = self._run.checkpoint
        if not isinstance(waits, DurableWaits):
            # Not a bad argument but a step used where it cannot work: like anyio's
            # "no running event loop", a RuntimeError.
            raise RuntimeError(  # noqa: TRY004
                f"step {name!r}: {what} needs a durable run "
                f"(workflow.run(..., workflow_id=..., store=...))"
            )
        return waits

    async def wait_for(
        self, name: str, *, key: str, timeout: float | timedelta | None = None
    ) -> Any:
        """Wait for the value sent to this run under ``key`` (`awaitly_anyio.send`) and
        return it.  The step's key is ``key``: once received, the value is the step's
        record, so a resumed run never waits for it again.

        A value sent before the wait began is kept and received at once; each is
        received once.  ``timeout`` (seconds or a ``timedelta``) sets a durable
        deadline, stored the first time the step waits: a restart does not restart
        the clock, and when it passes the workflow ends with ``Err(WaitTimeoutError)``.

        Only in a durable run (``RuntimeError`` otherwise); ``ValueError`` for an
        invalid key or timeout.  A cancellation point: cancellation propagates and
        leaves the run waiting in the store."""
        return await self._wait(name, key, key, "message", timeout)

    async def wait_for_approval(
        self, name: str, *, key: str, timeout: float | timedelta | None = None
    ) -> Approval:
        """Wait for `awaitly_anyio.approve` or `awaitly_anyio.reject` of ``key``, as
        `wait_for` does: an approval returns the `Approval` (who, why, when); a
        rejection ends the workflow with ``Err(ApprovalRejectedError)``.  The run is
        listed by `awaitly_anyio.pending_approvals` while it waits."""
        decision = await self._wait(name, key, key, "approval", timeout)
        if not isinstance(decision, Approval):
            raise EarlyExit(
                self._run,
                Err(UnexpectedError(TypeError(f"{key!r} was sent {decision!r}, not an Approval"))),
            )
        if not decision.approved:
            raise EarlyExit(
                self._run, Err(ApprovalRejectedError(name, key, decision.by, decision.reason))
            )
        return decision

    async def create_hook(self, name: str, *, key: str) -> Hook:
        """Make a hook: an unguessable token a webhook handler resolves with
        `awaitly_anyio.resolve_hook` (without knowing the run) and that
        `wait_for_hook` waits for.  The token is this step's record under ``key``, so a
        resumed run hands out the same one.  Only in a durable run."""
        waits = self._waits(name, "create_hook")
        token: str = await self(name, lambda: new_hook_token(waits.workflow_id, key), key=key)
        return Hook(token, hook_key(key))

    async def wait_for_hook(
        self, name: str, hook: Hook, *, timeout: float | timedelta | None = None
    ) -> Any:
        """Wait until ``hook``'s token is resolved and return the value it was resolved
        with, as `wait_for` does (the step's key is ``hook.key``)."""
        if not isinstance(hook, Hook):
            raise TypeError(f"step {name!r}: expected a Hook (from create_hook), not {hook!r}")
        return await self._wait(name, hook.key, hook.key, "hook", timeout)

    async def _wait(
        self,
        name: str,
        step: str,
        key: str | None,
        kind: str,
        timeout: float | timedelta | None,
    ) -> Any:
        _check_name(name)
        check_key(step)
        seconds = None if timeout is None else check_seconds(timeout, f"step {name!r}: timeout")
        if step in self._run.completed and self._run.track is None:
            return self._replay(name, step)
        waits = self._waits(name, f"waiting ({kind})")
        return await self(name, lambda: waits.wait(name, step, key, kind, seconds), key=step)
