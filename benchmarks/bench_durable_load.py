"""A mixed durable load on PostgreSQL: many concurrent workflows with retries and timeouts.

Each of ``--workflows`` (100) durable runs has eight keyed steps: plain ones, a
``step.retry`` whose first attempt fails, and a ``step.with_timeout``; every
completed step is checkpointed (on disk when the step returns).  Their aggregate
checkpoint rate is compared with sequential raw asyncpg autocommit writes on the
same server, in the same process and interleaved rounds, on asyncio and trio,
after a warm-up of both (connections, prepared statements, the store's schema).
The ratio is the median of the rounds' own ratios, each round's runs against the
raw writes timed just before them, as in the other benchmarks.
Target: >= 2x the raw sequential rate (the store groups commits across runs).

    python benchmarks/bench_durable_load.py [--quick] [--json PATH]
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from typing import Any

import anyio
import anyio.lowlevel

from _report import Summary, bench_parser, finish, median_ratio
from awaitly_anyio import Deps, Err, Ok, Result, WorkflowContext, create_workflow, open_store
from bench_servers import PG_DSN, RawPostgres

TARGET = 2.0
STEPS = 8  # checkpoints per run: 6 plain, 1 retried, 1 with a timeout


async def measure(workflows: int, rounds: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    workflow = create_workflow("load")
    failed_once: set[str] = set()

    def flaky(run_id: str) -> Result[str, str]:
        if run_id not in failed_once:  # the first attempt fails, the retry succeeds
            failed_once.add(run_id)
            return Err("TEMPORARILY_UNAVAILABLE")
        return Ok("charged")

    async def slow_enough(n: int) -> int:
        await anyio.lowlevel.checkpoint()
        return n

    async def body(ctx: WorkflowContext[Deps]) -> int:
        total = 0
        for n in range(3):
            total += await ctx.step("fetch", lambda n=n: n, key=f"fetch-{n}")
        await ctx.step.retry(
            "charge", lambda: flaky(ctx.workflow_id), attempts=3, delay=0, key="charge"
        )
        total += await ctx.step.with_timeout(
            "reserve", lambda: slow_enough(total), seconds=5, key="reserve"
        )
        for n in range(3):
            total += await ctx.step("notify", lambda n=n: n, key=f"notify-{n}")
        return total

    samples: dict[str, list[float]] = {"raw writes/s": [], "checkpoints/s": []}
    raw = RawPostgres()
    await raw.open()
    try:
        async with open_store(PG_DSN, schema=f"awaitly_bench_{tag}") as store:
            # Round -1 is the warm-up, and is not kept.
            for run in range(-1, rounds):
                writes = workflows * STEPS // 4  # enough to be steady, not to dominate
                started = time.perf_counter()
                for n in range(writes):
                    await raw.write(f"{tag}-{run}-{n}")
                raw_rate = writes / (time.perf_counter() - started)

                async def one(n: int, run: int = run) -> None:
                    result = await workflow.run(body, workflow_id=f"{tag}-{run}-{n}", store=store)
                    assert result.ok, result

                started = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for n in range(workflows):
                        tg.start_soon(one, n)
                elapsed = time.perf_counter() - started
                if run >= 0:
                    samples["raw writes/s"].append(raw_rate)
                    samples["checkpoints/s"].append(workflows * STEPS / elapsed)

            async def drop(connection: Any) -> None:
                await connection.execute(f'DROP SCHEMA IF EXISTS "awaitly_bench_{tag}" CASCADE')

            await store._call(drop)
    finally:
        await raw.close()
    figures: dict[str, Any] = {
        name: {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
        }
        for name, values in samples.items()
    }
    figures["ratio"] = median_ratio(samples["checkpoints/s"], samples["raw writes/s"])
    return figures


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--workflows", type=int, default=100)
    args = parser.parse_args()
    rounds = 3 if args.quick else 21
    report: dict[str, Any] = {}
    summary = Summary()
    for backend in ("asyncio", "trio"):
        try:
            figures = anyio.run(measure, args.workflows, rounds, backend=backend)
        except OSError as exc:
            print(f"PostgreSQL is not reachable at {PG_DSN}: skipped ({exc})")
            return 0
        ratio = figures.pop("ratio")
        report[backend] = {"figures": figures, "ratio": ratio}
        mark = summary.add(
            f"postgres mixed load, {args.workflows} concurrent: checkpoints/s / raw writes/s",
            backend,
            ratio,
            target=TARGET,
            op=">=",
        )
        print(f"\n{backend}: {args.workflows} concurrent durable workflows x {STEPS} steps")
        for name, f in figures.items():
            print(f"  {name:14s} {f['median']:8.0f}/s (min {f['min']:.0f}, max {f['max']:.0f})")
        print(f"  aggregate checkpoint rate / sequential raw: {ratio:.2f}x (>= {TARGET}) {mark}")
    return finish(report, summary, args.json, failed=False)


if __name__ == "__main__":
    sys.exit(main())
