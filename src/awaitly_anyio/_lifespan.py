"""Run a `WorkflowHost` inside a web server that owns the
signals (uvicorn, Hypercorn, Granian), through the application's lifespan.

A server that handles SIGTERM itself stops accepting connections, lets the open
requests finish and then sends the ASGI ``lifespan.shutdown`` message.
`WorkflowLifespan` hooks the host to that life cycle:

- at startup it opens the store (from a URL) and enters the host, and with a
  ``registry`` starts the recovery loop *in the host*
  (`WorkflowHost.start_recovery`), so recovered runs count
  against ``max_active``, show in ``/ready`` and get the grace period;
- at shutdown it stops the recovery loop, stops taking runs, gives the active
  runs ``grace`` seconds, cancels the rest (durable runs record themselves
  ``cancelled`` for another worker to resume), closes the store it opened, then
  runs the ``on_shutdown`` callbacks.

Use it as ``lifespan=`` in FastAPI and Starlette, in Litestar's ``lifespan=[...]``,
with Quart's ``app.while_serving(lifespan.while_serving)``, or as ``async with``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from ._clock import Clock
from ._host import WorkflowHost, _check_store
from ._recovery import RecoveredRun, WorkflowRegistry
from ._redact import redact_url
from ._store import LeaseStore, SnapshotStore
from ._store_url import check_store_url

__all__ = ["WorkflowLifespan"]


def _positive(name: str, value: object, *, zero: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value < 0
        or (value == 0 and not zero)
    ):
        bound = ">= 0" if zero else "> 0"
        raise ValueError(f"{name} must be a number of seconds {bound}, not {value!r}")
    return float(value)


class WorkflowLifespan:
    """A lifespan for web applications that run durable workflows.

    ``store`` is a store URL (opened at startup, closed at shutdown) or a store
    object (the caller opens and closes it; the host never closes it).  With a
    ``registry``, abandoned runs of its workflows are recovered every
    ``recovery_interval`` seconds through the host (``None`` turns the loop
    off), each holding a lease of ``lease`` seconds; their outcomes go to
    ``on_recovered``.  ``max_active``, ``grace`` and ``on_shutdown`` are the
    host's (see `WorkflowHost`); ``store_options`` go
    to `open_store` with a URL.

    While the application runs, `host` is its host (and the Starlette/FastAPI
    lifespan state has it as ``request.state.workflow_host``).  One instance can
    be entered once at a time; each startup gets a new host.

    Raises ``TypeError`` / ``ValueError`` at construction for a bad option, naming
    it and never showing a password (a store URL is shown masked); opening the
    store at startup raises the store's error (also masked), which makes the
    server refuse to start.
    """

    def __init__(
        self,
        store: SnapshotStore | str | None = None,
        *,
        registry: WorkflowRegistry | None = None,
        max_active: int = 100,
        grace: float = 30.0,
        recovery_interval: float | None = 10.0,
        lease: float = 30.0,
        on_recovered: Callable[[RecoveredRun], object] | None = None,
        on_shutdown: Sequence[Callable[[], Awaitable[object]]] = (),
        store_options: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
    ) -> None:
        _check_store(store)
        if registry is not None and not isinstance(registry, WorkflowRegistry):
            raise TypeError(f"registry must be a WorkflowRegistry, not {type(registry).__name__}")
        if recovery_interval is not None:
            recovery_interval = _positive("recovery_interval", recovery_interval)
        lease = _positive("lease", lease)
        if on_recovered is not None and not callable(on_recovered):
            raise TypeError(f"on_recovered must be callable, not {type(on_recovered).__name__}")
        if registry is not None and recovery_interval is not None:
            if store is None:
                raise ValueError("recovering runs (registry=...) needs a store")
            if not isinstance(store, (str, LeaseStore)):
                raise TypeError(
                    "recovering runs needs a store with leases (LeaseStore), "
                    f"not {type(store).__name__}"
                )
        self._store = store
        self._registry = registry
        self._recovery_interval = recovery_interval
        self._lease = lease
        self._on_recovered = on_recovered
        self._clock = clock
        self._host_options: dict[str, Any] = {
            "max_active": max_active,
            "grace": grace,
            "on_shutdown": on_shutdown,
            "store_options": store_options,
        }
        # Check the options now, so a bad one fails here, not at the server's startup.
        if isinstance(store, str):
            try:
                check_store_url(store)
            except ValueError as exc:
                raise ValueError(f"invalid store URL {redact_url(store)}: {exc}") from None
        options = dict(self._host_options)
        if store_options is not None and not isinstance(store, str):
            raise ValueError("store_options only apply to a store given as a URL")
        options["store_options"] = None
        WorkflowHost(**options)
        self._host: WorkflowHost | None = None

    @property
    def host(self) -> WorkflowHost:
        """The running host; ``RuntimeError`` outside the application's lifespan."""
        if self._host is None:
            raise RuntimeError(
                "the workflow host is not running: the application's lifespan has not "
                "started (or has ended)"
            )
        return self._host

    @property
    def store(self) -> SnapshotStore:
        """The running host's store; ``RuntimeError`` outside the lifespan or without one."""
        store = self.host.store
        if store is None:
            raise RuntimeError("this WorkflowLifespan has no store")
        return store

    def readiness(self) -> dict[str, Any]:
        """The host's `readiness`, and not ready
        outside the lifespan: pass the lifespan itself as ``create_health_app(host=...)``
        (the health app is built once, the host at each startup)."""
        if self._host is None:
            return {
                "ready": False,
                "active": 0,
                "max_active": self._host_options["max_active"],
                "shutting_down": False,
            }
        return self._host.readiness()

    async def __aenter__(self) -> WorkflowHost:
        """Open the store, enter the host, start recovery; return the host."""
        if self._host is not None:
            raise RuntimeError("this WorkflowLifespan is already running")
        host = WorkflowHost(store=self._store, **self._host_options)
        await host.__aenter__()
        try:
            if self._registry is not None and self._recovery_interval is not None:
                host.start_recovery(
                    self._registry,
                    interval=self._recovery_interval,
                    lease=self._lease,
                    clock=self._clock,
                    on_recovered=self._on_recovered,
                )
        except BaseException as exc:
            await host.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._host = host
        return host

    async def __aexit__(self, *exc_info: Any) -> None:
        """Shut the host down (recovery first, then the grace period, then the store
        and the ``on_shutdown`` callbacks).  A cancellation from outside ends the
        grace period early; the remaining runs still record themselves."""
        host, self._host = self.host, None
        await host.__aexit__(*exc_info)

    def __call__(self, app: object = None) -> AbstractAsyncContextManager[dict[str, Any]]:
        """The lifespan as frameworks call it: ``lifespan(app)`` gives an async context
        manager whose value is the Starlette lifespan state ``{"workflow_host": host}``."""
        return self._context()

    @asynccontextmanager
    async def _context(self) -> AsyncGenerator[dict[str, Any], None]:
        async with self as host:
            yield {"workflow_host": host}

    async def while_serving(self) -> AsyncGenerator[None, None]:
        """The lifespan as an async generator, for Quart's ``app.while_serving``."""
        async with self:
            yield
