"""What the group steps cost: ``ctx.step.all_settled`` and ``ctx.step.any`` over 10
children against a hand-written anyio task group doing the same, on asyncio and trio.

- ``all_settled``: 10 children (each yields once; 3 of them fail, one by raising); the
  hand-written version runs them in a task group and collects every outcome as a
  Result in child order (an exception becomes ``Err``).
- ``any``: 10 children, the first succeeds after one yield, the 9 others are waiting on
  a timer and are cancelled; the hand-written version keeps the first success and
  cancels the task group (and would collect the errors if all failed).

Each variant runs N groups inside one workflow run (the hand-written ones inside a
workflow run too, as plain code of the body, so both pay the same surroundings); the
figure is microseconds of the process's CPU time per group (CPU time, not wall time:
the group never waits for anything but the loop, and other processes on a shared
machine then do not skew it), and each ratio the median of the rounds' own
(rounds interleave the variants, so noise hits all alike).  Target (issue 22): both
<= 1.2x the hand-written task group.

    python benchmarks/bench_groups.py [--quick] [--check] [--json PATH]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel

from _report import Summary, bench_parser, finish, median_ratio, medians, timed_rounds
from awaitly_anyio import Deps, Err, Ok, Result, WorkflowContext, create_workflow

CHILDREN = 10
TARGETS = {
    "all_settled / hand-written task group": 1.2,
    "any / hand-written task group": 1.2,
}

Variant = Callable[[int], Awaitable[float]]


def settled_children() -> list[Callable[[], Awaitable[Any]]]:
    """Ten children that yield once; numbers 2 and 5 return Err, number 7 raises."""

    def child(i: int) -> Callable[[], Awaitable[Any]]:
        async def run() -> Result[int, str]:
            await anyio.lowlevel.checkpoint()
            if i == 7:
                raise ConnectionError("refused")
            return Err(f"child {i} failed") if i in (2, 5) else Ok(i)

        return run

    return [child(i) for i in range(CHILDREN)]


def any_children() -> list[Callable[[], Awaitable[Any]]]:
    """The first child succeeds after one yield; the nine others wait on a timer."""

    async def first() -> Result[int, str]:
        await anyio.lowlevel.checkpoint()
        return Ok(0)

    async def slow() -> Result[int, str]:
        await anyio.sleep(60)
        return Err("too late")

    return [first] + [slow] * (CHILDREN - 1)


async def hand_settled(children: list[Callable[[], Awaitable[Any]]]) -> list[Result[Any, Any]]:
    """What an experienced developer writes without the library's all_settled."""
    outcomes: list[Result[Any, Any]] = [Ok(None)] * len(children)

    async def one(index: int, fn: Callable[[], Awaitable[Any]]) -> None:
        try:
            out = await fn()
        except Exception as exc:
            outcomes[index] = Err(exc)
        else:
            outcomes[index] = out if isinstance(out, (Ok, Err)) else Ok(out)

    async with anyio.create_task_group() as tg:
        for index, fn in enumerate(children):
            tg.start_soon(one, index, fn)
    return outcomes


async def hand_any(children: list[Callable[[], Awaitable[Any]]]) -> Result[Any, Any]:
    """The first success wins, the rest are cancelled; every error kept otherwise."""
    errors: list[Any] = [None] * len(children)
    winner: list[Any] = []

    async with anyio.create_task_group() as tg:

        async def one(index: int, fn: Callable[[], Awaitable[Any]]) -> None:
            try:
                out = await fn()
            except Exception as exc:
                errors[index] = exc
                return
            result = out if isinstance(out, (Ok, Err)) else Ok(out)
            if isinstance(result, Ok):
                if not winner:
                    winner.append(result.value)
                    tg.cancel_scope.cancel()
            else:
                errors[index] = result.error

        for index, fn in enumerate(children):
            tg.start_soon(one, index, fn)
    return Ok(winner[0]) if winner else Err(tuple(errors))


def variants() -> dict[str, Variant]:
    workflow = create_workflow("bench-groups")
    settled = settled_children()
    firsts = any_children()

    def in_workflow(kind: str) -> Variant:
        async def variant(n: int) -> float:
            elapsed = 0.0

            async def body(ctx: WorkflowContext[Deps]) -> None:
                nonlocal elapsed
                step = ctx.step
                started = time.process_time()
                if kind == "all_settled":
                    for _ in range(n):
                        await step.all_settled("g", settled)
                elif kind == "any":
                    for _ in range(n):
                        await step.any("g", firsts)
                elif kind == "hand all_settled":
                    for _ in range(n):
                        await hand_settled(settled)
                else:
                    for _ in range(n):
                        await hand_any(firsts)
                elapsed = time.process_time() - started

            result = await workflow.run(body)
            assert result.ok, result
            return elapsed

        return variant

    return {
        name: in_workflow(name) for name in ("all_settled", "hand all_settled", "any", "hand any")
    }


async def measure(rounds: int, n: int) -> list[dict[str, float]]:
    """Microseconds per group for every variant on the running backend, one dict per round."""
    return await timed_rounds(variants(), rounds, n, warmup=max(n // 10, 20), scale=1e6)


def main() -> int:
    parser = bench_parser(__doc__, "a few seconds instead of a minute")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    rounds, n = (3, 300) if args.quick else (9, 3_000)
    report: dict[str, Any] = {}
    summary = Summary()
    for backend in ("asyncio", "trio"):
        rows = anyio.run(measure, rounds, n, backend=backend)
        figures = medians(rows)
        found = {
            "all_settled / hand-written task group": median_ratio(
                [r["all_settled"] for r in rows], [r["hand all_settled"] for r in rows]
            ),
            "any / hand-written task group": median_ratio(
                [r["any"] for r in rows], [r["hand any"] for r in rows]
            ),
        }
        report[backend] = {"us_per_group": figures, "ratios": found}
        print(f"\n{backend}: {n} groups of {CHILDREN} children x {rounds} rounds, median us")
        for name, us in figures.items():
            print(f"  {name:20s} {us:8.1f}")
        for name, ratio in found.items():
            target = TARGETS[name]
            verdict = summary.add(f"groups: {name}", backend, ratio, target=target)
            print(f"  {name:40s} {ratio:5.2f}x (target <= {target}) {verdict}")
    return finish(report, summary, args.json, failed=summary.missed and args.check)


if __name__ == "__main__":
    sys.exit(main())
