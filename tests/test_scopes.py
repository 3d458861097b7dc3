"""The cancel scopes durable runs use on every step: trio's own on trio, anyio's on
asyncio, with the same behaviour either way."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from awaitly_anyio._scopes import Scope, cancel_scope, shielded

pytestmark = pytest.mark.anyio


async def test_a_shielded_write_finishes_though_its_caller_is_cancelled() -> None:
    finished = anyio.Event()
    with anyio.CancelScope() as outer:
        outer.cancel()
        with shielded(5.0) as scope:
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
    modules = type(cancel_scope()).__module__, type(shielded(1.0)).__module__
    expected = "trio" if anyio_backend == "trio" else "anyio"
    assert all(module.startswith(expected) for module in modules), modules
