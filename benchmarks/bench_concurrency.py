"""10,000 concurrent in-memory workflows against 10,000 bare anyio tasks: time and memory.

Each workflow runs three steps (one keyed) and one ``step.sleep(0)``, so every
task really suspends; each bare task awaits the same three calls and one
checkpoint (``anyio.lowlevel.checkpoint()``, which is what a zero sleep is).
Memory is the peak traced by ``tracemalloc`` while all tasks are alive.  Each
ratio is the median of the rounds' own ratios (workflows against the bare tasks
timed just before them), so the machine's drift reaches both sides alike.
Target (issue 18): workflows <= 1.3x the bare tasks, in time and memory.

Beside the ratios it prints what decides much of the time gap: how many full
(generation 2) collections of the cycle collector each side's timed run set off,
and how many objects the collector tracks per task while every task waits.  With
CPython's default thresholds (700, 10, 10) a full collection starts each time some
93,000 more container objects are alive than at the last one (measured), and it
walks every live object.  At 10,000 tasks the bare tasks keep about 27 objects each
on asyncio (22 on trio) and stay just under the third full collection; a task that
keeps even one object more (the workflow body's own coroutine, say) sets it off on
asyncio, five more on trio: a walk of some 300,000 objects that alone costs about
0.25x of the bare tasks' time.
``--gc-off`` times both sides with the collector off (a diagnostic of the Python
work alone, not the target's figure).

    python benchmarks/bench_concurrency.py [--quick] [--gc-off] [--json PATH]
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
import tracemalloc
from typing import Any

import anyio
import anyio.lowlevel

from _report import Summary, bench_parser, finish, median_ratio
from awaitly_anyio import Deps, WorkflowContext, create_workflow

TARGET = 1.3


async def work(n: int) -> int:
    return n


async def bare(count: int) -> None:
    async def one(n: int) -> None:
        await work(n)
        await anyio.lowlevel.checkpoint()
        if _census is not None:  # only while `kept_per_task` counts, not when timed
            _count()
        await work(n)
        await work(n)

    async with anyio.create_task_group() as tg:
        for n in range(count):
            tg.start_soon(one, n)


async def workflows(count: int) -> None:
    workflow = create_workflow("bench")

    async def body(ctx: WorkflowContext[Deps]) -> int:
        n: int = ctx.input
        await ctx.step("a", lambda: work(n))
        await ctx.step.sleep("pause", 0)
        if _census is not None:  # only while `kept_per_task` counts, not when timed
            _count()
        await ctx.step("b", lambda: work(n), key="b")
        return await ctx.step("c", lambda: work(n))

    async def one(n: int) -> None:
        result = await workflow.run(body, input=n)
        assert result.ok

    async with anyio.create_task_group() as tg:
        for n in range(count):
            tg.start_soon(one, n)


class FullCollections:
    """Counts the full (generation 2) collections while it is installed."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            self.count += 1


async def kept_per_task(fn: Any, count: int) -> float:
    """Objects the cycle collector tracks per task while all ``count`` tasks wait:
    counted by the first task to resume from its checkpoint (by then every task has
    reached its own), against the count before the tasks start."""
    global _census
    gc.collect()
    before = len(gc.get_objects())
    seen: list[int] = []
    _census = seen
    try:
        await fn(count)
    finally:
        _census = None
    return (seen[0] - before) / count


_census: list[int] | None = None
"""Set by `kept_per_task`: the first task past its checkpoint counts the live objects."""


def _count() -> None:
    seen = _census
    if seen is not None and not seen:
        seen.append(len(gc.get_objects()))


async def measure(count: int, rounds: int, gc_off: bool = False) -> dict[str, dict[str, float]]:
    """Median seconds and peak traced memory (MiB) for each side on this backend."""
    sides = {"bare anyio tasks": bare, "awaitly workflows": workflows}
    times: dict[str, list[float]] = {name: [] for name in sides}
    memory: dict[str, list[float]] = {name: [] for name in sides}
    collections: dict[str, list[int]] = {name: [] for name in sides}
    for fn in sides.values():
        await fn(min(count, 500))  # warm-up
    for _ in range(rounds):
        for name, fn in sides.items():
            gc.collect()
            full = FullCollections()
            gc.callbacks.append(full)
            if gc_off:
                gc.disable()
            started = time.perf_counter()
            try:
                await fn(count)
            finally:
                gc.enable()
                gc.callbacks.remove(full)
            times[name].append(time.perf_counter() - started)
            collections[name].append(full.count)
            gc.collect()
            tracemalloc.start()
            await fn(count)
            memory[name].append(tracemalloc.get_traced_memory()[1] / 2**20)
            tracemalloc.stop()
    figures: dict[str, dict[str, float]] = {
        name: {
            "median_s": statistics.median(times[name]),
            "min_s": min(times[name]),
            "max_s": max(times[name]),
            "peak_mib": statistics.median(memory[name]),
            "full_collections": statistics.median(collections[name]),
            "objects_per_task": await kept_per_task(sides[name], count),
        }
        for name in sides
    }
    # Each round's workflows against that round's bare tasks, timed just before.
    ours, base = "awaitly workflows", "bare anyio tasks"
    figures["ratios"] = {
        "time": median_ratio(times[ours], times[base]),
        "memory": median_ratio(memory[ours], memory[base]),
    }
    return figures


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument(
        "--gc-off", action="store_true", help="time with the cycle collector off (diagnostic)"
    )
    args = parser.parse_args()
    count, rounds = (2_000, 2) if args.quick else (10_000, 5)
    report: dict[str, Any] = {}
    summary = Summary()
    for backend in ("asyncio", "trio"):
        figures = anyio.run(measure, count, rounds, args.gc_off, backend=backend)
        ratios = figures.pop("ratios")
        report[backend] = {"figures": figures, "ratios": ratios, "gc_off": args.gc_off}
        if not args.gc_off:  # with the collector off the figures are a diagnostic only
            for what, ratio in ratios.items():
                summary.add(
                    f"{count} workflows / bare tasks ({what})", backend, ratio, target=TARGET
                )
        off = ", cycle collector OFF (diagnostic)" if args.gc_off else ""
        print(f"\n{backend}: {count} concurrent, {rounds} rounds{off}")
        for name, f in figures.items():
            print(
                f"  {name:20s} {f['median_s'] * 1000:8.1f} ms"
                f" (min {f['min_s'] * 1000:.1f}, max {f['max_s'] * 1000:.1f})"
                f"  peak {f['peak_mib']:7.1f} MiB"
                f"  full GCs {f['full_collections']:g}"
                f"  objects/task {f['objects_per_task']:.1f}"
            )
        for what, ratio in ratios.items():
            verdict = "PASS" if ratio <= TARGET else "MISS"
            print(
                f"  {what:6s} workflows / bare tasks: {ratio:.2f}x (target <= {TARGET}) {verdict}"
            )
    return finish(report, summary, args.json, failed=False)


if __name__ == "__main__":
    sys.exit(main())
