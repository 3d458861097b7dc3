"""Workflows: outcomes, early exit, unexpected exceptions, cancellation, deps and keys."""

from __future__ import annotations

import traceback
import uuid
from typing import Any

import anyio
import attrs
import pytest

from awaitly_anyio import (
    Deps,
    Err,
    Ok,
    ResumeState,
    StepRecord,
    UnexpectedError,
    WorkflowContext,
    create_workflow,
    events,
    run,
)

pytestmark = pytest.mark.anyio


async def test_plain_return_value_becomes_ok() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> int:
        return await ctx.step("one", lambda: 1) + await ctx.step("two", lambda: Ok(2))

    assert await create_workflow("add").run(body) == Ok(3)


async def test_body_may_return_a_result() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> Err[str]:
        return Err("DECLINED")

    assert await run(body) == Err("DECLINED")


async def test_err_ends_the_workflow_and_later_steps_do_not_run() -> None:
    ran: list[str] = []

    async def body(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step("first", lambda: ran.append("first"))
        await ctx.step("fails", lambda: Err("CARD_DECLINED"))
        await ctx.step("never", lambda: ran.append("never"))
        return "done"

    assert await run(body) == Err("CARD_DECLINED")
    assert ran == ["first"]


async def test_async_step_functions_and_async_results() -> None:
    async def fetch() -> Ok[str]:
        await anyio.lowlevel.checkpoint()
        return Ok("user")

    async def plain() -> int:
        await anyio.lowlevel.checkpoint()
        return 7

    async def body(ctx: WorkflowContext[Deps]) -> tuple[str, int]:
        return await ctx.step("fetch", fetch), await ctx.step("plain", plain)

    assert await run(body) == Ok(("user", 7))


async def test_except_exception_in_user_code_does_not_swallow_early_exit() -> None:
    swallowed: list[BaseException] = []

    async def body(ctx: WorkflowContext[Deps]) -> str:
        try:
            await ctx.step("fails", lambda: Err("NOPE"))
        except Exception as exc:  # the user's broad handler
            swallowed.append(exc)
        return "kept going"

    assert await run(body) == Err("NOPE")
    assert swallowed == []


def _explode() -> None:
    raise RuntimeError("database on fire")


async def test_exception_in_step_becomes_unexpected_error_with_traceback() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> None:
        await ctx.step("explode", _explode)

    result = await run(body)
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    cause = result.error.cause
    assert isinstance(cause, RuntimeError)
    assert str(cause) == "database on fire"
    frames = [frame.name for frame in traceback.extract_tb(cause.__traceback__)]
    assert frames[-1] == "_explode"


async def test_exception_in_body_outside_steps_becomes_unexpected_error() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> None:
        raise LookupError("no such order")

    result = await run(body)
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    assert isinstance(result.error.cause, LookupError)


async def test_catch_unexpected_maps_exceptions_to_typed_errors() -> None:
    @attrs.frozen
    class Crashed:
        kind: str

    workflow = create_workflow("mapped", catch_unexpected=lambda exc: Crashed(type(exc).__name__))

    async def body(ctx: WorkflowContext[Deps]) -> None:
        await ctx.step("explode", _explode)

    assert await workflow.run(body) == Err(Crashed("RuntimeError"))


async def test_outer_cancellation_propagates_instead_of_returning_a_result() -> None:
    seen: list[events.WorkflowEvent] = []
    returned: list[object] = []
    cleaned_up: list[str] = []
    workflow = create_workflow("cancel-me", on_event=seen.append)

    with anyio.CancelScope() as scope:

        async def wait_forever() -> None:
            try:
                scope.cancel()
                await anyio.sleep_forever()
            finally:
                cleaned_up.append("step finally")

        async def body(ctx: WorkflowContext[Deps]) -> None:
            await ctx.step("wait", wait_forever)

        returned.append(await workflow.run(body))

    assert scope.cancelled_caught
    assert returned == []
    assert cleaned_up == ["step finally"]
    assert [e.type for e in seen] == [
        "workflow_start",
        "step_start",
        "step_cancelled",
        "workflow_cancelled",
    ]


async def test_outer_cancellation_on_the_fast_path_propagates() -> None:
    returned: list[object] = []
    with anyio.CancelScope() as scope:

        async def cancel_then_wait() -> None:
            scope.cancel()
            await anyio.sleep_forever()

        async def body(ctx: WorkflowContext[Deps]) -> None:
            await ctx.step("wait", cancel_then_wait)

        returned.append(await run(body))
    assert scope.cancelled_caught
    assert returned == []


async def test_workflow_id_defaults_to_uuid4_and_can_be_given() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> tuple[str, str]:
        return ctx.workflow_id, ctx.workflow_name

    workflow = create_workflow("ids")
    first = await workflow.run(body)
    second = await workflow.run(body)
    assert isinstance(first, Ok)
    assert isinstance(second, Ok)
    assert first.value[0] != second.value[0]
    for _ in range(64):  # the text of a real version 4 UUID, as str(uuid.uuid4()) gives
        made = await workflow.run(body)
        assert isinstance(made, Ok)
        parsed = uuid.UUID(made.value[0])
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, made.value[0])
    assert first.value[1] == "ids"
    assert await workflow.run(body, workflow_id="order-42") == Ok(("order-42", "ids"))

    # A default id is one id: the same for the body, every time it asks, and for events.
    seen: list[events.WorkflowEvent] = []
    evented = create_workflow("ids", on_event=seen.append)

    async def twice(ctx: WorkflowContext[Deps]) -> tuple[str, str]:
        return ctx.workflow_id, ctx.workflow_id

    outcome = await evented.run(twice)
    assert isinstance(outcome, Ok)
    first_read, second_read = outcome.value
    assert {first_read, second_read} == {event.workflow_id for event in seen}


