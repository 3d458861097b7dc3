"""A service process for the graceful-shutdown test.

Usage: python host_child.py serve|recover DB EFFECTS BACKEND RUNS

``serve`` starts RUNS durable runs in a WorkflowHost (grace 1 s) and waits for
SIGTERM; ``recover`` resumes whatever the first process left.  Each keyed step
waits, then appends ``<run> <key>`` to EFFECTS (its side effect), so the
parent can check that no step's effect happened twice.
"""

from __future__ import annotations

import os
import random
import sys

import anyio

from awaitly_anyio import (
    Deps,
    WorkflowContext,
    WorkflowRegistry,
    create_workflow,
    open_store,
    recover,
)
from awaitly_anyio._host import WorkflowHost

STEPS = 3


def build(effects: str) -> WorkflowRegistry:
    registry = WorkflowRegistry()
    job = create_workflow("job")
    rng = random.Random(os.getpid())

    async def effect(run: str, key: str) -> str:
        await anyio.sleep(rng.uniform(0.05, 0.6))  # cancellation can only land here
        fd = os.open(effects, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{run} {key}\n".encode())
        finally:
            os.close(fd)
        return key

    @registry.workflow(job)
    async def body(ctx: WorkflowContext[Deps]) -> list[str]:
        return [
            await ctx.step(key, lambda key=key: effect(ctx.workflow_id, key), key=key)
            for key in (f"k{n}" for n in range(STEPS))
        ]

    return registry


async def serve(db: str, effects: str, runs: int) -> None:
    registry = build(effects)
    workflow, body = registry.get("job")
    store = open_store(f"sqlite:///{db}", synchronous="NORMAL")
    async with store, WorkflowHost(max_active=runs, store=store, grace=1.0) as host:
        for n in range(runs):
            host.start(workflow, body, workflow_id=f"run-{n:03d}", lease=5)
        print("READY", flush=True)
        await host.serve_signals()
    print("STOPPED", flush=True)


async def resume(db: str, effects: str) -> None:
    registry = build(effects)
    async with open_store(f"sqlite:///{db}") as store:
        while await recover(store, registry, limit=100, concurrency=100):
            pass


if __name__ == "__main__":
    mode, db, effects, backend, runs = sys.argv[1:6]
    if mode == "serve":
        anyio.run(serve, db, effects, int(runs), backend=backend)
    else:
        anyio.run(resume, db, effects, backend=backend)
