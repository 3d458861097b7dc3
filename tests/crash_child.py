"""Child process for the crash tests: runs one durable workflow on SQLite.

Usage: python crash_child.py DB RUN_ID EFFECTS_FILE BACKEND STEPS

Every keyed step appends ``<pid> <key>`` to EFFECTS_FILE (its side effect) and
returns ``<key>@<pid>``, so the stored snapshot tells which process's execution
was checkpointed.  The parent SIGKILLs this process at random points.
"""

from __future__ import annotations

import os
import sys

import anyio

from awaitly_anyio import Deps, WorkflowContext, create_workflow, open_store


async def main(db: str, run_id: str, effects_path: str, steps: int) -> None:
    pid = os.getpid()
    workflow = create_workflow("crash-test")

    def effect(key: str) -> str:
        with open(effects_path, "a", encoding="utf-8") as effects:
            effects.write(f"{pid} {key}\n")
        return f"{key}@{pid}"

    async def body(ctx: WorkflowContext[Deps]) -> list[str]:
        values = []
        for n in range(steps):
            key = f"step-{n:03d}"
            values.append(await ctx.step(key, lambda key=key: effect(key), key=key))
            await ctx.step("breathe", lambda: anyio.sleep(0.001))
        return values

    async with open_store(f"sqlite:///{db}") as store:
        # A killed worker leaves its lease behind: wait the short lease out, then take over.
        result = await workflow.run(
            body, workflow_id=run_id, store=store, lease=0.3, if_running="wait"
        )
    print("RESULT", "ok" if result.ok else f"err {result!r}", flush=True)


if __name__ == "__main__":
    db, run_id, effects_path, backend, steps = sys.argv[1:6]
    anyio.run(main, db, run_id, effects_path, int(steps), backend=backend)
