"""The recipes of docs/frameworks.md, run in real servers and stopped with SIGTERM mid-run;
WorkflowLifespan in process; the health app mounted under a prefix in each framework."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from awaitly_anyio import (
    Deps,
    HostClosedError,
    WorkflowContext,
    WorkflowHost,
    WorkflowLifespan,
    WorkflowRegistry,
    create_workflow,
    open_store,
)
from awaitly_anyio.health import create_health_app
from awaitly_anyio.stores import MemoryStore

from .test_docs import ROOT, _examples

RECIPES = {
    example_tag: example
    for example in _examples(ROOT / "docs" / "frameworks.md")
    for example_tag in example.tags
    if example_tag.startswith("recipe-")
}

# How each recipe is served: (module name, command after `python -m`).
SERVERS = {
    "recipe-fastapi": ("orders_fastapi", ["uvicorn", "orders_fastapi:app", "--port", "{port}"]),
    "recipe-starlette": (
        "orders_starlette",
        ["hypercorn", "orders_starlette:app", "--bind", "127.0.0.1:{port}"],
    ),
    "recipe-litestar": ("orders_litestar", ["uvicorn", "orders_litestar:app", "--port", "{port}"]),
    "recipe-trio": (
        "orders_trio",
        ["hypercorn", "--worker-class", "trio", "orders_trio:app", "--bind", "127.0.0.1:{port}"],
    ),
}


def test_every_recipe_is_served() -> None:
    assert set(RECIPES) == set(SERVERS)


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _until(condition: Any, what: str, timeout: float = 30.0) -> Any:
    """Poll ``condition`` (a process coming up, a run moving on) until it is true."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = condition()
        except httpx.TransportError:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def _serve(recipe: str, tmp_path: Path, store: str, grace: float) -> Iterator[Any]:
    module, command = SERVERS[recipe]
    (tmp_path / f"{module}.py").write_text(RECIPES[recipe].code)
    port = free_port()
    env = {**os.environ, "ORDERS_STORE": store, "ORDERS_GRACE": str(grace)}
    args = [sys.executable, "-m", *(part.format(port=port) for part in command)]
    if command[0] == "uvicorn":
        args += ["--host", "127.0.0.1"]
    server = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

            def up() -> bool:
                assert server.poll() is None, server.communicate()
                return client.get("/ops/ready").status_code == 200

            _until(up, f"{recipe} to start")
            yield server, client
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


def _exited_cleanly(server: subprocess.Popen[str], err: str) -> None:
    # uvicorn re-raises the signal once it has shut down gracefully (exit status -15).
    assert server.returncode in (0, -signal.SIGTERM), err
    if "uvicorn" in list(server.args):  # type: ignore[arg-type]
        assert "Application shutdown complete" in err, err


@pytest.mark.parametrize("recipe", sorted(SERVERS))
def test_recipe_serves_orders_and_stops_gracefully_on_sigterm(recipe: str, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'orders.db'}"
    with _serve(recipe, tmp_path, store, grace=3) as (server, client):
        # A durable run started from one request...
        assert client.post("/orders/quick").status_code == 202
        # ...and its state shown by another.
        state = _until(
            lambda: (r := client.get("/orders/quick").json())["status"] == "completed" and r,
            "the quick order to complete",
        )
        assert state["steps"] == ["reserve", "pack", "ship"]
        assert client.get("/orders/nope").status_code == 404

        # Health under the /ops prefix.
        health = client.get("/ops/health")
        assert health.status_code == 200
        assert health.json()["status"] == "healthy"
        assert client.get("/ops/nope").status_code == 404

        # A run that cannot finish in the grace period, caught mid-run by SIGTERM.
        assert client.post("/orders/slow", params={"work_seconds": 3600}).status_code == 202
        _until(
            lambda: client.get("/orders/slow").json()["steps"] == ["reserve"],
            "the slow order to be packing",
        )
        ready = client.get("/ops/ready").json()
        assert ready["active"] == 1
        assert ready["ready"] is True
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=60)
        _exited_cleanly(server, err)
        assert "Traceback" not in err, err

    statuses, claimable = anyio.run(_after, store)
    assert statuses == {"quick": "completed", "slow": "cancelled"}
    # Recorded for resumption: its lease was released, the next worker takes it at once.
    assert claimable == ["slow"]


