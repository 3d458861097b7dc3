"""The event-loop layer (`awaitly_anyio._loops`): one object per kind of loop, cached,
with the same contract on asyncio and trio; and no loop named anywhere else in src/."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from awaitly_anyio import _loops

pytestmark = pytest.mark.anyio

SRC = Path(__file__).resolve().parent.parent / "src" / "awaitly_anyio"


def loop_names_outside_the_layer() -> list[str]:
    """``file:line: 'name'`` for every string literal that is a loop's name, outside
    the loops package (docstrings and ``import asyncio`` are not literals of that
    kind)."""
    found: list[str] = []
    layer = SRC / "_loops"
    for path in sorted(SRC.rglob("*.py")):
        if layer in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Constant) and node.value in _loops.NAMES:
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value!r}")
    return found


def test_the_layer_finds_loop_names_where_they_are() -> None:
    # The check itself: the layer names both loops (if this fails, the check above
    # can no longer see anything).
    names = {
        node.value
        for path in (SRC / "_loops").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and node.value in _loops.NAMES
    }
    assert names == set(_loops.NAMES)


def test_no_loop_is_named_outside_the_loops_layer() -> None:
    assert loop_names_outside_the_layer() == []


async def test_one_cached_object_per_loop(anyio_backend: str) -> None:
    loop = _loops.current()
    assert loop is _loops.current()
    assert loop.name == anyio_backend == _loops.current_name()
    assert loop.name in _loops.NAMES
    assert _loops.DEFAULT in _loops.NAMES

    async def from_another_task(found: list[_loops.Loop]) -> None:
        found.append(_loops.current())

    found: list[_loops.Loop] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(from_another_task, found)
    assert found == [loop]


def test_each_kind_of_loop_has_its_own_object() -> None:
    async def which() -> _loops.Loop:
        return _loops.current()

    on_asyncio = anyio.run(which, backend="asyncio")
    on_trio = anyio.run(which, backend="trio")
    assert (on_asyncio.name, on_trio.name) == ("asyncio", "trio")
    assert anyio.run(which, backend="trio") is on_trio  # cached across runs
    assert on_asyncio.drives_asyncio
    assert not on_trio.drives_asyncio


async def test_a_cancelled_scope_is_due_without_yielding_and_delivered() -> None:
    assert not _loops.cancel_due()
    delivered = False
    with anyio.CancelScope() as scope:
        scope.cancel()
        assert _loops.cancel_due()
        try:
            await _loops.deliver_cancellation()
        except anyio.get_cancelled_exc_class():
            delivered = True
            raise
    assert delivered
    assert not _loops.cancel_due()


async def test_a_passed_deadline_is_due_before_the_loop_notices() -> None:
    with anyio.CancelScope(deadline=anyio.current_time() - 1) as scope:
        assert _loops.current().cancel_due()
        await _loops.current().deliver_cancellation()
        pytest.fail("the passed deadline was not delivered")
    assert scope.cancelled_caught


async def test_an_answer_gives_its_value_or_its_exception() -> None:
    loop = _loops.current()
    value, error = loop.answer(), loop.answer()
    assert not value.done()
    value.set_result(7)
    error.set_exception(KeyError("nope"))
    assert value.done()
    assert error.done()
    assert await value == 7
    with pytest.raises(KeyError, match="nope"):
        await error
    with pytest.raises((asyncio.InvalidStateError, RuntimeError)):  # each loop's own
        value.set_result(8)


async def test_an_answer_whose_waiter_was_cancelled_is_done() -> None:
    answer = _loops.current().answer()

    async def wait() -> None:
        await answer

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        assert not answer.done()
        tg.cancel_scope.cancel()
    assert answer.done()  # so a batch skips it


async def test_a_system_task_outlives_the_task_that_started_it_until_cancelled() -> None:
    loop = _loops.current()
    started, cancelled = anyio.Event(), anyio.Event()
    stops: list[object] = []

    async def system() -> None:
        try:
            started.set()
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    async def starter() -> None:
        stops.append(loop.start_system_task(system, "awaitly-test-system-task"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(starter)
    with anyio.fail_after(5):  # only a failure waits this long
        await started.wait()
    assert not cancelled.is_set()
    stop = stops[0]
    assert callable(stop)
    stop()
    with anyio.fail_after(5):
        await cancelled.wait()


async def test_drivers_run_directly_only_on_asyncio(anyio_backend: str) -> None:
    loop = _loops.current()
    runner = loop.driver_runner()
    try:
        assert (runner is None) == (anyio_backend == "asyncio") == loop.drives_asyncio
        assert loop.driver_tasks() == []
    finally:
        if runner is not None:
            runner.release()


async def test_a_shield_keeps_outside_cancellation_out_until_its_bound() -> None:
    loop = _loops.current()
    shield, cut = loop.shielded(5.0), loop.shielded(0.0)
    with anyio.CancelScope() as outer:
        outer.cancel()
        with shield:
            await anyio.lowlevel.checkpoint()
        with cut:
            await anyio.sleep_forever()
        await anyio.lowlevel.checkpoint()
        pytest.fail("the outer cancellation was lost")
    assert not shield.cancelled_caught
    assert cut.cancelled_caught
    assert outer.cancelled_caught
