"""10,000 concurrent in-memory workflows against 10,000 bare anyio tasks: time and memory.

Each workflow runs three steps (one keyed) and one ``step.sleep(0)``, so every
task really suspends; each bare task awaits the same three calls and one
checkpoint (``anyio.lowlevel.checkpoint()``, which is what a zero sleep is).
Memory is the peak traced by ``tracemalloc`` while all tasks are alive.  Each
ratio is the median of the rounds' own ratios (workflows against the bare tasks
timed just before them), so the machine's drift reaches both sides alike.
Target (issue 18): workflows <= 1.3x the bare tasks, in time and memory.

    python benchmarks/bench_concurrency.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import tracemalloc
from typing import Any

import anyio
import anyio.lowlevel

from _report import Summary, median_ratio
from awaitly_anyio import Deps, WorkflowContext, create_workflow

TARGET = 1.3


async def work(n: int) -> int:
    return n


async def bare(count: int) -> None:
    async def one(n: int) -> None:
        await work(n)
        await anyio.lowlevel.checkpoint()
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
        await ctx.step("b", lambda: work(n), key="b")
        return await ctx.step("c", lambda: work(n))

    async def one(n: int) -> None:
        result = await workflow.run(body, input=n)
        assert result.ok

    async with anyio.create_task_group() as tg:
        for n in range(count):
            tg.start_soon(one, n)


async def measure(count: int, rounds: int) -> dict[str, dict[str, float]]:
    """Median seconds and peak traced memory (MiB) for each side on this backend."""
    sides = {"bare anyio tasks": bare, "awaitly workflows": workflows}
    times: dict[str, list[float]] = {name: [] for name in sides}
    memory: dict[str, list[float]] = {name: [] for name in sides}
    for fn in sides.values():
        await fn(min(count, 500))  # warm-up
    for _ in range(rounds):
        for name, fn in sides.items():
            gc.collect()
            started = time.perf_counter()
            await fn(count)
            times[name].append(time.perf_counter() - started)
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=str)
    args = parser.parse_args()
    count, rounds = (2_000, 2) if args.quick else (10_000, 5)
    report: dict[str, Any] = {}
    summary = Summary()
    for backend in ("asyncio", "trio"):
        figures = anyio.run(measure, count, rounds, backend=backend)
        ratios = figures.pop("ratios")
        report[backend] = {"figures": figures, "ratios": ratios}
        for what, ratio in ratios.items():
            summary.add(f"{count} workflows / bare tasks ({what})", backend, ratio, target=TARGET)
        print(f"\n{backend}: {count} concurrent, {rounds} rounds")
        for name, f in figures.items():
            print(
                f"  {name:20s} {f['median_s'] * 1000:8.1f} ms"
                f" (min {f['min_s'] * 1000:.1f}, max {f['max_s'] * 1000:.1f})"
                f"  peak {f['peak_mib']:7.1f} MiB"
            )
        for what, ratio in ratios.items():
            verdict = "PASS" if ratio <= TARGET else "MISS"
            print(
                f"  {what:6s} workflows / bare tasks: {ratio:.2f}x (target <= {TARGET}) {verdict}"
            )
    report["summary"] = summary.rows
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
