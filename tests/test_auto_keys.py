"""Every step of a durable run is checkpointed: automatic keys, ``checkpoint=False``,
``ctx.steps.<dep>(...)``, steps inside groups, and the error for unkeyed steps whose
keys would depend on scheduling.  Over every store, on both backends."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from awaitly_anyio import Deps, Err, Ok, UnexpectedError, WorkflowContext, create_workflow

pytestmark = pytest.mark.anyio


class Calls:
    """Counts how often each piece of work ran, like a payments table would."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, name: str, value: Any = None) -> Any:
        self.counts[name] = self.counts.get(name, 0) + 1
        return name if value is None else value


class FailOnce:
    """A step that fails on the first run only (so the run stops and is resumed)."""

    def __init__(self) -> None:
        self.failed = False

    def __call__(self) -> Any:
        if not self.failed:
            self.failed = True
            return Err("down")
        return Ok("up")


async def test_unkeyed_steps_are_checkpointed_and_not_run_again_on_resume(store: Any) -> None:
    calls = Calls()
    flaky = FailOnce()

    async def body(ctx: WorkflowContext[Deps]) -> list[Any]:
        a = await ctx.step("fetch", lambda: calls("fetch", 1))
        b = await ctx.step("fetch", lambda: calls("fetch#2", 2))  # same name, second time
        c = await ctx.step.try_("parse", lambda: calls("parse", 3), error="bad")
        d = await ctx.step.retry("load", lambda: calls("load", 4), attempts=2)
        e = await ctx.step("pure", lambda: calls("pure", 5), checkpoint=False)
        f = await ctx.step("flaky", flaky)
        return [a, b, c, d, e, f]

    workflow = create_workflow("auto")
    assert await workflow.run(body, store=store, workflow_id="r1") == Err("down")
    assert await workflow.run(body, store=store, workflow_id="r1") == Ok([1, 2, 3, 4, 5, "up"])
    assert calls.counts == {"fetch": 1, "fetch#2": 1, "parse": 1, "load": 1, "pure": 2}
    snapshot = await store.load("r1")
    assert list(snapshot.steps) == [
        "awaitly.step:fetch#1",
        "awaitly.step:fetch#2",
        "awaitly.step:parse#1",
        "awaitly.step:load#1",
        "awaitly.step:flaky#1",
    ]


async def test_dependency_calls_are_checkpointed(store: Any) -> None:
    calls = Calls()
    flaky = FailOnce()
    deps = {"fetch_user": lambda user_id: calls(f"user:{user_id}", {"id": user_id})}

    async def body(ctx: WorkflowContext[Deps]) -> list[Any]:
        first = await ctx.steps.fetch_user(1)
        second = await ctx.steps.fetch_user(2)
        await ctx.step("flaky", flaky)
        return [first, second]

    workflow = create_workflow("deps", deps)
    assert await workflow.run(body, store=store, workflow_id="d1") == Err("down")
    assert await workflow.run(body, store=store, workflow_id="d1") == Ok([{"id": 1}, {"id": 2}])
    assert calls.counts == {"user:1": 1, "user:2": 1}
    snapshot = await store.load("d1")
    assert "awaitly.step:fetch_user#1" in snapshot.steps
    assert "awaitly.step:fetch_user#2#1" in snapshot.steps  # BoundSteps names it fetch_user#2


async def test_steps_inside_a_step_are_keyed_under_it(store: Any) -> None:
    calls = Calls()
    flaky = FailOnce()

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        async def outer() -> int:
            inner = await ctx.step("inner", lambda: calls("inner", 1))
            return int(await ctx.step("flaky", flaky)) if False else inner + 1

        value = await ctx.step("outer", outer)
        await ctx.step("flaky", flaky)
        return value

    workflow = create_workflow("nested")
    assert await workflow.run(body, store=store, workflow_id="n1") == Err("down")
    assert await workflow.run(body, store=store, workflow_id="n1") == Ok(2)
    assert calls.counts == {"inner": 1}
    snapshot = await store.load("n1")
    assert "awaitly.step:outer#1/inner#1" in snapshot.steps
    assert "awaitly.step:outer#1" in snapshot.steps


