"""Log correlation: records logged inside a run and its steps carry the run id, the
workflow name and the step name, through logging and structlog, on both backends."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from awaitly_anyio import (
    Deps,
    Err,
    Ok,
    ResumeState,
    WorkflowContext,
    WorkflowLogFilter,
    add_log_context,
    create_workflow,
    current_log_context,
    log_context,
)

pytestmark = pytest.mark.anyio


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.addFilter(WorkflowLogFilter())
        self.setFormatter(
            logging.Formatter("%(workflow_name)s %(workflow_id)s %(step_name)s %(message)s")
        )
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    log = logging.getLogger("shop")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield handler
    log.removeHandler(handler)


log = logging.getLogger("shop.orders")


async def test_records_logged_in_steps_carry_run_workflow_and_step(records: Records) -> None:
    workflow = create_workflow("checkout", on_event=log_context)

    async def reserve() -> str:
        log.info("reserving")
        await anyio.lowlevel.checkpoint()
        return "r"

    async def body(ctx: WorkflowContext[Deps]) -> str:
        log.info("starting")
        await ctx.step("reserve", reserve)

        async def ship() -> str:
            log.info("shipping")
            inner: str = await ctx.step("label", lambda: log.info("labelling") or "l")
            log.info("shipped")
            return inner

        await ctx.step("ship", ship)
        await ctx.step.all("notify", {"mail": lambda: log.info("mail"), "sms": lambda: 1})
        await ctx.step("cached", lambda: log.info("never"), key="k")
        return "done"

    log.info("before")
    result = await workflow.run(body, workflow_id="o-1", resume_state=ResumeState({"k": Ok(1)}))
    assert result == Ok("done")
    log.info("after")
    assert records.lines == [
        "- - - before",
        "checkout o-1 - starting",
        "checkout o-1 reserve reserving",
        "checkout o-1 ship shipping",
        "checkout o-1 label labelling",
        "checkout o-1 ship shipped",
        "checkout o-1 notify mail",
        "- - - after",
    ]


async def test_concurrent_runs_and_failed_or_cancelled_ones_keep_their_own_context(
    records: Records,
) -> None:
    workflow = create_workflow("report", on_event=[log_context])

    async def body(ctx: WorkflowContext[Deps]) -> None:
        async def part() -> None:
            await anyio.lowlevel.checkpoint()
            log.info("part")

        await ctx.step("part", part)
        await ctx.step("fail", lambda: Err("no"))

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(lambda n=n: workflow.run(body, workflow_id=f"r-{n}"))
    assert sorted(records.lines) == sorted(f"report r-{n} part part" for n in range(5))
    assert current_log_context() == {}

    with anyio.CancelScope() as scope:

        async def cancelled(ctx: WorkflowContext[Deps]) -> None:
            async def stuck() -> None:
                scope.cancel()
                await anyio.sleep_forever()

            await ctx.step("stuck", stuck, key="s")

        await workflow.run(cancelled, workflow_id="c-1")
    assert scope.cancelled_caught
    assert current_log_context() == {}


async def test_current_log_context_and_the_structlog_processor() -> None:
    structlog = pytest.importorskip("structlog")
    seen: list[dict[str, Any]] = []

    def capture(_: Any, __: str, event_dict: Any) -> Any:
        seen.append(dict(event_dict))
        raise structlog.DropEvent

    logger = structlog.wrap_logger(
        None, processors=[add_log_context, capture], wrapper_class=structlog.BoundLogger
    )
    workflow = create_workflow("checkout", on_event=log_context)

    async def body(ctx: WorkflowContext[Deps]) -> dict[str, str]:
        logger.info("in body")
        found: dict[str, str] = await ctx.step(
            "charge",
            lambda: logger.bind(step_name="mine").info("x") or current_log_context(),
            key="pay",
        )
        return found

    result = await workflow.run(body, workflow_id="o-9")
    assert result == Ok(
        {
            "workflow_id": "o-9",
            "workflow_name": "checkout",
            "step_name": "charge",
            "step_key": "pay",
        }
    )
    assert seen[0] == {"event": "in body", "workflow_id": "o-9", "workflow_name": "checkout"}
    # Keys the caller bound win.
    assert seen[1]["step_name"] == "mine"
    assert seen[1]["step_key"] == "pay"
