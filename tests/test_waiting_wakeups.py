"""A send that lands between a waiting run's look and its wait still wakes it (no lost
wake-up), on every store that can be opened twice in one process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from awaitly_anyio import Deps, Ok, WorkflowContext, create_workflow
from awaitly_anyio.testing import FakeClock

from .kit_base import StoreKit

pytestmark = pytest.mark.anyio


async def test_a_send_between_the_look_and_the_wait_wakes_the_run(
    kit: StoreKit, tmp_path: Path
) -> None:
    clock = FakeClock()
    workflow = create_workflow("orders")

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.wait_for("payment", key="paid")

    async with kit.open(tmp_path, clock) as store, kit.open(tmp_path, clock) as sender:
        # A poll far longer than the test's bound: only a wake-up can end the wait.
        store.poll_interval = 3600
        driver = store._driver
        looked = driver.receive
        sent = False

        async def receive_then_send(*args: Any) -> Any:
            nonlocal sent
            found = await looked(*args)
            if found is None and not sent:
                # The look found nothing; the value lands before the run waits.
                sent = True
                await sender.send("o1", "paid", 42)
            return found

        driver.receive = receive_then_send
        with anyio.fail_after(30):
            result = await workflow.run(body, workflow_id="o1", store=store)
        assert sent
        assert result == Ok(42)
