"""``WorkflowHost``: runs workflows in one task group, limits how many are active, and shuts
down gracefully.

On shutdown (``await host.shutdown()``, a SIGTERM/SIGINT with
``host.serve_signals()``, or leaving ``async with``) the host stops recovering
runs and stops taking new ones, waits up to ``grace`` seconds for the active
ones (recovered runs included), then cancels the rest: durable runs record
themselves ``cancelled`` and release their leases, so another worker's
``recover()`` resumes them without repeating a checkpointed step.  Finally it
closes the store if it opened it (from a URL) and runs the ``on_shutdown``
callbacks (for example flushing telemetry).

One host runs everything of a process under one capacity (``max_active``), one
readiness report and one graceful shutdown: runs started directly (`start`),
runs recovered from dead workers (`recover`, `start_recovery`) and runs taken
from durable queues (`serve_queues`, or ``registry=`` and ``queues=`` given to the
constructor).  It also keeps the store's schedules going (`serve_schedules`, or
``schedules=True``): their ticks become queued runs, which any worker serving the
queue runs.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Generic, TypeVar, cast, overload

import anyio
import anyio.abc
import attrs

from ._checks import check_lease, check_seconds
from ._clock import Clock, SystemClock, sleep_until_woken
from ._context import WorkflowContext
from ._durable import default_owner
from ._errors import AwaitlyError, RunParkedError
from ._queues import Queue, claim_from_queue
from ._recovery import RecoveredRun, WorkflowRegistry, claim_abandoned
from ._redact import redact_text, redact_url
from ._result import Err, Result
from ._run import logger
from ._schedules import SchedulePass, run_schedules
from ._snapshot import RunStatus, SnapshotInfo
from ._store import LeaseStore, MailboxStore, QueueStore, SnapshotStore
from ._waiting import HOSTING, parked_in
from ._workflow import Workflow
from .stores import open_store

__all__ = ["HostAtCapacityError", "HostClosedError", "RunHandle", "WorkflowHost"]

ORPHAN_PAGE = 100
"""Runs read per status by one scan for unregistered workflows (see
`WorkflowHost.start_recovery`)."""
ORPHAN_NAMES = 100
"""At most this many unregistered workflow names are reported (and warned about)."""

T = TypeVar("T")
D = TypeVar("D")
# Free, not Any, in the first overloads: mypy then keeps a Result body's T (see workflow.py).
E = TypeVar("E")


class HostClosedError(RuntimeError, AwaitlyError):
    """The host is shutting down (or not started) and takes no new runs."""


class HostAtCapacityError(RuntimeError, AwaitlyError):
    """The host already runs ``max_active`` workflows; try again later (or elsewhere)."""


@attrs.define(eq=False)
class RunHandle(Generic[T]):
    """A run started by `WorkflowHost.start`: await `result` for its Result.

    ``RunHandle[T]`` is the handle of a run whose body returns ``T`` (or
    ``Result[T, E]``); `result` gives ``Result[T, Any]``.
    """

    workflow_id: str | None
    _done: anyio.Event = attrs.field(factory=anyio.Event)
    _result: Result[T, Any] | None = None
    _error: Exception | None = None

    @property
    def done(self) -> bool:
        """Whether the run has ended (with a Result or by cancellation)."""
        return self._done.is_set()

    async def result(self) -> Result[T, Any]:
        """Wait for the run's Result.

        A cancellation point: cancelling the wait does not cancel the run.  Raises
        `HostClosedError` if the host's shutdown cancelled the run, and what
        ``workflow.run`` raised for bad arguments (``TypeError``, ``ValueError``).
        """
        await self._done.wait()
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise HostClosedError(f"run {self.workflow_id!r} was cancelled by the host's shutdown")
        return self._result


def _check_store(store: object) -> None:
    if store is not None and not isinstance(store, (str, SnapshotStore)):
        raise TypeError(
            "store must be a store (from open_store or awaitly_anyio.stores), a store URL "
            f"or None, not {type(store).__name__}"
        )


class WorkflowHost:
    """Runs workflows for a service; use it as ``async with WorkflowHost(...) as host:``.

    - ``max_active``: how many runs may be active at once (recovered runs
      included); more are refused with `HostAtCapacityError` (so a load
      balancer can send them elsewhere).
    - ``store``: given to every run started with a ``workflow_id`` (durable runs)
      unless the call passes its own.  A store object stays the caller's: the host
      never closes it (open and close it yourself, ``async with store, host:``).
      A store URL (``"sqlite:///runs.db"``, ``"postgresql://..."``) is opened by the
      host (with ``store_options``) when it is entered and closed at the end of its
      shutdown; `store` is that store.
    - ``grace``: seconds active runs get to finish once shutdown begins.
    - ``on_shutdown``: async callables run last (flush telemetry, close pools).
    - ``park_after``: seconds (or a ``timedelta``) a durable run may wait
      (``ctx.step.wait_for`` and friends) in memory before it is parked: its
      coroutine is dropped, its lease released, and it waits in the store as rows
      only; the host's recovery (`start_recovery`) resumes it from its checkpoints
      when its value arrives or its deadline passes.  ``None`` (the default): never.
      A waiting run holds no capacity (``max_active``) either way.
    - ``registry`` and ``queues``: serve these durable queues (`Queue`) with the
      workflows of ``registry`` once the host is entered, as `serve_queues` does
      with its defaults (recovery included).  ``queues`` needs ``registry`` and a
      store.
    - ``schedules``: ``True`` to run the store's schedules once the host is
      entered, as `serve_schedules` does with its defaults.  Needs a store that
      keeps schedules.

    Raises ``TypeError`` / ``ValueError`` for a bad option, naming it (a store URL
    is shown with its password masked).
    """

    def __init__(
        self,
        *,
        max_active: int = 100,
        store: SnapshotStore | str | None = None,
        grace: float = 30.0,
        on_shutdown: Sequence[Callable[[], Awaitable[object]]] = (),
        store_options: Mapping[str, Any] | None = None,
        park_after: float | timedelta | None = None,
        registry: WorkflowRegistry | None = None,
        queues: Sequence[Queue] = (),
        schedules: bool = False,
    ) -> None:
        if not isinstance(schedules, bool):
            raise TypeError(f"schedules must be True or False, not {schedules!r}")
        if schedules and store is None:
            raise ValueError("schedules need a store (the host's store keeps the schedules)")
        if registry is not None and not isinstance(registry, WorkflowRegistry):
            raise TypeError(f"registry must be a WorkflowRegistry, not {type(registry).__name__}")
        queues = _check_queues(queues)
        if queues and registry is None:
            raise ValueError("queues need a registry (the workflows the host may run)")
        if queues and store is None:
            raise ValueError("queues need a store (the host's store holds the queued runs)")
        if park_after is not None:
            park_after = check_seconds(park_after, "park_after", zero=True)
        if isinstance(max_active, bool) or not isinstance(max_active, int) or max_active < 1:
            raise ValueError(f"max_active must be a positive integer, not {max_active!r}")
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0:
            raise ValueError(f"grace must be a number of seconds >= 0, not {grace!r}")
        _check_store(store)
        if store_options is not None and not isinstance(store_options, Mapping):
            raise TypeError(f"store_options must be a mapping, not {type(store_options).__name__}")
        if store_options and not isinstance(store, str):
            raise ValueError("store_options only apply to a store given as a URL")
        if isinstance(on_shutdown, (str, bytes)) or not all(
            callable(callback) for callback in on_shutdown
        ):
            raise TypeError("on_shutdown must be a sequence of async callables")
        self.max_active = max_active
        self._owns_store = isinstance(store, str)
        self.store: SnapshotStore | None = (
            open_store(store, **dict(store_options or {})) if isinstance(store, str) else store
        )
        if schedules and not isinstance(self.store, QueueStore):
            raise TypeError(
                "schedules need the host's store to keep schedules (QueueStore), "
                f"not {type(self.store).__name__}"
            )
        self._store_url = redact_url(store) if isinstance(store, str) else None
        self.grace = float(grace)
        self.park_after: float | None = park_after
        self._on_shutdown = list(on_shutdown)
        self._tg: anyio.abc.TaskGroup | None = None
        self._runs: anyio.abc.TaskGroup | None = None
        self._services: anyio.abc.TaskGroup | None = None
        self._services_stop = anyio.Event()
        self._services_done = anyio.Event()
        self._active = 0
        # Every run task, waiting ones included (`_active` leaves those out): shutdown
        # cancels what is left of them.
        self._tasks = 0
        self._idle = anyio.Event()
        self._idle.set()
        self._shutting_down = False
        self._stopped = anyio.Event()
        self.registry = registry
        self.queues = queues
        # Set when a run frees its capacity, for queue loops waiting for room.
        self._freed = anyio.Event()
        self._serving: dict[str, int] = {}
        self._unregistered: dict[str, dict[str, Any]] = {}
        # Runs of workflows the registry does not know, from the recovery loop's scan.
        self._orphans = _OrphanScan()
        self.schedules = schedules
        # What `readiness` says of the schedules loop (None: not served).
        self._scheduling: dict[str, Any] | None = None

    # ---- life cycle ------------------------------------------------------------------

    async def __aenter__(self) -> WorkflowHost:
        """Open the store if the host was given a URL, then start taking runs.

        Raises ``RuntimeError`` if the host was entered before, and
        ``ConnectionError`` naming the store (password masked) and the reason when
        a store given as a URL cannot be opened.
        """
        if self._tg is not None:
            raise RuntimeError("a WorkflowHost can be entered once")
        tg = self._tg = anyio.create_task_group()
        if self._owns_store and self.store is not None:
            try:
                await self.store.__aenter__()
            except Exception as exc:
                # Say which store (masked) and why, not a bare driver error.
                raise ConnectionError(
                    f"could not open the store {self._store_url}: "
                    f"{type(exc).__name__}: {redact_text(str(exc))}"
                ) from None
        try:
            await tg.__aenter__()
        except BaseException:
            await self._close_store()
            raise
        try:
            await tg.start(self._hold_runs)
            await tg.start(self._hold_services)
            if self.queues and self.registry is not None:
                self.serve_queues(self.registry, self.queues)
            if self.schedules:
                self.serve_schedules()
        except BaseException:
            self._services_stop.set()
            self._stopped.set()
            await tg.__aexit__(None, None, None)
            await self._close_store()
            raise
        return self

    async def _hold_runs(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        # The runs get a task group of their own, so cancelling them at the end of
        # the grace period cancels nothing else (the code inside ``async with``).
        async with anyio.create_task_group() as runs:
            self._runs = runs
            task_status.started()
            await self._stopped.wait()

    async def _hold_services(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        # Background services (the recovery loop) are stopped first at shutdown.
        try:
            async with anyio.create_task_group() as services:
                self._services = services
                task_status.started()
                await self._services_stop.wait()
                services.cancel_scope.cancel()
        finally:
            self._services_done.set()

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        """Shut down (see `shutdown`), then close the store if the host opened
        it and run the ``on_shutdown`` callbacks (shielded from cancellation)."""
        assert self._tg is not None
        try:
            await self.shutdown()
        finally:
            result = await self._tg.__aexit__(*exc_info)
            with anyio.CancelScope(shield=True):
                await self._close()
        return result

    @property
    def active(self) -> int:
        """How many runs are active now (recovered runs included)."""
        return self._active

    @property
    def shutting_down(self) -> bool:
        """Whether shutdown has begun (no new runs are taken)."""
        return self._shutting_down

    def readiness(self) -> dict[str, Any]:
        """What ``/ready`` reports: whether the host takes new runs, and its load.

        A host serving queues adds ``"queues"`` (each served queue's runs active
        here).  A host serving queues or recovering (`start_recovery`) adds
        ``"unregistered_workflows"``: the workflows its registry does not know that
        have runs waiting in the store for nobody, by name (at most 100 names):
        ``{"pending": count, "abandoned": count, "last_run": id}``.  ``pending``
        counts the queued runs of the queues it serves and ``abandoned`` the
        ``running`` runs whose lease is free or expired, as the latest scan of the
        recovery loop found them (see `start_recovery`): this host never claims
        them, and neither does any worker without that workflow.  A queued run it
        claimed but could not start (its row damaged; handed back) adds ``"runs"``
        (a count since the host started) and sets ``"last_run"``.

        A host serving schedules (`serve_schedules`) adds ``"schedules"``:
        ``{"passes": count, "last_pass": epoch seconds or None, "started": count}``,
        the passes that succeeded, when the latest did (on the loop's clock), and the
        tick runs they enqueued (a tick another worker enqueued first is not
        counted).  A ``last_pass`` older than ``recheck`` means the passes fail (the
        log says why).
        """
        state: dict[str, Any] = {
            "ready": self._runs is not None
            and not self._shutting_down
            and self._active < self.max_active,
            "active": self._active,
            "max_active": self.max_active,
            "shutting_down": self._shutting_down,
        }
        if self._serving:
            state["queues"] = dict(self._serving)
        if self._serving or self._unregistered or self._orphans.scanning:
            unregistered = {name: dict(seen) for name, seen in self._orphans.report.items()}
            for name, seen in self._unregistered.items():
                unregistered.setdefault(name, {}).update(seen)
            state["unregistered_workflows"] = unregistered
        if self._scheduling is not None:
            state["schedules"] = dict(self._scheduling)
        return state

    # ---- runs ------------------------------------------------------------------------

    @overload
    def start(
        self,
        workflow: Workflow[D],
        body: Callable[[WorkflowContext[D]], Awaitable[Result[T, E]]],
        *,
        workflow_id: str | None = None,
        **options: Any,
    ) -> RunHandle[T]: ...
    @overload
    def start(
        self,
        workflow: Workflow[D],
        body: Callable[[WorkflowContext[D]], Awaitable[T]],
        *,
        workflow_id: str | None = None,
        **options: Any,
    ) -> RunHandle[T]: ...
    def start(
        self,
        workflow: Workflow[Any],
        body: Callable[[WorkflowContext[Any]], Awaitable[Any]],
        *,
        workflow_id: str | None = None,
        **options: Any,
    ) -> RunHandle[Any]:
        """Start ``workflow.run(body, ...)`` in the host's task group and return at once.

        ``options`` are `Workflow.run`'s
        (``input=``, ``lease=``...); the host's store is used for a run with a
        ``workflow_id`` unless ``store=`` is given.  Not a cancellation point.
        Raises `HostClosedError` before the host is entered and once
        shutdown has begun, `HostAtCapacityError` when ``max_active`` runs
        are active, and ``TypeError`` when ``workflow`` is not a Workflow.
        """
        if not isinstance(workflow, Workflow):
            raise TypeError(f"expected a Workflow (from create_workflow), not {workflow!r}")
        if self._runs is None or self._shutting_down:
            raise HostClosedError("the host is shutting down and takes no new runs")
        if self._active >= self.max_active:
            raise HostAtCapacityError(
                f"the host already runs {self._active} workflows (max_active={self.max_active})"
            )
        if self.store is not None and workflow_id is not None:
            options.setdefault("store", self.store)
        return self._launch(workflow, body, workflow_id, options)

    def _launch(
        self,
        workflow: Workflow[Any],
        body: Callable[[WorkflowContext[Any]], Awaitable[Any]],
        workflow_id: str | None,
        options: dict[str, Any],
        on_done: Callable[[Result[Any, Any]], object] | None = None,
        on_end: Callable[[], object] | None = None,
    ) -> RunHandle[Any]:
        assert self._runs is not None
        handle: RunHandle[Any] = RunHandle(workflow_id)
        self._tasks += 1
        self._hold()
        self._runs.start_soon(
            self._run, handle, workflow, body, workflow_id, options, on_done, on_end
        )
        return handle

    @overload
    async def run(
        self,
        workflow: Workflow[D],
        body: Callable[[WorkflowContext[D]], Awaitable[Result[T, E]]],
        *,
        workflow_id: str | None = None,
        **options: Any,
    ) -> Result[T, Any]: ...
    @overload
    async def run(
        self,
        workflow: Workflow[D],
        body: Callable[[WorkflowContext[D]], Awaitable[T]],
        *,
        workflow_id: str | None = None,
        **options: Any,
    ) -> Result[T, Any]: ...
    async def run(
        self,
        workflow: Workflow[Any],
        body: Callable[[WorkflowContext[Any]], Awaitable[Any]],
        *,
        workflow_id: str | None = None,
        **options: Any,
    ) -> Result[Any, Any]:
        """Start a run and wait for its Result (see `start` for what it raises).

        Cancelling the wait does not cancel the run: it goes on in the host.
        """
        handle: RunHandle[Any] = self.start(workflow, body, workflow_id=workflow_id, **options)
        return await handle.result()

    async def _run(
        self,
        handle: RunHandle[Any],
        workflow: Workflow[Any],
        body: Callable[[WorkflowContext[Any]], Awaitable[Any]],
        workflow_id: str | None,
        options: dict[str, Any],
        on_done: Callable[[Result[Any, Any]], object] | None,
        on_end: Callable[[], object] | None = None,
    ) -> None:
        hosting = HOSTING.set(_Slot(self))
        try:
            handle._result = await workflow.run(body, workflow_id=workflow_id, **options)
        except Exception as exc:
            # A programming error in the arguments: it belongs to whoever awaits the
            # handle, not to every other run in the host.
            logger.exception("run %r could not start", workflow_id)
            handle._error = exc
        except BaseException as exc:
            if not parked_in(exc):
                raise
            # Parked: the run waits in its store now; a recovery pass brings it back.
            handle._result = Err(RunParkedError(workflow_id or "?"))
        finally:
            HOSTING.reset(hosting)
            handle._done.set()
            self._tasks -= 1
            if on_end is not None:
                on_end()
            self._free()
        if on_done is not None and handle._result is not None:
            try:
                on_done(handle._result)
            except Exception:
                logger.exception("on_recovered failed for run %r", workflow_id)

    def _hold(self) -> None:
        """One more active run (a start, or a waiting run that resumed)."""
        self._active += 1
        if self._active == 1:
            self._idle = anyio.Event()

    def _free(self) -> None:
        """One active run fewer (it ended, or it began to wait)."""
        self._active -= 1
        if self._active == 0:
            self._idle.set()
        self._freed.set()

    def _room(self) -> anyio.Event:
        """An event set when a run next frees its capacity."""
        if self._freed.is_set():
            self._freed = anyio.Event()
        return self._freed

    # ---- recovery --------------------------------------------------------------------

    def _recovery_store(self) -> LeaseStore:
        if not isinstance(self.store, LeaseStore):
            raise TypeError(
                "recovery through the host needs the host's store to have leases "
                f"(LeaseStore), not {type(self.store).__name__}"
            )
        return self.store

    async def recover(
        self,
        registry: WorkflowRegistry,
        *,
        owner: str | None = None,
        lease: float = 30.0,
        limit: int = 10,
        on_recovered: Callable[[RecoveredRun], object] | None = None,
    ) -> list[RunHandle[Any]]:
        """One recovery pass through the host: claim up to ``limit`` abandoned runs of
        ``registry``'s workflows from the host's store, no more than the host has
        free capacity for, and start each in the host; return their handles.

        Recovered runs are host runs: they count against ``max_active`` (and so in
        ``/ready``) and get the host's grace period at shutdown.  Each one's
        Result goes to ``on_recovered`` as a `RecoveredRun` when it ends; a
        run found damaged goes there at once with ``Err(SnapshotDecodeError)`` and
        is left as it is.  Claiming is shielded from cancellation, so a claimed
        run is always started (never left leased to nobody).  Returns ``[]`` once
        shutdown has begun.  Raises `HostClosedError` before the host is
        entered, ``TypeError`` when the host has no store with leases.
        """
        store = self._recovery_store()
        if self._runs is None:
            raise HostClosedError("the host is not running: enter it with async with first")
        owner = owner or default_owner()
        free = self.max_active - self._active
        if self._shutting_down or free <= 0:
            return []
        claimed: list[SnapshotInfo] = []
        damaged: list[RecoveredRun] = []
        with anyio.CancelScope(shield=True):
            claimed, damaged = await claim_abandoned(
                store, registry, owner=owner, lease=lease, limit=min(limit, free)
            )
        handles: list[RunHandle[Any]] = []
        for info in claimed:
            workflow, body = registry.get(info.workflow_name)
            done = None
            if on_recovered is not None:
                done = _report(on_recovered, info.id, info.workflow_name)
            options: dict[str, Any] = {"store": store, "owner": owner, "lease": lease}
            handles.append(self._launch(workflow, body, info.id, options, done))
        if on_recovered is not None:
            for run in damaged:
                on_recovered(run)
        return handles

    def start_recovery(
        self,
        registry: WorkflowRegistry,
        *,
        interval: float = 10.0,
        owner: str | None = None,
        lease: float = 30.0,
        limit: int = 10,
        clock: Clock | None = None,
        on_recovered: Callable[[RecoveredRun], object] | None = None,
    ) -> None:
        """Run `recover` every ``interval`` seconds in the host, until shutdown.

        The loop runs in the host's own task group and is stopped first when
        shutdown begins (before the grace period), so no run is claimed during a
        drain.  A pass that fails (the store unreachable) is logged and retried at
        the next interval.

        Each pass also looks, cheaply, for runs no worker with this registry will
        ever take: one page (`ORPHAN_PAGE` runs) of ``pending`` runs when the host
        serves queues (those of its queues count) and one of ``running`` runs whose
        lease is free or expired on ``clock`` (give the store's clock), continuing
        from where the previous pass stopped, so a larger store is covered over
        several passes.  The workflows its registry does not know are reported in
        `readiness` (``"unregistered_workflows"``, replaced when a full sweep
        ends) and logged as a warning the first time each is seen.  Not a
        cancellation point.  Raises
        `HostClosedError` before the host is entered or once shutdown has
        begun, ``TypeError`` when the host has no store with leases or
        ``registry`` is not a `WorkflowRegistry`, ``ValueError`` for a bad
        ``interval``.
        """
        self._recovery_store()
        if not isinstance(registry, WorkflowRegistry):
            raise TypeError(f"expected a WorkflowRegistry, not {type(registry).__name__}")
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
        if self._services is None or self._shutting_down:
            raise HostClosedError("the host is not running: enter it with async with first")
        owner = owner or default_owner()
        the_clock = clock if clock is not None else SystemClock()

        store = self._recovery_store()
        self._orphans.scanning = True

        async def loop() -> None:
            while True:
                try:
                    await self.recover(
                        registry, owner=owner, lease=lease, limit=limit, on_recovered=on_recovered
                    )
                except Exception as exc:
                    logger.warning("a recovery pass failed (retried in %gs): %s", interval, exc)
                try:
                    await self._orphans.scan(store, registry, set(self._serving), the_clock)
                except Exception as exc:
                    logger.warning("a scan for unregistered workflows failed (retried): %s", exc)
                await self._until_next_pass(the_clock, interval)

        self._services.start_soon(loop)

    # ---- queues ----------------------------------------------------------------------

    def serve_queues(
        self,
        registry: WorkflowRegistry,
        queues: Sequence[Queue],
        *,
        owner: str | None = None,
        lease: float = 30.0,
        poll_interval: float | None = None,
        clock: Clock | None = None,
        recovery_interval: float | None = 10.0,
        on_recovered: Callable[[RecoveredRun], object] | None = None,
    ) -> None:
        """Serve durable queues: take their pending runs of ``registry``'s workflows
        from the host's store and run them in the host, until shutdown.

        One loop per queue claims (`QueueStore.claim_queued`) as many runs as there
        is room for (the host's free capacity, and the queue's
        ``worker_concurrency`` less its runs active here), within the queue's global
        limits; it claims again when the store pushes a change (an enqueue, the end
        of a queued run; `MailboxStore.next_send`), when a run of the host frees its
        capacity, and every ``poll_interval`` seconds (default: the store's
        `poll_interval`) on ``clock`` in case a push was missed.  Each claimed run
        is resumed as recovery does (the body registered under its workflow's name,
        leased ``lease`` seconds as ``owner``, default `default_owner`) and is a host
        run: it counts against ``max_active``, shows in `readiness` and gets the
        grace period at shutdown.  A claim is shielded from cancellation, so a
        claimed run is always started.

        Only runs of ``registry``'s workflows are claimed: a queued run of a workflow
        it does not know stays ``pending`` for a worker that knows it; the recovery
        loop (below) reports such runs in `readiness` (``"unregistered_workflows"``)
        and logs each such workflow once.  A claimed run
        that cannot be started (its row damaged) is handed back at once (its lease
        released), logged as a warning and reported in `readiness`
        (``"unregistered_workflows"``) and so in ``/health``.  With
        ``recovery_interval`` (seconds; ``None``: not) the host also recovers
        abandoned runs of ``registry`` (`start_recovery`), which the queues need when
        a worker dies.  The loops stop first at shutdown (before the grace period):
        nothing is claimed during a drain.  A failed claim (the store unreachable) is
        logged and retried at the next poll.

        Not a cancellation point.  Raises `HostClosedError` before the host is
        entered or once shutdown has begun, ``TypeError`` when the host's store
        has no queues or ``registry``/``queues`` are of the wrong type, ``ValueError``
        for a queue served twice or a bad ``lease``/``poll_interval``.
        """
        store = self._recovery_store()
        if not hasattr(store, "claim_queued") or not isinstance(store, MailboxStore):
            raise TypeError(
                "queues need the host's store to have queues (QueueStore), "
                f"not {type(store).__name__}"
            )
        if not isinstance(registry, WorkflowRegistry):
            raise TypeError(f"expected a WorkflowRegistry, not {type(registry).__name__}")
        queues = _check_queues(queues)
        if poll_interval is not None:
            poll_interval = check_seconds(poll_interval, "poll_interval")
        if self._services is None or self._shutting_down:
            raise HostClosedError("the host is not running: enter it with async with first")
        for queue in queues:
            if queue.name in self._serving:
                raise ValueError(f"queue {queue.name!r} is already served by this host")
        owner = owner or default_owner()
        check_lease(owner, lease)
        the_clock = clock if clock is not None else SystemClock()
        for queue in queues:
            self._serving[queue.name] = 0
            self._services.start_soon(
                self._serve_queue,
                store,
                queue,
                registry,
                owner,
                float(lease),
                poll_interval,
                the_clock,
            )
        if recovery_interval is not None:
            self.start_recovery(
                registry,
                interval=recovery_interval,
                owner=owner,
                lease=lease,
                clock=clock,
                on_recovered=on_recovered,
            )

    async def _serve_queue(
        self,
        store: Any,
        queue: Queue,
        registry: WorkflowRegistry,
        owner: str,
        lease: float,
        poll_interval: float | None,
        clock: Clock,
    ) -> None:
        name = queue.name

        def ended() -> None:
            self._serving[name] -= 1

        # The watch is open before the first claim: an enqueue between a claim that
        # found nothing and the wait is not missed.
        with store.sends(None) as watch:
            while True:
                room = self.max_active - self._active
                if queue.worker_concurrency is not None:
                    room = min(room, queue.worker_concurrency - self._serving[name])
                taken = 0
                if room > 0 and not self._shutting_down:
                    runnable: list[SnapshotInfo] = []
                    unknown: list[SnapshotInfo] = []
                    try:
                        # Shielded: a run claimed is a run started, never one left
                        # leased to nobody by a shutdown landing mid-claim.
                        with anyio.CancelScope(shield=True):
                            runnable, unknown = await claim_from_queue(
                                store, queue, registry, owner=owner, lease=lease, limit=room
                            )
                    except Exception as exc:
                        logger.warning("claiming from queue %r failed (retried): %s", name, exc)
                    for info in runnable:
                        workflow, body = registry.get(info.workflow_name)
                        options: dict[str, Any] = {"store": store, "owner": owner, "lease": lease}
                        self._serving[name] += 1
                        self._launch(workflow, body, info.id, options, on_end=ended)
                    for info in unknown:
                        seen = self._unregistered.setdefault(
                            info.workflow_name, {"runs": 0, "last_run": None}
                        )
                        seen["runs"] += 1
                        seen["last_run"] = info.id
                    taken = len(runnable) + len(unknown)
                    if taken and taken == room:
                        continue  # there may be more pending: claim again at once
                interval = store.poll_interval if poll_interval is None else poll_interval
                await self._until_woken(watch, clock, interval, full=room <= 0)

    async def _until_woken(self, watch: Any, clock: Clock, interval: float, full: bool) -> None:
        """Wait until the store pushes a change, a run frees its capacity (when the
        queue has no room), or ``interval`` passes on ``clock``."""
        woken = self._room().wait if full else functools.partial(_pushed, watch.wait)
        await sleep_until_woken(clock, interval, woken)

    async def _until_next_pass(self, clock: Clock, interval: float) -> None:
        """Wait ``interval`` on ``clock``, or less: a value sent to any run of the host's
        store (from this process, or pushed by the database) may make a parked run
        due, so the next pass starts at once."""
        store = self.store
        if not isinstance(store, MailboxStore):
            await clock.sleep(interval)
            return
        await sleep_until_woken(clock, interval, functools.partial(_pushed, store.next_send))

    # ---- schedules -------------------------------------------------------------------

    def serve_schedules(
        self, *, clock: Clock | None = None, recheck: float | timedelta = 60.0
    ) -> None:
        """Keep the store's schedules going: run `run_schedules` on the host's store
        in the host, until shutdown.

        Each due tick of a schedule becomes one queued run (whatever the number of
        workers doing this), which the workers serving its queue run
        (`serve_queues`); serving the schedules does not serve their queues.  The
        loop sleeps on ``clock`` until the next tick, at most ``recheck`` seconds,
        and wakes at once when a schedule is added, changed, paused, resumed or
        removed (see `run_schedules` for the bound).  It is stopped first at
        shutdown (before the grace period), like the queue loops: no tick is
        enqueued during a drain.  A pass that fails (the store unreachable) is
        logged and tried again after ``recheck``; `readiness` reports the passes.

        Not a cancellation point.  Raises `HostClosedError` before the host is
        entered or once shutdown has begun, ``TypeError`` when the host's store
        keeps no schedules, ``ValueError`` when the host serves them already, and
        ``ValueError``/``TypeError`` for a bad ``recheck``.
        """
        store = self.store
        if not isinstance(store, QueueStore):
            raise TypeError(
                "schedules need the host's store to keep schedules (QueueStore), "
                f"not {type(store).__name__}"
            )
        recheck = check_seconds(recheck, "recheck")
        if self._services is None or self._shutting_down:
            raise HostClosedError("the host is not running: enter it with async with first")
        if self._scheduling is not None:
            raise ValueError("this host serves the schedules already")
        the_clock = clock if clock is not None else SystemClock()
        seen: dict[str, Any] = {"passes": 0, "last_pass": None, "started": 0}
        self._scheduling = seen

        def passed(done: SchedulePass) -> None:
            seen["passes"] += 1
            seen["last_pass"] = the_clock.time()
            seen["started"] += len(done.started)

        async def loop() -> None:
            await run_schedules(store, clock=the_clock, recheck=recheck, on_pass=passed)

        self._services.start_soon(loop)

    # ---- shutdown --------------------------------------------------------------------

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop recovering and taking runs, wait up to ``grace`` seconds (default: the
        host's) for the active ones, then cancel the rest and wait for them to
        record themselves.

        Calling it again (or concurrently) waits for the first call to finish.
        Cancelling it ends the grace period early: the remaining runs are still
        cancelled and waited for (shielded) before the cancellation propagates.
        """
        if self._shutting_down:
            await self._stopped.wait()
            return
        self._shutting_down = True
        try:
            self._services_stop.set()
            if self._services is not None:
                with anyio.CancelScope(shield=True):
                    await self._services_done.wait()
            with anyio.move_on_after(self.grace if grace is None else grace):
                await self._idle.wait()
        finally:
            try:
                if self._runs is not None and self._tasks:
                    self._runs.cancel_scope.cancel()
                    # Cancelled durable runs record themselves in short shielded scopes.
                    with anyio.CancelScope(shield=True):
                        await self._idle.wait()
            finally:
                self._stopped.set()

    async def serve_signals(
        self,
        signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Wait for one of ``signals`` (SIGTERM and SIGINT by default), then shut down.

        For a program that owns its signals (a worker process, or a server you
        run yourself inside the same task group).  Do not use it under a server
        that handles the signals itself (uvicorn, Hypercorn, Granian): there, let
        the server's lifespan shut the host down (see
        `WorkflowLifespan`).  Run it in a task group
        beside your server; ``await tg.start(host.serve_signals)`` returns once the
        signals are watched.  Cancelling it before a signal stops watching.
        """
        with anyio.open_signal_receiver(*signals) as received:
            task_status.started()
            async for _ in received:
                break
        await self.shutdown()

    async def _close_store(self) -> None:
        if self._owns_store and self.store is not None:
            try:
                await self.store.close()
            except Exception as exc:  # closing must not hide the rest of the shutdown
                logger.error(
                    "closing the store %s failed: %s", self._store_url, redact_text(str(exc))
                )

    async def _close(self) -> None:
        await self._close_store()
        for callback in self._on_shutdown:
            try:
                await callback()
            except Exception:
                logger.exception("an on_shutdown callback failed")


class _Slot:
    """A host run's `HostSlot`: while it waits it does not count as active."""

    __slots__ = ("_host",)

    def __init__(self, host: WorkflowHost) -> None:
        self._host = host

    @property
    def park_after(self) -> float | None:
        return self._host.park_after

    def waiting(self) -> None:
        self._host._free()

    def resumed(self) -> None:
        self._host._hold()


class _OrphanScan:
    """The recovery loop's look for runs of workflows the host's registry does not
    know: one page per status and pass, each status's sweep continued over passes
    and published when it ends."""

    def __init__(self) -> None:
        self.scanning = False
        # Per status ("pending", "running"): workflow name -> runs seen.
        self._found: dict[str, dict[str, tuple[int, str]]] = {"pending": {}, "running": {}}
        self._sweeps: dict[str, dict[str, tuple[int, str]]] = {"pending": {}, "running": {}}
        self._cursors: dict[str, str | None] = {"pending": None, "running": None}
        self._warned: set[str] = set()

    @property
    def report(self) -> dict[str, dict[str, Any]]:
        """``{name: {"pending": n, "abandoned": n, "last_run": id}}`` of the latest
        sweeps, at most `ORPHAN_NAMES` names."""
        report: dict[str, dict[str, Any]] = {}
        for status, kind in (("pending", "pending"), ("running", "abandoned")):
            for name, (count, last) in self._found[status].items():
                if name not in report and len(report) >= ORPHAN_NAMES:
                    continue
                seen = report.setdefault(name, {"pending": 0, "abandoned": 0, "last_run": None})
                seen[kind] = count
                seen["last_run"] = last
        return report

    async def scan(
        self, store: SnapshotStore, registry: WorkflowRegistry, queues: set[str], clock: Clock
    ) -> None:
        """Read one page of each status.  A cancellation point (two store calls at
        most); raises what the store's ``list`` raises."""
        statuses: list[RunStatus] = ["running", "pending"] if queues else ["running"]
        if not queues:
            self._found["pending"] = {}
        now = clock.time()
        for status in statuses:
            page = await store.list(status=status, limit=ORPHAN_PAGE, cursor=self._cursors[status])
            sweep = self._sweeps[status]
            for info in page:
                if info.damaged is not None or info.workflow_name in registry:
                    continue
                if status == "pending" and info.queue not in queues:
                    continue
                expires = info.lease_expires_at
                if (
                    status == "running"
                    and info.lease_owner is not None
                    and (expires is None or expires.timestamp() > now)
                ):
                    continue  # a live lease: some worker runs it
                name = info.workflow_name
                if name not in sweep and len(sweep) >= ORPHAN_NAMES:
                    continue
                sweep[name] = (sweep.get(name, (0, ""))[0] + 1, info.id)
                self._warn(info, status)
            self._cursors[status] = page.next_cursor
            if page.next_cursor is None:
                self._found[status], self._sweeps[status] = sweep, {}

    def _warn(self, info: SnapshotInfo, status: str) -> None:
        name = info.workflow_name
        if name in self._warned or len(self._warned) >= ORPHAN_NAMES:
            return
        self._warned.add(name)
        logger.warning(
            "run %r is %s, but its workflow %r is not registered in this host: no worker"
            " without that workflow takes it (start one that registers it, or cancel it)",
            info.id,
            "queued" if status == "pending" else "abandoned (its lease free or expired)",
            name,
        )


def _check_queues(queues: object) -> tuple[Queue, ...]:
    if isinstance(queues, (str, bytes, Queue)) or not isinstance(queues, Sequence):
        raise TypeError(f"queues must be a sequence of Queue, not {queues!r}")
    found = tuple(cast("Sequence[object]", queues))
    names: set[str] = set()
    for queue in found:
        if not isinstance(queue, Queue):
            raise TypeError(f"queues must be Queue objects, not {queue!r}")
        if queue.name in names:
            raise ValueError(f"queue {queue.name!r} is given twice")
        names.add(queue.name)
    return tuple(q for q in found if isinstance(q, Queue))


def _report(
    on_recovered: Callable[[RecoveredRun], object], id: str, name: str
) -> Callable[[Result[Any, Any]], object]:
    def report(result: Result[Any, Any]) -> object:
        return on_recovered(RecoveredRun(id, name, result))

    return report


async def _pushed(wait: Callable[[], Awaitable[object]]) -> None:
    """``await wait()`` for a store push; if the store cannot push any more (it closed
    under us), wait for ever: the caller's interval decides."""
    try:
        await wait()
    except Exception as exc:
        logger.debug("wake-ups unavailable: %s", exc)
        await anyio.sleep_forever()
