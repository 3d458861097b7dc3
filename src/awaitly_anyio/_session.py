"""The core's side of a durable run: the session `Workflow.run` drives, and its slot.

`Workflow.run(body, store=...)` belongs to the core, but what a durable run does
(claim, checkpoint, finish, leases) belongs to the durable layer above it, and the
core imports nothing from above.  So the core states here what it needs of a
durable run (`DurableRun`) and of whoever opens one (`OpenSession`), and the
durable layer fills the slot when it is imported (`install`); the package's
``__init__`` imports it, so the slot is filled before any run can start.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ._clock import Clock
from ._result import Result
from ._resume import SupportsResume
from ._run import Checkpoint, Emit
from .events import EventHandler

if TYPE_CHECKING:
    from types import TracebackType

    from ._snapshot import WorkflowSnapshot  # annotation only

__all__ = ["DurableRun", "IfRunning", "OpenSession", "install", "open_session"]

IfRunning = Literal["error", "wait"]
"""What a durable run does when another worker holds its lease: ``"error"`` returns
``Err(RunInProgressError)`` without running anything, ``"wait"`` waits for the lease
to be free."""


class DurableRun(Protocol):
    """One durable run, driven by `Workflow.run` in this order:

    1. ``ended = await begin()``: claims the run (or marks it running); a Result
       ends the run there (the stored result of a completed run, or the ``Err``
       of a run held elsewhere, a mismatch, another input than the stored run's,
       a store failure) and nothing else is
       called.  Otherwise ``workflow_id``, ``resume``, ``checkpoint`` and
       ``input`` are set for the body.
    2. ``with session:`` around the body: keeps the run's lease while it executes;
       leaving the block may swallow the cancellation the session itself caused
       (a lost lease, or a cancel requested through the store), and then the body
       produced no result.
    3. ``await finish(result)`` (``None`` if the block swallowed the body's
       cancellation) records the end and returns what ``run`` returns; or, if the
       body raised (cancellation from outside), ``await cancelled()`` records that
       before the exception goes on.
    """

    @property
    def workflow_id(self) -> str: ...
    @property
    def resume(self) -> SupportsResume | WorkflowSnapshot | None: ...
    @property
    def checkpoint(self) -> Checkpoint | None: ...
    @property
    def input(self) -> Any: ...

    async def begin(self) -> Result[Any, Any] | None: ...
    def __enter__(self) -> None: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool: ...
    async def cancelled(self) -> None: ...
    async def finish(self, result: Result[Any, Any] | None) -> Result[Any, Any]: ...


class OpenSession(Protocol):
    """Validates a durable run's arguments and returns its session; raises
    ``TypeError`` / ``ValueError`` for a bad argument (before anything is awaited)."""

    def __call__(
        self,
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
    ) -> DurableRun: ...


_slot: list[OpenSession] = []


def install(opener: OpenSession) -> None:
    """Fill the slot: called once by the durable layer as it is imported."""
    _slot[:] = [opener]


def open_session() -> OpenSession:
    """The installed `OpenSession`."""
    if not _slot:  # pragma: no cover - the package's __init__ imports the durable layer
        raise RuntimeError(
            "durable runs need awaitly_anyio._durable imported (import awaitly_anyio)"
        )
    return _slot[0]
