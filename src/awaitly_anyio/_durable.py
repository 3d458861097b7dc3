"""Durable runs: a workflow run that checkpoints each keyed step to a store and resumes.

``await workflow.run(body, workflow_id="order-42", store=store)``:

1. loads run ``order-42``; a run that already ``completed`` returns its stored
   result without executing anything (so retrying a request is idempotent); a
   start with another ``input`` than the stored run's returns
   ``Err(InputConflictError)`` and writes nothing;
2. marks it ``running`` and runs the body, answering keyed steps that already
   completed from their records;
3. writes each keyed step's record as it completes, *before* the step returns,
   so a step reported complete is in the store (a crash re-runs only unkeyed
   steps and the keyed step that was in flight);
4. on success records the result (or deletes the run, ``delete_on_success=True``);
   on failure records the error with ``failure_ttl`` and metadata; on
   cancellation records ``cancelled`` inside a short shielded scope, then
   re-raises.  A cancel requested through the store (``store.cancel``, from any
   process) stops the body; the run is recorded ``cancelled`` and returns
   ``Err(RunStateError(id, "cancelled", "continue"))`` (see `_LeaseKeeper`).

The library's own metadata entries (input, failure details, trace context) use
keys starting with ``awaitly.`` (`awaitly_anyio._input`); user metadata may not.

Store failures and values that cannot be serialized end the run with
``Err(StoreError)`` / ``Err(SerializationError)``; nothing half-written is
ever reported as complete.

The run is a `DurableSession` that the core's `Workflow.run` drives (begin, the
body, finish); this module installs `open_session` into the core's slot
(`awaitly_anyio._session`) and imports nothing of the workflow itself.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import secrets
import socket
import sys
import traceback
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

import anyio
import attrs

from ._checks import check_id, check_lease, ttl_seconds
from ._clock import Clock
from ._errors import (
    InputConflictError,
    LeaseLostError,
    RunInProgressError,
    RunStateError,
    SerializationError,
    SnapshotDecodeError,
    StoredException,
    StoreError,
    WorkflowMismatchError,
    describe,
)
from ._ids import uuid4_text
from ._input import (
    ERROR_KEY,
    INPUT_KEY,
    LAST_ATTEMPT_KEY,
    TRACE_KEY,
    check_user_metadata,
    metadata_with_input,
    same_input,
    stored_input,
    stored_trace_context,
)
from ._loops import Loop, Scope, current
from ._result import Err, Ok, Result
from ._resume import StepRecord
from ._run import Emit, logger
from ._session import IfRunning, install
from ._snapshot import RunStatus, WorkflowSnapshot
from ._store import (
    CheckpointStore,
    Claim,
    EncodedStep,
    LeaseStore,
    MailboxStore,
    SendWatch,
    SnapshotStore,
    Ttl,
)
from ._times import from_epoch, iso_from_epoch
from ._waiting import parked_in, wait_in_store
from .events import EventHandler, StepWaiting, WorkflowResumed
from .serialization import (
    TypeRegistry,
    _qualname,
    _Unstorable,
    default_registry,
    dumps,
    encode_result,
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
    with current().shielded(bound) as scope:
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


Pushes = Literal["", "sends", "hook"]
"""How a store tells a run's worker about a change of the run (a cancel request):
``"hook"``, an ``on_push(run_id, callback)`` method called for cancel requests only
(a callback per run, nearly free, so the keeper listens from the run's start);
``"sends"``, only `MailboxStore.sends` (a watch the keeping task holds once it
runs); ``""``, nothing (renewals only)."""


_CAPABILITIES: dict[type, tuple[bool, bool, bool, Pushes]] = {}


def _capabilities(store: object) -> tuple[bool, bool, bool, Pushes]:
    """Whether ``store`` is a SnapshotStore, a CheckpointStore and a LeaseStore, and how
    it pushes changes of runs (`Pushes`); cached by class, since a runtime protocol
    check inspects every method each time."""
    kind = type(store)
    found = _CAPABILITIES.get(kind)
    if found is None:
        pushes: Pushes = ""
        if isinstance(store, MailboxStore):
            pushes = "hook" if callable(getattr(kind, "on_push", None)) else "sends"
        found = (
            isinstance(store, SnapshotStore),
            isinstance(store, CheckpointStore),
            isinstance(store, LeaseStore),
            pushes,
        )
        _CAPABILITIES[kind] = found
    return found


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
        loop: Loop,
        owner: str | None = None,
        bound: float = FINAL_CHECKPOINT_SECONDS,
        clock: Clock | None = None,
        emit: Emit | None = None,
        workflow_name: str = "",
    ) -> None:
        self._target = target
        self._run_id = run_id
        self._registry = registry
        self._now = now
        self._loop = loop
        self._owner = owner
        self._bound = bound
        self._clock = clock
        self._emit = emit
        self._workflow_name = workflow_name
        # The step whose record a wait already wrote with the value it consumed (one
        # write for both): its checkpoint is not written again.
        self._received: str | None = None
        # Whether a step of the run is waiting now: a run cancelled then (a shutdown)
        # stays `waiting` in the store, with its deadline, instead of `cancelled`.
        self.waiting = False

    @property
    def workflow_id(self) -> str:
        """The run's id."""
        return self._run_id

    async def wait(
        self, name: str, step: str, key: str | None, kind: str, seconds: float | None
    ) -> Result[Any, Any]:
        """A durable wait of this run (see `awaitly_anyio._waits.DurableWaits`)."""
        clock = self._clock
        assert clock is not None  # the session gives it; a bare checkpointer cannot wait
        emit = self._emit
        waiting = (
            None
            if emit is None
            else _announce_wait(
                emit, clock, self._run_id, self._workflow_name, name, step, key, kind
            )
        )
        target = self._target
        # Left set when the wait raises (cancelled, parked): see `DurableSession.cancelled`.
        self.waiting = True
        result = await wait_in_store(
            target._store if isinstance(target, _WholeSnapshots) else target,
            self._run_id,
            self._owner,
            clock,
            name,
            step,
            key,
            kind,
            seconds,
            waiting,
        )
        self.waiting = False
        if key is not None and isinstance(result, Ok):
            self._received = step
        return result

    async def __call__(
        self,
        name: str,
        key: str,
        result: Result[Any, Any],
        attempts: int,
        started_at: float,
        type_hint: type | None,
    ) -> Err[Any] | None:
        if self._received == key:
            self._received = None  # the wait wrote this record already, with the value
            return None
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
            with self._loop.shielded(self._bound) as scope:
                if self._owner is None:  # stores without leases need not know the keyword
                    await self._target.checkpoint(self._run_id, step)
                else:
                    await self._target.checkpoint(self._run_id, step, owner=self._owner)
            if scope.cancelled_caught:
                raise TimeoutError(f"the store took over {self._bound:g}s (store_write_timeout)")
        except LeaseLostError as exc:
            return Err(exc)
        except Exception as exc:
            error = StoreError("checkpoint", self._run_id, describe(exc))
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


def _announce_wait(
    emit: Emit,
    clock: Clock,
    run_id: str,
    workflow_name: str,
    name: str,
    step: str,
    key: str | None,
    kind: str,
) -> Callable[[float | None], None]:
    """What emits a step's `StepWaiting` once its wait is recorded, with the deadline."""

    def waiting(deadline: float | None) -> None:
        emit(
            StepWaiting(
                workflow_id=run_id,
                workflow_name=workflow_name,
                ts=clock.time(),
                name=name,
                step_key=step,
                waiting_for=key,
                wait_kind=kind,
                wake_at=deadline,
            )
        )

    return waiting


def _encode_final(
    result: Result[Any, Any], registry: TypeRegistry
) -> tuple[Result[Any, Any], Result[Any, Any], str]:
    """The result to return, the result to store, and the latter's JSON.

    A final value with no JSON form fails the run with ``SerializationError``
    (it could not be returned to a later caller); an error value with no JSON
    form is stored as text, so the failure itself is never lost.
    """
    try:
        return result, result, encode_result(result, registry)
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
    owner, ``if_running`` or run id, or a ``metadata`` key the library reserves
    (`awaitly_anyio._input.PREFIX`), ``TypeError`` for a store that is no
    `SnapshotStore` or metadata that is no mapping with string keys.  Installed as
    the core's `awaitly_anyio._session.OpenSession`."""
    metadata = check_user_metadata(metadata)
    ttl_seconds(ttl)
    ttl_seconds(failure_ttl)
    check_lease(owner or "-", lease)
    if if_running not in ("error", "wait"):
        raise ValueError(f"if_running must be 'error' or 'wait', not {if_running!r}")
    run_id = uuid4_text() if workflow_id is None else check_id(workflow_id)
    basic, checkpoints, leases, pushes = _capabilities(store)
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
        pushes,
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
        "_loop",
        "_open",
        "_options",
        "_owner",
        "_pushes",
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
        pushes: Pushes = "",
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
        self._pushes: Pushes = pushes
        self._registry = _store_registry(store)
        self._owner: str | None = None
        self._target: CheckpointStore | _WholeSnapshots | None = None
        self._keeper: _LeaseKeeper | None = None
        self._loop: Loop | None = None
        self._open: Scope | None = None
        self.resume: WorkflowSnapshot | None = None
        self.checkpoint: _Checkpointer | None = None
        self.input: Any = None

    async def begin(self) -> Result[Any, Any] | None:
        """Claim the run (or load it and mark it running); a Result ends the run here.

        Returns a completed run's stored result, or ``Err`` (`RunInProgressError`,
        `WorkflowMismatchError`, `InputConflictError`, `SnapshotDecodeError`,
        `SerializationError`, `StoreError`); ``None`` when the body is to run.  With
        ``if_running="wait"`` it waits (on the workflow's clock) for the lease.
        Cancellation propagates; with leases, a cancellation from the claim on is
        first recorded (in a shielded scope of at most ``store_write_timeout``), so
        the run never keeps a lease nobody renews.
        """
        # The session lives in one task: its loop is looked up once, here.
        loop = self._loop = current()
        if not self._leases:
            return await self._begin_plain(self._store, loop)
        # The leased path, every run of every shipped store, is spelt out here (no
        # coroutine between the workflow and the store's claim).
        store = cast(LeaseStore, self._store)
        workflow_id, options = self.workflow_id, self._options
        owner = options.owner or _abandoned.pop(workflow_id, None) or default_owner()
        self._owner = owner
        self._target = store
        metadata = metadata_with_input(options.metadata, options.input)
        stored_trace: object = None
        if self.handlers and _trace_sources(self):
            # Someone wants the run's trace context kept: only a run created now takes
            # it (one read first, paid only then), an existing run keeps its original one.
            try:
                existing = await store.load(workflow_id)
            except Exception:
                existing = None  # the claim reports what is wrong with the store or run
            else:
                if existing is None:
                    metadata = dict(_with_trace_carrier(self, workflow_id, metadata) or {})
                elif existing.workflow_name == self.workflow_name and self._conflicts(existing):
                    return Err(InputConflictError(workflow_id, self.workflow_name))
                else:
                    stored_trace = stored_trace_context(existing.metadata)
        try:
            # From the claim on, a cancellation (even one landing mid-claim) is recorded,
            # so the run is never left holding a lease nobody renews.
            try:
                claim = await store.claim(
                    workflow_id,
                    self.workflow_name,
                    owner=owner,
                    lease=options.lease,
                    metadata=metadata or None,
                )
            except (SerializationError, SnapshotDecodeError) as exc:
                # A run that cannot be decoded is refused by the claim itself, untouched.
                return Err(exc)
            except Exception as exc:
                return Err(StoreError("claim", workflow_id, describe(exc)))
            if claim.outcome != "claimed":
                settled = await _settle_claim(self, store, owner, metadata or None, claim)
                if not isinstance(settled, Claim):
                    return settled
                claim = settled
            # The stores shipped here decode an existing run while claiming it (so a
            # damaged one is refused before anything is written) and hand it over: no
            # second read.
            snapshot: WorkflowSnapshot | None = claim.snapshot
            if not claim.fresh and snapshot is None:
                try:
                    snapshot = await store.load(workflow_id)
                except SnapshotDecodeError as exc:
                    await _release(store, workflow_id, owner, options.write_timeout)
                    return Err(exc)
                except Exception as exc:
                    await _release(store, workflow_id, owner, options.write_timeout)
                    return Err(StoreError("load", workflow_id, describe(exc)))
        except BaseException:
            await _record_cancellation(store, workflow_id, owner, options.write_timeout)
            raise
        if snapshot is not None:
            self.resume = snapshot
            input = options.input
            self.input = stored_input(snapshot.metadata) if input is None else input
            if self.handlers:
                _emit_resumed(self, workflow_id, snapshot.metadata, stored_trace)
        else:
            self.input = options.input
        self.checkpoint = _Checkpointer(
            store,
            workflow_id,
            self._registry,
            self.clock.time,
            loop,
            owner,
            options.write_timeout,
            self.clock,
            self.emit,
            self.workflow_name,
        )
        self._keeper = _LeaseKeeper(store, workflow_id, owner, options.lease, loop, self._pushes)
        return None

    async def _begin_plain(self, store: SnapshotStore, loop: Loop) -> Result[Any, Any] | None:
        workflow_id, options = self.workflow_id, self._options
        try:
            snapshot = await store.load(workflow_id)
        except SnapshotDecodeError as exc:
            return Err(exc)
        except Exception as exc:
            return Err(StoreError("load", workflow_id, describe(exc)))
        if snapshot is not None:
            if snapshot.workflow_name != self.workflow_name:
                stored = snapshot.workflow_name
                return Err(WorkflowMismatchError(workflow_id, stored, self.workflow_name))
            if self._conflicts(snapshot):
                return Err(InputConflictError(workflow_id, self.workflow_name))
            if snapshot.status == "completed" and snapshot.result is not None:
                return snapshot.result
        target: CheckpointStore | _WholeSnapshots = (
            cast(CheckpointStore, store) if self._checkpoints else _WholeSnapshots(store, snapshot)
        )
        self._target = target
        input, metadata = _input_and_metadata(options, snapshot)
        if self.handlers:
            if snapshot is None:
                metadata = _with_trace_carrier(self, workflow_id, metadata)
            else:
                _emit_resumed(self, workflow_id, snapshot.metadata)
        try:
            await target.mark_running(workflow_id, self.workflow_name, metadata=metadata)
        except SerializationError as exc:
            return Err(exc)
        except Exception as exc:
            return Err(StoreError("start", workflow_id, describe(exc)))
        self.resume = snapshot
        self.input = input
        self.checkpoint = _Checkpointer(
            target,
            workflow_id,
            self._registry,
            self.clock.time,
            loop,
            None,
            options.write_timeout,
            self.clock,
            self.emit,
            self.workflow_name,
        )
        return None

    def _conflicts(self, snapshot: WorkflowSnapshot) -> bool:
        """Whether this start gives an input other than the one ``snapshot`` (the stored
        run) keeps: a conflict, not a resume.  No input given: never."""
        given = self._options.input
        if given is None:
            return False
        return not same_input(stored_input(snapshot.metadata), given, self._registry)

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
        """Stop the renewals; swallows only the cancellation a lost lease caused.

        A body that ended without an exception, its lease held, leaves its scope
        open where the loop re-arms an open scope more cheaply than it enters one
        (`Loop.reuses_open_scopes`): `finish` (which must
        follow) makes it the bounded shield of the run's last write and closes it, so
        the run enters one scope fewer."""
        keeper = self._keeper
        if keeper is None:
            return False
        scope = keeper.body_scope
        if (
            exc_type is None
            and not keeper.lost
            and not keeper.cancel_requested
            and keeper.loop.reuses_open_scopes
        ):
            keeper.stop()  # before the scope is reused: nothing may cancel it now
            self._open = scope
            return False
        try:
            return bool(scope.__exit__(exc_type, exc, traceback))
        finally:
            keeper.stop()

    async def cancelled(self) -> None:
        """Record the run as ``cancelled`` (releasing its lease) in a shielded scope of
        at most ``store_write_timeout``; never raises (a failure is logged).  Called
        while the body's exception propagates: a run its host parks (`RunParked`), or
        one cancelled while a step waits, only releases its lease and stays
        ``waiting``."""
        target = self._target
        if target is None:
            return
        checkpoint = self.checkpoint
        if parked_in(sys.exception()) or (
            isinstance(checkpoint, _Checkpointer) and checkpoint.waiting
        ):
            # Parked by its host, or cancelled while it waited (a shutdown): the run stays
            # `waiting` with its deadline; only its lease goes, so that any worker's
            # recovery resumes it when it is due.
            owner = self._owner
            if owner is not None and isinstance(target, LeaseStore):
                await _release(target, self.workflow_id, owner, self._options.write_timeout)
            return
        await _record_cancellation(
            target, self.workflow_id, self._owner, self._options.write_timeout
        )

    async def finish(self, result: Result[Any, Any] | None) -> Result[Any, Any]:
        """Record how the run ended and return what `Workflow.run` returns.

        ``result`` is the body's outcome, ``None`` if the session swallowed the
        body's cancellation: for a lost lease that returns ``Err(LeaseLostError)``;
        for a cancel requested from outside (``store.cancel``) the run is recorded
        ``cancelled`` (shielded, at most ``store_write_timeout``; a failure is
        logged) and ``Err(RunStateError(id, "cancelled", "continue"))`` returned.
        A completed run is kept for ``ttl`` (or deleted), a failed one for
        ``failure_ttl`` with the error in its metadata, in a shielded scope of at
        most ``store_write_timeout``; a store failure returns ``Err(StoreError)``, a
        final value with no JSON form ``Err(SerializationError)``.
        """
        workflow_id, owner = self.workflow_id, self._owner
        keeper = self._keeper
        # The body's scope, if the block left it open (see `__exit__`): closed here on
        # every path.
        scope = self._open
        self._open = None
        if keeper is not None:
            if keeper.cancel_requested and result is None:
                # Cancelled from outside the process (`store.cancel`): the body stopped
                # where it was; the run ends `cancelled`, still under this worker's lease.
                if scope is not None:
                    scope.__exit__(None, None, None)
                assert self._target is not None
                await _record_cancellation(
                    self._target, workflow_id, owner, self._options.write_timeout
                )
                return Err(RunStateError(workflow_id, "cancelled", "continue"))
            ended: Result[Any, Any] | None = None
            if keeper.lost or result is None:
                ended = Err(LeaseLostError(workflow_id, owner or "?"))
            elif isinstance(result, Err) and isinstance(result.error, LeaseLostError):
                ended = result
            if ended is not None:
                if scope is not None:
                    scope.__exit__(None, None, None)
                return ended
        assert result is not None
        target, options, loop = self._target, self._options, self._loop
        assert target is not None
        assert loop is not None
        bound = options.write_timeout
        if scope is None:
            scope = loop.shielded(bound)
            scope.__enter__()
        else:
            # The body's scope, still open and never cancelled (its keeper stopped
            # before the body's block ended), becomes the write's bounded shield.
            loop.shield_open(scope, bound)
        try:
            # The run's work is done: record it even if a shutdown is cancelling us (a
            # short, bounded write), or the whole run would be executed again.  The
            # common end (completed, kept) is spelt out: no coroutine between here and
            # the store's write.  The scope's `with` is spelt out too (it was entered
            # by the body's block, or just above).
            try:
                result, stored, text = _encode_final(result, self._registry)
                if isinstance(result, Ok) and not options.delete_on_success:
                    if owner is None:
                        await target.finish(workflow_id, "completed", stored, text, ttl=options.ttl)
                    else:
                        await target.finish(
                            workflow_id, "completed", stored, text, ttl=options.ttl, owner=owner
                        )
                else:
                    await _record_end(
                        target, self._store, self, workflow_id, result, stored, text, options, owner
                    )
            except BaseException as exc:
                if not scope.__exit__(type(exc), exc, exc.__traceback__):
                    raise
            else:
                scope.__exit__(None, None, None)
            if scope.cancelled_caught:
                raise TimeoutError(f"the store took over {bound:g}s (store_write_timeout)")
        except LeaseLostError as exc:
            return Err(exc)
        except Exception as exc:
            # Its lease (if any) is left unrenewed: a later start here takes it over at once.
            _remember_abandoned(workflow_id, owner)
            return Err(StoreError("finish", workflow_id, describe(exc)))
        return result


def _input_and_metadata(
    options: DurableOptions, snapshot: WorkflowSnapshot | None
) -> tuple[Any, Mapping[str, Any] | None]:
    """The run's input (given now, or kept from an earlier start) and the metadata to
    record, which carries the input so any worker can resume the run."""
    metadata = metadata_with_input(options.metadata, options.input)
    if options.input is not None:
        return options.input, metadata
    return (None if snapshot is None else stored_input(snapshot.metadata)), metadata


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
                TRACE_KEY: {str(k): str(v) for k, v in items.items()},
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
    trace_context = stored if stored is not None else stored_trace_context(metadata)
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
            describe(exc),
            "" if owner is None else ", its lease lapses unrenewed",
        )


