"""Health: a tracker of workflow outcomes, dependency checks, and an ASGI application
serving ``/health``, ``/ready``, ``/health/workflows``, ``/health/circuits`` and
``/health/runs`` (the runs of a store by status, and what the waiting ones wait for).

The application needs no web framework: mount it under any prefix in Starlette,
FastAPI, Litestar or Quart (``app.mount("/ops", health_app)`` answers
``/ops/health``; the ASGI ``root_path`` is honoured whether the framework strips
the prefix from the path or not), or serve it alone with Hypercorn or Uvicorn.
It runs on asyncio and trio.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from datetime import datetime, timezone
from typing import Any, Protocol

import anyio
import attrs

from ._redact import redact_text
from ._snapshot import RUN_STATUSES, RunStatus, SnapshotInfo, SnapshotPage
from .events import WorkflowComplete, WorkflowEvent, WorkflowFailed

__all__ = [
    "CheckResult",
    "HealthTracker",
    "callable_check",
    "create_health_app",
    "create_health_tracker",
    "postgres_check",
    "redis_check",
]


class HealthTracker:
    """Counts workflow outcomes from events: pass `handle_event` as (one of) a
    workflow's ``on_event`` handlers and serve `get_stats`."""

    def __init__(self) -> None:
        self.total = 0
        self.successful = 0
        self.failed = 0
        self._duration_sum_ms = 0.0
        self.last_error: dict[str, Any] | None = None

    def handle_event(self, event: WorkflowEvent) -> None:
        """Count a finished run (other events are ignored)."""
        if isinstance(event, WorkflowComplete):
            self.successful += 1
        elif isinstance(event, WorkflowFailed):
            self.failed += 1
            self.last_error = {
                "time": datetime.fromtimestamp(event.ts, timezone.utc).isoformat(),
                "workflow_name": event.workflow_name,
                "workflow_id": event.workflow_id,
                "error": _describe(event.error),
            }
        else:
            return
        self.total += 1
        self._duration_sum_ms += event.duration_ms

    def get_stats(self) -> dict[str, Any]:
        """Totals, average duration (ms), the last error and the success rate, ready for JSON."""
        return {
            "total": self.total,
            "successful": self.successful,
            "failed": self.failed,
            "avg_duration_ms": self._duration_sum_ms / self.total if self.total else 0.0,
            "last_error": self.last_error,
            "success_rate": self.successful / self.total if self.total else 1.0,
        }


def create_health_tracker() -> HealthTracker:
    """A new `HealthTracker`."""
    return HealthTracker()


def _describe(error: object) -> str:
    """``error`` as text for the health answers, passwords in URLs masked."""
    if isinstance(error, BaseException):
        return redact_text(f"{type(error).__name__}: {error}")
    return redact_text(repr(error))


# ---- checks ------------------------------------------------------------------------------


@attrs.frozen
class CheckResult:
    """One dependency check: ``status`` is ``"ok"`` or ``"error"``, with the latency (ms)
    of a successful check or the error of a failed one."""

    status: str
    latency_ms: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"status": self.status}
        if self.latency_ms is not None:
            found["latency_ms"] = round(self.latency_ms, 3)
        if self.error is not None:
            found["error"] = self.error
        return found


Check = Callable[[], Awaitable[object]]
"""A dependency check: an async callable that raises (or returns ``False``) when unhealthy."""


def callable_check(fn: Callable[[], Awaitable[object]]) -> Check:
    """Any async callable as a check (it fails by raising or returning ``False``)."""
    return fn


def postgres_check(dsn_or_pool: Any) -> Check:
    """``SELECT 1`` on a PostgreSQL DSN (a short connection each time) or an asyncpg pool."""
    from ._bridge import DriverLoop

    async def check() -> object:
        from .stores.postgres import select_one

        loop = DriverLoop("postgres health check")
        try:
            return await loop.call(select_one, dsn_or_pool)
        finally:
            loop.release()

    return check


def redis_check(client_or_url: Any) -> Check:
    """``PING`` on a redis.asyncio client or a Redis URL (a short connection each time)."""
    from ._bridge import DriverLoop

    async def check() -> object:
        from ._redis_client import ping

        loop = DriverLoop("redis health check")
        try:
            return await loop.call(ping, client_or_url)
        finally:
            loop.release()

    return check


async def _run_check(check: Check, timeout: float) -> CheckResult:
    started = time.perf_counter()
    try:
        with anyio.fail_after(timeout):
            outcome = await check()
    except TimeoutError:
        return CheckResult("error", error=f"timed out after {timeout:g}s")
    except Exception as exc:
        return CheckResult("error", error=_describe(exc))
    if outcome is False:
        return CheckResult("error", error="check returned False")
    return CheckResult("ok", latency_ms=(time.perf_counter() - started) * 1000)


async def _run_checks(checks: Mapping[str, Check], timeout: float) -> dict[str, CheckResult]:
    """Every check of ``checks`` run concurrently, each within ``timeout`` seconds: its
    result by name (a check's failure is its result; cancellation propagates)."""
    results: dict[str, CheckResult] = {}

    async def one(name: str, check: Check) -> None:
        results[name] = await _run_check(check, timeout)

    async with anyio.create_task_group() as tg:
        for name, check in checks.items():
            tg.start_soon(one, name, check)
    return results


