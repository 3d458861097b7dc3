"""A worker process for the multi-process tests.

Usage: python worker_child.py MODE STORE_URL OPTIONS_JSON EFFECTS_FILE BACKEND [RUN_ID]

- ``work``: recover runs of workflow ``job`` until none is left running or cancelled.
- ``race``: start run RUN_ID from five tasks at once (``if_running="wait"``).

Every keyed step appends ``start <pid> <run> <key>`` and ``end <pid> <run> <key>``
lines to EFFECTS_FILE (one ``write`` each, in append mode) and returns
``<key>@<pid>``, so the parent can tell which execution was checkpointed and
whether two executions of a run ever overlapped.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import anyio

from awaitly_anyio import (
    Deps,
    WorkflowContext,
    WorkflowRegistry,
    create_workflow,
    open_store,
    recover,
)

STEPS = 5


def build(effects_path: str) -> WorkflowRegistry:
    pid = os.getpid()
    registry = WorkflowRegistry()
    job = create_workflow("job")

    def line(text: str) -> None:
        fd = os.open(effects_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, (text + "\n").encode())
        finally:
            os.close(fd)

    async def effect(run: str, key: str) -> str:
        line(f"start {pid} {run} {key}")
        await anyio.sleep(0.002)
        line(f"end {pid} {run} {key}")
        return f"{key}@{pid}"

    @registry.workflow(job)
    async def body(ctx: WorkflowContext[Deps]) -> list[str]:
        values = []
        for n in range(STEPS):
            key = f"k{n}"
            values.append(
                await ctx.step(key, lambda key=key: effect(ctx.workflow_id, key), key=key)
            )
        return values

    return registry


async def work(url: str, options: dict[str, Any], effects: str) -> None:
    registry = build(effects)
    async with open_store(url, **options) as store:
        while True:
            done = await recover(store, registry, lease=0.5, limit=2)
            if done:
                continue
            running = await store.list(status="running", limit=1)
            cancelled = await store.list(status="cancelled", limit=1)
            if not running.items and not cancelled.items:
                return
            await anyio.sleep(0.05)


async def race(url: str, options: dict[str, Any], effects: str, run_id: str) -> None:
    registry = build(effects)
    async with open_store(url, **options) as store, anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(
                lambda: registry.start("job", store, workflow_id=run_id, lease=5, if_running="wait")
            )


if __name__ == "__main__":
    mode, url, options_json, effects_path, backend = sys.argv[1:6]
    options = json.loads(options_json)
    if mode == "work":
        anyio.run(work, url, options, effects_path, backend=backend)
    else:
        anyio.run(race, url, options, effects_path, sys.argv[6], backend=backend)
    print("DONE", flush=True)