@functools.lru_cache(maxsize=1)
def _host() -> str:
    return socket.gethostname()


_owner_prefix: str | None = None
_owner_count = itertools.count(1)


def _forget_owner_prefix() -> None:
    global _owner_prefix
    _owner_prefix = None


if hasattr(os, "register_at_fork"):  # a forked child has its own pid and random part
    os.register_at_fork(after_in_child=_forget_owner_prefix)


def default_owner() -> str:
    """A lease owner id unique to this process and call: ``host:pid:random``, the
    random part a process-wide random prefix and a per-call counter."""
    global _owner_prefix
    prefix = _owner_prefix
    if prefix is None:
        # One random draw per process (a system call each time was most of the cost).
        prefix = _owner_prefix = f"{_host()}:{os.getpid()}:{secrets.token_hex(6)}"
    return f"{prefix}{next(_owner_count):x}"


async def _settle_claim(
    run: DurableSession,
    store: LeaseStore,
    owner: str,
    metadata: Mapping[str, Any] | None,
    claim: Claim,
) -> Claim | Result[Any, Any]:
    """Settle a claim that did not take the run: a Result ends the run here (its stored
    result, a mismatch, a run held elsewhere with ``if_running="error"``); otherwise
    claim again (after waiting for the holder, on the workflow's clock) until it is
    taken."""
    workflow_id, options = run.workflow_id, run._options
    while True:
        if claim.outcome == "claimed":
            return claim
        # (A str: "conflict" is an outcome of stores that check the input in the claim.)
        outcome = str(claim.outcome)
        if outcome == "mismatch":
            stored = claim.workflow_name or "?"
            return Err(WorkflowMismatchError(workflow_id, stored, run.workflow_name))
        if outcome == "conflict":
            return Err(InputConflictError(workflow_id, run.workflow_name))
        if outcome == "completed":
            try:
                snapshot = await store.load(workflow_id)
            except SnapshotDecodeError as exc:
                return Err(exc)
            except Exception as exc:
                return Err(StoreError("load", workflow_id, describe(exc)))
            if snapshot is not None and run._conflicts(snapshot):
                # Read anyway for its result: a completed run started with another
                # input is a conflict, not its old result.
                return Err(InputConflictError(workflow_id, run.workflow_name))
            if snapshot is not None and snapshot.result is not None:
                return snapshot.result
            # It expired meanwhile: claim it afresh.
        else:
            holder, until = claim.owner or "?", claim.lease_expires_at or 0.0
            if options.if_running == "error":
                return Err(RunInProgressError(workflow_id, holder, until))
            wait = min(options.lease / 3, max(until - run.clock.time(), 0.0))
            await run.clock.sleep(max(wait, 0.01))
        try:
            claim = await store.claim(
                workflow_id,
                run.workflow_name,
                owner=owner,
                lease=options.lease,
                metadata=metadata,
            )
        except (SerializationError, SnapshotDecodeError) as exc:
            return Err(exc)
        except Exception as exc:
            return Err(StoreError("claim", workflow_id, describe(exc)))


