"""The errors the library itself puts into ``Err``, and the root of every exception
it defines.

They are exceptions (so they carry tracebacks and can be raised by code that
prefers to), but steps and workflows *return* them inside ``Err``; they are
raised only by the context-manager forms that cannot return a value.  Every
exception class of the library derives from `AwaitlyError` (see the tree in
docs/results.md); the early-exit signal that ends a workflow body is not an
exception of the library's API and derives from ``BaseException``.
"""

from __future__ import annotations

from typing import Any, cast

import attrs

__all__ = [
    "AllFailedError",
    "AlreadyDeliveredError",
    "ApprovalRejectedError",
    "AwaitlyError",
    "CircuitOpenError",
    "CompensationError",
    "CompensationFailure",
    "HookTokenError",
    "LeaseLostError",
    "LimiterQueueFullError",
    "RateLimitExceededError",
    "RunFinishedError",
    "RunInProgressError",
    "InputConflictError",
    "InputValidationError",
    "RunParkedError",
    "RunStateError",
    "SerializationError",
    "SharedStateUnavailableError",
    "SnapshotDecodeError",
    "StepTimeoutError",
    "StoreError",
    "StoredException",
    "UnexpectedError",
    "WaitTimeoutError",
    "WorkflowDriftError",
    "WorkflowMismatchError",
    "WorkflowVersionError",
    "describe",
    "is_unexpected_error",
]


class AwaitlyError(Exception):
    """The root of every exception the library defines: ``except AwaitlyError`` catches
    them all, and nothing else.

    Most are returned inside ``Err`` rather than raised (`UnexpectedError`,
    `StepTimeoutError`, the store and durable-run errors); some are raised for a
    misuse or a refusal (`UnwrapError`, `HostClosedError`, `HostAtCapacityError`,
    `SettingsError`), and those also derive from the built-in they used to be
    (``RuntimeError``, ``ValueError``), so existing ``except`` clauses still match.
    Cancellation is never one of them.
    """


class _ValueException(AwaitlyError):
    """Equality and hashing by type and fields, which attrs leaves out for exceptions.

    Errors are values in this library: ``Err(StepTimeoutError("a", 1.0))`` should
    equal another built the same way, as it does after a round-trip through a store.
    """

    def _fields(self) -> tuple[object, ...]:
        return attrs.astuple(cast(Any, self), recurse=False)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _ValueException)
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash((type(self), self._fields()))


@attrs.define(auto_exc=True, frozen=True)
class UnexpectedError(_ValueException):
    """A step or workflow body raised ``cause`` instead of returning a Result.

    The original exception is kept whole, traceback included
    (``error.cause.__traceback__``), and is also the ``__cause__`` of this
    error, so logging it shows both.
    """

    cause: BaseException

    def __attrs_post_init__(self) -> None:
        self.__cause__ = self.cause

    def __str__(self) -> str:
        return f"unexpected {type(self.cause).__name__}: {self.cause}"


@attrs.define(auto_exc=True, frozen=True)
class StepTimeoutError(_ValueException):
    """Step ``step`` did not finish within ``seconds``; its work was cancelled."""

    step: str
    seconds: float

    def __str__(self) -> str:
        return f"step {self.step!r} timed out after {self.seconds:g}s"


@attrs.define(auto_exc=True, frozen=True)
class AllFailedError(_ValueException):
    """Every child of the group step ``step`` (``ctx.step.any``) failed: ``errors`` holds
    each child's error, in the order the children were given (a raised exception
    appears as the `UnexpectedError` the workflow made of it)."""

    step: str
    errors: tuple[Any, ...]

    def __str__(self) -> str:
        return f"every child of step {self.step!r} failed ({len(self.errors)} errors)"


@attrs.define(auto_exc=True, frozen=True)
class CircuitOpenError(_ValueException):
    """The circuit breaker ``name`` is open; the call was rejected without running.

    ``retry_after`` is the number of seconds until the breaker lets a trial call through.
    """

    name: str
    retry_after: float

    def __str__(self) -> str:
        return f"circuit {self.name!r} is open; retry after {self.retry_after:g}s"