# ---- the ASGI application ----------------------------------------------------------------


class _Readiness(Protocol):
    def readiness(self) -> dict[str, Any]: ...


class _Breaker(Protocol):
    @property
    def state(self) -> Any: ...


class _Lister(Protocol):
    """What ``/health/runs`` needs of a store: its ``list`` (every store has one)."""

    async def list(
        self,
        *,
        prefix: str | None = None,
        status: RunStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SnapshotPage: ...


_PAGE = 1000  # runs a page when counting


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _run_doc(info: SnapshotInfo) -> dict[str, Any]:
    """A run of the ``/health/runs`` listing: for a waiting run, what it waits for
    (``wait_kind``, ``waiting_for``) and until when (``wake_at``, ``null``: no deadline)."""
    return {
        "id": info.id,
        "workflow_name": info.workflow_name,
        "status": info.status,
        "updated_at": info.updated_at.isoformat(),
        "wait_kind": info.wait_kind,
        "waiting_for": info.waiting_for,
        "wake_at": _iso(info.wake_at),
    }


async def _runs_report(store: _Lister, *, cap: int, listed: int) -> dict[str, Any]:
    """The runs of ``store`` counted by status (each count stops at ``cap``; the
    statuses that reached it are named in ``"capped"``) and the ``listed`` most
    recently updated waiting runs."""
    counts: dict[str, int] = {}
    capped: list[str] = []
    waiting: list[dict[str, Any]] = []
    for status in RUN_STATUSES:
        count, reached, first = await _count_runs(store.list, status, cap=cap, size=_PAGE)
        if status == "waiting":
            waiting = [_run_doc(info) for info in first.items[:listed]]
        if reached:
            capped.append(status)
        counts[status] = count
    return {"counts": counts, "capped": capped, "waiting": waiting}


class _ListPage(Protocol):
    def __call__(
        self, *, status: RunStatus, limit: int, cursor: str | None
    ) -> Awaitable[SnapshotPage]: ...


async def _count_runs(
    list_page: _ListPage, status: RunStatus, *, cap: int, size: int
) -> tuple[int, bool, SnapshotPage]:
    """The runs of ``status`` counted page by page (``size`` runs a page), stopping at
    ``cap``: the count, whether it stopped there with runs left, and the first page.
    (The health report's and the dashboard's counts; what ``list_page`` raises
    propagates.)"""
    count = 0
    cursor: str | None = None
    first: SnapshotPage | None = None
    while True:
        page = await list_page(status=status, limit=min(size, cap - count), cursor=cursor)
        if first is None:
            first = page
        count += len(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return count, False, first
        if count >= cap:
            return count, True, first


# As the ASGI spec and Starlette type them, so the app fits httpx's and Starlette's slots.
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
# What create_health_app returns: its parameters are typed loosely (``Any``) so that the
# app fits every framework's and server's ASGI slot (Starlette's MutableMapping scope,
# Hypercorn's and Litestar's TypedDict scopes) under mypy and pyright alike.
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


def create_health_app(
    *,
    checks: Mapping[str, Check] | None = None,
    tracker: HealthTracker | None = None,
    breakers: Mapping[str, _Breaker] | None = None,
    host: _Readiness | None = None,
    store: _Lister | None = None,
    timeout: float = 5.0,
    count_limit: int = 10_000,
    waiting_listed: int = 100,
) -> ASGIApp:
    """An ASGI application with the health endpoints:

    - ``GET /health``: every check, concurrently, each within ``timeout`` seconds;
      200 with ``"status": "healthy"`` when all pass, else 503 ``"unhealthy"``.
      With a ``host`` serving queues or recovering, ``"unregistered_workflows"``
      names the workflows its registry does not know whose runs wait in the store
      for nobody: queued on its queues (``"pending"``) or ``running`` with a free or
      expired lease (``"abandoned"``), ``{name: {"pending": count, "abandoned":
      count, "last_run": id}}`` (see `WorkflowHost.readiness`), when there are any;
      they do not make the host unhealthy, but an operator must see them.
    - ``GET /ready``: 200 while ``host`` (a `WorkflowHost`)
      accepts work, 503 when it is shutting down or full.
    - ``GET /health/workflows``: ``tracker.get_stats()``.
    - ``GET /health/circuits``: each breaker's state (``"CLOSED"``, ``"OPEN"``,
      ``"HALF_OPEN"``).
    - ``GET /health/runs``: the runs of ``store`` (any store: it is only listed)
      counted by status, ``pending`` (queued) and ``waiting`` included
      (``"counts"``; a count stops at ``count_limit``, and the statuses that
      reached it are named in ``"capped"``),
      and the ``waiting_listed`` most recently updated waiting runs, each with what
      it waits for (``wait_kind``, ``waiting_for``) and its deadline (``wake_at``).
      Read within ``timeout`` seconds: a store that fails or is slower answers 503
      with the error (passwords masked).  404 without a store.

    Paths are relative to where the app is mounted (the ASGI ``root_path``), so
    ``app.mount("/ops", health_app)`` serves ``/ops/health``, ``/ops/ready``...
    Other paths answer 404 and other methods 405.  Lifespan messages are accepted
    (startup and shutdown complete at once).  A WebSocket connection is refused:
    the app answers ``websocket.connect`` with ``websocket.close`` code 1008
    (policy violation), which servers turn into an HTTP 403 for the handshake.
    """
    checks = dict(checks or {})
    breakers = dict(breakers or {})
    if isinstance(count_limit, bool) or not isinstance(count_limit, int) or count_limit < 1:
        raise ValueError(f"count_limit must be a positive integer, not {count_limit!r}")
    if (
        isinstance(waiting_listed, bool)
        or not isinstance(waiting_listed, int)
        or not 0 <= waiting_listed <= 10_000
    ):
        raise ValueError(
            f"waiting_listed must be an integer from 0 to 10000, not {waiting_listed!r}"
        )

    async def health() -> tuple[int, dict[str, Any]]:
        results = await _run_checks(checks, timeout)
        healthy = all(result.status == "ok" for result in results.values())
        body: dict[str, Any] = {
            "status": "healthy" if healthy else "unhealthy",
            "checks": {name: results[name].as_dict() for name in checks},
            "timestamp": datetime.now(timezone.utc).isoformat(),
        }
        if host is not None:
            state = host.readiness()
            body["active_workflows"] = state["active"]
            # Runs no worker with this registry takes (no such workflow here): not a
            # failure of the worker, but an operator must see them.
            unregistered = state.get("unregistered_workflows")
            if unregistered:
                body["unregistered_workflows"] = unregistered
        return (200 if healthy else 503), body

    async def ready() -> tuple[int, dict[str, Any]]:
        if host is None:
            return 200, {"ready": True}
        state = host.readiness()
        return (200 if state["ready"] else 503), state

    async def workflows() -> tuple[int, dict[str, Any]]:
        if tracker is None:
            return 404, {"error": "no workflow tracker configured"}
        return 200, tracker.get_stats()

    async def circuits() -> tuple[int, dict[str, Any]]:
        return 200, {name: _state_name(breaker.state) for name, breaker in breakers.items()}

    async def runs() -> tuple[int, dict[str, Any]]:
        if store is None:
            return 404, {"error": "no store configured"}
        now = datetime.now(timezone.utc).isoformat()
        try:
            with anyio.fail_after(timeout):
                report = await _runs_report(store, cap=count_limit, listed=waiting_listed)
        except TimeoutError:
            return 503, {"error": f"the store did not answer within {timeout:g}s", "timestamp": now}
        except Exception as exc:
            return 503, {"error": _describe(exc), "timestamp": now}
        return 200, {**report, "timestamp": now}

    routes: dict[str, Callable[[], Awaitable[tuple[int, dict[str, Any]]]]] = {
        "/health": health,
        "/ready": ready,
        "/health/workflows": workflows,
        "/health/circuits": circuits,
        "/health/runs": runs,
    }

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] == "websocket":
            await _refuse_websocket(receive, send, "the health endpoints speak HTTP only")
            return
        if scope["type"] != "http":
            return
        route = routes.get(_route_path(scope, routes))
        if route is None:
            status, body = 404, {"error": f"no such endpoint {scope['path']!r}"}
        elif scope["method"] not in ("GET", "HEAD"):
            status, body = 405, {"error": "only GET is allowed"}
        else:
            status, body = await route()
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else payload}
        )

    return app


