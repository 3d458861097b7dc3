"""A worker process for the durable-waiting crash tests (tests/test_waiting_crash.py).

Usage: python waiting_child.py MODE STORE_URL OPTIONS_JSON EFFECTS_FILE BACKEND ARGS...

- ``start RUN_ID TIMEOUT KILL``: start run RUN_ID of workflow ``waiter`` (TIMEOUT:
  seconds, or ``none``).  Once the run is recorded waiting it prints ``WAITING``; with
  KILL ``self`` it then SIGKILLs itself on the spot (from the ``step_waiting`` event
  handler, so before any deadline), with ``parent`` it waits to be killed.
- ``recover RUN_ID,RUN_ID...``: resume abandoned and due runs of ``waiter`` until every
  run named has ended, then print ``DONE``.

Side effects are lines appended to EFFECTS_FILE (one ``write`` each):
``before <pid> <run>`` and ``after <pid> <run> <value>`` for the steps around the wait,
``timeout <pid> <run>`` when the wait's deadline passed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import anyio

from awaitly_anyio import (
    Deps,
    WaitTimeoutError,
    WorkflowContext,
    WorkflowRegistry,
    create_workflow,
    open_store,
)
from awaitly_anyio.events import WorkflowEvent
from crash_kit import append_line, recover_until_ended

LEASE = 0.5


def build(effects_path: str, timeout: float | None, kill: str) -> WorkflowRegistry:
    pid = os.getpid()

    def line(text: str) -> None:
        append_line(effects_path, text)

    def on_event(event: WorkflowEvent) -> None:
        if event.type == "step_waiting":
            print("WAITING", flush=True)
            if kill == "self":
                os.kill(pid, signal.SIGKILL)
        error = getattr(event, "error", None)
        if event.type == "step_error" and isinstance(error, WaitTimeoutError):
            line(f"timeout {pid} {event.workflow_id}")

    registry = WorkflowRegistry()
    waiter = create_workflow("waiter", on_event=on_event)

    @registry.workflow(waiter)
    async def body(ctx: WorkflowContext[Deps]) -> Any:
        run = ctx.workflow_id
        await ctx.step("before", lambda: line(f"before {pid} {run}"), key="before")
        value = await ctx.step.wait_for("get", key="go", timeout=timeout)
        await ctx.step("after", lambda: line(f"after {pid} {run} {value}"), key="after")
        return value

    return registry


async def start(
    url: str, options: dict[str, Any], effects: str, run_id: str, timeout: float | None, kill: str
) -> None:
    registry = build(effects, timeout, kill)
    async with open_store(url, **options) as store:
        await registry.start("waiter", store, workflow_id=run_id, lease=LEASE)


async def work(url: str, options: dict[str, Any], effects: str, run_ids: list[str]) -> None:
    registry = build(effects, None, "none")
    await recover_until_ended(url, options, registry, run_ids, lease=LEASE, limit=5)


if __name__ == "__main__":
    mode, url, options_json, effects_path, backend = sys.argv[1:6]
    options = json.loads(options_json)
    if mode == "start":
        run_id, timeout, kill = sys.argv[6:9]
        seconds = None if timeout == "none" else float(timeout)
        anyio.run(start, url, options, effects_path, run_id, seconds, kill, backend=backend)
    else:
        anyio.run(work, url, options, effects_path, sys.argv[6].split(","), backend=backend)
    print("DONE", flush=True)