async def test_mapping_deps_allow_attribute_and_item_access() -> None:
    workflow = create_workflow("deps", {"fetch_user": lambda uid: {"id": uid}})

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        by_attr = await ctx.step("a", lambda: ctx.deps.fetch_user(1))
        by_item = await ctx.step("b", lambda: ctx.deps["fetch_user"](2))
        return by_attr, by_item

    assert await workflow.run(body) == Ok(({"id": 1}, {"id": 2}))


async def test_unknown_dependency_is_a_clear_error() -> None:
    workflow = create_workflow("deps", {"fetch_user": lambda uid: uid})

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return ctx.deps.fetch_usr

    result = await workflow.run(body)
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    assert "no dependency named 'fetch_usr' (known: fetch_user)" in str(result.error.cause)


async def test_object_deps_are_passed_through_unchanged() -> None:
    @attrs.frozen
    class Services:
        rate: int = 3

        def price(self, n: int) -> int:
            return n * self.rate

    services = Services()
    workflow = create_workflow("typed", services)

    async def body(ctx: WorkflowContext[Services]) -> int:
        assert ctx.deps is services
        return await ctx.step("price", lambda: ctx.deps.price(2))

    assert await workflow.run(body) == Ok(6)


async def test_bound_steps_run_dependencies_as_steps_with_numbered_repeats() -> None:
    seen: list[events.WorkflowEvent] = []
    workflow = create_workflow(
        "bound",
        {"fetch_user": lambda uid: Ok(f"user-{uid}"), "fail": lambda: Err("NO")},
        on_event=seen.append,
    )

    async def body(ctx: WorkflowContext[Deps]) -> list[str]:
        return [await ctx.steps.fetch_user(1), await ctx.steps.fetch_user(uid=2)]

    assert await workflow.run(body) == Ok(["user-1", "user-2"])
    names = [e.name for e in seen if isinstance(e, events.StepComplete)]
    assert names == ["fetch_user", "fetch_user#2"]

    async def failing(ctx: WorkflowContext[Deps]) -> None:
        await ctx.steps.fail()

    assert await workflow.run(failing) == Err("NO")


