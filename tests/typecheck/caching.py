"""The cached step and singleflight keep the value type: ``ctx.step.cached`` gives the
``T`` of ``fn``'s value or ``Result[T, E]``, ``Singleflight.do`` the ``T`` of ``fn``."""

from __future__ import annotations

from datetime import timedelta
from typing import assert_type

from awaitly_anyio import (
    CacheLookup,
    Deps,
    MemoryCache,
    Ok,
    Result,
    Singleflight,
    StepCache,
    StoreCache,
    WorkflowContext,
)
from awaitly_anyio.stores.sqlite import SQLiteStore


async def rates() -> Result[dict[str, float], str]:
    return Ok({"EUR": 1.08})


async def token() -> str:
    return "t"


def answer() -> int:
    return 42


async def body(ctx: WorkflowContext[Deps], store: SQLiteStore) -> None:
    memory: StepCache = MemoryCache()
    shared: StepCache = StoreCache(store)
    assert_type(
        await ctx.step.cached("rates", rates, key="rates", ttl=60, cache=memory),
        dict[str, float],
    )
    assert_type(
        await ctx.step.cached("t", token, key="t", ttl=timedelta(minutes=1), cache=shared), str
    )
    assert_type(await ctx.step.cached("a", answer, key="a", ttl=1.5, cache=memory), int)
    assert_type(await memory.lookup("rates"), CacheLookup)
    flight = Singleflight()
    assert_type(await flight.do("t", token), str)
    assert_type(await flight.do(("a", 1), answer), int)
