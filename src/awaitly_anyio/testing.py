"""Helpers for testing code that uses awaitly-anyio: clocks that do not wait for real
time, a harness that runs a workflow with scripted step outcomes and asserts on what it
did (`WorkflowHarness`), and the store contract suite for store authors (`check_store`)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from functools import partial
from inspect import isawaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeAlias, TypeVar, cast, overload

import anyio
import anyio.lowlevel
import attrs

from ._checks import check_key
from ._clock import Clock
from ._context import WorkflowContext
from ._errors import AwaitlyError, StepTimeoutError
from ._result import Err, Ok, Result
from ._run import EarlyExit, RunState
from ._saga import Compensation, compensations
from ._step_groups import Step, timeout_outcome
from ._workflow import Workflow
from .events import (
    CompensationComplete,
    CompensationFailed,
    StepSkipped,
    StepStart,
    StepTimeout,
    WorkflowEvent,
)

if TYPE_CHECKING:
    from ._store import SnapshotStore

__all__ = [
    "DAMAGE",
    "REAL",
    "Delay",
    "FakeClock",
    "HarnessError",
    "HarnessRun",
    "ManualClock",
    "Outcome",
    "Real",
    "Replace",
    "StepCall",
    "StepScript",
    "WorkflowHarness",
    "check_store",
    "compensations",
]

# Re-exported from the saga module, where the compensation events are made: public here.
compensations.__module__ = __name__

D = TypeVar("D")
T = TypeVar("T")
E = TypeVar("E")
I = TypeVar("I")  # noqa: E741

DAMAGE = (
    "step",
    "metadata",
    "format",
    "newer",
    "deep",
    "created_at",
    "workflow_name",
    "wrong_type",
)
"""The kinds of damage `check_store`'s ``damage`` function may be asked to do to a
stored run, by name:

- ``"step"``: a step record's JSON cut short (``{"ok": tru``);
- ``"deep"``: a step record that is valid JSON nested 100,000 deep (or as deep as
  the database allows);
