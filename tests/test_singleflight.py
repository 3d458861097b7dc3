"""`Singleflight` (issue 22): identical concurrent calls share one execution, its value
(an ``Err`` too) or its exception; cancellation of a waiter or of the caller running
the work; inside workflows."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

from awaitly_anyio import Err, Ok, Singleflight, create_workflow

pytestmark = pytest.mark.anyio


class Gate:
    """A step function that counts its calls and waits for ``open`` before answering."""

    def __init__(self, answer: Any = "value") -> None:
        self.answer = answer
        self.calls = 0
        self.cancelled = 0
        self.open = anyio.Event()

    async def __call__(self) -> Any:
        self.calls += 1
        try:
            await self.open.wait()
        except BaseException:
            self.cancelled += 1
            raise
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def crowd(
    flight: Singleflight, fn: Any, n: int, key: str = "k"
) -> tuple[list[Any], list[BaseException]]:
    """``n`` concurrent ``flight.do(key, fn)`` calls, all of them waiting before ``fn``
    answers; their values and exceptions."""
    values: list[Any] = []
    errors: list[BaseException] = []

    async def call() -> None:
        try:
            values.append(await flight.do(key, fn))
        except Exception as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        assert flight.waiting(key) == n - 1
        fn.open.set()
    return values, errors


async def test_a_hundred_concurrent_callers_share_one_execution() -> None:
    flight = Singleflight()
    fetch = Gate({"EUR": 1.08})
    values, errors = await crowd(flight, fetch, 100)
    assert fetch.calls == 1
    assert errors == []
    assert len(values) == 100
    assert all(value is values[0] for value in values)  # the same object for all
    assert len(flight) == 0
    assert flight.waiting("k") == 0


async def test_an_exception_is_shared_by_every_caller() -> None:
    flight = Singleflight()
    boom = RuntimeError("rate service down")
    fetch = Gate(boom)
    values, errors = await crowd(flight, fetch, 100)
    assert fetch.calls == 1
    assert values == []
    assert len(errors) == 100
    assert all(error is boom for error in errors)


async def test_an_err_is_shared_as_a_value() -> None:
    flight = Singleflight()
    fetch = Gate(Err("down"))
    values, errors = await crowd(flight, fetch, 10)
    assert fetch.calls == 1
    assert errors == []
    assert values == [Err("down")] * 10


async def test_only_overlapping_calls_share() -> None:
    flight = Singleflight()
    calls: list[int] = []

    async def fetch() -> int:
        calls.append(1)
        await anyio.lowlevel.checkpoint()
        return len(calls)

    assert await flight.do("k", fetch) == 1
    assert await flight.do("k", fetch) == 2  # the first execution had ended


async def test_different_keys_run_apart() -> None:
    flight = Singleflight()
    one, two = Gate("one"), Gate("two")
    got: dict[str, Any] = {}

    async def call(key: str, fn: Gate) -> None:
        got[key] = await flight.do(key, fn)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, "a", one)
        tg.start_soon(call, "b", two)
        await anyio.wait_all_tasks_blocked()
        assert len(flight) == 2
        one.open.set()
        two.open.set()
    assert got == {"a": "one", "b": "two"}
    assert (one.calls, two.calls) == (1, 1)


async def test_a_sync_fn_works() -> None:
    flight = Singleflight()
    assert await flight.do(("rates", "EUR"), lambda: 5) == 5


async def test_bad_arguments() -> None:
    flight = Singleflight()
    with pytest.raises(TypeError, match="fn must be"):
        await flight.do("k", 5)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="unhashable"):
        await flight.do(["not", "hashable"], lambda: 1)
    assert len(flight) == 0


# ---- cancellation ----------------------------------------------------------------------


async def test_a_cancelled_waiter_does_not_cancel_the_execution() -> None:
    flight = Singleflight()
    fetch = Gate("value")
    got: list[Any] = []

    async def call() -> None:
        got.append(await flight.do("k", fetch))

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)  # runs fetch
        await anyio.wait_all_tasks_blocked()
        with anyio.CancelScope() as waiter:
            waiter.cancel()
            await flight.do("k", fetch)  # cancelled while waiting
        assert waiter.cancelled_caught
        for _ in range(3):
            tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        assert flight.waiting("k") == 3
        fetch.open.set()
    assert got == ["value"] * 4
    assert (fetch.calls, fetch.cancelled) == (1, 0)


async def test_when_the_runner_is_cancelled_a_waiter_runs_it_again() -> None:
    flight = Singleflight()
    fetch = Gate("value")
    got: list[Any] = []

    async def call() -> None:
        got.append(await flight.do("k", fetch))

    async with anyio.create_task_group() as tg:
        runner = anyio.CancelScope()

        async def first() -> None:
            with runner:
                await call()

        tg.start_soon(first)
        await anyio.wait_all_tasks_blocked()
        for _ in range(5):
            tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        assert flight.waiting("k") == 5
        runner.cancel()  # the runner's fetch is cancelled with it
        await anyio.wait_all_tasks_blocked()
        assert fetch.calls == 2
        assert fetch.cancelled == 1
        assert flight.waiting("k") == 4
        fetch.open.set()
    assert runner.cancelled_caught
    assert got == ["value"] * 5
    assert len(flight) == 0


async def test_when_everyone_is_cancelled_nothing_is_left_running() -> None:
    flight = Singleflight()
    fetch = Gate("value")
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(flight.do, "k", fetch)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
    assert (fetch.calls, fetch.cancelled) == (1, 1)
    assert len(flight) == 0
    assert flight.waiting("k") == 0


# ---- inside workflows ------------------------------------------------------------------


async def test_concurrent_runs_share_one_fetch_through_their_steps() -> None:
    flight = Singleflight()
    fetch = Gate({"EUR": 1.08})
    results: list[Any] = []

    async def body(ctx: Any) -> Any:
        return await ctx.step("rates", lambda: flight.do("rates:EUR", fetch))

    workflow = create_workflow("pricing")

    async def one() -> None:
        results.append(await workflow.run(body))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        fetch.open.set()
    assert results == [Ok({"EUR": 1.08})] * 20
    assert fetch.calls == 1


async def test_a_runs_early_exit_is_not_shared_with_the_other_runs() -> None:
    # Run A's shared work ends A (a nested step's Err): run B, waiting on it, runs
    # its own instead of receiving A's early exit.
    flight = Singleflight()
    gate = anyio.Event()

    async def failing(ctx: Any) -> int:
        await gate.wait()
        value: int = await ctx.step("inner", lambda: Err("A failed"))
        return value

    async def body_a(ctx: Any) -> Any:
        return await ctx.step("shared", lambda: flight.do("k", lambda: failing(ctx)))

    async def body_b(ctx: Any) -> Any:
        return await ctx.step("shared", lambda: flight.do("k", lambda: 42))

    workflow = create_workflow("w")
    results: dict[str, Any] = {}

    async def run(label: str, body: Any) -> None:
        results[label] = await workflow.run(body)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "a", body_a)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(run, "b", body_b)
        await anyio.wait_all_tasks_blocked()
        assert flight.waiting("k") == 1
        gate.set()
    assert results == {"a": Err("A failed"), "b": Ok(42)}