async def _after(url: str) -> tuple[dict[str, str | None], list[str]]:
    async with open_store(url) as store:
        statuses: dict[str, str | None] = {}
        for id in ("quick", "slow"):
            snapshot = await store.load(id)
            statuses[id] = None if snapshot is None else snapshot.status
        from awaitly_anyio import LeaseStore

        assert isinstance(store, LeaseStore)
        claimed = await store.claim_expired(owner="test", lease=1, workflow_names=["orders"])
        return statuses, [info.id for info in claimed]


@pytest.mark.parametrize("recipe", ["recipe-fastapi", "recipe-trio"])
def test_a_run_that_finishes_within_the_grace_period_completes(recipe: str, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'orders.db'}"
    with _serve(recipe, tmp_path, store, grace=3600) as (server, client):
        assert client.post("/orders/busy", params={"work_seconds": 0.5}).status_code == 202
        _until(
            lambda: client.get("/orders/busy").json()["steps"] == ["reserve"],
            "the order to be packing",
        )
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=60)
        _exited_cleanly(server, err)
    assert anyio.run(_status, store, "busy") == "completed"


async def _status(url: str, id: str) -> str | None:
    async with open_store(url) as store:
        snapshot = await store.load(id)
        return None if snapshot is None else snapshot.status


# ---- WorkflowLifespan in process ---------------------------------------------------------


@pytest.mark.anyio
async def test_the_lifespan_recovers_runs_through_its_host(tmp_path: Path) -> None:
    registry = WorkflowRegistry()
    reports = create_workflow("reports")
    release = anyio.Event()
    waiting: list[anyio.Event] = []
    done: list[str] = []

    @registry.workflow(reports)
    async def build(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step("gather", lambda: done.append(ctx.workflow_id), key="gather")
        waiting[-1].set()
        await release.wait()
        return "ready"

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    waiting.append(anyio.Event())
    async with open_store(url) as store, WorkflowHost(store=store, grace=0) as host:
        host.start(reports, build, workflow_id="r-1")
        await waiting[-1].wait()
    lifespan = WorkflowLifespan(url, registry=registry, max_active=5, grace=3600)
    assert lifespan.readiness()["ready"] is False
    with pytest.raises(RuntimeError, match="not running"):
        lifespan.host  # noqa: B018
    waiting.append(anyio.Event())
    with anyio.fail_after(60):  # a failure below must not wait out the grace period
        async with lifespan(None) as state:
            host = state["workflow_host"]
            assert host is lifespan.host
            lifespan_store = lifespan.store
            await waiting[-1].wait()
            # The abandoned run is a host run: it is counted and would get the grace.
            assert lifespan.readiness()["active"] == 1
            release.set()
    assert done == ["r-1"]
    assert await _status(url, "r-1") == "completed"
    # The store the lifespan opened is closed with it.
    with pytest.raises(RuntimeError, match="closed"):
        await lifespan_store.load("r-1")


@pytest.mark.anyio
async def test_the_lifespan_as_quart_while_serving_and_shutdown_order() -> None:
    order: list[str] = []
    store = MemoryStore()

    async def flush() -> None:
        order.append("flush")

    workflow = create_workflow("jobs")

    async def body(ctx: WorkflowContext[Deps]) -> str:
        try:
            await anyio.sleep_forever()
        finally:
            order.append("run cancelled")
        return "never"

    async with store:
        lifespan = WorkflowLifespan(store, grace=0, on_shutdown=[flush])
        serving = lifespan.while_serving()
        await serving.__anext__()
        handle = lifespan.host.start(workflow, body, workflow_id="j")
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(StopAsyncIteration):
            await serving.__anext__()
        with pytest.raises(HostClosedError):
            await handle.result()
        assert order == ["run cancelled", "flush"]
        # The caller's store is still open.
        snapshot = await store.load("j")
        assert snapshot is not None
        assert snapshot.status == "cancelled"


def test_bad_lifespan_options_are_refused_clearly_without_secrets() -> None:
    with pytest.raises(TypeError, match=r"store must be .* not int"):
        WorkflowLifespan(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="registry must be a WorkflowRegistry, not dict"):
        WorkflowLifespan("memory://", registry={})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="grace"):
        WorkflowLifespan("memory://", grace=-1)
    with pytest.raises(ValueError, match="recovery_interval"):
        WorkflowLifespan("memory://", recovery_interval=0)
    with pytest.raises(ValueError, match="max_active"):
        WorkflowLifespan("memory://", max_active=0)
    with pytest.raises(ValueError, match="needs a store"):
        WorkflowLifespan(registry=WorkflowRegistry())
    with pytest.raises(ValueError, match="invalid store URL") as caught:
        WorkflowLifespan("postgresql://app:hunter2@db:99999/orders")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValueError, match=r"scheme|store URL") as caught:
        WorkflowLifespan("mysql://app:hunter2@db/orders")
    assert "hunter2" not in str(caught.value)