async def _lifespan(receive: Receive, send: Send) -> None:
    """Answer the server's lifespan messages (nothing to start or stop) until shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _refuse_websocket(receive: Receive, send: Send, reason: str) -> None:
    """Refuse a WebSocket: close it at its ``websocket.connect`` (before accepting,
    so the server answers the handshake with 403, not a 500 for an app that
    returned without a word)."""
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": 1008, "reason": reason})


def _route_path(scope: Scope, routes: Mapping[str, object]) -> str:
    """The path of the request within the app, whichever way it was mounted.

    ASGI servers and frameworks say where an app is mounted in ``root_path``, but
    not all the same way: Starlette and FastAPI mounts (and uvicorn's
    ``--root-path``) keep the full path in ``path`` and add the prefix to
    ``root_path``; others (Litestar's ``is_mount``, Hypercorn's dispatcher) strip
    the prefix from ``path``.  The prefix is removed when ``path`` starts with it,
    unless only the unstripped path names an endpoint (an app mounted at
    ``/health`` by a framework that strips: ``/health/health`` arrives as
    ``path="/health"``).
    """
    path: str = scope.get("path") or "/"
    root: str = (scope.get("root_path") or "").rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        inner = path[len(root) :].rstrip("/") or "/"
        if inner in routes or path.rstrip("/") not in routes:
            return inner
    return path.rstrip("/") or "/"


def _state_name(state: Any) -> str:
    value = getattr(state, "value", state)
    return str(value)
