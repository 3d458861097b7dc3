"""Any worker can resume any run: workflows registered by name, and recovery of runs
whose worker died.

A run that was executing when its process was killed keeps status ``running``
with a lease nobody renews; a run stopped by a graceful shutdown is
``cancelled``.  `recover` claims such runs (atomically, so two workers never
take the same one) and resumes each with the body registered under its
workflow's name; `recovery_loop` does that forever, inside a task group.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NoReturn, TypeVar

import anyio
import attrs
from anyio.abc import TaskStatus

from ._checks import check_lease
from ._clock import Clock, SystemClock
from ._durable import default_owner
from ._errors import SnapshotDecodeError
from ._result import Err, Result
from ._run import logger
from ._snapshot import SnapshotInfo
from ._store import LeaseStore
from ._workflow import Workflow

__all__ = ["RecoveredRun", "WorkflowRegistry", "claim_abandoned", "recover", "recovery_loop"]

Body = Callable[[Any], Awaitable[Any]]
B = TypeVar("B", bound=Body)


class WorkflowRegistry:
    """Workflows and their bodies by name, so a run can be resumed from its name alone.

    Register with ``registry.register(workflow, body)`` or as a decorator:

        @registry.workflow(checkout)
        async def checkout_body(ctx): ...
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Workflow[Any], Body]] = {}

    def register(self, workflow: Workflow[Any], body: Body) -> None:
        """Make ``body`` the way to run (and resume) runs of ``workflow``."""
        if not isinstance(workflow, Workflow):
            raise TypeError(f"expected a Workflow (from create_workflow), not {workflow!r}")
        if not callable(body):
            raise TypeError(f"the body of workflow {workflow.name!r} must be callable")
        known = self._entries.get(workflow.name)
        if known is not None and known != (workflow, body):
            raise ValueError(f"a workflow named {workflow.name!r} is already registered")
        self._entries[workflow.name] = (workflow, body)

    def workflow(self, workflow: Workflow[Any]) -> Callable[[B], B]:
        """Decorator form of `register`."""

        def decorate(body: B) -> B:
            self.register(workflow, body)
            return body

        return decorate

    def get(self, name: str) -> tuple[Workflow[Any], Body]:
        """The workflow and body registered as ``name``; ``KeyError`` naming it if none."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"no workflow named {name!r} is registered") from None

    @property
    def names(self) -> list[str]:
        """The registered workflow names."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    async def start(
        self, name: str, store: LeaseStore, *, workflow_id: str, input: Any = None, **options: Any
    ) -> Result[Any, Any]:
        """Run (or resume) run ``workflow_id`` of the workflow registered as ``name``."""
        workflow, body = self.get(name)
        return await workflow.run(
            body, workflow_id=workflow_id, store=store, input=input, **options
        )


@attrs.frozen
class RecoveredRun:
    """A run `recover` resumed, and how it ended; or a run it found damaged and
    left alone, whose ``result`` is ``Err(SnapshotDecodeError)`` saying what is wrong."""

    id: str
    workflow_name: str
    result: Result[Any, Any]


async def recover(
    store: LeaseStore,
    registry: WorkflowRegistry,
    *,
    owner: str | None = None,
    lease: float = 30.0,
    limit: int = 10,
    concurrency: int = 10,
) -> list[RecoveredRun]:
    """Claim up to ``limit`` abandoned runs of registered workflows and resume them, at
    most ``concurrency`` at a time; return how each ended.

    Only runs of registered workflows are claimed.  Cancelling ``recover`` cancels
    the resumed runs, which record themselves ``cancelled`` (so they can be
    recovered again) before the cancellation propagates.

    A run whose stored snapshot cannot be decoded (damaged, or written by a newer
    release) is neither claimed nor changed: it is logged as a warning and
    returned as a `RecoveredRun` whose result is
    ``Err(SnapshotDecodeError)``, after the resumed ones, every time a pass meets
    it, until an operator repairs or deletes it.  Such runs do not count towards
    ``limit``.
    """
    owner = owner or default_owner()
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be a positive integer, not {concurrency!r}")
    claimed, damaged = await claim_abandoned(store, registry, owner=owner, lease=lease, limit=limit)
    recovered: list[RecoveredRun] = []
    limiter = anyio.CapacityLimiter(concurrency)

    async def resume(id: str, name: str) -> None:
        async with limiter:
            workflow, body = registry.get(name)
            result: Result[Any, Any] = await workflow.run(
                body, workflow_id=id, store=store, owner=owner, lease=lease
            )
            recovered.append(RecoveredRun(id, name, result))

    async with anyio.create_task_group() as tg:
        for info in claimed:
            tg.start_soon(resume, info.id, info.workflow_name)
    return recovered + damaged


