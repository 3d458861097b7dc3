"""Static checks of the public types: run ``mypy --strict tests/typecheck``.

Nothing here is executed by pytest (the file name has no ``test_`` prefix).  Every
``assert_type`` pins what mypy infers; a change to the library's annotations that
loosens or breaks one of them fails the type check.
"""

# pyright: reportUnnecessaryTypeIgnoreComment=error

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal, assert_type

import attrs

from awaitly_anyio import (
    Deps,
    Err,
    Ok,
    Result,
    StepTimeoutError,
    UnexpectedError,
    Workflow,
    WorkflowContext,
    create_workflow,
    err,
    events,
    ok,
    run,
)
from awaitly_anyio.testing import FakeClock

# ---- Result: construction and narrowing ---------------------------------------------------


def parse(text: str) -> Result[int, str]:
    return ok(int(text)) if text.isdigit() else err(f"not a number: {text!r}")


def constructors() -> None:
    assert_type(Ok(1), Ok[int])
    assert_type(Err("boom"), Err[str])
    assert_type(ok(1.5), Ok[float])
    assert_type(err(ValueError("x")), Err[ValueError])
    assert_type(Ok(1).ok, Literal[True])
    assert_type(Err("x").ok, Literal[False])


def narrow_with_match(result: Result[int, str]) -> int:
    match result:
        case Ok(value):
            assert_type(value, int)
            return value
        case Err(error):
            assert_type(error, str)
            return len(error)


def narrow_with_isinstance(result: Result[int, str]) -> int:
    if isinstance(result, Ok):
        assert_type(result, Ok[int])
        assert_type(result.value, int)
        return result.value
    assert_type(result, Err[str])
    assert_type(result.error, str)
    return -1


def narrow_with_ok_is(result: Result[int, str]) -> int:
    # ``if result.ok:`` narrows under mypy only (see mypy_only_narrowing.py); pyright
    # narrows a union on a literal field with ``is`` / ``==``, never on truthiness.
    if result.ok is True:
        assert_type(result, Ok[int])
        return result.value
    assert_type(result, Err[str])
    return len(result.error)


def narrow_with_ok_is_not(result: Result[int, str]) -> str:
    if result.ok is not True:
        assert_type(result, Err[str])
        return result.error
    assert_type(result, Ok[int])
    return str(result.value)


def must_narrow_first(result: Result[int, str]) -> None:
    # Without narrowing, each side's field is an error (strict mode reports an unused ignore,
    # so these lines fail the check if the union ever stops protecting them).
    _ = result.value  # type: ignore[union-attr]
    _ = result.error  # type: ignore[union-attr]


def combinators(result: Result[int, str]) -> None:
    assert_type(result.map(str), Ok[str] | Err[str])
    assert_type(result.map_err(len), Ok[int] | Err[int])
    assert_type(result.unwrap(), int)
    assert_type(result.unwrap_or(None), int | None)
    assert_type(result.unwrap_or(0), int)

    def positive(n: int) -> Result[int, str]:
        return Ok(n) if n > 0 else Err("not positive")

    assert_type(result.and_then(positive), Ok[int] | Err[str])
    assert_type(Ok(2).and_then(positive), Ok[int] | Err[str])
    assert_type(Err("x").and_then(positive), Err[str])
    assert_type(Ok(2).unwrap(), int)
    assert_type(Err("x").unwrap_err(), str)


# ---- steps -------------------------------------------------------------------------------


@attrs.frozen
class User:
    id: str
    name: str


async def fetch_user(user_id: str) -> Result[User, str]:
    return Ok(User(user_id, "Ada"))


def lookup_price(sku: str) -> Result[Decimal, str]:
    return Ok(Decimal("9.99"))


async def count_orders(user: User) -> int:
    return 3


def label(user: User) -> str:
    return user.name.upper()


