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

from awaitly_anyio import Deps, WorkflowContext, create_workflow
from crash_kit import append_line, run_on_sqlite


async def main(db: str, run_id: str, effects_path: str, steps: int) -> None:
    pid = os.getpid()
    workflow = create_workflow("crash-test")

    def effect(key: str) -> str:
        append_line(effects_path, f"{pid} {key}")
        return f"{key}@{pid}"

    async def body(ctx: WorkflowContext[Deps]) -> list[str]:
        values = []
        for n in range(steps):
            key = f"step-{n:03d}"
            values.append(await ctx.step(key, lambda key=key: effect(key), key=key))
            await ctx.step("breathe", lambda: anyio.sleep(0.001))
        return values

    await run_on_sqlite(workflow, body, db, run_id)


if __name__ == "__main__":
    db, run_id, effects_path, backend, steps = sys.argv[1:6]
    anyio.run(main, db, run_id, effects_path, int(steps), backend=backend)
