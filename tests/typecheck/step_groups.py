"""The group steps and fallbacks keep the value type: ``with_timeout(on_timeout=None)``
gives ``T | None``, ``with_fallback`` and ``any`` give ``T``, ``all_settled`` a list or
dict of Results."""

from __future__ import annotations

from typing import Any, assert_type

import attrs

from awaitly_anyio import Deps, Ok, Result, StepTimeoutError, WorkflowContext


@attrs.frozen
class Declined:
    code: str


async def fetch() -> Result[int, str]:
    return Ok(1)


async def plain() -> int:
    return 1


def cached() -> int:
    return 0


def size(text: str) -> Result[int, str]:
    return Ok(len(text))


async def fetch_one(n: int) -> Result[int, str]:
    return Ok(n)


async def double(n: int) -> int:
    return 2 * n


def is_slow(failure: object) -> bool:
    return isinstance(failure, StepTimeoutError)


async def body(ctx: WorkflowContext[Deps]) -> None:
    assert_type(await ctx.step.with_timeout("a", fetch, seconds=1), int)
    assert_type(await ctx.step.with_timeout("a", fetch, seconds=1, on_timeout=None), int | None)
    assert_type(await ctx.step.with_timeout("a", plain, seconds=1, on_timeout=None), int | None)
    assert_type(await ctx.step.with_timeout("a", cached, seconds=1, on_timeout=None), int | None)
    assert_type(await ctx.step.with_timeout("a", plain, seconds=1, on_timeout="SLOW"), int)
    assert_type(await ctx.step.with_fallback("a", fetch, cached, on=ConnectionError), int)
    assert_type(await ctx.step.with_fallback("a", plain, fetch, on=(KeyError, Declined)), int)
    assert_type(await ctx.step.with_fallback("a", plain, lambda: 3, on=is_slow), int)
    assert_type(await ctx.step.with_fallback("a", plain, lambda: 3, on=lambda e: True), int)
    assert_type(await ctx.step.any("a", [fetch, fetch]), int)
    assert_type(await ctx.step.any("a", [plain, plain]), int)
    assert_type(await ctx.step.any("a", [cached, cached]), int)
    assert_type(await ctx.step.all_settled("a", [fetch, fetch]), list[Result[int, Any]])
    assert_type(await ctx.step.all_settled("a", [plain, fetch]), list[Result[Any, Any]])
    assert_type(await ctx.step.all_settled("a", {"x": fetch}), dict[str, Result[int, Any]])
    assert_type(
        await ctx.step.all_settled("a", {"x": lambda: fetch()}), dict[str, Result[int, Any]]
    )
    assert_type(await ctx.step.for_each("a", [1, 2], lambda n: n, batch_size=1), list[int])
    assert_type(await ctx.step.for_each("a", ["x"], size), list[int])
    assert_type(await ctx.step.for_each("a", [1], fetch_one, batch_size=1), list[int])
    assert_type(await ctx.step.for_each("a", [1], double), list[int])
    assert_type(await ctx.step.for_each("a", ["x"], str.upper, on_progress=print), list[str])
