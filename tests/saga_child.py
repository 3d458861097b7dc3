"""A worker process for the saga crash tests (tests/test_saga_crash.py).

Usage: python saga_child.py MODE STORE_URL OPTIONS_JSON EFFECTS_FILE BACKEND ARGS...

- ``start RUN_ID KILL``: start (or, if it exists, run again) run RUN_ID of workflow
  ``booking``: it reserves ``STEPS`` things, then its charge fails, so it rolls back.
  KILL says where this process SIGKILLs itself during the rollback: ``before:S`` (in
  the compensation of step S, before its side effect), ``after:S`` (once the
  compensation of step S is recorded: from its ``compensation_complete`` event),
  ``retry:S`` (in the second attempt of step S's compensation, whose first attempt
  failed), ``parent`` (it prints ``ROLLING`` when the rollback starts and waits to be
  killed by the test, at a random moment), or ``none``.  Prints ``RESULT ...`` if it
  lives to the end.
- ``recover RUN_ID,RUN_ID...``: recover abandoned runs of ``booking`` (the library's
  recovery) until every run named has ended, then print ``DONE``.

Side effects are lines appended to EFFECTS_FILE with O_APPEND and fsync'd:
``step <pid> <run> <step>`` when a step runs, ``undo <pid> <run> <step>`` when its
compensation does its work, ``charge <pid> <run>`` for the failing charge.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import anyio

from awaitly_anyio import (
    Compensation,
    Deps,
    Err,
    RetryPolicy,
    WorkflowContext,
    WorkflowRegistry,
    create_workflow,
    open_store,
)
from awaitly_anyio.events import WorkflowEvent
from crash_kit import append_line, recover_until_ended

LEASE = 0.3
STEPS = 4
FLAKY = "reserve-1"  # its compensation fails its first attempt, every time it is tried


def build(effects_path: str, kill: str) -> WorkflowRegistry:
    pid = os.getpid()
    where, _, target = kill.partition(":")
    attempts: dict[tuple[str, str], int] = {}
    rolling: list[bool] = []

    def line(text: str) -> None:
        append_line(effects_path, text, fsync=True)

    def die() -> None:
        os.kill(pid, signal.SIGKILL)

    def on_event(event: WorkflowEvent) -> None:
        if event.type == "compensation_complete" and where == "after" and event.name == target:
            die()
        if event.type == "compensation_start" and where == "parent" and not rolling:
            rolling.append(True)
            print("ROLLING", flush=True)

    def undo(run: str, step: str) -> Any:
        async def compensate(value: str) -> Any:
            assert value == f"{step}@{run}", value  # the value its step produced
            # Some work before the effect, and after it (before the record): a random
            # kill lands in either.
            await anyio.sleep(0.002)
            tried = attempts[run, step] = attempts.get((run, step), 0) + 1
            if where == "before" and step == target:
                die()
            if step == FLAKY and tried == 1:
                return Err("the supplier is busy")  # retried by the policy
            if where == "retry" and step == target:
                die()
            line(f"undo {pid} {run} {step}")
            await anyio.sleep(0.002)
            return None

        return compensate

    registry = WorkflowRegistry()
    booking = create_workflow("booking", on_event=on_event)

    @registry.workflow(booking)
    async def body(ctx: WorkflowContext[Deps]) -> Any:
        run = ctx.workflow_id
        for n in range(STEPS):
            step = f"reserve-{n}"

            def reserve(step: str = step) -> str:
                line(f"step {pid} {run} {step}")
                return f"{step}@{run}"

            compensate = Compensation(undo(run, step), retry=RetryPolicy(3, delay=0))
            await ctx.step(step, reserve, key=step, compensate=compensate)

        def charge() -> Any:
            line(f"charge {pid} {run}")
            return Err("card declined")

        await ctx.step("charge", charge, key="charge")
        return "booked"

    return registry


async def start(url: str, options: dict[str, Any], effects: str, run_id: str, kill: str) -> None:
    registry = build(effects, kill)
    async with open_store(url, **options) as store:
        result = await registry.start(
            "booking", store, workflow_id=run_id, lease=LEASE, if_running="wait"
        )
    print("RESULT", repr(result), flush=True)


async def work(url: str, options: dict[str, Any], effects: str, run_ids: list[str]) -> None:
    registry = build(effects, "none")
    await recover_until_ended(url, options, registry, run_ids, lease=LEASE, limit=10)


if __name__ == "__main__":
    mode, url, options_json, effects_path, backend = sys.argv[1:6]
    options = json.loads(options_json)
    if mode == "start":
        run_id, kill = sys.argv[6:8]
        anyio.run(start, url, options, effects_path, run_id, kill, backend=backend)
    else:
        anyio.run(work, url, options, effects_path, sys.argv[6].split(","), backend=backend)
        print("DONE", flush=True)