async def claim_abandoned(
    store: LeaseStore,
    registry: WorkflowRegistry,
    *,
    owner: str,
    lease: float,
    limit: int,
) -> tuple[list[SnapshotInfo], list[RecoveredRun]]:
    """Claim up to ``limit`` abandoned runs of registered workflows for ``owner``.

    Returns the claimed runs (now leased to ``owner`` for ``lease`` seconds: the
    caller must resume each, or they wait for the lease to run out) and the runs
    found damaged, as `RecoveredRun` whose result is
    ``Err(SnapshotDecodeError)`` (logged as warnings, left as they are).  Used by
    `recover` and by `WorkflowHost.start_recovery`.  Raises ``TypeError`` for a
    store without leases and ``ValueError`` for a bad ``owner``/``lease``/``limit``;
    a cancellation point (the claim itself is one store call).
    """
    if not isinstance(store, LeaseStore):
        raise TypeError(
            f"recovery needs a store with leases (LeaseStore), not {type(store).__name__}"
        )
    if not isinstance(registry, WorkflowRegistry):
        raise TypeError(f"expected a WorkflowRegistry, not {type(registry).__name__}")
    check_lease(owner, lease)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, not {limit!r}")
    if not registry.names:
        return [], []
    found = await store.claim_expired(
        owner=owner, lease=lease, limit=limit, workflow_names=registry.names
    )
    claimed: list[SnapshotInfo] = []
    damaged: list[RecoveredRun] = []
    for info in found:
        if info.damaged is not None:
            logger.warning(
                "run %r cannot be decoded, so it is not recovered (left as it is): %s",
                info.id,
                info.damaged,
            )
            error = SnapshotDecodeError(info.id, info.damaged)
            damaged.append(RecoveredRun(info.id, info.workflow_name, Err(error)))
        else:
            claimed.append(info)
    return claimed, damaged


async def recovery_loop(
    store: LeaseStore,
    registry: WorkflowRegistry,
    *,
    interval: float = 10.0,
    owner: str | None = None,
    lease: float = 30.0,
    limit: int = 10,
    concurrency: int = 10,
    clock: Clock | None = None,
    on_recovered: Callable[[RecoveredRun], object] | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Recover abandoned runs every ``interval`` seconds, forever; start it in a task
    group (``await tg.start(recovery_loop, store, registry)``) and cancel the group
    to stop it.  In a service, prefer `WorkflowHost.start_recovery` (or
    `WorkflowHost.serve_queues`, which starts it): the host runs recovered runs
    under its capacity, readiness report and graceful shutdown, which this loop
    knows nothing of.  Each resumed run is passed to ``on_recovered``, and so is each run
    found damaged (its result ``Err(SnapshotDecodeError)``; see `recover`), at
    every pass until an operator repairs or deletes it."""
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
        raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
    clock = clock if clock is not None else SystemClock()
    owner = owner or default_owner()
    task_status.started()
    while True:
        for run in await recover(
            store, registry, owner=owner, lease=lease, limit=limit, concurrency=concurrency
        ):
            if on_recovered is not None:
                on_recovered(run)
        await clock.sleep(interval)
