"""Child process for test_auto_keys_crash.py: one durable run on SQLite whose steps
have no keys (automatic keys: ``awaitly.step:work#1``, ``work#2``, ...).

Usage: python auto_keys_crash_child.py DB RUN_ID EFFECTS_FILE BACKEND STEPS

Every step appends ``<pid> <n>`` to EFFECTS_FILE (its side effect) and returns
``<n>@<pid>``, so the stored snapshot tells which process's execution was
checkpointed.  The parent SIGKILLs this process at random points.
"""

from __future__ import annotations

import os
import sys

import anyio

from awaitly_anyio import Deps, WorkflowContext, create_workflow
from crash_kit import append_line, run_on_sqlite


async def main(db: str, run_id: str, effects_path: str, steps: int) -> None:
    pid = os.getpid()
    workflow = create_workflow("auto-keys-crash-test")

    def effect(n: int) -> str:
        append_line(effects_path, f"{pid} {n}")
        return f"{n}@{pid}"

    async def body(ctx: WorkflowContext[Deps]) -> list[str]:
        values = []
        for n in range(steps):
            # One name for every step: the automatic keys number them.
            values.append(await ctx.step("work", lambda n=n: effect(n)))
            await ctx.step("breathe", lambda: anyio.sleep(0.001), checkpoint=False)
        return values

    await run_on_sqlite(workflow, body, db, run_id)


if __name__ == "__main__":
    db, run_id, effects_path, backend, steps = sys.argv[1:6]
    anyio.run(main, db, run_id, effects_path, int(steps), backend=backend)