async def test_keyed_step_runs_once_per_run() -> None:
    calls: list[int] = []

    def charge() -> str:
        calls.append(1)
        return f"charge-{len(calls)}"

    async def body(ctx: WorkflowContext[Deps]) -> tuple[str, str]:
        first = await ctx.step("charge", charge, key="charge:1")
        again = await ctx.step("charge", charge, key="charge:1")
        return first, again

    workflow = create_workflow("keys")
    assert await workflow.run(body) == Ok(("charge-1", "charge-1"))
    assert await workflow.run(body) == Ok(("charge-2", "charge-2"))  # a new run: afresh
    assert calls == [1, 1]


async def test_resume_state_skips_completed_keyed_steps_and_reruns_failed_ones() -> None:
    calls: list[str] = []
    seen: list[events.WorkflowEvent] = []

    def effect(name: str) -> str:
        calls.append(name)
        return f"{name}-fresh"

    async def body(ctx: WorkflowContext[Deps]) -> list[str]:
        return [
            await ctx.step("charge", lambda: effect("charge"), key="charge"),
            await ctx.step("email", lambda: effect("email"), key="email"),
            await ctx.step("log", lambda: effect("log")),
        ]

    state = ResumeState({"charge": Ok("charge-recorded"), "email": StepRecord(Err("SMTP_DOWN"))})
    result = await run(body, resume_state=state, on_event=seen.append)
    assert result == Ok(["charge-recorded", "email-fresh", "log-fresh"])
    assert calls == ["email", "log"]
    completes = [e for e in seen if isinstance(e, events.StepComplete)]
    assert [(e.name, e.cached) for e in completes] == [
        ("charge", True),
        ("email", False),
        ("log", False),
    ]


async def test_a_body_task_group_carries_early_exit_out() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> str:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ctx.step, "fails", lambda: Err("IN_CHILD"))
            tg.start_soon(anyio.sleep_forever)
        return "unreachable"

    assert await run(body) == Err("IN_CHILD")


async def test_nested_workflow_failure_is_an_ordinary_step_result() -> None:
    inner = create_workflow("inner")

    async def inner_body(ctx: WorkflowContext[Deps]) -> None:
        await ctx.step("inner-fails", lambda: Err("INNER"))

    async def outer_body(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step("call-inner", lambda: inner.run(inner_body))
        return "unreachable"

    assert await run(outer_body) == Err("INNER")


async def test_runs_of_one_workflow_are_independent_and_concurrent() -> None:
    workflow = create_workflow("concurrent")
    results: dict[int, object] = {}

    async def one(n: int) -> None:
        async def body(ctx: WorkflowContext[Deps]) -> int:
            value = await ctx.step("same-key", lambda: n, key="k")
            await anyio.lowlevel.checkpoint()
            return value

        results[n] = await workflow.run(body)

    async with anyio.create_task_group() as tg:
        for n in range(50):
            tg.start_soon(one, n)
    assert results == {n: Ok(n) for n in range(50)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "non-empty string name"),
        ({"name": "w", "on_event": 42}, "on_event must be a callable"),
        ({"name": "w", "on_event": [print, "nope"]}, "handlers must be callables"),
        ({"name": "w", "catch_unexpected": "nope"}, "catch_unexpected"),
        ({"name": "w", "clock": object()}, "clock must provide"),
    ],
)
def test_bad_workflow_configuration_is_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        create_workflow(**kwargs)


async def test_bad_run_arguments_are_rejected() -> None:
    workflow = create_workflow("w")

    async def body(ctx: WorkflowContext[Deps]) -> None:
        return None

    with pytest.raises(ValueError, match="workflow_id must be a non-empty string"):
        await workflow.run(body, workflow_id="")
    with pytest.raises(TypeError, match="body must be an async callable"):
        await workflow.run("body")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="resume_state must have a 'steps' mapping"):
        await workflow.run(body, resume_state={"k": Ok(1)})  # type: ignore[arg-type]