@attrs.define(auto_exc=True, frozen=True)
class RateLimitExceededError(_ValueException):
    """The rate limiter ``name`` would have made the call wait longer than allowed.

    ``retry_after`` is the number of seconds until a slot is expected to be free.
    """

    name: str
    retry_after: float

    def __str__(self) -> str:
        return f"rate limit {self.name!r} exceeded; retry after {self.retry_after:g}s"


@attrs.define(auto_exc=True, frozen=True)
class LimiterQueueFullError(RateLimitExceededError):
    """The rate limiter ``name`` refused a call without queueing it: ``max_waiters``
    calls were already waiting their turn.

    A `RateLimitExceededError` (so an ``except`` or ``isinstance`` for that one
    catches it too); ``retry_after`` is the limiter's estimate of the wait the call
    would have had.
    """

    max_waiters: int = 0

    def __str__(self) -> str:
        return (
            f"rate limit {self.name!r}: the wait queue is full ({self.max_waiters} waiting);"
            f" retry after {self.retry_after:g}s"
        )


@attrs.define(auto_exc=True, frozen=True)
class SharedStateUnavailableError(_ValueException):
    """The Redis-shared rate limiter or circuit breaker ``name`` could not reach its
    shared state (Redis down, unreachable, refusing the login, answering an error).

    ``reason`` names the Redis (its URL with secrets masked) and the cause.  The
    guarded call was not made.  Returned in ``Err`` by ``await limiter(fn)`` and
    ``await breaker(fn)``, raised by ``async with limiter`` and
    ``breaker.fetch_state()``; with ``on_unavailable="allow"`` the limiter and
    breaker let calls through instead (see docs/reliability.md).
    """

    name: str
    reason: str

    def __str__(self) -> str:
        return f"the shared state of {self.name!r} is unavailable: {self.reason}"


def describe(exc: BaseException) -> str:
    """An exception as the ``reason`` text of the error that reports it
    (``"TimeoutError: ..."``)."""
    return f"{type(exc).__name__}: {exc}"


def is_unexpected_error(error: object) -> bool:
    """Tell whether ``error`` (an ``Err``'s payload) is an `UnexpectedError`."""
    return isinstance(error, UnexpectedError)


@attrs.define(auto_exc=True, frozen=True)
class StoredException(_ValueException):
    """An exception read back from a store: its type name, message and formatted traceback.

    Exceptions are never pickled; what survives a save is their text.  An
    ``UnexpectedError`` loaded from a snapshot has one of these as its ``cause``.
    """

    type_name: str
    message: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}"


@attrs.define(auto_exc=True, frozen=True)
class SerializationError(_ValueException):
    """Step ``step`` produced a value of type ``type_name`` that cannot be stored.

    Returned (as ``Err``) by the step that produced the value, so nothing is
    saved half-way and the cause is found where it happened.
    """

    step: str
    type_name: str
    reason: str

    def __str__(self) -> str:
        return f"step {self.step!r}: cannot store a value of type {self.type_name}: {self.reason}"


@attrs.define(auto_exc=True, frozen=True)
class SnapshotDecodeError(_ValueException):
    """The stored snapshot of run ``run_id`` cannot be loaded: ``reason`` says why.

    Raised by ``store.load`` for a corrupt body, an unknown format version or a
    type that is not registered.  Nothing is half-loaded.
    """

    run_id: str
    reason: str

    def __str__(self) -> str:
        return f"snapshot of run {self.run_id!r} cannot be loaded: {self.reason}"


@attrs.define(auto_exc=True, frozen=True)
class StoreError(_ValueException):
    """The snapshot store failed during ``operation`` on run ``run_id`` (server gone, disk full...).

    A durable run that meets it ends with ``Err(StoreError(...))``; what the
    store had already committed stays valid, so the run can be resumed later.
    """

    operation: str
    run_id: str
    reason: str

    def __str__(self) -> str:
        return f"store failed during {self.operation} of run {self.run_id!r}: {self.reason}"


