"""The health tracker, and the health endpoints served over real HTTP by Hypercorn."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import attrs
import httpx
import pytest

from awaitly_anyio import Deps, Err, WorkflowContext, create_workflow
from awaitly_anyio._host import WorkflowHost
from awaitly_anyio.health import (
    create_health_app,
    create_health_tracker,
    postgres_check,
    redis_check,
)
from awaitly_anyio.testing import FakeClock

from .postgres_kit import DSN
from .redis_kit import URL as REDIS_URL

pytestmark = pytest.mark.anyio


async def test_the_tracker_counts_outcomes_from_events() -> None:
    tracker = create_health_tracker()
    assert tracker.get_stats()["success_rate"] == 1.0
    clock = FakeClock()
    workflow = create_workflow("checkout", on_event=tracker.handle_event, clock=clock)

    async def fine(ctx: WorkflowContext[Deps]) -> int:
        await ctx.step.sleep("work", 0.5)
        return 1

    async def declined(ctx: WorkflowContext[Deps]) -> int:
        await ctx.step("charge", lambda: Err("DECLINED"))
        return 0

    for body in (fine, fine, fine, declined):
        await workflow.run(body, workflow_id=body.__name__)
    stats = tracker.get_stats()
    assert (stats["total"], stats["successful"], stats["failed"]) == (4, 3, 1)
    assert stats["success_rate"] == 0.75
    assert stats["avg_duration_ms"] == pytest.approx(3 * 500 / 4)
    assert stats["last_error"]["workflow_id"] == "declined"
    assert stats["last_error"]["error"] == "'DECLINED'"


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def served(app: Any, backend: str) -> AsyncIterator[str]:
    """Serve ``app`` with Hypercorn on a loopback port; yield its base URL."""
    from hypercorn.config import Config

    config = Config()
    port = free_port()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        if backend == "trio":
            from hypercorn.trio import serve as trio_serve

            await tg.start(
                lambda task_status: trio_serve(
                    app, config, shutdown_trigger=stop.wait, task_status=task_status
                )
            )
        else:
            from hypercorn.asyncio import serve as asyncio_serve

            tg.start_soon(lambda: asyncio_serve(app, config, shutdown_trigger=stop.wait))
            while True:  # asyncio's serve has no start-up signal: wait for the socket
                try:
                    await (await anyio.connect_tcp("127.0.0.1", port)).aclose()
                    break
                except OSError:
                    await anyio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            stop.set()


@attrs.define
class Breaker:
    state: str


async def test_the_endpoints_over_http(anyio_backend: str) -> None:
    tracker = create_health_tracker()
    workflow = create_workflow("checkout", on_event=tracker.handle_event)

    async def fine(ctx: WorkflowContext[Deps]) -> int:
        return 1

    await workflow.run(fine)

    async def broken() -> None:
        raise ConnectionError("stripe is down")

    async def fine_check() -> bool:
        return True

    async with WorkflowHost(max_active=2) as host:
        app = create_health_app(
            checks={"database": postgres_check(DSN), "redis": redis_check(REDIS_URL)},
            tracker=tracker,
            breakers={"payment": Breaker("OPEN")},
            host=host,
        )
        async with served(app, anyio_backend) as base, httpx.AsyncClient(base_url=base) as http:
            health = await http.get("/health")
            assert health.status_code == 200, health.text
            body = health.json()
            assert body["status"] == "healthy"
            assert body["checks"]["database"]["status"] == "ok"
            assert body["checks"]["redis"]["latency_ms"] >= 0
            assert body["active_workflows"] == 0

            assert (await http.get("/health/workflows")).json()["total"] == 1
            assert (await http.get("/health/circuits")).json() == {"payment": "OPEN"}
            ready = await http.get("/ready")
            assert (ready.status_code, ready.json()["ready"]) == (200, True)
            assert (await http.get("/nope")).status_code == 404
            assert (await http.post("/health")).status_code == 405

        sick = create_health_app(checks={"stripe": broken, "cache": fine_check}, host=host)
        async with served(sick, anyio_backend) as base, httpx.AsyncClient(base_url=base) as http:
            health = await http.get("/health")
            assert health.status_code == 503
            assert health.json()["checks"]["stripe"] == {
                "status": "error",
                "error": "ConnectionError: stripe is down",
            }
            assert health.json()["checks"]["cache"]["status"] == "ok"
            await host.shutdown()
            ready = await http.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["shutting_down"] is True


async def test_a_hanging_check_times_out() -> None:
    hang = anyio.Event()

    async def hangs() -> None:
        await hang.wait()

    app = create_health_app(checks={"slow": hangs}, timeout=0.05)
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "http", "path": "/health", "method": "GET"}, receive, send)
    assert sent[0]["status"] == 503
    assert b"timed out after 0.05s" in sent[1]["body"]


async def test_a_websocket_is_refused_not_a_server_error(anyio_backend: str) -> None:
    # Issue 16, item 16: the app returned without closing, so servers answered 500.
    app = create_health_app()
    upgrade = {
        "connection": "Upgrade",
        "upgrade": "websocket",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13",
    }
    async with served(app, anyio_backend) as base, httpx.AsyncClient(base_url=base) as http:
        refused = await http.get("/health", headers=upgrade)
        assert refused.status_code == 403
        assert (await http.get("/ready")).status_code == 200  # still serving HTTP


async def test_the_asgi_messages_for_a_websocket_and_the_lifespan() -> None:
    app = create_health_app()
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    incoming = iter([{"type": "websocket.connect"}])

    async def receive() -> Any:
        return next(incoming)

    await app({"type": "websocket", "path": "/health"}, receive, send)
    assert [(m["type"], m.get("code")) for m in sent] == [("websocket.close", 1008)]

    sent.clear()
    lifespan = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def lifespan_receive() -> Any:
        return next(lifespan)

    await app({"type": "lifespan"}, lifespan_receive, send)
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
