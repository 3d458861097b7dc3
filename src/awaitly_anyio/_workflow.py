"""Workflows: a named body of steps, run as a coroutine that returns a Result.

``run`` never raises for a failure: a step's ``Err`` or a foreign exception
comes back as ``Err``.  It does let cancellation through: if the caller's
cancel scope (a timeout around the run, a shutdown) cancels a running
workflow, ``run`` emits ``workflow_cancelled`` and re-raises.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar, cast, overload

import attrs

from ._clock import Clock, SystemClock
from ._context import Deps, WorkflowContext, override_deps
from ._loops import cancel_due, deliver_cancellation
from ._policies import EMPTY_CONTEXT, InputValidator, check_context, with_context
from ._result import Err, Ok, Result
from ._run import (
    NO_RESULTS,
    EarlyExit,
    Emit,
    RunState,
    default_map_exception,
    logger,
    make_emitter,
)
from ._saga import ROLLBACK_KEY, recorded_rollback
from ._session import DurableRun, IfRunning, open_session
from ._versions import (
    VERSION_KEY,
    Migration,
    OnDrift,
    OnVersionMismatch,
    Tracker,
    Versions,
    check_on_drift,
    check_version,
    check_versions,
    prepare,
)
from .events import (
    EventHandler,
    WorkflowCancelled,
    WorkflowComplete,
    WorkflowFailed,
    WorkflowParked,
    WorkflowStart,
)

if TYPE_CHECKING:
    from ._snapshot import WorkflowSnapshot
    from ._store import SnapshotStore
from ._resume import SupportsResume, completed_results
from ._waits import parking

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["Workflow", "create_workflow", "run"]

D = TypeVar("D")
T = TypeVar("T")
# The body's error type in run()'s first overload: left free (not Any) so that mypy picks
# that overload for `run(lambda ctx: body(ctx))` instead of giving up on the lambda.
E = TypeVar("E")
# The type of the run's input, as the body declares it (WorkflowContext[D, I]).
I = TypeVar("I")  # noqa: E741

OnEvent: TypeAlias = EventHandler | Sequence[EventHandler] | None


def _handlers(on_event: object) -> tuple[EventHandler, ...]:
    if on_event is None:
        return ()
    if callable(on_event):
        return (on_event,)
    if isinstance(on_event, Sequence) and not isinstance(on_event, (str, bytes)):
        handlers: list[EventHandler] = []
        for handler in cast("Sequence[object]", on_event):  # isinstance: unknown type
            if not callable(handler):
                raise TypeError(f"on_event handlers must be callables, not {handler!r}")
            handlers.append(handler)
        return tuple(handlers)
    raise TypeError(f"on_event must be a callable or a sequence of callables, not {on_event!r}")


def _check_workflow_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a workflow needs a non-empty string name, not {name!r}")
    return name


def _check_write_timeout(seconds: object) -> float:
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not 0 < seconds < float("inf")
    ):
        raise ValueError(
            f"store_write_timeout must be a positive number of seconds, not {seconds!r}"
        )
    return float(seconds)


def _check_clock(clock: object) -> Clock:
    if not isinstance(clock, Clock):
        raise TypeError(f"clock must provide monotonic(), time() and async sleep(), not {clock!r}")
    return clock


def _input_validator(workflow: Workflow[Any]) -> InputValidator | None:
    spec = workflow.validate_input
    return None if spec is None else InputValidator(spec)


def _migration_list(migrations: object) -> tuple[Migration, ...]:
    if migrations is None:
        return ()
    if isinstance(migrations, (str, bytes)) or not isinstance(migrations, (list, tuple)):
        raise TypeError(f"migrations must be a list of Migration, not {migrations!r}")
    return tuple(cast("Sequence[Migration]", migrations))  # check_versions checks each


@attrs.frozen
class Workflow(Generic[D]):
    """A named workflow with its dependencies and event handlers; build it with
    `create_workflow` and call `run` as often as you like (runs are independent)."""

    name: str = attrs.field(converter=_check_workflow_name)
    deps: D
    on_event: tuple[EventHandler, ...] = attrs.field(default=(), converter=_handlers)
    catch_unexpected: Callable[[Exception], object] | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.is_callable())
    )
    clock: Clock = attrs.field(factory=SystemClock, converter=_check_clock)
    store_write_timeout: float = attrs.field(default=5.0, converter=_check_write_timeout)
    # The input check of every run (create_workflow's validate_input), made ready once.
    validate_input: type[Any] | Callable[[Any], object] | None = attrs.field(default=None)
    _validator: InputValidator | None = attrs.field(
        init=False,
        repr=False,
        eq=False,
        default=attrs.Factory(lambda self: _input_validator(self), takes_self=True),
    )
    # The version a durable run is recorded with, its migrations, and what a resumed
    # run does on drift (see docs/changing-workflows.md).
    version: str | None = attrs.field(default=None, converter=check_version)
    migrations: tuple[Migration, ...] = attrs.field(default=(), converter=_migration_list)
    on_version_mismatch: OnVersionMismatch = "error"
    on_drift: OnDrift = attrs.field(default="error", converter=check_on_drift)
    _versions: Versions = attrs.field(
        init=False,
        repr=False,
        eq=False,
        default=attrs.Factory(
            lambda self: check_versions(self.version, self.migrations, self.on_version_mismatch),
            takes_self=True,
        ),
    )
    _emit: Emit | None = attrs.field(init=False, repr=False, eq=False)
    _map: Callable[[Exception], object] = attrs.field(init=False, repr=False, eq=False)

    @_emit.default  # pyright: ignore[reportFunctionMemberAccess, reportOptionalMemberAccess]
    def _make_emit(self) -> Emit | None:
        return make_emitter(self.on_event)

    @_map.default  # pyright: ignore[reportFunctionMemberAccess, reportOptionalMemberAccess]
    def _make_map(self) -> Callable[[Exception], object]:
        return self.catch_unexpected or default_map_exception

    @overload
    def run(
        self,
        body: Callable[[WorkflowContext[D, I]], Awaitable[Result[T, E]]],
        *,
        workflow_id: str | None = None,
        resume_state: SupportsResume | WorkflowSnapshot | None = None,
        store: SnapshotStore | None = None,
        ttl: float | timedelta | None = None,
        failure_ttl: float | timedelta | None = None,
        delete_on_success: bool = False,
        metadata: Mapping[str, Any] | None = None,
        input: I | None = None,
        lease: float = 30.0,
        owner: str | None = None,
        if_running: IfRunning = "error",
        deps: D | Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Coroutine[Any, Any, Result[T, Any]]: ...
    @overload
    def run(
        self,
        body: Callable[[WorkflowContext[D, I]], Awaitable[T]],
        *,
        workflow_id: str | None = None,
        resume_state: SupportsResume | WorkflowSnapshot | None = None,
        store: SnapshotStore | None = None,
        ttl: float | timedelta | None = None,
        failure_ttl: float | timedelta | None = None,
        delete_on_success: bool = False,
        metadata: Mapping[str, Any] | None = None,
        input: I | None = None,
        lease: float = 30.0,
        owner: str | None = None,
        if_running: IfRunning = "error",
        deps: D | Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Coroutine[Any, Any, Result[T, Any]]: ...
    def run(
        self,
        body: Callable[[WorkflowContext[D]], Awaitable[Any]],
        *,
        workflow_id: str | None = None,
        resume_state: SupportsResume | WorkflowSnapshot | None = None,
        store: SnapshotStore | None = None,
        ttl: float | timedelta | None = None,
        failure_ttl: float | timedelta | None = None,
        delete_on_success: bool = False,
        metadata: Mapping[str, Any] | None = None,
        input: Any = None,
        lease: float = 30.0,
        owner: str | None = None,
        if_running: IfRunning = "error",
        deps: D | Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Coroutine[Any, Any, Result[Any, Any]]:
        """Run ``body(ctx)`` and return its outcome as a Result.

        The body may return a plain value (wrapped in ``Ok``) or a Result.
        ``workflow_id`` defaults to a fresh uuid4 string.  ``resume_state``
        (a `ResumeState` or a snapshot) answers keyed
        steps that already completed, so they are not executed again.

        With ``store``, the run is durable (see `awaitly_anyio._durable`):
        it resumes run ``workflow_id`` from the store, checkpoints every keyed
        step as it completes, returns a completed run's stored result without
        executing anything, and records the outcome: a completed run kept for
        ``ttl`` (or deleted, ``delete_on_success=True``), a failed one kept for
        ``failure_ttl`` with the error and last attempt time in its metadata.
        ``input`` is given to the body as ``ctx.input`` and kept with a durable
        run, so whoever resumes it gets it back; starting an existing run with
        another input returns ``Err(InputConflictError)`` and writes nothing (no
        ``input``: it resumes with its stored one).  ``metadata`` is stored with
        the run beside the library's own entries, whose keys start with
        ``"awaitly."``: a ``metadata`` key with that prefix raises ``ValueError``.
        With a store that has leases
        (every shipped store), the run holds a ``lease`` of that many seconds as
        ``owner`` while it executes; a second start of a run in progress
        elsewhere returns ``Err(RunInProgressError)`` or, with
        ``if_running="wait"``, waits for it.  A cancel requested through the
        store (``store.cancel(id)``, from any process) stops the body, records
        the run ``cancelled`` and returns
        ``Err(RunStateError(id, "cancelled", "continue"))``.

        ``deps`` replaces the workflow's deps for this run only (tests, tenants): a
        mapping is merged over a workflow's mapping deps (its entries win), any other
        deps object is replaced.  ``context`` (a mapping of strings to JSON values,
        such as a request id) is the run's ``ctx.context`` and is set on every event
        of the run.  Neither is stored with a durable run: a run resumed elsewhere
        (a host's recovery) gets the workflow's deps and no context.  With the
        workflow's ``validate_input``, the input is checked before the body starts
        (see `create_workflow`).

        ``run`` returns the run as a coroutine to await.  A programming error in
        the arguments raises at once (``TypeError``, ``ValueError``); awaiting
        raises only for cancellation from outside, which is re-raised after
        ``workflow_cancelled`` is emitted (and, for a durable run, after the run
        is recorded as ``cancelled`` in a short shielded scope).
        """
        if not callable(body):
            raise TypeError(f"workflow {self.name!r}: body must be an async callable, not {body!r}")
        if workflow_id is not None and (not isinstance(workflow_id, str) or not workflow_id):
            raise ValueError(
                f"workflow {self.name!r}: workflow_id must be a non-empty string, "
                f"not {workflow_id!r}"
            )
        run_deps = self.deps if deps is None else override_deps(self.name, self.deps, deps)
        emit = self._emit
        run_context = EMPTY_CONTEXT
        if context is not None:
            run_context = check_context(context)
            if emit is not None:
                emit = with_context(emit, run_context)
        if self._validator is not None:
            body = self._validator.wrap(body)
        if store is None:
            if ttl is not None or failure_ttl is not None or delete_on_success or metadata:
                raise ValueError(
                    f"workflow {self.name!r}: ttl, failure_ttl, delete_on_success and "
                    f"metadata need a store"
                )
            # Without a store, a default id is made only if someone asks for it.  The run
            # is one coroutine (the body's outcome), or two with listeners.
            state = RunState(
                self.name,
                workflow_id,
                self.clock,
                emit,
                self._map,
                NO_RESULTS if resume_state is None else completed_results(resume_state),
            )
            outcome = _outcome(state, body, WorkflowContext(state, run_deps, input, run_context))
            if emit is None:
                return outcome
            return self._evented(state, outcome, emit)
        if resume_state is not None:
            raise ValueError(
                f"workflow {self.name!r}: give a store or a resume_state, not both "
                f"(a durable run resumes from its store)"
            )
        # The durable layer validates the rest and opens the run's session (it fills the
        # core's slot; the core imports nothing from above).
        session = open_session()(
            store,
            workflow_id,
            workflow_name=self.name,
            clock=self.clock,
            handlers=self.on_event,
            emit=emit,
            write_timeout=self.store_write_timeout,
            ttl=ttl,
            failure_ttl=failure_ttl,
            delete_on_success=delete_on_success,
            metadata=metadata,
            input=input,
            lease=lease,
            owner=owner,
            if_running=if_running,
        )
        durable = self._durable(session, body, run_deps, emit, run_context)
        if emit is None:
            return durable
        # The workflow's events wrap the whole durable run, store writes included, so
        # its terminal event is the Result run() returns (a failed final write is a
        # workflow_error, a failed claim is seen at all).
        return self._evented(session.workflow_id, durable, emit)

    async def _durable(
        self,
        session: DurableRun,
        body: Callable[[WorkflowContext[D]], Awaitable[Any]],
        deps: Any,
        emit: Emit | None,
        context: Mapping[str, Any],
    ) -> Result[Any, Any]:
        """Drive a durable run's session: begin (which may end the run), the body
        within the session's block, then finish; or, when the body raises (outside
        cancellation), record it cancelled and re-raise."""
        ended = await session.begin()
        if ended is not None:
            return ended
        result: Result[Any, Any] | None = None
        try:
            with session:
                resume = session.resume
                completed = NO_RESULTS if resume is None else completed_results(resume)
                versioned: Mapping[str, Ok[Any]] | Err[Any] = completed
                if self._versions.current is not None:
                    versioned = await _versioned(
                        self._versions, session, self.name, self.clock, completed
                    )
                if isinstance(versioned, Err):
                    result = versioned  # (nothing executes: the run ends with it)
                else:
                    state = RunState(
                        self.name,
                        session.workflow_id,
                        self.clock,
                        emit,
                        self._map,
                        versioned,
                        session.checkpoint,
                    )
                    state.track = Tracker(
                        session.workflow_id, versioned, check=self.on_drift == "error"
                    )
                    if ROLLBACK_KEY in versioned:
                        state.rolling_back = recorded_rollback(versioned)
                    ctx = WorkflowContext(state, deps, session.input, context)
                    result = await _outcome(state, body, ctx)
        except BaseException:
            await session.cancelled()
            raise
        return await session.finish(result)

    async def _evented(
        self,
        state: RunState | str,
        outcome: Coroutine[Any, Any, Result[Any, Any]],
        emit: Emit,
    ) -> Result[Any, Any]:
        """Await ``outcome`` (a run; ``state`` is its state, or its id) with workflow
        events around it: one start, and one terminal event matching what it returns
        (or ``workflow_cancelled`` when it raises; ``workflow_parked`` when its host
        parks it)."""
        workflow_id = state if isinstance(state, str) else state.workflow_id
        clock = self.clock
        started = clock.monotonic()
        emit(WorkflowStart(workflow_id=workflow_id, workflow_name=self.name, ts=clock.time()))
        try:
            result = await outcome
        except BaseException as exc:
            duration_ms = (clock.monotonic() - started) * 1000.0
            parked = parking(exc)
            ts = clock.time()
            emit(
                # Its host parked the run: nothing was cancelled, it waits in its store.
                WorkflowParked(
                    workflow_id=workflow_id,
                    workflow_name=self.name,
                    ts=ts,
                    duration_ms=duration_ms,
                    waiting_for=parked.waiting_for,
                )
                if parked is not None
                else WorkflowCancelled(
                    workflow_id=workflow_id, workflow_name=self.name, ts=ts, duration_ms=duration_ms
                )
            )
            raise
        duration_ms = (clock.monotonic() - started) * 1000.0
        if isinstance(result, Ok):
            emit(
                WorkflowComplete(
                    workflow_id=workflow_id,
                    workflow_name=self.name,
                    ts=clock.time(),
                    duration_ms=duration_ms,
                    value=result.value,
                )
            )
        else:
            emit(
                WorkflowFailed(
                    workflow_id=workflow_id,
                    workflow_name=self.name,
                    ts=clock.time(),
                    duration_ms=duration_ms,
                    error=result.error,
                )
            )
        return result


async def _outcome(
    state: RunState,
    body: Callable[[WorkflowContext[Any]], Awaitable[Any]],
    ctx: WorkflowContext[Any],
) -> Result[Any, Any]:
    """Await the body and turn every way it can end, except cancellation, into a Result.

    A body that ends with ``Err`` after steps registered compensations has them run
    (`awaitly_anyio._saga.Saga.rollback`) before the ``Err`` is returned; a cancelled
    body does not (cancellation is not a failure, and propagates untouched)."""
    failed: Err[Any]
    try:
        out = await body(ctx)
    except EarlyExit as exc:
        if exc.run is not state:
            raise
        failed = exc.result
    except Exception as exc:
        # catch_unexpected that raised in a step propagates once (map_exception
        # re-raises it rather than mapping its own failure)
        failed = Err(state.map_exception(exc))
    except BaseExceptionGroup as group:
        failed = _early_exit_in(group, state)
    else:
        if cancel_due():
            # Cancelled during the last step (which did not yield to see it): the run did
            # not complete, whatever the body returned.
            await deliver_cancellation()
        if isinstance(out, Err):
            failed = cast("Err[object]", out)
        elif state.rolling_back is not None:
            # A run recovered mid-rollback whose body replayed to the end without failing
            # (the failure was outside a step and did not happen again): the rollback
            # that began must still finish, and the run ends with its original error.
            failed = state.rolling_back
        else:
            done: Ok[Any] = cast("Ok[object]", out) if isinstance(out, Ok) else Ok(out)
            if state.track is None:
                return done
            # A resumed durable run that returns without reaching a recorded step drifted.
            return state.track.finished() or done
    if state.saga is None or (state.track is not None and state.track.drifted):
        # (Drift is the code's mismatch with the records: nothing to undo.)
        return failed
    return await state.saga.rollback(state, failed)


async def _versioned(
    versions: Versions,
    session: DurableRun,
    name: str,
    clock: Clock,
    completed: Mapping[str, Ok[Any]],
) -> Mapping[str, Ok[Any]] | Err[Any]:
    """A resumed run's records brought to the workflow's version (`_versions.prepare`):
    the version record is written first (and, for a restart, the old records discarded
    before it), so a crash in between only repeats this; or the ``Err`` that ends the
    run (no migration path, a migration or a write failed)."""
    prepared = prepare(versions, session.workflow_id, name, completed)
    if isinstance(prepared, Err):
        return prepared
    records, record, discard = prepared
    checkpoint = session.checkpoint
    if checkpoint is None or record is None:
        return records
    now = clock.time()
    if "steps" not in record:
        for key in discard:  # a restart: the old records no longer answer anything
            await checkpoint(key, key, Err("discarded: the run restarted"), 1, now, None)
    failed = await checkpoint("version", VERSION_KEY, Ok(record), 1, now, None)
    if failed is not None:
        return failed
    records = dict(records)
    records[VERSION_KEY] = Ok(record)
    return records


def _early_exit_in(group: BaseExceptionGroup[BaseException], state: RunState) -> Err[Any]:
    """The result of the early exit a task group inside the body carried out of one of
    its children; re-raises ``group`` if it holds none of this run's, or holds
    cancellation beside it.  (Kept out of `_outcome`, whose frame every waiting
    run keeps.)"""
    ours, rest = group.split(lambda e: isinstance(e, EarlyExit) and e.run is state)
    if ours is None or (rest is not None and not isinstance(rest, Exception)):
        raise group
    if rest is not None:
        logger.error(
            "workflow %r (%s): other failures beside the early exit",
            state.name,
            state.workflow_id,
            exc_info=rest,
        )
    first = ours.exceptions[0]
    while isinstance(first, BaseExceptionGroup):
        # (isinstance leaves the group's type argument unknown)
        first = cast("BaseExceptionGroup[BaseException]", first).exceptions[0]
    assert isinstance(first, EarlyExit)
    return first.result


@overload
def create_workflow(
    name: str,
    deps: Mapping[str, Any] | None = None,
    *,
    on_event: OnEvent = None,
    catch_unexpected: Callable[[Exception], object] | None = None,
    clock: Clock | None = None,
    store_write_timeout: float = 5.0,
    validate_input: type[Any] | Callable[[Any], object] | None = None,
    version: str | int | None = None,
    migrations: Sequence[Migration] = (),
    on_version_mismatch: OnVersionMismatch = "error",
    on_drift: OnDrift = "error",
) -> Workflow[Deps]: ...
@overload
def create_workflow(
    name: str,
    deps: D,
    *,
    on_event: OnEvent = None,
    catch_unexpected: Callable[[Exception], object] | None = None,
    clock: Clock | None = None,
    store_write_timeout: float = 5.0,
    validate_input: type[Any] | Callable[[Any], object] | None = None,
    version: str | int | None = None,
    migrations: Sequence[Migration] = (),
    on_version_mismatch: OnVersionMismatch = "error",
    on_drift: OnDrift = "error",
) -> Workflow[D]: ...
def create_workflow(
    name: str,
    deps: Any = None,
    *,
    on_event: OnEvent = None,
    catch_unexpected: Callable[[Exception], object] | None = None,
    clock: Clock | None = None,
    store_write_timeout: float = 5.0,
    validate_input: type[Any] | Callable[[Any], object] | None = None,
    version: str | int | None = None,
    migrations: Sequence[Migration] = (),
    on_version_mismatch: OnVersionMismatch = "error",
    on_drift: OnDrift = "error",
) -> Workflow[Any]:
    """Create a `Workflow` called ``name``.

    ``deps`` is handed to every run as ``ctx.deps``; a mapping (or ``None``)
    becomes `Deps`, which allows ``ctx.deps.fetch_user``.  ``on_event``
    takes one handler or a sequence.  ``catch_unexpected(exc)`` maps a foreign
    exception to the error value to return (default: ``UnexpectedError(exc)``).
    ``clock`` drives retries, backoff and ``step.sleep`` (default: the system clock).
    ``store_write_timeout`` (seconds) bounds each write of a durable run that
    outside cancellation must not cut off: a step's checkpoint, the run's end and
    the record of its cancellation are shielded for at most that long, so a
    cancelled run or a shutdown waits at most this long for a stalled store
    (the write is then abandoned; see docs/operations.md).

    ``validate_input`` checks each run's input before its first step: an attrs class
    or a dataclass (a mapping is structured into one with cattrs, an instance
    re-validated), a pydantic model (``model_validate``), or a callable returning
    the validated value (or ``Ok`` of it, or an awaitable) and raising
    ``ValueError``/``TypeError`` or returning ``Err`` to reject.  ``ctx.input`` is
    the validated value; a rejected run ends with ``Err(InputValidationError)``
    without running a step (a durable run is recorded failed, with its input, so a
    queued run with a bad input is not taken again).  Anything else raises
    ``TypeError``.  See docs/dependencies.md.

    A durable run checks its recorded steps against the code when it resumes
    (docs/changing-workflows.md): ``on_drift="error"`` (the default) ends a run whose
    code no longer reaches a recorded step in the same place with
    ``Err(WorkflowDriftError)``, ``"accept"`` goes on.  ``version`` (a string or an
    int) is recorded with each run; a run stored by another version is brought to
    this one by ``migrations`` (`Migration` objects, chained), or, when none leads
    here, ended with ``Err(WorkflowVersionError)`` (``on_version_mismatch="error"``)
    or run again from the start (``"restart"``).  ``TypeError`` / ``ValueError`` for
    a bad version, a migration from or to a version no chain connects to this one,
    or an unknown ``on_drift`` / ``on_version_mismatch``.
    """
    if deps is None or isinstance(deps, Mapping):
        deps = Deps(cast("Mapping[str, Any] | None", deps))
    return Workflow(
        name,
        deps,
        on_event=on_event,
        catch_unexpected=catch_unexpected,
        clock=clock if clock is not None else SystemClock(),
        store_write_timeout=store_write_timeout,
        validate_input=validate_input,
        version=version,
        migrations=migrations,
        on_version_mismatch=on_version_mismatch,
        on_drift=on_drift,
    )


async def run(
    body: Callable[[WorkflowContext[Any]], Awaitable[Any]],
    *,
    name: str = "workflow",
    deps: Any = None,
    on_event: OnEvent = None,
    catch_unexpected: Callable[[Exception], object] | None = None,
    clock: Clock | None = None,
    workflow_id: str | None = None,
    resume_state: SupportsResume | WorkflowSnapshot | None = None,
) -> Result[Any, Any]:
    """Run ``body`` once as an anonymous workflow; the arguments are those of
    `create_workflow` and `Workflow.run`."""
    workflow = create_workflow(
        name, deps, on_event=on_event, catch_unexpected=catch_unexpected, clock=clock
    )
    return await workflow.run(body, workflow_id=workflow_id, resume_state=resume_state)
