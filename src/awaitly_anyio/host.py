"""``WorkflowHost``: runs workflows in one task group, limits how many are active, and shuts
down gracefully.

On shutdown (``await host.shutdown()``, a SIGTERM/SIGINT with
``host.serve_signals()``, or leaving ``async with``) the host stops taking new
runs, waits up to ``grace`` seconds for the active ones, then cancels the rest:
durable runs record themselves ``cancelled`` and release their leases, so
another worker's ``recover()`` resumes them without repeating a checkpointed
step.  Finally it closes the store and runs the ``on_shutdown`` callbacks (for
example flushing telemetry).
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.abc
import attrs

from ._run import logger
from .result import Result
from .store import SnapshotStore
from .workflow import Workflow

__all__ = ["HostAtCapacityError", "HostClosedError", "RunHandle", "WorkflowHost"]


class HostClosedError(RuntimeError):
    """The host is shutting down (or not started) and takes no new runs."""


class HostAtCapacityError(RuntimeError):
    """The host already runs ``max_active`` workflows; try again later (or elsewhere)."""


@attrs.define(eq=False)
class RunHandle:
    """A run started by :meth:`WorkflowHost.start`: await :meth:`result` for its Result."""

    workflow_id: str | None
    _done: anyio.Event = attrs.field(factory=anyio.Event)
    _result: Result[Any, Any] | None = None
    _error: Exception | None = None

    @property
    def done(self) -> bool:
        """Whether the run has ended (with a Result or by cancellation)."""
        return self._done.is_set()

    async def result(self) -> Result[Any, Any]:
        """Wait for the run's Result.

        Raises :class:`HostClosedError` if the host's shutdown cancelled the run, and
        what ``workflow.run`` raised for bad arguments (``TypeError``, ``ValueError``).
        """
        await self._done.wait()
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise HostClosedError(f"run {self.workflow_id!r} was cancelled by the host's shutdown")
        return self._result


class WorkflowHost:
    """Runs workflows for a service; use it as ``async with WorkflowHost(...) as host:``.

    - ``max_active``: how many runs may be active at once; more are refused with
      :class:`HostAtCapacityError` (so a load balancer can send them elsewhere).
    - ``store``: given to every run started with a ``workflow_id`` (durable runs)
      unless the call passes its own, and closed at shutdown.
    - ``grace``: seconds active runs get to finish once shutdown begins.
    - ``on_shutdown``: async callables run last (flush telemetry, close pools).
    """

    def __init__(
        self,
        *,
        max_active: int = 100,
        store: SnapshotStore | None = None,
        grace: float = 30.0,
        on_shutdown: Sequence[Callable[[], Awaitable[object]]] = (),
    ) -> None:
        if isinstance(max_active, bool) or not isinstance(max_active, int) or max_active < 1:
            raise ValueError(f"max_active must be a positive integer, not {max_active!r}")
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0:
            raise ValueError(f"grace must be a number of seconds >= 0, not {grace!r}")
        self.max_active = max_active
        self.store = store
        self.grace = float(grace)
        self._on_shutdown = list(on_shutdown)
        self._tg: anyio.abc.TaskGroup | None = None
        self._runs: anyio.abc.TaskGroup | None = None
        self._active = 0
        self._idle = anyio.Event()
        self._idle.set()
        self._shutting_down = False
        self._stopped = anyio.Event()

    # ---- life cycle ------------------------------------------------------------------

    async def __aenter__(self) -> WorkflowHost:
        if self._tg is not None:
            raise RuntimeError("a WorkflowHost can be entered once")
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self._tg.start(self._hold_runs)
        except BaseException:
            await self._tg.__aexit__(None, None, None)
            raise
        return self

    async def _hold_runs(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        # The runs get a task group of their own, so cancelling them at the end of
        # the grace period cancels nothing else (the code inside ``async with``).
        async with anyio.create_task_group() as runs:
            self._runs = runs
            task_status.started()
            await self._stopped.wait()

    async def __aexit__(self, *exc_info: Any) -> bool | None:
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
        """How many runs are active now."""
        return self._active

    @property
    def shutting_down(self) -> bool:
        """Whether shutdown has begun (no new runs are taken)."""
        return self._shutting_down

    def readiness(self) -> dict[str, Any]:
        """What ``/ready`` reports: whether the host takes new runs, and its load."""
        return {
            "ready": self._runs is not None
            and not self._shutting_down
            and self._active < self.max_active,
            "active": self._active,
            "max_active": self.max_active,
            "shutting_down": self._shutting_down,
        }

    # ---- runs ------------------------------------------------------------------------

    def start(
        self,
        workflow: Workflow[Any],
        body: Callable[[Any], Awaitable[Any]],
        *,
        workflow_id: str | None = None,
        **options: Any,
    ) -> RunHandle:
        """Start ``workflow.run(body, ...)`` in the host's task group and return at once.

        Raises :class:`HostClosedError` once shutdown has begun and
        :class:`HostAtCapacityError` when ``max_active`` runs are active.
        """
        if self._runs is None or self._shutting_down:
            raise HostClosedError("the host is shutting down and takes no new runs")
        if self._active >= self.max_active:
            raise HostAtCapacityError(
                f"the host already runs {self._active} workflows (max_active={self.max_active})"
            )
        if self.store is not None and workflow_id is not None:
            options.setdefault("store", self.store)
        handle = RunHandle(workflow_id)
        self._active += 1
        self._idle = anyio.Event() if self._active == 1 else self._idle
        self._runs.start_soon(self._run, handle, workflow, body, workflow_id, options)
        return handle

    async def run(
        self,
        workflow: Workflow[Any],
        body: Callable[[Any], Awaitable[Any]],
        *,
        workflow_id: str | None = None,
        **options: Any,
    ) -> Result[Any, Any]:
        """Start a run and wait for its Result (see :meth:`start` for what it raises)."""
        return await self.start(workflow, body, workflow_id=workflow_id, **options).result()

    async def _run(
        self,
        handle: RunHandle,
        workflow: Workflow[Any],
        body: Callable[[Any], Awaitable[Any]],
        workflow_id: str | None,
        options: dict[str, Any],
    ) -> None:
        try:
            handle._result = await workflow.run(body, workflow_id=workflow_id, **options)
        except Exception as exc:
            # A programming error in the arguments: it belongs to whoever awaits the
            # handle, not to every other run in the host.
            logger.exception("run %r could not start", workflow_id)
            handle._error = exc
        finally:
            handle._done.set()
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    # ---- shutdown --------------------------------------------------------------------

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop taking runs, wait up to ``grace`` seconds (default: the host's) for the
        active ones, then cancel the rest and wait for them to record themselves.

        Calling it again (or concurrently) waits for the first call to finish.
        """
        if self._shutting_down:
            await self._stopped.wait()
            return
        self._shutting_down = True
        try:
            with anyio.move_on_after(self.grace if grace is None else grace):
                await self._idle.wait()
            if self._runs is not None and self._active:
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

        Run it in a task group beside your server; ``await tg.start(host.serve_signals)``
        returns once the signals are watched.
        """
        with anyio.open_signal_receiver(*signals) as received:
            task_status.started()
            async for _ in received:
                break
        await self.shutdown()

    async def _close(self) -> None:
        if self.store is not None:
            try:
                await self.store.close()
            except Exception:  # closing must not hide the rest of the shutdown
                logger.exception("closing the store failed")
        for callback in self._on_shutdown:
            try:
                await callback()
            except Exception:
                logger.exception("an on_shutdown callback failed")