@attrs.define(auto_exc=True, frozen=True)
class WorkflowMismatchError(_ValueException):
    """Run ``run_id`` is stored as a run of ``stored`` but was started as ``requested``."""

    run_id: str
    stored: str
    requested: str

    def __str__(self) -> str:
        return (
            f"run {self.run_id!r} belongs to workflow {self.stored!r}, "
            f"not {self.requested!r}; use another workflow_id"
        )


@attrs.define(auto_exc=True, frozen=True)
class RunInProgressError(_ValueException):
    """Run ``run_id`` is being executed elsewhere: ``owner`` holds its lease until
    ``lease_expires_at`` (epoch seconds), so this start did not execute anything."""

    run_id: str
    owner: str
    lease_expires_at: float

    def __str__(self) -> str:
        return f"run {self.run_id!r} is in progress elsewhere (lease held by {self.owner!r})"


@attrs.define(auto_exc=True, frozen=True)
class LeaseLostError(_ValueException):
    """This process lost its lease on run ``run_id`` (it expired and another worker
    claimed the run), so it stopped: only the lease holder may write the run."""

    run_id: str
    owner: str

    def __str__(self) -> str:
        return (
            f"lost the lease on run {self.run_id!r} (owner {self.owner!r}); another worker has it"
        )


@attrs.define(auto_exc=True, frozen=True)
class WaitTimeoutError(_ValueException):
    """Step ``step`` waited for ``key`` (``None``: a timer) until its durable deadline,
    ``deadline`` (epoch seconds), and nothing came."""

    step: str
    key: str | None
    deadline: float

    def __str__(self) -> str:
        return f"step {self.step!r} waited for {self.key!r} past its deadline"


@attrs.define(auto_exc=True, frozen=True)
class ApprovalRejectedError(_ValueException):
    """The approval step ``step`` (key ``key``) was rejected by ``by``, for ``reason``."""

    step: str
    key: str
    by: str
    reason: str | None = None

    def __str__(self) -> str:
        why = "" if self.reason is None else f": {self.reason}"
        return f"step {self.step!r} ({self.key!r}) was rejected by {self.by!r}{why}"


@attrs.define(auto_exc=True, frozen=True)
class RunFinishedError(_ValueException, LookupError):
    """A message was sent to run ``run_id``, which already ended (``status``
    ``completed`` or ``failed``): nothing will ever read it, so nothing was stored."""

    run_id: str
    status: str

    def __str__(self) -> str:
        return f"run {self.run_id!r} has already {self.status}; the message was not stored"


@attrs.define(auto_exc=True, frozen=True)
class AlreadyDeliveredError(_ValueException):
    """``key`` of run ``run_id`` takes one value only, and it was already delivered
    (a hook resolves once); nothing was stored."""

    run_id: str
    key: str

    def __str__(self) -> str:
        return f"{self.key!r} of run {self.run_id!r} was already delivered; nothing was stored"


@attrs.define(auto_exc=True, frozen=True)
class HookTokenError(_ValueException, ValueError):
    """A hook token could not be resolved: ``reason`` says why (malformed, unknown,
    already resolved, its run ended).  The token itself is never repeated in full."""

    reason: str

    def __str__(self) -> str:
        return f"hook token refused: {self.reason}"


@attrs.define(auto_exc=True, frozen=True)
class RunParkedError(_ValueException):
    """Run ``run_id`` waited longer than its host's ``park_after``: its coroutine was
    dropped and it waits in its store (status ``waiting``).  A host's recovery
    resumes it from its checkpoints when the value arrives or the deadline passes;
    its final Result is then in the store, not here."""

    run_id: str

    def __str__(self) -> str:
        return f"run {self.run_id!r} is parked: it waits in its store and resumes from there"


@attrs.define(auto_exc=True, frozen=True)
class RunStateError(_ValueException):
    """Run ``run_id`` cannot be ``action``-ed (cancel, resume, fork...) in its current
    ``status``: for example cancelling a run that already completed.  Nothing was
    changed."""

    run_id: str
    status: str
    action: str

    def __str__(self) -> str:
        return f"cannot {self.action} run {self.run_id!r}: it is {self.status}"


