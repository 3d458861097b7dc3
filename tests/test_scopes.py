"""The cancel scopes durable runs use on every step (`Loop.cancel_scope`,
`Loop.shielded`): trio's own on trio, anyio's on asyncio, with the same behaviour
either way."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from awaitly_anyio import _loops
from awaitly_anyio._loops import Scope
from awaitly_anyio._loops._asyncio import buckets_of


def cancel_scope() -> Scope:
    return _loops.current().cancel_scope()


def shielded(seconds: float) -> Scope:
    return _loops.current().shielded(seconds)


pytestmark = pytest.mark.anyio


async def test_a_shielded_write_finishes_though_its_caller_is_cancelled() -> None:
    finished = anyio.Event()
    scope = shielded(5.0)
    with anyio.CancelScope() as outer:
        outer.cancel()
        with scope:
            await anyio.lowlevel.checkpoint()  # the outer cancellation does not land here
            finished.set()
        await anyio.lowlevel.checkpoint()  # it lands here, after the shield
        pytest.fail("the outer cancellation was lost")
    assert finished.is_set()
    assert not scope.cancelled_caught
    assert outer.cancelled_caught


async def test_a_shielded_write_is_cut_off_at_its_bound() -> None:
    with shielded(0.0) as scope:
        await anyio.sleep_forever()
    assert scope.cancelled_caught


async def test_a_cancel_scope_is_cancelled_from_another_task() -> None:
    scope = cancel_scope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _cancel_soon(scope))
        with scope:
            await anyio.sleep_forever()
    assert scope.cancelled_caught


async def _cancel_soon(scope: Scope) -> None:
    await anyio.lowlevel.checkpoint()
    scope.cancel()


async def test_scopes_are_native_to_the_loop(anyio_backend: str) -> None:
    # On asyncio a bounded shield is (a subclass of) anyio's scope, its bound kept in
    # a bucket; on trio both are trio's own.
    scopes = cancel_scope(), shielded(1.0)
    if anyio_backend == "trio":
        assert all(type(scope).__module__.startswith("trio") for scope in scopes), scopes
    else:
        anyio_scope = type(anyio.CancelScope())
        assert all(isinstance(scope, anyio_scope) for scope in scopes), scopes


async def test_a_hung_write_is_cut_off_once_its_bound_has_passed() -> None:
    with anyio.fail_after(5):  # only a failure waits this long
        with shielded(0.05) as scope:
            await anyio.sleep_forever()
    assert scope.cancelled_caught


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_concurrent_shields_share_their_bounds_timers() -> None:
    """A hundred writes in flight at once are bounded by one or two asyncio timers
    (one per tick their bounds fall in), and each leaves its bucket on exit, so a
    bucket that expires later cancels nothing that has finished."""
    loop = asyncio.get_running_loop()
    inside = anyio.Event()
    release = anyio.Event()
    shields: list[Scope] = []
    entered = 0

    async def write() -> None:
        nonlocal entered
        with shielded(5.0) as scope:
            shields.append(scope)
            entered += 1
            if entered == 100:
                inside.set()
            await release.wait()

    buckets = buckets_of(loop)
    timers_before = len(loop._scheduled)  # type: ignore[attr-defined]
    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(write)
        await inside.wait()
        assert len(loop._scheduled) - timers_before <= 2  # type: ignore[attr-defined]
        assert sum(len(bucket) for bucket in buckets.values()) == 100
        release.set()
    assert sum(len(bucket) for bucket in buckets.values()) == 0
    assert not any(scope.cancelled_caught for scope in shields)


async def test_a_scope_opened_inside_a_shield_is_shielded_with_it() -> None:
    # Code inside a shielded write may open scopes of its own (a driver's timeout,
    # a task group): an outer cancellation must not reach them either.
    finished = anyio.Event()
    scope = shielded(5.0)
    with anyio.CancelScope() as outer:
        with scope:
            outer.cancel()
            with anyio.CancelScope() as inner:
                await anyio.lowlevel.checkpoint()
                await anyio.lowlevel.checkpoint()
                finished.set()
            assert not inner.cancelled_caught
        await anyio.lowlevel.checkpoint()
        pytest.fail("the outer cancellation was lost")
    assert finished.is_set()
    assert not scope.cancelled_caught
    assert outer.cancelled_caught


async def test_a_shield_says_it_shields_and_a_plain_scope_does_not() -> None:
    shield: Any = shielded(5.0)
    plain: Any = cancel_scope()
    assert shield.shield is True
    assert plain.shield is False


async def test_scopes_left_by_an_exception_or_their_own_cancel_restore_the_callers_scope() -> None:
    # The fast paths of asyncio's scopes hand these cases to anyio: whichever way a
    # scope is left, the caller's own scope (and its cancellation) is as before.
    with anyio.CancelScope() as outer:
        with pytest.raises(ValueError, match="inside"), shielded(5.0):
            raise ValueError("inside")
        with cancel_scope() as own:
            own.cancel()
            await anyio.lowlevel.checkpoint()
        assert own.cancelled_caught
        with shielded(5.0) as shield:
            shield.cancel()
            await anyio.lowlevel.checkpoint()
        assert shield.cancelled_caught
        outer.cancel()
        await anyio.lowlevel.checkpoint()
        pytest.fail("the outer cancellation was lost")
    assert outer.cancelled_caught


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_misnested_exit_is_refused_as_anyio_refuses_it() -> None:
    first, second = cancel_scope(), shielded(5.0)
    first.__enter__()
    second.__enter__()
    with pytest.raises(RuntimeError, match="current cancel scope"):
        first.__exit__(None, None, None)
    second.__exit__(None, None, None)
    first.__exit__(None, None, None)
    with pytest.raises(RuntimeError, match=r"single 'with' block|not active"):
        first.__exit__(None, None, None)