- ``"metadata"``: the metadata JSON cut short (``[1, 2``);
- ``"format"``: the snapshot format version set to 99 (no release wrote it);
- ``"newer"``: the format version set to 2 (the next release's);
- ``"created_at"``: the creation time replaced by something that is not a time;
- ``"workflow_name"``: the workflow name missing (or empty);
- ``"wrong_type"``: the run stored as something else altogether (a Redis key of
  another type).
"""


@attrs.define
class FakeClock:
    """A clock whose ``sleep`` returns at once, advancing time by the amount asked.

    Every sleep is recorded in ``sleeps`` so tests can assert backoff
    schedules exactly.  ``sleep`` still checkpoints, so cancellation works as
    with a real clock.
    """

    now: float = 0.0
    wall: float = 1_700_000_000.0
    sleeps: list[float] = attrs.field(factory=list[float])

    def monotonic(self) -> float:
        """The fake monotonic time."""
        return self.now

    def time(self) -> float:
        """The fake wall-clock time; it advances with ``monotonic``."""
        return self.wall + self.now

    def advance(self, seconds: float) -> None:
        """Move time forward without sleeping."""
        if seconds < 0:
            raise ValueError(f"cannot move a clock backwards (advance({seconds!r}))")
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """Record the sleep, advance time by ``seconds`` and checkpoint."""
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))
        await anyio.lowlevel.checkpoint()


@attrs.define
class ManualClock:
    """A clock that stands still until the test moves it: ``sleep`` waits until
    `advance` has brought time to its deadline.

    Use it where several tasks wait at once and the test decides what happens in
    between (a FakeClock's sleeps return at once instead).
    """

    now: float = 0.0
    wall: float = 1_700_000_000.0
    _sleepers: list[tuple[float, anyio.Event]] = attrs.field(
        factory=list[tuple[float, anyio.Event]], init=False
    )

    def monotonic(self) -> float:
        """The current time."""
        return self.now

    def time(self) -> float:
        """The wall-clock time; it advances with ``monotonic``."""
        return self.wall + self.now

    @property
    def sleeping(self) -> int:
        """How many tasks are asleep on this clock."""
        return len(self._sleepers)

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has come."""
        if seconds < 0:
            raise ValueError(f"cannot move a clock backwards (advance({seconds!r}))")
        self.now += seconds
        due = [entry for entry in self._sleepers if entry[0] <= self.now]
        self._sleepers = [entry for entry in self._sleepers if entry[0] > self.now]
        for _, event in due:
            event.set()

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been advanced by ``seconds``; a cancellation point."""
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        entry = (self.now + seconds, anyio.Event())
        self._sleepers.append(entry)
        try:
            await entry[1].wait()
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)


def check_store(
    open: Callable[[Path, FakeClock], contextlib.AbstractAsyncContextManager[SnapshotStore]],
    *,
    damage: Callable[[Any, str, str], Awaitable[None]] | None = None,
    raw: Callable[[Any, str], Awaitable[Any]] | None = None,
    damages: Iterable[str] | None = None,
    backends: Iterable[str] | None = None,
    store_type: type | None = None,
) -> type:
    """The store contract suite as a pytest test class, for one kind of store.

    Assign the result to a name starting with ``Test`` in a test module and pytest
    runs every contract test against your store, on each of ``backends``:

    ```python
    TestMyStore = check_store(open_my_store)
    ```

    - ``open(folder, clock)`` is an async context manager yielding an open store.
      Each test gets an empty ``folder`` (pytest's ``tmp_path``) and a
      `FakeClock`, which the store must use for its wall time (TTLs,
      ``updated_at``, leases).  Opening twice with the same folder within one test
      must give two stores over the same data (as two processes would see it);
      a new folder must give an empty store.
    - ``damage(store, run_id, part)`` corrupts stored run ``run_id`` behind the
      store's back (see `DAMAGE` for the parts) and ``raw(store, run_id)``
      returns everything stored for the run as the database holds it (so the
      suite can check that reading or claiming a damaged run changes nothing).
      Give both or neither; ``damages`` names the parts ``damage`` can do (all but
      ``"wrong_type"`` by default).  Without them, the damaged-row tests are
      skipped.
    - ``backends``: the anyio backends to run on; every event loop this library
      supports (asyncio and trio) by default.
    - ``store_type``: the store's class, if you know it.  Then the tests of a
      protocol or method the class does not have are left out when pytest collects
      (instead of reported as skipped), and so are the damaged-row tests when
      there is no ``damage``.

    Every store must pass the `SnapshotStore` tests (save, load, delete, list,
    close, ``async with``; TTLs; hostile ids; invalid arguments refused with a
    ``ValueError`` naming them, such as "run id", "ttl", "limit", "step key";
    a closed store raising ``RuntimeError`` mentioning "closed").  The tests
    of `CheckpointStore`, `LeaseStore` and ``info`` run when the store is
    one (or has it) and are skipped otherwise.

    Needs pytest and anyio's pytest plugin (installed with anyio).  Raises
    ``TypeError`` for ``damage`` without ``raw`` or the reverse, ``ValueError``
    for an unknown damage part or backend.
    """
    from . import _loops
    from ._contract import StoreKit, make_contract

    if (damage is None) != (raw is None):
        raise TypeError("check_store needs both damage= and raw=, or neither")
    parts = frozenset(DAMAGE[:-1] if damages is None else damages)
    unknown = parts - set(DAMAGE)
    if unknown:
        raise ValueError(f"unknown kinds of damage {sorted(unknown)}; known: {', '.join(DAMAGE)}")
    chosen = list(_loops.NAMES if backends is None else backends)
    if not chosen or not set(chosen) <= set(_loops.NAMES):
        raise ValueError(f"backends must be some of {', '.join(_loops.NAMES)}, not {chosen!r}")
    if damage is None or raw is None:
        return make_contract(StoreKit(open, FakeClock), chosen, store_type)
    return make_contract(StoreKit(open, FakeClock, damage, raw, parts), chosen, store_type)


# ---- the workflow harness -----------------------------------------------------------------


class HarnessError(AwaitlyError, AssertionError):
    """A `WorkflowHarness` was misused by the run or the test: a strict harness met a
    step nobody scripted, a step ran more attempts than its list of outcomes holds, or
    `WorkflowHarness.assert_all_used` found scripts the run never reached.  An
    ``AssertionError``, so pytest reports it as a failed test."""


class Real:
    """The outcome `REAL`: the step runs its real ``fn``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "REAL"


REAL = Real()
"""A scripted outcome: run the step's real ``fn`` for this attempt (in a list,
``[TimeoutError(), REAL]``: the first attempt raises, the second runs for real)."""


@attrs.frozen
class Replace:
    """A scripted outcome: call ``fn()`` instead of the step's ``fn`` (any zero-argument
    callable a step accepts: returning a value, a Result or an awaitable of either)."""

    fn: Callable[[], Any] = attrs.field(validator=attrs.validators.is_callable())


def _check_seconds(_: object, __: object, seconds: Any) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"Delay: seconds must be a number >= 0, not {seconds!r}")
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"Delay: seconds must be a number >= 0, not {seconds!r}")


def _check_then(_: object, __: object, then: Any) -> None:
    _check_outcome("Delay: then", then)


@attrs.frozen
class Delay:
    """A scripted outcome: wait ``seconds`` on the workflow's clock (a `FakeClock`
    advances at once), then give ``then`` (``Ok(None)`` by default; any other outcome,
    `REAL` included).

    A delay that reaches the step's timeout (``timeout=``, ``with_timeout``, a retry
    policy's ``timeout``) ends the attempt as the timeout would: the clock advances by
    the timeout, ``step_timeout`` is emitted and the attempt fails with
    ``StepTimeoutError`` (a real timeout is an anyio deadline, which a fake clock
    cannot reach).  Bad arguments raise ``TypeError`` / ``ValueError``."""

    seconds: float = attrs.field(validator=_check_seconds)
    then: Outcome = attrs.field(default=Ok(None), validator=_check_then)


Outcome: TypeAlias = Ok[Any] | Err[Any] | Exception | Delay | Replace | Real
"""What one attempt of a scripted step gives: ``Ok(value)`` or ``Err(error)`` (returned
by the step's fn), an exception instance (raised by it), a `Delay`, `Replace` or
`REAL`."""


def _check_outcome(what: str, outcome: object) -> None:
    if isinstance(outcome, (Ok, Err, Delay, Replace, Real, Exception)):
        return
    if isinstance(outcome, BaseException):
        raise TypeError(
            f"{what}: a scripted step may raise an Exception, not {outcome!r} "
            f"(cancellation and exits come from outside a step)"
        )
    if isinstance(outcome, type) and issubclass(outcome, BaseException):
        raise TypeError(
            f"{what}: give an exception instance to raise ({outcome.__name__}(...)), "
            f"not the class {outcome.__name__}"
        )
    if callable(outcome):  # pyright: ignore[reportUnknownArgumentType]
        raise TypeError(
            f"{what}: to run a function instead of the step's fn, wrap it: Replace({outcome!r})"
        )
    raise TypeError(
        f"{what}: an outcome is Ok(value), Err(error), an exception to raise, "
        f"Delay(seconds, then), Replace(fn) or REAL, not {outcome!r} "
        f"(for a value, Ok({outcome!r}))"
    )


def _describe(name: str | None, key: str | None) -> str:
    if key is None:
        return f"step {name!r}"
    if name is None:
        return f"key {key!r}"
    return f"step {name!r} with key {key!r}"


@attrs.define(eq=False)
class StepScript:
    """What `WorkflowHarness.script` registered for the steps named ``name`` (and/or
    keyed ``key``).  A single outcome answers every attempt; a list answers one attempt
    each, in order, across every step it matches and every run of the harness."""

    name: str | None
    key: str | None
    outcomes: tuple[Outcome, ...]
    repeat: bool
    """Whether the one outcome answers every attempt (it was not given as a list)."""
    compensation: bool = attrs.field(default=False, kw_only=True)
    """Whether it scripts the steps' compensation (`WorkflowHarness.script_compensation`)."""
    call_count: int = attrs.field(default=0, init=False)
    """How many step calls this script matched (a replayed step counts: it was reached;
    for a compensation, how many compensations it answered)."""
    attempts: int = attrs.field(default=0, init=False)
    """How many attempts it answered."""

    @property
    def used(self) -> bool:
        """Whether a run reached a step this script matches."""
        return self.call_count > 0

    @property
    def left(self) -> int:
        """How many outcomes of a list are still to be given (0 for a single outcome)."""
        return 0 if self.repeat else len(self.outcomes) - self.attempts

    def _take(self) -> Outcome | None:
        if self.repeat:
            self.attempts += 1
            return self.outcomes[0]
        if self.attempts >= len(self.outcomes):
            return None
        self.attempts += 1
        return self.outcomes[self.attempts - 1]

    def __str__(self) -> str:
        target = _describe(self.name, self.key)
        return f"compensation of {target}" if self.compensation else target


StepStatus: TypeAlias = Literal["ok", "err", "raised", "cancelled", "skipped", "running"]


@attrs.frozen
class StepCall:
    """One step a harnessed run took, in the order steps started.

    ``status`` is ``"ok"`` (``outcome`` is ``Ok(value)``), ``"err"`` (the step ended
    the workflow with ``outcome``, an ``Err``), ``"raised"`` (an exception went through
    it: a bad argument, a ``catch_unexpected`` that raised), ``"cancelled"``
    (cancellation from outside, a group's first failure cancelling its siblings, a
    parked run) or ``"skipped"`` (``ctx.step.skip``); ``"running"`` only while it runs.
    ``attempts`` counts the calls of the step's fn (or its script); a step answered
    without running (from its key's record, or a cache hit) is ``replayed`` and made
    none.  ``key`` is the step's key, the automatic one of a durable run included.
    ``scripted``: a script matched it.  ``events`` are the step's own events."""

    name: str
    key: str | None
    status: StepStatus
    attempts: int
    outcome: Result[Any, Any] | None
    replayed: bool
    scripted: bool
    events: tuple[WorkflowEvent, ...] = ()

    def __str__(self) -> str:
        parts = [self.name if self.key is None else f"{self.name} [key {self.key!r}]"]
        parts.append("replayed" if self.replayed else self.status)
        if self.status != "skipped" and not self.replayed:
            parts.append(f"{self.attempts} attempt{'' if self.attempts == 1 else 's'}")
        if self.outcome is not None:
            parts.append(repr(self.outcome))
        if self.scripted:
            parts.append("scripted")
        return ", ".join(parts)


@attrs.define(eq=False)
class _Call:
    log: _RunLog
    name: str
    key: str | None
    scripted: bool
    status: StepStatus = "running"
    attempts: int = 0
    outcome: Result[Any, Any] | None = None
    events: list[WorkflowEvent] = attrs.field(factory=list[WorkflowEvent])
    # Set while a variant whose fn the harness scripted itself (with_timeout,
    # with_fallback, cached) has yet to make its step call: that call is this one.
    prepared: bool = False

    def frozen(self) -> StepCall:
        return StepCall(
            self.name,
            self.key,
            self.status,
            self.attempts,
            self.outcome,
            self.status == "ok" and self.attempts == 0,
            self.scripted,
            tuple(self.events),
        )


@attrs.define(eq=False)
class _RunLog:
    calls: list[_Call] = attrs.field(factory=list[_Call])
    events: list[WorkflowEvent] = attrs.field(factory=list[WorkflowEvent])
    problems: list[str] = attrs.field(factory=list[str])

    def problem(self, text: str) -> HarnessError:
        if text not in self.problems:
            self.problems.append(text)
        return HarnessError(text)


# The step call running in this task (a group's children run in tasks of their own, each
# with a copy of the context), so that a step's events are told apart from its
# neighbours' without matching names.
_CURRENT: ContextVar[_Call | None] = ContextVar("awaitly_anyio_harness_step", default=None)

_ExpectedEvent: TypeAlias = "str | type[WorkflowEvent]"
_By: TypeAlias = Literal["name", "key"]


def _event_label(event: WorkflowEvent) -> str:
    name = getattr(event, "name", None)
    return event.type if name is None else f"{event.type}:{name}"


def _expected_events(what: str, expected: tuple[object, ...]) -> list[tuple[str, str | None]]:
    wanted: list[tuple[str, str | None]] = []
    for item in expected:
        if isinstance(item, type) and isinstance(getattr(item, "type", None), str):
            wanted.append((getattr(item, "type"), None))  # noqa: B009
        elif isinstance(item, str) and item:
            kind, colon, name = item.partition(":")
            wanted.append((kind, name if colon else None))
        else:
            raise TypeError(
                f'{what}: expected event types ("step_start", "step_start:fetch" or '
                f"an event class such as events.StepStart), not {item!r}"
            )
    return wanted


def _matches(event: WorkflowEvent, wanted: tuple[str, str | None]) -> bool:
    kind, name = wanted
    return event.type == kind and (name is None or getattr(event, "name", None) == name)


def _names(what: str, expected: object) -> list[str | None]:
    if isinstance(expected, str) or not isinstance(expected, Sequence):
        raise TypeError(f"{what} takes a list of step names (or keys), not {expected!r}")
    items: list[object] = list(expected)  # pyright: ignore[reportUnknownArgumentType]
    for item in items:
        if item is not None and not isinstance(item, str):
            raise TypeError(f"{what}: step names and keys are strings, not {item!r}")
    return [item if isinstance(item, str) else None for item in items]


def _first_difference(expected: Sequence[object], actual: Sequence[object]) -> str:
    for index, (want, got) in enumerate(zip(expected, actual, strict=False)):
        if want != got:
            return f"first difference at position {index}: expected {want!r}, got {got!r}"
    if len(expected) > len(actual):
        return f"missing from position {len(actual)}: {list(expected[len(actual) :])!r}"
    return f"unexpected from position {len(expected)}: {list(actual[len(expected) :])!r}"


@attrs.frozen
class HarnessRun:
    """What one run of a `WorkflowHarness` did: its ``result`` (``None`` if the run
    raised: cancellation from outside), the ``steps`` it took in the order they
    started (nested steps and group children included) and every event it emitted.

    The queries and assertions of `WorkflowHarness` (which answer for its last run) are
    also methods here, for the earlier runs of a resume scenario (``harness.runs[0]``).
    Each assertion raises ``AssertionError`` with the expected and actual lists and
    where they part, and ``TypeError`` for an argument of the wrong kind.
    """

    result: Result[Any, Any] | None
    steps: tuple[StepCall, ...]
    events: tuple[WorkflowEvent, ...]

    # ---- queries ---------------------------------------------------------------------

    def step_names(self, *, by: _By = "name", replayed: bool = True) -> list[str | None]:
        """The steps' names (or keys, ``by="key"``; ``None`` for an unkeyed step) in the
        order they started; ``replayed=False`` leaves out the steps answered from their
        records without running."""
        if by not in ("name", "key"):
            raise ValueError(f'step_names: by must be "name" or "key", not {by!r}')
        return [
            call.name if by == "name" else call.key
            for call in self.steps
            if replayed or not call.replayed
        ]

    def calls(self, name: str | None = None, *, key: str | None = None) -> list[StepCall]:
        """The steps named ``name`` (and/or keyed ``key``), in order."""
        if name is None and key is None:
            raise TypeError("calls: give a step name or key=")
        if not (name is None or isinstance(name, str)) or not (key is None or isinstance(key, str)):
            raise TypeError(f"calls: step names and keys are strings, not {name!r} / {key!r}")
        return [
            call
            for call in self.steps
            if (name is None or call.name == name) and (key is None or call.key == key)
        ]

    def step(self, name: str | None = None, *, key: str | None = None) -> StepCall:
        """The step named ``name`` (and/or keyed ``key``); the last such one if the run
        took several.  ``AssertionError`` naming the steps it took if it took none."""
        found = self.calls(name, key=key)
        if not found:
            raise AssertionError(
                f"the run took no {_describe(name, key)}; it took {self.step_names()!r}"
            )
        return found[-1]

    def attempts(self, name: str | None = None, *, key: str | None = None) -> int:
        """How many attempts the steps named ``name`` (and/or keyed ``key``) made in all:
        retries count, a replayed step made none, a step never reached gives 0."""
        return sum(call.attempts for call in self.calls(name, key=key))

    @property
    def compensations(self) -> list[str]:
        """The names of the steps whose compensation completed, in the order they ran
        (newest step first, as a rollback runs them); see `compensations`."""
        return compensations(self.events)

    @property
    def failed_compensations(self) -> list[str]:
        """The names of the steps whose compensation failed for good (after its retries)."""
        last: dict[tuple[str, str | None], str] = {}
        order: list[tuple[str, str | None]] = []
        for event in self.events:
            if isinstance(event, (CompensationComplete, CompensationFailed)):
                entry = (event.name, event.step_key)
                if entry not in last:
                    order.append(entry)
                last[entry] = event.type
        return [name for name, key in order if last[(name, key)] == "compensation_error"]

    def describe(self) -> str:
        """The run in a few lines: its result and each step (status, attempts, outcome)."""
        lines = [f"result: {self.result!r}" if self.result is not None else "result: raised"]
        lines.extend(f"  {index}. {call}" for index, call in enumerate(self.steps, 1))
        if not self.steps:
            lines.append("  (no steps)")
        return "\n".join(lines)

    # ---- assertions --------------------------------------------------------------------

    def assert_steps(
        self, expected: Sequence[str | None], *, by: _By = "name", replayed: bool = True
    ) -> None:
        """Assert the run took exactly these steps, in this order (names, or keys with
        ``by="key"``); ``replayed=False`` compares only the steps that ran (not those
        answered from their records)."""
        wanted = _names("assert_steps", expected)
        actual = self.step_names(by=by, replayed=replayed)
        if actual != wanted:
            raise AssertionError(
                f"the run took other steps (by {by}):\n"
                f"  expected: {wanted!r}\n  actual:   {actual!r}\n"
                f"  {_first_difference(wanted, actual)}\n{self.describe()}"
            )

    def assert_events(self, *expected: _ExpectedEvent) -> None:
        """Assert the run emitted exactly these events, in order: each an event type
        (``"step_start"``), a type and a step name (``"step_start:fetch"``) or an event
        class (``StepStart``)."""
        wanted = _expected_events("assert_events", expected)
        labels = [_event_label(event) for event in self.events]
        if len(wanted) == len(self.events) and all(
            _matches(event, want) for event, want in zip(self.events, wanted, strict=True)
        ):
            return
        shown = [kind if name is None else f"{kind}:{name}" for kind, name in wanted]
        index = next(
            (
                index
                for index, (event, want) in enumerate(zip(self.events, wanted, strict=False))
                if not _matches(event, want)
            ),
            min(len(wanted), len(labels)),
        )
        raise AssertionError(
            f"the run emitted other events:\n  expected: {shown!r}\n  actual:   {labels!r}\n"
            f"  first difference at position {index}"
        )

    def assert_events_include(self, *expected: _ExpectedEvent) -> None:
        """Assert these events were emitted in this order, others allowed in between
        (items as for `assert_events`)."""
        wanted = _expected_events("assert_events_include", expected)
        position = 0
        for number, want in enumerate(wanted):
            while position < len(self.events) and not _matches(self.events[position], want):
                position += 1
            if position == len(self.events):
                kind, name = want
                raise AssertionError(
                    f"the run did not emit {kind if name is None else f'{kind}:{name}'!r} "
                    f"(expected item {number}) after the ones before it; it emitted "
                    f"{[_event_label(event) for event in self.events]!r}"
                )
            position += 1

    def assert_compensated(self, expected: Sequence[str]) -> None:
        """Assert the compensations of exactly these steps completed, in this order
        (newest step first, as a rollback runs them); see `failed_compensations` for
        those that failed for good."""
        wanted = _names("assert_compensated", expected)
        actual = self.compensations
        if actual != wanted:
            raise AssertionError(
                f"other compensations ran:\n  expected: {wanted!r}\n  actual:   {actual!r}\n"
                f"  {_first_difference(wanted, actual)}"
            )


class _HarnessStep(Step):
    """``ctx.step`` of a harnessed run: each step's fn is swapped for its scripted
    outcome (counted per attempt) before the real step machinery runs it, so retries,
    timeouts, keys, checkpoints and events behave as in production."""

    __slots__ = ("_harness", "_log")

    def __init__(self, run: RunState, harness: WorkflowHarness[Any], log: _RunLog) -> None:
        super().__init__(run)
        self._harness = harness
        self._log = log

    async def __call__(self, name: str, fn: Callable[[], Any], **options: Any) -> Any:
        base = super().__call__
        timeout = options.get("timeout")
        if timeout is None:
            timeout = getattr(options.get("retry"), "timeout", None)
        return await self._through(
            name, fn, options, timeout, lambda fn, options: base(name, fn, **options)
        )

    async def try_(self, name: str, fn: Callable[[], Any], *, error: object, **options: Any) -> Any:
        base = super().try_
        return await self._through(
            name,
            fn,
            options,
            options.get("timeout"),
            lambda fn, options: base(name, fn, error=error, **options),
        )

    # The variants that run the step's fn inside machinery of their own (a deadline with
    # its own outcome, a fallback, a cache) have their fn scripted here, not the
    # machinery's fn that they hand to the step: the fallback still runs when the
    # scripted fn fails, and a cache still keeps the scripted value.

    async def with_timeout(
        self,
        name: str,
        fn: Callable[[], Any],
        *,
        seconds: float,
        key: str | None = None,
        **options: Any,
    ) -> Any:
        base = super().with_timeout
        timed_out: Result[Any, Any] | None = None
        # What the deadline gives instead of StepTimeoutError (an Ok is refused by the step).
        if "on_timeout" in options and not isinstance(options["on_timeout"], Ok):
            timed_out = timeout_outcome(options["on_timeout"])
        return await self._prepared(
            name,
            fn,
            key,
            seconds,
            timed_out,
            lambda fn: base(name, fn, seconds=seconds, key=key, **options),
        )

    async def with_fallback(
        self, name: str, fn: Callable[[], Any], fallback: Callable[[], Any], **options: Any
    ) -> Any:
        base = super().with_fallback
        return await self._prepared(
            name,
            fn,
            options.get("key"),
            options.get("timeout"),
            None,
            lambda fn: base(name, fn, fallback, **options),
        )

    async def cached(self, name: str, fn: Callable[[], Any], **options: Any) -> Any:
        # ``key`` is the cache's key, not the step's: the step is matched by its name.  A
        # hit runs nothing (the call is recorded replayed); a miss caches what the
        # script gives, as it would the fn's value.
        base = super().cached
        return await self._prepared(
            name, fn, None, options.get("timeout"), None, lambda fn: base(name, fn, **options)
        )

    async def _wait(
        self,
        name: str,
        step: str,
        key: str | None,
        kind: str,
        timeout: Any,
    ) -> Any:
        # A scripted wait (wait_for, an approval, a hook) is answered by its script, in a
        # durable run or not, so a test needs no store and no sender to exercise it.
        if isinstance(name, str) and self._harness._find(name, step) is not None:
            return await self(name, _not_called, key=step)
        return await super()._wait(name, step, key, kind, timeout)

    def _begin(self, name: str, key: str | None) -> tuple[_Call, StepScript | None]:
        script = self._harness._find(name, key)
        call = _Call(self._log, name, key, script is not None)
        self._log.calls.append(call)
        if script is not None:
            script.call_count += 1
        return call, script

    async def _prepared(
        self,
        name: str,
        fn: Callable[[], Any],
        key: object,
        timeout: object,
        timed_out: Result[Any, Any] | None,
        call_base: Callable[[Callable[[], Any]], Awaitable[Any]],
    ) -> Any:
        if not _sound(name, fn, key):
            return await call_base(fn)  # refused by the step, as in production
        call, script = self._begin(name, key if isinstance(key, str) else None)
        attempt = self._attempt(call, fn, script, _seconds(timeout), timed_out)
        # The step call the variant makes with the scripted fn is this call, not another.
        call.prepared = True
        try:
            return await self._observe(call, call_base(attempt))
        finally:
            call.prepared = False

    async def _through(
        self,
        name: str,
        fn: Callable[[], Any],
        options: dict[str, Any],
        timeout: object,
        call_base: Callable[[Callable[[], Any], dict[str, Any]], Awaitable[Any]],
    ) -> Any:
        key = options.get("key")
        if not _sound(name, fn, key):
            return await call_base(fn, options)  # refused by the step, as in production
        current = _CURRENT.get()
        if current is not None and current.prepared and current.name == name:
            current.prepared = False  # its fn is scripted already (see _prepared)
            return await call_base(fn, options)
        call, script = self._begin(name, key if isinstance(key, str) else None)
        compensate = options.get("compensate")
        if compensate is not None:
            undo = self._harness._find(name, key, compensation=True)
            if undo is not None:
                options = {**options, "compensate": self._compensation(call, compensate, undo)}
        attempt = self._attempt(call, fn, script, _seconds(timeout), None)
        return await self._observe(call, call_base(attempt, options))

    async def _observe(self, call: _Call, step: Awaitable[Any]) -> Any:
        """Await the step ``call`` records, with its events attributed to it."""
        token = _CURRENT.set(call)
        try:
            value = await step
        except EarlyExit as exc:
            call.status, call.outcome = "err", exc.result
            raise
        except Exception:
            call.status = "raised"
            raise
        except BaseException:
            call.status = "cancelled"
            raise
        finally:
            _CURRENT.reset(token)
        call.status, call.outcome = "ok", Ok(value)
        return value

    def _compensation(self, call: _Call, compensate: object, script: StepScript) -> object:
        options = _as_compensation(compensate)
        real: object = compensate if options is None else options.fn
        if not callable(real):
            return compensate  # the step refuses it, as in production
        retry = None if options is None else options.retry
        timeout = None if retry is None else retry.timeout

        started: list[bool] = []

        def undo(value: Any) -> Any:
            if not started:  # its first attempt: the compensation was reached
                started.append(True)
                script.call_count += 1
            outcome = script._take()
            if outcome is None:
                raise call.log.problem(_ran_out(script))
            return self._play(call, outcome, partial(real, value), timeout, step=False)

        return undo if options is None else attrs.evolve(options, fn=undo)

    def _attempt(
        self,
        call: _Call,
        fn: Callable[[], Any],
        script: StepScript | None,
        timeout: float | None,
        timed_out: Result[Any, Any] | None,
    ) -> Callable[[], Any]:
        strict = self._harness.strict

        def attempt() -> Any:
            call.attempts += 1
            if script is None:
                if strict:
                    raise call.log.problem(
                        f"{_describe(call.name, call.key)} is not scripted and the harness "
                        f"is strict (script it, or script REAL to run its fn)"
                    )
                return fn()
            outcome = script._take()
            if outcome is None:
                raise call.log.problem(_ran_out(script))
            return self._play(call, outcome, fn, timeout, timed_out=timed_out)

        return attempt

    def _play(
        self,
        call: _Call,
        outcome: Outcome,
        fn: Callable[[], Any],
        timeout: float | None,
        *,
        step: bool = True,
        timed_out: Result[Any, Any] | None = None,
    ) -> Any:
        if isinstance(outcome, (Ok, Err)):
            return outcome
        if isinstance(outcome, Exception):
            # The same instance may be raised by several attempts: each starts afresh.
            raise outcome.with_traceback(None)
        if isinstance(outcome, Real):
            return fn()
        if isinstance(outcome, Replace):
            return outcome.fn()
        return self._delayed(call, outcome, fn, timeout, step, timed_out)

    async def _delayed(
        self,
        call: _Call,
        delay: Delay,
        fn: Callable[[], Any],
        timeout: float | None,
        step: bool,
        timed_out: Result[Any, Any] | None,
    ) -> Any:
        run = self._run
        if timeout is not None and delay.seconds >= timeout:
            await run.clock.sleep(timeout)
            if run.emit is not None and step:  # (a compensation's timeout has no event)
                run.emit(
                    StepTimeout(
                        workflow_id=run.workflow_id,
                        workflow_name=run.name,
                        ts=run.clock.time(),
                        name=call.name,
                        step_key=call.key,
                        seconds=timeout,
                        attempt=call.attempts,
                    )
                )
            return Err(StepTimeoutError(call.name, timeout)) if timed_out is None else timed_out
        await run.clock.sleep(delay.seconds)
        left = None if timeout is None else timeout - delay.seconds
        out = self._play(call, delay.then, fn, left, step=step, timed_out=timed_out)
        if isawaitable(out):
            out = await out
        return out


def _sound(name: object, fn: object, key: object) -> bool:
    """Whether a step's arguments are what the harness can record (the step refuses the
    others itself, with its own errors)."""
    return isinstance(name, str) and callable(fn) and (key is None or isinstance(key, str))


def _seconds(timeout: object) -> float | None:
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        return float(timeout)
    return None


def _as_compensation(compensate: object) -> Compensation[Any] | None:
    if isinstance(compensate, Compensation):
        found: Compensation[Any] = compensate  # pyright: ignore[reportUnknownVariableType]
        return found
    return None


def _ran_out(script: StepScript) -> str:
    count = len(script.outcomes)
    return (
        f"{script} made attempt {script.attempts + 1} (in all) but was scripted {count} "
        f"outcome{'s' if count > 1 else ''}: script more, or a single outcome for every attempt"
    )


def _not_called() -> Any:
    raise AssertionError("a scripted wait's own fn is never called")  # pragma: no cover


class WorkflowHarness(Generic[D]):
    """Run a workflow with scripted step outcomes, record what it did, assert on it.

    ```python
    harness = WorkflowHarness(workflow)
    harness.script("charge", Err(CardDeclined()))
    harness.script("fetch", [TimeoutError(), Ok(42)])  # attempt by attempt
    result = await harness.run(body, input=order)
    harness.assert_steps(["fetch", "charge"])
    assert harness.attempts("fetch") == 2
    ```

    The harness runs ``workflow`` (a copy of it on ``clock``, a new `FakeClock` by
    default, with one more event handler) and gives each body a ``ctx.step`` whose
    calls it sees: a scripted step's fn is replaced by its outcome for each attempt
    before the step runs, so retries, timeouts, keys, durable checkpoints and events
    behave as in production (``ctx.steps.<dep>`` and every variant of ``ctx.step`` go
    through it too).  An unscripted step runs its real fn, or, with ``strict=True``,
    fails the run with a `HarnessError`.  Production code pays nothing for this: only
    a harnessed run's ``ctx.step`` is replaced.

    ``runs`` keeps a `HarnessRun` per run; the queries and assertions below answer
    for the last one.  One run at a time (``RuntimeError`` otherwise).  Raises
    ``TypeError`` for a ``workflow`` that is not a `Workflow`, a ``clock`` that is
    not a clock, or a ``strict`` that is not a bool.
    """

    def __init__(
        self, workflow: Workflow[D], *, clock: Clock | None = None, strict: bool = False
    ) -> None:
        if not isinstance(workflow, Workflow):
            raise TypeError(
                f"WorkflowHarness needs a Workflow (create_workflow(...)), not {workflow!r}"
            )
        if not isinstance(strict, bool):
            raise TypeError(f"WorkflowHarness: strict must be True or False, not {strict!r}")
        self.clock: Clock = FakeClock() if clock is None else clock
        """The workflow's clock in the harness: delays, retries' backoff and sleeps
        wait on it (a `FakeClock` does not wait)."""
        self.strict = strict
        """Whether a step nobody scripted fails the run (`HarnessError`)."""
        self.workflow: Workflow[D] = attrs.evolve(
            workflow, clock=self.clock, on_event=(*workflow.on_event, self._record)
        )
        """The harnessed copy of the workflow (its own clock, the harness listening)."""
        self.runs: list[HarnessRun] = []
        """One `HarnessRun` per finished run, oldest first."""
        self._scripts: dict[tuple[bool, str | None, str | None], StepScript] = {}
        self._log: _RunLog | None = None

    def __repr__(self) -> str:
        return (
            f"<WorkflowHarness of workflow {self.workflow.name!r}: "
            f"{len(self._scripts)} scripts, {len(self.runs)} runs>"
        )

    # ---- scripting -----------------------------------------------------------------

    @overload
    def script(
        self, name: str, outcome: Outcome | Sequence[Outcome], *, key: str | None = None
    ) -> StepScript: ...
    @overload
    def script(self, *, key: str, outcome: Outcome | Sequence[Outcome]) -> StepScript: ...
    def script(
        self,
        name: str | None = None,
        outcome: object = None,
        *,
        key: str | None = None,
    ) -> StepScript:
        """Script the steps named ``name`` (or keyed ``key``; or both: a step must match
        both) to give ``outcome``: ``Ok(value)``, ``Err(error)``, an exception instance
        to raise, a `Delay`, `Replace(fn)` or `REAL`, for every attempt; or a list of
        outcomes, one per attempt in order (across every matching step and run).

        A key's script wins over a name's.  Scripting the same name (or key) again
        replaces its script.  A step answered from its key's record (a resumed run) is
        not executed, scripted or not.  Returns the `StepScript`, which counts its use.
        Raises ``TypeError`` / ``ValueError`` for a name or key that no step can have and
        for an outcome of the wrong kind (a plain value must be ``Ok(value)``).
        """
        return self._script("script", name, outcome, key, compensation=False)

    @overload
    def script_compensation(
        self, name: str, outcome: Outcome | Sequence[Outcome], *, key: str | None = None
    ) -> StepScript: ...
    @overload
    def script_compensation(
        self, *, key: str, outcome: Outcome | Sequence[Outcome]
    ) -> StepScript: ...
    def script_compensation(
        self,
        name: str | None = None,
        outcome: object = None,
        *,
        key: str | None = None,
    ) -> StepScript:
        """Script the compensation of the steps named ``name`` (or keyed ``key``), as
        `script` scripts a step: each attempt of the compensation (its ``Compensation``
        retry policy still applies) gives the next outcome instead of calling the real
        one; `REAL` calls it, `Replace(fn)` calls ``fn()`` (without the step's value).
        The step itself must still be given ``compensate=``; its other options are kept.
        A `Delay` in a compensation waits on the workflow's clock; one that reaches the
        timeout of the compensation's retry policy fails that attempt with
        ``StepTimeoutError``, as the timeout would.  Raises as `script` does."""
        return self._script("script_compensation", name, outcome, key, compensation=True)

    def _script(
        self,
        what: str,
        name: str | None,
        outcome: object,
        key: str | None,
        *,
        compensation: bool,
    ) -> StepScript:
        if name is None and key is None:
            raise TypeError(f"{what}: give the step's name, or key= for a keyed step")
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"{what}: a step's name is a non-empty string, not {name!r}")
        if key is not None:
            check_key(key, "scripted step key")
        made = StepScript(name, key, (), True, compensation=compensation)
        where = f"{what} of {_describe(name, key)}"
        if isinstance(outcome, (list, tuple)):
            items: list[object] = list(outcome)  # pyright: ignore[reportUnknownArgumentType]
            if not items:
                raise ValueError(f"{where}: a list of outcomes needs at least one")
            for index, item in enumerate(items):
                if isinstance(item, (list, tuple)):
                    raise TypeError(f"{where}: outcome {index} is a list; lists do not nest")
                _check_outcome(f"{where}, outcome {index}", item)
            made.outcomes = cast("tuple[Outcome, ...]", tuple(items))  # each checked above
            made.repeat = False
        else:
            _check_outcome(where, outcome)
            made.outcomes = (cast("Outcome", outcome),)
        self._scripts[(compensation, name, key)] = made
        return made

    def _find(self, name: str, key: object, *, compensation: bool = False) -> StepScript | None:
        scripts = self._scripts
        if not scripts:
            return None
        if isinstance(key, str):
            found = scripts.get((compensation, name, key)) or scripts.get((compensation, None, key))
            if found is not None:
                return found
        return scripts.get((compensation, name, None))

    @property
    def scripts(self) -> list[StepScript]:
        """Every script registered, in the order they were made."""
        return list(self._scripts.values())

    def assert_all_used(self) -> None:
        """Assert every script was reached by a run, and every list of outcomes was used
        up; a `HarnessError` lists those that were not."""
        problems = [
            f"{script} was scripted but never reached"
            for script in self._scripts.values()
            if not script.used
        ]
        problems.extend(
            f"{script} used {script.attempts} of its {len(script.outcomes)} outcomes"
            for script in self._scripts.values()
            if script.used and script.left
        )
        if problems:
            raise HarnessError("\n".join(problems))

    # ---- running ------------------------------------------------------------------------

    @overload
    async def run(
        self,
        body: Callable[[WorkflowContext[D, I]], Awaitable[Result[T, E]]],
        *,
        input: I | None = None,
        **options: Any,
    ) -> Result[T, Any]: ...
    @overload
    async def run(
        self,
        body: Callable[[WorkflowContext[D, I]], Awaitable[T]],
        *,
        input: I | None = None,
        **options: Any,
    ) -> Result[T, Any]: ...
    async def run(
        self,
        body: Callable[[WorkflowContext[D, Any]], Awaitable[Any]],
        *,
        input: Any = None,
        **options: Any,
    ) -> Result[Any, Any]:
        """Run ``body`` as `Workflow.run` does (``input`` and every other option of
        `Workflow.run` are passed on: ``store=`` and ``workflow_id=`` for a durable run,
        ``resume_state=``, ...) and return its Result; the run is recorded in `runs`.

        Raises what `Workflow.run` raises (cancellation from outside included, after
        the run is recorded) and, once the run has ended, a `HarnessError` if the
        scripts were misused (a strict harness met an unscripted step, a list of
        outcomes ran out).  ``RuntimeError`` if another run of this harness is under way.
        """
        if self._log is not None:
            raise RuntimeError(
                "this WorkflowHarness is running a run already: one run at a time "
                "(make a harness per concurrent run)"
            )
        if not callable(body):
            # Refused as production refuses it (and before anything is recorded).
            return await self.workflow.run(body, input=input, **options)
        log = self._log = _RunLog()

        async def harnessed(ctx: WorkflowContext[D, Any]) -> Any:
            ctx.step = _HarnessStep(ctx.step._run, self, log)
            return await body(ctx)

        result: Result[Any, Any] | None = None
        try:
            result = await self.workflow.run(harnessed, input=input, **options)
        finally:
            self._log = None
            self.runs.append(
                HarnessRun(result, tuple(call.frozen() for call in log.calls), tuple(log.events))
            )
        if log.problems:
            raise HarnessError("\n".join(log.problems))
        assert result is not None  # run() returned (it was not cancelled)
        return result

    def _record(self, event: WorkflowEvent) -> None:
        log = self._log
        if log is None:
            return
        log.events.append(event)
        if isinstance(event, StepSkipped):
            log.calls.append(_Call(log, event.name, event.step_key, False, "skipped"))
            return
        call = _CURRENT.get()
        if (
            call is not None
            and call.log is log
            and getattr(event, "name", None) == call.name
            and not event.type.startswith("compensation_")
        ):
            call.events.append(event)
            if isinstance(event, StepStart) and event.step_key is not None:
                call.key = event.step_key

    # ---- the last run -------------------------------------------------------------------

    @property
    def last(self) -> HarnessRun:
        """The last run (``RuntimeError`` before the first)."""
        if not self.runs:
            raise RuntimeError("the harness has not run the workflow yet (await harness.run(body))")
        return self.runs[-1]

    @property
    def result(self) -> Result[Any, Any] | None:
        """The last run's Result (``None`` if it raised)."""
        return self.last.result

    @property
    def steps(self) -> tuple[StepCall, ...]:
        """The steps the last run took, in the order they started."""
        return self.last.steps

    @property
    def events(self) -> tuple[WorkflowEvent, ...]:
        """Every event the last run emitted, in order."""
        return self.last.events

    @property
    def compensations(self) -> list[str]:
        """The steps whose compensation the last run ran (see `HarnessRun.compensations`)."""
        return self.last.compensations

    @property
    def failed_compensations(self) -> list[str]:
        """The steps whose compensation failed for good in the last run (see
        `HarnessRun.failed_compensations`)."""
        return self.last.failed_compensations

    def step_names(self, *, by: _By = "name", replayed: bool = True) -> list[str | None]:
        """See `HarnessRun.step_names` (for the last run)."""
        return self.last.step_names(by=by, replayed=replayed)

    def step(self, name: str | None = None, *, key: str | None = None) -> StepCall:
        """See `HarnessRun.step` (for the last run)."""
        return self.last.step(name, key=key)

    def attempts(self, name: str | None = None, *, key: str | None = None) -> int:
        """See `HarnessRun.attempts` (for the last run)."""
        return self.last.attempts(name, key=key)

    def describe(self) -> str:
        """See `HarnessRun.describe` (for the last run)."""
        return self.last.describe()

    def assert_steps(
        self, expected: Sequence[str | None], *, by: _By = "name", replayed: bool = True
    ) -> None:
        """See `HarnessRun.assert_steps` (for the last run)."""
        self.last.assert_steps(expected, by=by, replayed=replayed)

    def assert_events(self, *expected: _ExpectedEvent) -> None:
        """See `HarnessRun.assert_events` (for the last run)."""
        self.last.assert_events(*expected)

    def assert_events_include(self, *expected: _ExpectedEvent) -> None:
        """See `HarnessRun.assert_events_include` (for the last run)."""
        self.last.assert_events_include(*expected)

    def assert_compensated(self, expected: Sequence[str]) -> None:
        """See `HarnessRun.assert_compensated` (for the last run)."""
        self.last.assert_compensated(expected)