@attrs.define(auto_exc=True, frozen=True)
class InputConflictError(_ValueException):
    """Run ``run_id`` of workflow ``workflow_name`` already exists with another input:
    starting (or enqueueing) the same id with a different input would silently hand
    back the other run's result, so it is refused.  Nothing was changed.  The message
    never repeats either input (it may hold secrets)."""

    run_id: str
    workflow_name: str

    def __str__(self) -> str:
        return (
            f"run {self.run_id!r} of workflow {self.workflow_name!r} already exists with a "
            "different input; use another id, or the same input to get its result"
        )


@attrs.define(auto_exc=True, frozen=True)
class InputValidationError(_ValueException):
    """The input of a run of workflow ``workflow_name`` was rejected by the workflow's
    ``validate_input`` before its first step: ``problems`` says what was wrong, one
    entry per problem, naming the field where the validator does (``"quantity: Input
    should be greater than 0"``).  The library adds no input value of its own (it
    leaves out the values pydantic would repeat: they may be secrets); a validator's
    own message is kept as written.  When an exception rejected the input, that
    exception is the ``__cause__``."""

    workflow_name: str
    problems: tuple[str, ...]

    def __str__(self) -> str:
        return f"the input of workflow {self.workflow_name!r} was rejected: " + "; ".join(
            self.problems
        )


@attrs.frozen
class CompensationFailure:
    """One compensation that did not succeed during a rollback: the compensation of step
    ``name`` (record key ``step_key``; ``None`` for a step without a key) ended with
    ``error`` after ``attempts`` attempts.  ``attempts == 0``: it was not run, because
    the rollback could not go on (``error`` says why: the store failed, the lease was
    lost)."""

    name: str
    step_key: str | None
    error: Any
    attempts: int


@attrs.define(auto_exc=True, frozen=True)
class CompensationError(_ValueException):
    """A run failed with ``original`` and its rollback did not fully succeed: every
    compensation in ``failures`` (a `CompensationFailure`, newest step first) still
    failed after its retry policy.  The other compensations ran.  Returned as the
    run's ``Err`` (see docs/sagas.md)."""

    original: Any
    failures: tuple[CompensationFailure, ...]

    def __str__(self) -> str:
        original = self.original
        cause = describe(original) if isinstance(original, BaseException) else repr(original)
        failed = "; ".join(
            f"{failure.name!r}: "
            + (
                describe(failure.error)
                if isinstance(failure.error, BaseException)
                else repr(failure.error)
            )
            for failure in self.failures
        )
        count = len(self.failures)
        which = "compensation" if count == 1 else "compensations"
        return f"the rollback after {cause} left {count} {which} failed ({failed})"


@attrs.define(auto_exc=True, frozen=True)
class WorkflowDriftError(_ValueException):
    """Run ``run_id`` was resumed by code that no longer reaches its recorded steps in the
    same place: step ``step`` (record key ``key``), the ``position``-th step the run
    recorded, is not where the code now is; ``instead`` says what the code did there
    (ran another step, reached a recorded step out of order, or returned).  Nothing
    was executed and no compensation ran: deploy the old code for the run, migrate it
    (``create_workflow(..., version=, migrations=)``), or accept drift
    (``on_drift="accept"``).  See docs/changing-workflows.md."""

    run_id: str
    step: str
    key: str
    position: int
    instead: str

    def __str__(self) -> str:
        return (
            f"run {self.run_id!r} drifted from its recorded steps: step {self.step!r} "
            f"(recorded #{self.position}, key {self.key!r}) is no longer reached there; "
            f"the code {self.instead}"
        )


@attrs.define(auto_exc=True, frozen=True)
class WorkflowVersionError(_ValueException):
    """Run ``run_id`` was stored by version ``stored`` of workflow ``workflow_name``
    (``None``: before versions were recorded) and the code is version ``current``:
    ``reason`` says why it cannot resume (no migration path, a migration failed).
    Nothing was executed; the run's records are untouched."""

    run_id: str
    workflow_name: str
    stored: str | None
    current: str
    reason: str

    def __str__(self) -> str:
        return (
            f"run {self.run_id!r} of workflow {self.workflow_name!r} was stored by version "
            f"{self.stored!r}, the code is version {self.current!r}: {self.reason}"
        )