@pytest.mark.anyio
async def test_a_lifespan_whose_store_cannot_be_opened_fails_without_the_password() -> None:
    lifespan = WorkflowLifespan("postgresql://app:hunter2@127.0.0.1:1/orders")
    with pytest.raises(
        ConnectionError, match=r"could not open the store postgresql://app:\*\*\*@"
    ) as caught:
        async with lifespan(None):
            pass
    text = "".join(str(e) + repr(e) for e in _chain(caught.value))
    assert "hunter2" not in text
    with pytest.raises(RuntimeError, match="not running"):
        lifespan.host  # noqa: B018


def _chain(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


# ---- the health app under a prefix, in each framework ------------------------------------


def _mounted(framework: str, backend: str) -> Any:
    health = create_health_app()
    if framework == "starlette":
        from starlette.applications import Starlette
        from starlette.routing import Mount

        return Starlette(routes=[Mount("/ops", app=health)])
    if framework == "fastapi":
        from fastapi import FastAPI

        app = FastAPI()
        app.mount("/ops", health)
        return app
    if framework == "litestar":
        from litestar import Litestar, asgi

        return Litestar(route_handlers=[asgi("/ops", is_mount=True, copy_scope=True)(health)])
    from hypercorn.middleware.dispatcher import (
        AsyncioDispatcherMiddleware,
        TrioDispatcherMiddleware,
    )
    from quart import Quart
    from quart_trio import QuartTrio

    if backend == "trio":
        return TrioDispatcherMiddleware({"/ops": health, "": QuartTrio("orders")})
    return AsyncioDispatcherMiddleware({"/ops": health, "": Quart("orders")})


@pytest.mark.anyio
@pytest.mark.parametrize("framework", ["starlette", "fastapi", "litestar", "quart"])
async def test_the_health_app_answers_under_a_mount_prefix(
    framework: str, anyio_backend: str
) -> None:
    app = _mounted(framework, anyio_backend)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        health = await client.get("/ops/health")
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "healthy"
        assert (await client.get("/ops/ready")).json() == {"ready": True}
        assert (await client.get("/ops/health/circuits")).status_code == 200
        missing = await client.get("/ops/nope")
        assert missing.status_code == 404


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "root_path", "status"),
    [
        ("/ops/health", "/ops", 200),  # the prefix kept in the path (Starlette, uvicorn)
        ("/health", "/ops", 200),  # the prefix stripped (Hypercorn's old dispatcher)
        ("/health/", "", 200),  # stripped, with a trailing slash (Litestar)
        ("/health/health", "/health", 200),  # mounted at /health, prefix kept
        ("/health", "/health", 200),  # mounted at /health, prefix stripped
        ("/health/ready", "/health", 200),
        ("/ops", "/ops", 404),
        ("/opsx/health", "/ops", 404),
    ],
)
async def test_root_path_is_honoured_whether_the_prefix_is_stripped_or_not(
    path: str, root_path: str, status: int
) -> None:
    app = create_health_app()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "root_path": root_path}
    await app(scope, receive, send)
    assert sent[0]["status"] == status
