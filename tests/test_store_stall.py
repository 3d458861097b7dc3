"""A store that stalls past a durable run's ``store_write_timeout``.

The shielded writes of a cancelled run wait at most that long, and a run whose
last write was abandoned does not stay locked behind its own unrenewed lease: a
later start in the same process takes it over at once.  Real PostgreSQL and
Redis, reached through a proxy that can stall (only this test's connections).
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from awaitly_anyio import Deps, Err, Ok, StoreError, WorkflowContext, create_workflow

from . import postgres_kit, redis_kit
from .kit_base import server_or_skip
from .stall_proxy import StallProxy, stall_proxy

pytestmark = pytest.mark.anyio


def _through(url: str, port: int) -> str:
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urllib.parse.urlunsplit(
        parts._replace(netloc=host if len(netloc) == 1 else f"{netloc[0]}@{host}")
    )


@pytest.fixture(params=["postgres", "redis"])
async def stalling(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Any, StallProxy]]:
    kind: str = request.param
    url = postgres_kit.DSN if kind == "postgres" else redis_kit.URL
    parts = urllib.parse.urlsplit(url)
    async with stall_proxy(parts.hostname or "127.0.0.1", parts.port or 0) as proxy:
        if kind == "postgres":
            from awaitly_anyio.stores.postgres import PostgresStore

            schema = postgres_kit.schema_for(tmp_path)
            try:
                await postgres_kit.admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            except OSError as exc:
                server_or_skip("PostgreSQL", url, exc)
            try:
                async with PostgresStore(_through(url, proxy.port), schema=schema) as store:
                    yield store, proxy
            finally:
                await postgres_kit.admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        else:
            from awaitly_anyio.stores.redis import RedisStore

            prefix = redis_kit.prefix_for(tmp_path)
            try:
                redis_kit.wipe(prefix)
            except Exception as exc:
                server_or_skip("Redis", url, exc)
            try:
                async with RedisStore(_through(url, proxy.port), prefix=prefix) as store:
                    yield store, proxy
            finally:
                redis_kit.wipe(prefix)


async def test_a_cancelled_run_waits_for_a_stalled_store_only_as_long_as_its_bound(
    stalling: tuple[Any, StallProxy], caplog: pytest.LogCaptureFixture
) -> None:
    store, proxy = stalling
    workflow = create_workflow("order", store_write_timeout=0.2)
    ran: list[str] = []

    with anyio.CancelScope() as scope:

        async def body(ctx: WorkflowContext[Deps]) -> str:
            await ctx.step("reserve", lambda: ran.append("reserve") or "reserved", key="reserve")
            proxy.stall()
            scope.cancel()  # a shutdown, while the store does not answer
            await ctx.step("charge", lambda: ran.append("charge") or "charged", key="charge")
            return "done"

        await workflow.run(body, store=store, workflow_id="order-1")
    assert scope.cancelled_caught
    assert ran == ["reserve"]
    # Expected and handled: a warning, not an ERROR with a traceback.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("order-1" in r.getMessage() for r in caplog.records)

    proxy.resume()

    async def again(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step("reserve", lambda: ran.append("reserve") or "reserved", key="reserve")
        await ctx.step("charge", lambda: ran.append("charge") or "charged", key="charge")
        return "done"

    # The abandoned run's lease is nobody's now: a restart here is not refused.
    assert await workflow.run(again, store=store, workflow_id="order-1") == Ok("done")
    assert ran == ["reserve", "charge"]  # the checkpointed step was not repeated


async def test_a_checkpoint_past_the_bound_ends_the_run_with_a_store_error(
    stalling: tuple[Any, StallProxy],
) -> None:
    store, proxy = stalling
    workflow = create_workflow("order", store_write_timeout=0.2)

    async def body(ctx: WorkflowContext[Deps]) -> str:
        proxy.stall()
        await ctx.step("charge", lambda: "charged", key="charge")
        return "done"

    result = await workflow.run(body, store=store, workflow_id="order-2")
    assert isinstance(result, Err)
    assert isinstance(result.error, StoreError)
    assert "store_write_timeout" in str(result.error)
    proxy.resume()
    done = await workflow.run(
        lambda ctx: ctx.step("charge", lambda: "charged", key="charge"),
        store=store,
        workflow_id="order-2",
    )
    assert done == Ok("charged")


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "5", True])
def test_a_bad_store_write_timeout_is_refused_where_it_is_written(bad: Any) -> None:
    with pytest.raises(ValueError, match="store_write_timeout"):
        create_workflow("order", store_write_timeout=bad)