async def test_group_children_with_different_names_resume_from_their_records(store: Any) -> None:
    calls = Calls()
    gate = {"open": False}

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        async def child(name: str) -> Any:
            return await ctx.step(name, lambda: calls(name, name.upper()))

        async def last() -> Any:
            await ctx.step("a", lambda: calls("a", "A"))
            return Ok("c") if gate["open"] else Err("closed")

        return await ctx.step.all("fan_out", [lambda: child("x"), lambda: child("y"), last])

    workflow = create_workflow("groups")
    assert await workflow.run(body, store=store, workflow_id="g1") == Err("closed")
    gate["open"] = True
    assert await workflow.run(body, store=store, workflow_id="g1") == Ok(["X", "Y", "c"])
    assert calls.counts == {"x": 1, "y": 1, "a": 1}


async def test_same_named_unkeyed_steps_in_concurrent_children_are_refused(store: Any) -> None:
    calls = Calls()

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        async def child(item: int) -> Any:
            return await ctx.step("charge", lambda: calls(f"charge:{item}", item))

        return await ctx.step.all("fan_out", [lambda: child(1), lambda: child(2)])

    result = await create_workflow("groups").run(body, store=store, workflow_id="g2")
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    assert isinstance(result.error.cause, ValueError)
    message = str(result.error.cause)
    assert "step 'charge'" in message
    assert "give each its own key=" in message


async def test_same_named_unkeyed_steps_in_sequence_are_fine(store: Any) -> None:
    async def body(ctx: WorkflowContext[Deps]) -> Any:
        async def child(item: int) -> Any:
            return await ctx.step("charge", lambda: item * 10)

        return await ctx.step.for_each("each", [1, 2, 3], child)

    result = await create_workflow("seq").run(body, store=store, workflow_id="s1")
    assert result == Ok([10, 20, 30])


async def test_unkeyed_steps_run_concurrently_by_the_body_itself_are_refused(store: Any) -> None:
    async def body(ctx: WorkflowContext[Deps]) -> Any:
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(ctx.step, "charge", anyio.lowlevel.checkpoint)

    result = await create_workflow("tasks").run(body, store=store, workflow_id="t1")
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    assert "steps named 'charge' without a key run concurrently" in repr(result.error.cause)


async def test_a_user_key_with_the_reserved_prefix_is_refused() -> None:
    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step("s", lambda: 1, key="awaitly.step:s#1")

    result = await create_workflow("bad").run(body)
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    assert "is reserved" in str(result.error.cause)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"checkpoint": "no"}, TypeError, "checkpoint must be True or False"),
        ({"checkpoint": False, "key": "k"}, ValueError, "a step with a key is checkpointed"),
    ],
)
async def test_bad_checkpoint_options_are_refused(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step("s", lambda: 1, **options)

    result = await create_workflow("bad").run(body)
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    assert isinstance(result.error.cause, error)
    assert message in str(result.error.cause)


async def test_names_that_look_like_paths_make_distinct_keys(store: Any) -> None:
    async def body(ctx: WorkflowContext[Deps]) -> Any:
        await ctx.step("a/b", lambda: 1)
        await ctx.step("=a", lambda: 2)
        await ctx.step("a%2Fb", lambda: 3)

    await create_workflow("names").run(body, store=store, workflow_id="p1")
    snapshot = await store.load("p1")
    assert len(snapshot.steps) == 3


async def test_a_non_durable_run_gives_unkeyed_steps_no_key() -> None:
    keys: list[str | None] = []

    def seen(event: Any) -> None:
        if event.type == "step_complete":
            keys.append(event.step_key)

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        await ctx.step("a", lambda: 1)
        await ctx.step("b", lambda: 2, key="b")

    await create_workflow("plain", on_event=seen).run(body)
    assert keys == [None, "b"]
