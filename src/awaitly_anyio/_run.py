"""Private state shared by a run's context and steps, and the early-exit signal."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, cast

from ._clock import Clock
from ._errors import UnexpectedError
from ._ids import uuid4_text
from ._result import Err, Ok, Result
from .events import WorkflowEvent

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from ._versions import Tracker

logger = logging.getLogger("awaitly_anyio")

Emit = Callable[[WorkflowEvent], None]


class Checkpoint(Protocol):
    """Called by a keyed step of a durable run once its outcome is known, before the
    step returns.  Returns ``None`` when the record is safely stored, or the ``Err``
    that ends the workflow (the value could not be serialized, the store failed)."""

    async def __call__(
        self,
        name: str,
        key: str,
        result: Result[Any, Any],
        attempts: int,
        started_at: float,
        type_hint: type | None,
    ) -> Err[Any] | None: ...


class Compensations(Protocol):
    """What the run needs of its compensation stack (`awaitly_anyio._saga.Saga`, a
    module above this one): register a compensation, and roll back."""

    def push(self, name: str, key: str | None, compensate: Any, value: Any) -> None: ...

    async def rollback(self, run: RunState, error: Err[Any]) -> Err[Any]: ...


class EarlyExit(BaseException):
    """Raised by a step that got ``Err`` to end the workflow body; caught by ``run``.

    It derives from ``BaseException`` so that ``except Exception`` in user code
    cannot swallow it.  It names the run it belongs to, so a nested workflow
    never ends its parent by mistake.
    """

    __slots__ = ("result", "run")

    def __init__(self, run: RunState, result: Err[Any]) -> None:
        super().__init__(result)
        self.run = run
        self.result = result


NO_RESULTS: Mapping[str, Ok[Any]] = MappingProxyType({})
"""The completed results of a run that has none yet, shared: a dict is made when the
first keyed step completes (see `RunState.remember`), not for every run."""


class RunState:
    """Everything one run's steps share: identity, clock, event sink and the completed keys."""

    __slots__ = (
        "_map",
        "_workflow_id",
        "checkpoint",
        "clock",
        "completed",
        "emit",
        "mapper_failure",
        "name",
        "rolling_back",
        "saga",
        "track",
    )

    # Positional only: a run is made for every workflow run, and keyword arguments to a
    # class cost it a dict.
    def __init__(
        self,
        name: str,
        workflow_id: str | None,
        clock: Clock,
        emit: Emit | None,
        map_exception: Callable[[Exception], object],
        completed: Mapping[str, Ok[Any]],
        checkpoint: Checkpoint | None = None,
        /,
    ) -> None:
        self.name = name
        self._workflow_id = workflow_id
        self.clock = clock
        self.emit = emit
        self._map = map_exception
        self.mapper_failure: BaseException | None = None
        self.completed = completed
        self.checkpoint = checkpoint
        # The run's compensations (`awaitly_anyio._saga.Saga`), made by the first step
        # given ``compensate=``; None until then (a run without any pays nothing).
        self.saga: Compensations | None = None
        # A durable run recovered in the middle of its rollback: the Err it is rolling
        # back.  Its first step without a record ends the body with it instead of
        # executing, so the body only replays what completed (and re-registers the
        # compensations) before the rollback goes on.
        self.rolling_back: Err[Any] | None = None
        # A durable run's automatic keys, drift checks and patches
        # (`awaitly_anyio._versions.Tracker`); None without a store.
        self.track: Tracker | None = None

    def map_exception(self, exc: Exception) -> object:
        """The error value for a foreign exception (the workflow's ``catch_unexpected``).

        If the mapper itself raises, its exception is remembered as
        `mapper_failure` and propagates: the run re-raises it as it is,
        once, instead of mapping the mapper's own failure again.
        """
        failure = self.mapper_failure
        if failure is not None and holds(exc, failure):
            # The mapper's failure came back wrapped (a task group's, a step's): it
            # propagates as it is rather than being mapped in turn.
            raise failure
        try:
            return self._map(exc)
        except Exception as failure:
            self.mapper_failure = failure
            raise

    def remember(self, key: str, result: Ok[Any]) -> None:
        """Record keyed step ``key``'s result, so the run does not execute it again."""
        completed = self.completed
        if completed is NO_RESULTS:
            first: dict[str, Ok[Any]] = {}
            self.completed = completed = first
        completed[key] = result  # type: ignore[index]

    @property
    def workflow_id(self) -> str:
        """The run's id.  A default one (a uuid4 string) is made when first asked for:
        most runs that were not given one never ask."""
        found = self._workflow_id
        if found is None:
            found = self._workflow_id = uuid4_text()
        return found


def holds(exc: BaseException, target: BaseException) -> bool:
    """Whether ``exc`` is ``target`` or an exception group that carries it."""
    return carries(exc, lambda e: e is target)


def carries(exc: BaseException, match: Callable[[BaseException], bool]) -> bool:
    """Whether ``match(exc)``, or ``exc`` is an exception group that carries an
    exception ``match`` accepts."""
    if match(exc):
        return True
    if not isinstance(exc, BaseExceptionGroup):
        return False
    # isinstance leaves the group's type argument unknown; any group holds BaseExceptions.
    group = cast("BaseExceptionGroup[BaseException]", exc)
    return group.subgroup(match) is not None


def default_map_exception(exc: Exception) -> object:
    """Wrap a foreign exception so it can travel inside ``Err``."""
    return UnexpectedError(exc)


def make_emitter(handlers: Sequence[Callable[[WorkflowEvent], object]]) -> Emit | None:
    """One callable that feeds every handler, logging (never raising) a handler's failure."""
    if not handlers:
        return None
    if len(handlers) == 1:  # the common case, without the loop
        handler = handlers[0]

        def emit_one(event: WorkflowEvent) -> None:
            try:
                handler(event)
            except Exception:
                logger.exception("on_event handler %r failed on %s", handler, event.type)

        return emit_one

    def emit_all(event: WorkflowEvent) -> None:
        for handler in handlers:
            try:
                handler(event)
            except Exception:
                logger.exception("on_event handler %r failed on %s", handler, event.type)

    return emit_all