class _LeaseKeeper:
    """Renews the run's lease while the body runs, and stops the body when the run is
    taken from this worker:

    - its lease is lost (a renewal says so, and no cancel was requested): the body
      is cancelled and the run returns ``Err(LeaseLostError)``;
    - a cancel was requested (``store.cancel(id)`` from any process): the body is
      cancelled, the run is recorded ``cancelled`` (the lease is still this
      worker's, so the end write succeeds) and returns
      ``Err(RunStateError(id, "cancelled", "continue"))``.

    A cancel request is seen when the store pushes it (PostgreSQL and Redis push
    from any process; SQLite and memory only within this one), or at the latest at
    the next renewal, which the store refuses while a cancel is requested: within
    ``lease / 3`` seconds.  Either way the keeper then reads the run once
    (``store.info``) to tell a cancel from a lost lease; no store call is made
    unless it is woken.  A store with an ``on_push`` hook (see `Pushes`) is
    listened to from the run's start, and calls it for cancel requests only (a
    send to the run, which wakes its own receive, costs the keeper nothing); one
    with only ``sends`` from the first renewal on (a watch per run would cost a
    task per run), woken by every send (it cannot tell them apart).

    The keeping task is started beside the run rather than in a task group of its
    own, and only once the first renewal is due or a push came (a timer until
    then, the cheapest thing each loop has): starting a task costs more than the
    rest of a short run's bookkeeping, and most runs end long before.  The task
    never raises (a failed renewal is retried until the lease would have run out),
    and `stop` cancels it; a renewal still in flight then is a compare-and-set on
    the owner, so it cannot touch the run once it has ended.  Losing the run is the
    one cancellation this scope owns: it cancels the body's scope, nothing else.
    """

    __slots__ = (
        "_lease",
        "_owner",
        "_pushes",
        "_started",
        "_stop",
        "_store",
        "_unhook",
        "_wake",
        "_woken",
        "_workflow_id",
        "body_scope",
        "cancel_requested",
        "loop",
        "lost",
    )

    def __init__(
        self,
        store: LeaseStore,
        workflow_id: str,
        owner: str,
        lease: float,
        loop: Loop,
        pushes: Pushes = "",
    ) -> None:
        self._store = store
        self._workflow_id = workflow_id
        self._owner = owner
        self._lease = lease
        self._pushes = pushes
        self.loop = loop
        self.lost = False
        self.cancel_requested = False
        self.body_scope = loop.cancel_scope()
        self._stop: Callable[[], object] | None = None
        self._unhook: Callable[[], object] | None = None
        self._started = False
        self._woken = False
        self._wake: anyio.Event | None = None

    def start(self) -> None:
        """Start keeping the run: a timer for the first renewal and, where the store has
        the hook, a callback for its pushes."""
        # Bound methods, not closures: every run starts them.
        self._stop = self.loop.call_later_coarse(self._lease / 3, self._spawn)
        if self._pushes == "hook":
            try:
                self._unhook = self._store.on_push(  # type: ignore[attr-defined]
                    self._workflow_id, self._pushed
                )
            except Exception as exc:  # a closed store: its renewals will say what is wrong
                logger.warning("cannot listen to run %r (%s)", self._workflow_id, describe(exc))

    def _pushed(self) -> None:
        """A cancel request for the run was pushed (or the push connection dropped and a
        push may be lost; never a send: the store's hook tells them apart): have the
        task read the run, starting it now if it was not yet."""
        self._woken = True
        if self._wake is not None:
            self._wake.set()
        elif not self._started and self._stop is not None:
            self._stop()  # the timer: the task starts now instead
            self._spawn()

    def _spawn(self) -> None:
        self._started = True
        self._stop = self.loop.start_system_task(self._keep, "awaitly-anyio lease keeper")

    def stop(self) -> None:
        """Stop renewing and listening; a renewing task ends at its next await."""
        if self._unhook is not None:
            self._unhook()
            self._unhook = None
        if self._stop is not None:
            self._stop()
        self._stop = None

    async def _keep(self) -> None:
        interval = self._lease / 3
        # Started by a push: the renewal stays a third of a lease away; by the timer:
        # it is due now.
        due = anyio.current_time() + (interval if self._woken else 0.0)
        watch: SendWatch | None = None
        if self._pushes == "sends":
            try:
                watch = cast(MailboxStore, self._store).sends(self._workflow_id)
            except Exception as exc:  # a closed store: its renewals will say what is wrong
                logger.warning(
                    "cannot watch run %r for cancel requests (%s)",
                    self._workflow_id,
                    describe(exc),
                )
        with contextlib.nullcontext() if watch is None else watch:
            while True:
                if self._woken:
                    self._woken = False
                    if await self._cancelled_here():
                        return
                left = due - anyio.current_time()
                if left <= 0.0:
                    if not await self._renew():
                        return
                    due = anyio.current_time() + interval
                    continue
                with anyio.move_on_after(left):
                    if watch is not None:
                        await watch.wait()
                        self._woken = True
                    else:
                        self._wake = wake = anyio.Event()
                        try:
                            await wake.wait()
                        finally:
                            self._wake = None

    async def _renew(self) -> bool:
        """Renew the lease; ``False`` once the run was taken from this worker (the body
        is cancelled then)."""
        try:
            held = await self._store.renew(self._workflow_id, owner=self._owner, lease=self._lease)
        except Exception:
            # A blip: keep trying until the lease would have run out.
            logger.warning("could not renew the lease on run %r", self._workflow_id)
            return True
        if held:
            return True
        # Refused: a cancel request (the lease is still ours) or a lost lease.
        if not await self._cancelled_here(after_refusal=True):
            self.lost = True
            self.body_scope.cancel()
        return False

    async def _cancelled_here(self, *, after_refusal: bool = False) -> bool:
        """Read the run; if a cancel was requested while this worker holds it, cancel
        the body and say so.  A failed read says no (logged after a refused renewal,
        which the caller then takes for a lost lease)."""
        info_of = getattr(self._store, "info", None)
        if info_of is None:
            return False
        try:
            info: object = await info_of(self._workflow_id)
        except Exception as exc:
            if after_refusal:
                logger.warning(
                    "could not read run %r after its lease renewal was refused (%s)",
                    self._workflow_id,
                    describe(exc),
                )
            return False
        # Read with defaults: a store that cannot be asked to cancel has no such field.
        if (
            info is None
            or not getattr(info, "cancel_requested", False)
            or getattr(info, "lease_owner", None) != self._owner
        ):
            return False
        self.cancel_requested = True
        self.body_scope.cancel()
        return True


async def _release(store: LeaseStore, workflow_id: str, owner: str, bound: float) -> None:
    try:
        await _shielded_write(lambda: store.release(workflow_id, owner=owner), bound)
    except Exception as exc:
        _remember_abandoned(workflow_id, owner)
        logger.warning("could not release the lease on run %r (%s)", workflow_id, describe(exc))


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
        ERROR_KEY: _error_text(result.error),
        LAST_ATTEMPT_KEY: iso_from_epoch(run.clock.time()),
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
