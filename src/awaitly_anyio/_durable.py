"""Durable runs: a workflow run that checkpoints each keyed step to a store and resumes.

``await workflow.run(body, workflow_id="order-42", store=store)``:

1. loads run ``order-42``; a run that already ``completed`` returns its stored
   result without executing anything (so retrying a request is idempotent);
2. marks it ``running`` and runs the body, answering keyed steps that already
   completed from their records;
3. writes each keyed step's record as it completes, *before* the step returns,
   so a step reported complete is in the store (a crash re-runs only unkeyed
   steps and the keyed step that was in flight);
4. on success records the result (or deletes the run, ``delete_on_success=True``);
   on failure records the error with ``failure_ttl`` and metadata; on
   cancellation records ``cancelled`` inside a short shielded scope, then
   re-raises.

Store failures and values that cannot be serialized end the run with
``Err(StoreError)`` / ``Err(SerializationError)``; nothing half-written is
ever reported as complete.

The run is a `DurableSession` that the core's `Workflow.run` drives (begin, the
body, finish); this module installs `open_session` into the core's slot
(`awaitly_anyio._session`) and imports nothing of the workflow itself.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import socket
import traceback
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

import anyio
import attrs

from ._bridge import current_async_library
from ._checks import check_id, check_lease, ttl_seconds
from ._clock import Clock
from ._errors import (
    LeaseLostError,
    RunInProgressError,
    SerializationError,
    SnapshotDecodeError,
    StoredException,
    StoreError,
    WorkflowMismatchError,
)
from ._ids import uuid4_text
from ._result import Err, Ok, Result
from ._resume import StepRecord
from ._run import Emit, logger
from ._scopes import cancel_scope, shielded
from ._session import IfRunning, install
from ._snapshot import RunStatus, WorkflowSnapshot
from ._store import (
    CheckpointStore,
    Claim,
    EncodedStep,
    LeaseStore,
    SnapshotStore,
    Ttl,
)
from ._timers import trio_call_later
from ._times import from_epoch, iso_from_epoch
from .events import TRACE_CONTEXT_KEY, EventHandler, WorkflowResumed
from .serialization import (
    TypeRegistry,
    _qualname,
    _Unstorable,
    default_registry,
    dumps,
    encode_step,
    encode_step_record,
    result_to_doc,
    safe_repr,
)

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "FINAL_CHECKPOINT_SECONDS",
    "INPUT_KEY",
    "DurableOptions",
    "DurableSession",
    "IfRunning",
    "default_owner",
    "open_session",
]

INPUT_KEY = "input"
"""The metadata key under which a durable run keeps its input, for whoever resumes it."""

FINAL_CHECKPOINT_SECONDS = 5.0
"""The default bound of a durable run's shielded writes (``store_write_timeout``):
how long a write that must not be lost (a step's checkpoint, the run's end, the
record of its cancellation) may keep outside cancellation waiting."""

_ABANDONED_LIMIT = 1024
_abandoned: dict[str, str] = {}
"""Runs whose last write this process gave up on (the store stalled past the bound),
by id, with the owner of the lease they may still hold.  Nobody renews that lease,
but until it lapses other workers see the run as held; a later start of the run in
this process claims it as that owner, so it is taken over at once."""


def _remember_abandoned(workflow_id: str, owner: str | None) -> None:
    if owner is None:
        return
    _abandoned.pop(workflow_id, None)
    if len(_abandoned) >= _ABANDONED_LIMIT:  # the oldest first (dicts keep order)
        del _abandoned[next(iter(_abandoned))]
    _abandoned[workflow_id] = owner


async def _shielded_write(write: Callable[[], Awaitable[object]], bound: float) -> None:
    """Await ``write()`` shielded from outside cancellation for ``bound`` seconds;
    ``TimeoutError`` if it was abandoned then."""
    with shielded(bound) as scope:
        await write()
    if scope.cancelled_caught:
        raise TimeoutError(f"the store took over {bound:g}s (store_write_timeout)")


@attrs.frozen
class DurableOptions:
    """How a durable run behaves.

    At its end: ``ttl`` for a completed run's snapshot, ``failure_ttl`` for a
    failed one's, ``delete_on_success`` to remove it instead, ``metadata`` to
    attach.  With a `LeaseStore`: the run holds a
    lease of ``lease`` seconds as ``owner`` (default: host, pid and a random
    part), renewed every ``lease / 3`` seconds; if another worker holds it,
    ``if_running="error"`` returns ``Err(RunInProgressError)`` and ``"wait"``
    polls (with the workflow's clock) until it is free.  ``write_timeout`` bounds
    each write that outside cancellation must not cut off (the workflow's
    ``store_write_timeout``).
    """

    ttl: Ttl = None
    failure_ttl: Ttl = None
    delete_on_success: bool = False
    metadata: Mapping[str, Any] | None = None
    lease: float = 30.0
    owner: str | None = None
    if_running: IfRunning = "error"
    input: Any = None
    write_timeout: float = FINAL_CHECKPOINT_SECONDS


class _WholeSnapshots:
    """Gives a store with only the five basic methods the checkpointing operations,
    by saving the whole snapshot each time (serialized, so saves never overtake)."""

    def __init__(self, store: SnapshotStore, snapshot: WorkflowSnapshot | None) -> None:
        self._store = store
        self._snapshot = snapshot
        self._lock = anyio.Lock()

    async def _save(self, id: str, ttl: Ttl = None) -> None:
        async with self._lock:
            assert self._snapshot is not None
            await self._store.save(id, self._snapshot, ttl=ttl)

    async def mark_running(
        self, id: str, workflow_name: str, *, metadata: Mapping[str, Any] | None = None
    ) -> None:
        base = self._snapshot or WorkflowSnapshot(workflow_name, id)
        merged = {**base.metadata, **(metadata or {})}
        self._snapshot = attrs.evolve(
            base, status="running", result=None, metadata=merged, expires_at=None
        )
        await self._save(id)

    async def checkpoint(self, id: str, step: EncodedStep, *, owner: str | None = None) -> None:
        assert self._snapshot is not None
        steps = {**self._snapshot.steps, step.key: step.record}
        self._snapshot = attrs.evolve(self._snapshot, steps=steps)
        await self._save(id)

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
        assert self._snapshot is not None
        merged = {**self._snapshot.metadata, **(metadata or {})}
        self._snapshot = attrs.evolve(self._snapshot, status=status, result=result, metadata=merged)
        await self._save(id, ttl)


_CAPABILITIES: dict[type, tuple[bool, bool, bool]] = {}


def _capabilities(store: object) -> tuple[bool, bool, bool]:
    """Whether ``store`` is a SnapshotStore, a CheckpointStore and a LeaseStore; cached
    by class, since a runtime protocol check inspects every method each time."""
    kind = type(store)
    found = _CAPABILITIES.get(kind)
    if found is None:
        found = (
            isinstance(store, SnapshotStore),
            isinstance(store, CheckpointStore),
            isinstance(store, LeaseStore),
        )
        _CAPABILITIES[kind] = found
    return found


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _store_registry(store: SnapshotStore) -> TypeRegistry:
    registry = getattr(store, "registry", None)
    return registry if isinstance(registry, TypeRegistry) else default_registry


class _Checkpointer:
    """The hook a durable run's keyed steps call; see `awaitly_anyio._run.Checkpoint`."""

    def __init__(
        self,
        target: CheckpointStore | _WholeSnapshots,
        run_id: str,
        registry: TypeRegistry,
        now: Callable[[], float],
        owner: str | None = None,
        bound: float = FINAL_CHECKPOINT_SECONDS,
    ) -> None:
        self._target = target
        self._run_id = run_id
        self._registry = registry
        self._now = now
        self._owner = owner
        self._bound = bound

    async def __call__(
        self,
        name: str,
        key: str,
        result: Result[Any, Any],
        attempts: int,
        started_at: float,
        type_hint: type | None,
    ) -> Err[Any] | None:
        now = self._now()
        if type_hint is not None and isinstance(result, Ok):
            problem = self._check_type(name, result.value, type_hint)
            if problem is not None:
                return problem

        def record() -> StepRecord:
            return StepRecord(
                result,
                attempts=attempts,
                started_at=from_epoch(started_at),
                finished_at=from_epoch(now),
            )

        try:
            text = encode_step(name, result, attempts, started_at, now, self._registry)
        except SerializationError as exc:
            if isinstance(result, Err):
                # Keep the failure on record even if its error value has no JSON form.
                text = self._fallback_error_record(name, record())
            else:
                return Err(exc)
        step = EncodedStep(key, record, text)
        try:
            # The step's work is done: a shutdown must not drop its record, or the step
            # would run again on resume.  One short write, so it is shielded (bounded).
            # `_shielded_write` spelt out: every keyed step passes here, and its closure
            # and extra coroutine would be paid on each one.
            with shielded(self._bound) as scope:
                if self._owner is None:  # stores without leases need not know the keyword
                    await self._target.checkpoint(self._run_id, step)
                else:
                    await self._target.checkpoint(self._run_id, step, owner=self._owner)
            if scope.cancelled_caught:
                raise TimeoutError(f"the store took over {self._bound:g}s (store_write_timeout)")
        except LeaseLostError as exc:
            return Err(exc)
        except Exception as exc:
            error = StoreError("checkpoint", self._run_id, _describe(exc))
            if isinstance(result, Err):
                logger.error("could not record the failure of step %r: %s", name, error)
                return None
            return Err(error)
        return None

    def _check_type(self, name: str, value: object, type_hint: type) -> Err[Any] | None:
        if not isinstance(value, type_hint):
            return Err(
                SerializationError(
                    name,
                    _qualname(type(value)),
                    f"the step says type={type_hint.__name__}, but it produced this",
                )
            )
        if self._registry.name_of(type_hint) is None:
            try:
                self._registry.register(type_hint)
            except (TypeError, ValueError) as exc:
                return Err(SerializationError(name, _qualname(type_hint), str(exc)))
        return None

    def _fallback_error_record(self, name: str, record: StepRecord) -> str:
        error: object = record.result.error if isinstance(record.result, Err) else None
        stand_in = StoredException(_qualname(type(error)), safe_repr(error))
        return encode_step_record(name, attrs.evolve(record, result=Err(stand_in)), self._registry)


def _encode_final(
    result: Result[Any, Any], registry: TypeRegistry
) -> tuple[Result[Any, Any], Result[Any, Any], str]:
    """The result to return, the result to store, and the latter's JSON.

    A final value with no JSON form fails the run with ``SerializationError``
    (it could not be returned to a later caller); an error value with no JSON
    form is stored as text, so the failure itself is never lost.
    """
    try:
        return result, result, dumps(result_to_doc(result, registry))
    except _Unstorable as exc:
        if isinstance(result, Ok):
            result = Err(SerializationError("<result>", exc.type_name, exc.reason))
            return result, result, dumps(result_to_doc(result, registry))
        error: object = result.error
        stand_in: Result[Any, Any] = Err(StoredException(_qualname(type(error)), safe_repr(error)))
        return result, stand_in, dumps(result_to_doc(stand_in, registry))


def open_session(
    store: object,
    workflow_id: str | None,
    *,
    workflow_name: str,
    clock: Clock,
    handlers: tuple[EventHandler, ...],
    emit: Emit | None,
    write_timeout: float,
    ttl: float | timedelta | None,
    failure_ttl: float | timedelta | None,
    delete_on_success: bool,
    metadata: Mapping[str, Any] | None,
    input: Any,
    lease: float,
    owner: str | None,
    if_running: IfRunning,
) -> DurableSession:
    """The session of a durable run of workflow ``workflow_name`` in ``store`` (see
    `DurableSession`), its arguments validated: ``ValueError`` for a bad TTL, lease,
    owner, ``if_running`` or run id, ``TypeError`` for a store that is no
    `SnapshotStore`.  Installed as the core's `awaitly_anyio._session.OpenSession`."""
    ttl_seconds(ttl)
    ttl_seconds(failure_ttl)
    check_lease(owner or "-", lease)
    if if_running not in ("error", "wait"):
        raise ValueError(f"if_running must be 'error' or 'wait', not {if_running!r}")
    run_id = uuid4_text() if workflow_id is None else check_id(workflow_id)
    basic, checkpoints, leases = _capabilities(store)
    if not basic:
        raise TypeError(f"store must implement SnapshotStore (save/load/...), not {store!r}")
    options = DurableOptions(
        ttl,
        failure_ttl,
        bool(delete_on_success),
        metadata,
        lease=float(lease),
        owner=owner,
        if_running=if_running,
        input=input,
        write_timeout=write_timeout,
    )
    return DurableSession(
        cast(SnapshotStore, store),
        run_id,
        options,
        checkpoints,
        leases,
        workflow_name=workflow_name,
        clock=clock,
        handlers=handlers,
        emit=emit,
    )


class DurableSession:
    """One durable run, as `Workflow.run` drives it (the core's
    `awaitly_anyio._session.DurableRun`): `begin`, the body inside ``with session:``,
    then `finish`, or `cancelled` if the body raised.

    With a `LeaseStore` the run is claimed under a lease that is renewed while
    the body runs (``with session:``); if the lease is lost the body is cancelled
    (the one cancellation the session owns: leaving the block swallows it) and
    `finish` returns ``Err(LeaseLostError)``.  Without leases the run is loaded and
    marked running; a store with only the five `SnapshotStore` methods saves the
    whole snapshot at each write.
    """

    __slots__ = (
        "_checkpoints",
        "_keeper",
        "_leases",
        "_options",
        "_owner",
        "_registry",
        "_store",
        "_target",
        "checkpoint",
        "clock",
        "emit",
        "handlers",
        "input",
        "resume",
        "workflow_id",
        "workflow_name",
    )

    def __init__(
        self,
        store: SnapshotStore,
        workflow_id: str,
        options: DurableOptions,
        checkpoints: bool,
        leases: bool,
        *,
        workflow_name: str,
        clock: Clock,
        handlers: tuple[EventHandler, ...],
        emit: Emit | None,
    ) -> None:
        self.workflow_name = workflow_name
        self.clock = clock
        self.handlers = handlers
        self.emit = emit
        self._store = store
        self.workflow_id = workflow_id
        self._options = options
        self._checkpoints = checkpoints
        self._leases = leases
        self._registry = _store_registry(store)
        self._owner: str | None = None
        self._target: CheckpointStore | _WholeSnapshots | None = None
        self._keeper: _LeaseKeeper | None = None
        self.resume: WorkflowSnapshot | None = None
        self.checkpoint: _Checkpointer | None = None
        self.input: Any = None

    async def begin(self) -> Result[Any, Any] | None:
        """Claim the run (or load it and mark it running); a Result ends the run here.

        Returns a completed run's stored result, or ``Err`` (`RunInProgressError`,
        `WorkflowMismatchError`, `SnapshotDecodeError`, `SerializationError`,
        `StoreError`); ``None`` when the body is to run.  With
        ``if_running="wait"`` it waits (on the workflow's clock) for the lease.
        Cancellation propagates; with leases, a cancellation from the claim on is
        first recorded (in a shielded scope of at most ``store_write_timeout``), so
        the run never keeps a lease nobody renews.
        """
        if self._leases:
            return await self._begin_leased(cast(LeaseStore, self._store))
        return await self._begin_plain(self._store)

    async def _begin_plain(self, store: SnapshotStore) -> Result[Any, Any] | None:
        run, workflow_id, options = self, self.workflow_id, self._options
        try:
            snapshot = await store.load(workflow_id)
        except SnapshotDecodeError as exc:
            return Err(exc)
        except Exception as exc:
            return Err(StoreError("load", workflow_id, _describe(exc)))
        if snapshot is not None:
            if snapshot.workflow_name != run.workflow_name:
                return Err(
                    WorkflowMismatchError(workflow_id, snapshot.workflow_name, run.workflow_name)
                )
            if snapshot.status == "completed" and snapshot.result is not None:
                return snapshot.result
        target: CheckpointStore | _WholeSnapshots = (
            cast(CheckpointStore, store) if self._checkpoints else _WholeSnapshots(store, snapshot)
        )
        self._target = target
        input, metadata = _input_and_metadata(options, snapshot)
        if run.handlers:
            if snapshot is None:
                metadata = _with_trace_carrier(run, workflow_id, metadata)
            else:
                _emit_resumed(run, workflow_id, snapshot.metadata)
        try:
            await target.mark_running(workflow_id, run.workflow_name, metadata=metadata)
        except SerializationError as exc:
            return Err(exc)
        except Exception as exc:
            return Err(StoreError("start", workflow_id, _describe(exc)))
        self.resume = snapshot
        self.input = input
        self.checkpoint = _Checkpointer(
            target, workflow_id, self._registry, run.clock.time, None, options.write_timeout
        )
        return None

    async def _begin_leased(self, store: LeaseStore) -> Result[Any, Any] | None:
        run, workflow_id, options = self, self.workflow_id, self._options
        owner = options.owner or _abandoned.pop(workflow_id, None) or default_owner()
        self._owner = owner
        self._target = store
        metadata = dict(options.metadata or {})
        if options.input is not None:
            metadata[INPUT_KEY] = options.input
        stored_trace: object = None
        if run.handlers and _trace_sources(run):
            # Someone wants the run's trace context kept: only a run created now takes
            # it (one read first, paid only then), an existing run keeps its original one.
            try:
                existing = await store.load(workflow_id)
            except Exception:
                existing = None  # the claim reports what is wrong with the store or run
            else:
                if existing is None:
                    metadata = dict(_with_trace_carrier(run, workflow_id, metadata) or {})
                else:
                    stored_trace = existing.metadata.get(TRACE_CONTEXT_KEY)
        try:
            # From the claim on, a cancellation (even one landing mid-claim) is recorded,
            # so the run is never left holding a lease nobody renews.
            claimed = await _claim(run, store, workflow_id, owner, options, metadata or None)
            if not isinstance(claimed, Claim):
                return claimed
            # The stores shipped here decode an existing run while claiming it (so a
            # damaged one is refused before anything is written) and hand it over: no
            # second read.
            snapshot: WorkflowSnapshot | None = claimed.snapshot
            if not claimed.fresh and snapshot is None:
                try:
                    snapshot = await store.load(workflow_id)
                except SnapshotDecodeError as exc:
                    await _release(store, workflow_id, owner, options.write_timeout)
                    return Err(exc)
                except Exception as exc:
                    await _release(store, workflow_id, owner, options.write_timeout)
                    return Err(StoreError("load", workflow_id, _describe(exc)))
        except BaseException:
            await _record_cancellation(store, workflow_id, owner, options.write_timeout)
            raise
        input = options.input
        if input is None and snapshot is not None:
            input = snapshot.metadata.get(INPUT_KEY)
        if snapshot is not None and run.handlers:
            _emit_resumed(run, workflow_id, snapshot.metadata, stored_trace)
        self.resume = snapshot
        self.input = input
        self.checkpoint = _Checkpointer(
            store, workflow_id, self._registry, run.clock.time, owner, options.write_timeout
        )
        self._keeper = _LeaseKeeper(store, workflow_id, owner, options.lease)
        return None

    def __enter__(self) -> None:
        """Start keeping the lease (renewals begin a third of the lease from now) and
        enter the scope a lost lease cancels."""
        keeper = self._keeper
        if keeper is not None:
            keeper.start()
            keeper.body_scope.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        """Stop the renewals; swallows only the cancellation a lost lease caused."""
        keeper = self._keeper
        if keeper is None:
            return False
        try:
            return bool(keeper.body_scope.__exit__(exc_type, exc, traceback))
        finally:
            keeper.stop()

    async def cancelled(self) -> None:
        """Record the run as ``cancelled`` (releasing its lease) in a shielded scope of
        at most ``store_write_timeout``; never raises (a failure is logged)."""
        target = self._target
        if target is not None:
            await _record_cancellation(
                target, self.workflow_id, self._owner, self._options.write_timeout
            )

    async def finish(self, result: Result[Any, Any] | None) -> Result[Any, Any]:
        """Record how the run ended and return what `Workflow.run` returns.

        ``result`` is the body's outcome, ``None`` if the session swallowed the
        body's cancellation (a lost lease): that returns ``Err(LeaseLostError)``.
        A completed run is kept for ``ttl`` (or deleted), a failed one for
        ``failure_ttl`` with the error in its metadata, in a shielded scope of at
        most ``store_write_timeout``; a store failure returns ``Err(StoreError)``, a
        final value with no JSON form ``Err(SerializationError)``.
        """
        keeper = self._keeper
        if keeper is not None:
            if keeper.lost or result is None:
                return Err(LeaseLostError(self.workflow_id, self._owner or "?"))
            if isinstance(result, Err) and isinstance(result.error, LeaseLostError):
                return result
        assert result is not None
        assert self._target is not None
        return await _finish(
            self._target,
            self._store,
            self,
            self.workflow_id,
            result,
            self._registry,
            self._options,
            self._owner,
        )


def _input_and_metadata(
    options: DurableOptions, snapshot: WorkflowSnapshot | None
) -> tuple[Any, Mapping[str, Any] | None]:
    """The run's input (given now, or kept from an earlier start) and the metadata to
    record, which carries the input so any worker can resume the run."""
    metadata = dict(options.metadata or {})
    if options.input is not None:
        metadata[INPUT_KEY] = options.input
        return options.input, metadata
    stored = None if snapshot is None else snapshot.metadata.get(INPUT_KEY)
    return stored, metadata or None


def _trace_sources(run: DurableSession) -> list[Callable[[str], object]]:
    """The ``trace_carrier`` methods of the workflow's handlers' owners (see
    `TraceCarrierSource`)."""
    found: list[Callable[[str], object]] = []
    for handler in run.handlers:
        source = getattr(getattr(handler, "__self__", handler), "trace_carrier", None)
        if callable(source):
            found.append(source)
    return found


def _with_trace_carrier(
    run: DurableSession, workflow_id: str, metadata: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """``metadata`` with the trace context a source gives for a run created now."""
    for source in _trace_sources(run):
        try:
            carrier = source(workflow_id)
        except Exception:
            logger.exception("trace_carrier of %r failed", source)
            continue
        if isinstance(carrier, Mapping) and carrier:
            items = cast("Mapping[object, object]", carrier)  # isinstance: unknown types
            return {
                **(metadata or {}),
                TRACE_CONTEXT_KEY: {str(k): str(v) for k, v in items.items()},
            }
    return metadata


def _emit_resumed(
    run: DurableSession,
    workflow_id: str,
    metadata: Mapping[str, Any],
    stored: object = None,
) -> None:
    """Emit ``workflow_resumed`` for a run that keeps a trace context (``stored``, read
    before the claim, or the one in its metadata)."""
    trace_context = stored if stored is not None else metadata.get(TRACE_CONTEXT_KEY)
    emit = run.emit
    if emit is None or not isinstance(trace_context, Mapping) or not trace_context:
        return
    items = cast("Mapping[object, object]", trace_context)  # isinstance: unknown types
    emit(
        WorkflowResumed(
            workflow_id=workflow_id,
            workflow_name=run.workflow_name,
            ts=run.clock.time(),
            trace_context={str(k): str(v) for k, v in items.items()},
        )
    )


async def _record_cancellation(
    target: CheckpointStore | _WholeSnapshots, workflow_id: str, owner: str | None, bound: float
) -> None:
    """Mark the run ``cancelled`` (releasing its lease) in a shielded scope of at most
    ``bound`` seconds.  If the store fails or stalls past the bound, the run keeps
    its last record and, with a lease, a lease nobody renews: a warning says so, and
    a later start of the run in this process takes the lease over at once."""
    try:
        await _shielded_write(
            lambda: _call_finish(target, workflow_id, "cancelled", None, None, owner=owner), bound
        )
    except (LeaseLostError, LookupError):
        pass  # another worker has the run now (or never had it): theirs to record
    except Exception as exc:
        _remember_abandoned(workflow_id, owner)
        logger.warning(
            "could not record the cancellation of run %r (%s); it stays as last recorded%s",
            workflow_id,
            _describe(exc),
            "" if owner is None else ", its lease lapses unrenewed",
        )


@functools.lru_cache(maxsize=1)
def _host() -> str:
    return socket.gethostname()


def default_owner() -> str:
    """A lease owner id unique to this process and call: ``host:pid:random``."""
    return f"{_host()}:{os.getpid()}:{secrets.token_hex(6)}"


async def _claim(
    run: DurableSession,
    store: LeaseStore,
    workflow_id: str,
    owner: str,
    options: DurableOptions,
    metadata: Mapping[str, Any] | None,
) -> Claim | Result[Any, Any]:
    """Claim the run, waiting for another holder if asked; a Result ends the run here."""
    while True:
        try:
            claim = await store.claim(
                workflow_id,
                run.workflow_name,
                owner=owner,
                lease=options.lease,
                metadata=metadata,
            )
        except (SerializationError, SnapshotDecodeError) as exc:
            # A run that cannot be decoded is refused by the claim itself, untouched.
            return Err(exc)
        except Exception as exc:
            return Err(StoreError("claim", workflow_id, _describe(exc)))
        if claim.outcome == "claimed":
            return claim
        if claim.outcome == "mismatch":
            stored = claim.workflow_name or "?"
            return Err(WorkflowMismatchError(workflow_id, stored, run.workflow_name))
        if claim.outcome == "completed":
            try:
                snapshot = await store.load(workflow_id)
            except SnapshotDecodeError as exc:
                return Err(exc)
            except Exception as exc:
                return Err(StoreError("load", workflow_id, _describe(exc)))
            if snapshot is not None and snapshot.result is not None:
                return snapshot.result
            continue  # it expired meanwhile: claim it afresh
        holder, until = claim.owner or "?", claim.lease_expires_at or 0.0
        if options.if_running == "error":
            return Err(RunInProgressError(workflow_id, holder, until))
        wait = min(options.lease / 3, max(until - run.clock.time(), 0.0))
        await run.clock.sleep(max(wait, 0.01))


class _LeaseKeeper:
    """Renews the run's lease while the body runs; if the lease is lost the body is
    cancelled (this run owns that cancellation) and the run returns
    ``Err(LeaseLostError)``.

    The renewing task is started beside the run rather than in a task group of its
    own: opening a task group costs more than the rest of a short run's bookkeeping,
    and most runs end long before their first renewal.  The task never raises (a
    failed renewal is retried until the lease would have run out), and `stop`
    cancels it; a renewal still in flight then is a compare-and-set on the owner,
    so it cannot touch the run once it has ended.  Lease loss is the one
    cancellation this scope owns: it cancels the body's scope, nothing else.
    """

    def __init__(self, store: LeaseStore, workflow_id: str, owner: str, lease: float) -> None:
        self._store = store
        self._workflow_id = workflow_id
        self._owner = owner
        self._lease = lease
        self.lost = False
        self.body_scope = cancel_scope()
        self._stop: Callable[[], object] | None = None
        self._task: asyncio.Task[None] | None = None  # asyncio keeps only weak references

    def start(self) -> None:
        """Start renewing from a task started only once the first renewal is due (a
        timer until then, the cheapest thing each loop has), since most runs end
        before it: on trio a system task, on asyncio a task."""
        every = self._lease / 3
        if current_async_library() == "trio":
            import trio

            def spawn() -> None:
                scope = trio.CancelScope()

                async def keep() -> None:
                    with scope:
                        await self._keep(0.0)

                trio.lowlevel.spawn_system_task(keep)
                self._stop = scope.cancel

            self._stop = trio_call_later(every, spawn)
        else:
            loop = asyncio.get_running_loop()

            def spawn() -> None:
                self._task = loop.create_task(self._keep(0.0))
                self._stop = self._task.cancel

            self._stop = loop.call_later(every, spawn).cancel

    def stop(self) -> None:
        """Stop renewing; a renewing task ends at its next await."""
        if self._stop is not None:
            self._stop()
        self._stop = self._task = None

    async def _keep(self, first: float) -> None:
        wait = first
        while True:
            await anyio.sleep(wait)
            wait = self._lease / 3
            try:
                held = await self._store.renew(
                    self._workflow_id, owner=self._owner, lease=self._lease
                )
            except Exception:
                # A blip: keep trying until the lease would have run out.
                logger.warning("could not renew the lease on run %r", self._workflow_id)
                continue
            if not held:
                self.lost = True
                self.body_scope.cancel()
                return


async def _release(store: LeaseStore, workflow_id: str, owner: str, bound: float) -> None:
    try:
        await _shielded_write(lambda: store.release(workflow_id, owner=owner), bound)
    except Exception as exc:
        _remember_abandoned(workflow_id, owner)
        logger.warning("could not release the lease on run %r (%s)", workflow_id, _describe(exc))


async def _finish(
    target: CheckpointStore | _WholeSnapshots,
    store: SnapshotStore,
    run: DurableSession,
    workflow_id: str,
    result: Result[Any, Any],
    registry: TypeRegistry,
    options: DurableOptions,
    owner: str | None,
) -> Result[Any, Any]:
    result, stored, text = _encode_final(result, registry)
    try:
        # The run's work is done: record it even if a shutdown is cancelling us (a
        # short, bounded write), or the whole run would be executed again.
        await _shielded_write(
            lambda: _record_end(
                target, store, run, workflow_id, result, stored, text, options, owner
            ),
            options.write_timeout,
        )
    except LeaseLostError as exc:
        return Err(exc)
    except Exception as exc:
        # Its lease (if any) is left unrenewed: a later start here takes it over at once.
        _remember_abandoned(workflow_id, owner)
        return Err(StoreError("finish", workflow_id, _describe(exc)))
    return result


async def _record_end(
    target: CheckpointStore | _WholeSnapshots,
    store: SnapshotStore,
    run: DurableSession,
    workflow_id: str,
    result: Result[Any, Any],
    stored: Result[Any, Any],
    text: str,
    options: DurableOptions,
    owner: str | None,
) -> None:
    """Write how the run ended: its result, or its deletion, or its failure."""
    if isinstance(result, Ok):
        if options.delete_on_success:
            await store.delete(workflow_id)
        else:
            await _call_finish(
                target, workflow_id, "completed", stored, text, ttl=options.ttl, owner=owner
            )
        return
    metadata = {
        "error": _error_text(result.error),
        "last_attempt": iso_from_epoch(run.clock.time()),
    }
    await _call_finish(
        target,
        workflow_id,
        "failed",
        stored,
        text,
        ttl=options.failure_ttl,
        metadata=metadata,
        owner=owner,
    )


async def _call_finish(
    target: CheckpointStore | _WholeSnapshots,
    workflow_id: str,
    status: RunStatus,
    result: Result[Any, Any] | None,
    result_json: str | None,
    *,
    owner: str | None,
    ttl: Ttl = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """``target.finish``, passing ``owner`` only to stores with leases."""
    if owner is None:
        await target.finish(workflow_id, status, result, result_json, ttl=ttl, metadata=metadata)
    else:
        await target.finish(
            workflow_id, status, result, result_json, ttl=ttl, metadata=metadata, owner=owner
        )


def _error_text(error: object) -> str:
    if isinstance(error, BaseException):
        return "".join(traceback.format_exception_only(type(error), error)).strip()
    return safe_repr(error)


install(open_session)