async def body(ctx: WorkflowContext[Deps]) -> str:
    # The success type comes through for every kind of step function.
    user = await ctx.step("fetch_user", lambda: fetch_user("1"))  # Awaitable[Result[T, E]]
    assert_type(user, User)
    price = await ctx.step("price", lambda: lookup_price("book"))  # Result[T, E]
    assert_type(price, Decimal)
    orders = await ctx.step("orders", lambda: count_orders(user))  # Awaitable[T]
    assert_type(orders, int)
    text = await ctx.step("label", lambda: label(user), key="label:1", timeout=1.0)  # T
    assert_type(text, str)

    # retry, with_timeout and try_ infer the value's type like ctx.step.
    retried = await ctx.step.retry("retry", lambda: 1, attempts=2)
    assert_type(retried, int)
    timed = await ctx.step.with_timeout("timed", lambda: fetch_user("1"), seconds=1.0)
    assert_type(timed, User)
    tried = await ctx.step.try_("tried", lambda: lookup_price("book"), error="NO_PRICE")
    assert_type(tried, Decimal)
    both = await ctx.step.all("all", {"a": lambda: 1})
    assert_type(both, dict[str, Any])
    listed = await ctx.step.all("all_list", [lambda: 1])
    assert_type(listed, list[Any])
    each = await ctx.step.for_each("each", [1, 2], lambda n: n * 2)
    assert_type(each, list[int])  # typed by its fn
    assert_type(await ctx.step.sleep("nap", 1), None)
    assert_type(ctx.step.skip("skipped"), None)

    assert_type(ctx.deps, Deps)
    assert_type(ctx.workflow_id, str)
    assert_type(ctx.workflow_name, str)
    return f"{text}: {orders} orders, {price}"


async def body_returning_result(ctx: WorkflowContext[Deps]) -> Result[int, StepTimeoutError]:
    return Ok(1)


# ---- workflows ---------------------------------------------------------------------------


@attrs.frozen
class ShopDeps:
    users: dict[str, User]


async def typed_body(ctx: WorkflowContext[ShopDeps]) -> User:
    assert_type(ctx.deps, ShopDeps)
    assert_type(ctx.deps.users, dict[str, User])
    return ctx.deps.users["1"]


def on_event(event: events.WorkflowEvent) -> None:
    match event:
        case events.StepComplete():
            assert_type(event.cached, bool)
            assert_type(event.duration_ms, float)
        case events.StepRetry():
            assert_type(event.attempt, int)
            assert_type(event.delay, float)
        case _:
            pass


def on_event_by_type(event: events.WorkflowEvent) -> float:
    # ``type`` is a Literal on every event class, so comparing it narrows the union.
    if event.type == "step_retry":
        assert_type(event, events.StepRetry)
        return event.delay
    if event.type == "workflow_complete":
        assert_type(event, events.WorkflowComplete)
        return event.duration_ms
    return 0.0


async def workflows() -> None:
    workflow = create_workflow("summary", on_event=on_event, clock=FakeClock())
    assert_type(workflow, Workflow[Deps])
    assert_type(create_workflow("summary", {"a": 1}), Workflow[Deps])

    # run() returns Result[T, Any]: T from the body, Any for the error.
    result = await workflow.run(body)
    assert_type(result, Ok[str] | Err[Any])
    match result:
        case Ok(value):
            assert_type(value, str)
        case Err(UnexpectedError(cause=cause)):
            assert_type(cause, BaseException)
        case Err(error):
            assert_type(error, Any)

    # A body returning a Result: its success type is the run's.
    assert_type(await workflow.run(body_returning_result), Ok[int] | Err[Any])

    # Typed deps: the context and the body agree on them.
    shop = create_workflow("shop", ShopDeps({"1": User("1", "Ada")}))
    assert_type(shop, Workflow[ShopDeps])
    assert_type(await shop.run(typed_body), Ok[User] | Err[Any])

    # The one-off run() is untyped: prefer create_workflow(...).run for inference.
    assert_type(await run(body), Ok[Any] | Err[Any])
