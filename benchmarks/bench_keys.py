"""What every-step checkpointing and compensation cost a durable run's step (issue 21).

    python benchmarks/bench_keys.py [--quick] [--json PATH] [--postgres]

Three kinds of durable run, each of ``steps`` sequential steps on one store, timed in
the same process, round after round in a rotating order (so the machine's drift
reaches each alike); the verdict is on the median of the rounds' own ratios:

- **unkeyed / keyed**: a step given no key (checkpointed under an automatic key) against
  the same step given ``key=``.  Target <= 1.05x.
- **compensated / keyed**: a keyed step with ``compensate=`` registered and never
  needed (the run succeeds) against the plain keyed step.  Target <= 1.1x.

On SQLite (``synchronous=NORMAL``) on both backends, and with ``--postgres`` on
PostgreSQL too (``AWAITLY_TEST_POSTGRES_DSN``, a schema of its own, dropped after).
The non-durable plain step's regression against the commit before issue 21 is
``python -m benchmarks.bench_regression --base 5b81981 --only plain timeout``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

try:
    from ._report import Summary, bench_parser, finish, median_ratio
except ImportError:  # run as a file, as __main__ does
    from _report import Summary, bench_parser, finish, median_ratio  # type: ignore[no-redef,import-not-found]

from awaitly_anyio import Deps, WorkflowContext, create_workflow
from awaitly_anyio.stores import open_store

PG_DSN = os.environ.get("AWAITLY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
TARGETS = {"unkeyed / keyed": 1.05, "compensated / keyed": 1.1}
KINDS = ("keyed", "unkeyed", "compensated")

Body = Callable[[WorkflowContext[Deps]], Awaitable[None]]


def bodies(steps: int) -> dict[str, Body]:
    def undo(_: object) -> None:
        raise AssertionError("never needed: the run succeeds")

    async def keyed(ctx: WorkflowContext[Deps]) -> None:
        for n in range(steps):
            await ctx.step("s", lambda n=n: n, key=f"k{n}")

    async def unkeyed(ctx: WorkflowContext[Deps]) -> None:
        for n in range(steps):
            await ctx.step("s", lambda n=n: n)

    async def compensated(ctx: WorkflowContext[Deps]) -> None:
        for n in range(steps):
            await ctx.step("s", lambda n=n: n, key=f"k{n}", compensate=undo)

    return {"keyed": keyed, "unkeyed": unkeyed, "compensated": compensated}


@asynccontextmanager
async def store_for(kind: str, directory: Path) -> AsyncIterator[Any]:
    if kind == "sqlite":
        async with open_store(f"sqlite:///{directory / 'keys.db'}", synchronous="NORMAL") as store:
            yield store
        return
    schema = f"awaitly_bench_keys_{uuid.uuid4().hex[:8]}"
    async with open_store(PG_DSN, schema=schema) as store:
        try:
            yield store
        finally:

            async def drop(connection: Any) -> None:
                await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

            await store._call(drop)


async def measure(kind: str, directory: Path, rounds: int, steps: int) -> dict[str, list[float]]:
    """Seconds per step of each kind of run, one sample per round."""
    workflow = create_workflow("bench")
    runs = bodies(steps)
    samples: dict[str, list[float]] = {name: [] for name in KINDS}
    async with store_for(kind, directory) as store:
        for warm in range(3):
            for name, body in runs.items():
                assert (await workflow.run(body, workflow_id=f"warm-{name}-{warm}", store=store)).ok
        for round_ in range(rounds):
            order = KINDS[round_ % 3 :] + KINDS[: round_ % 3]
            for name in order:
                started = time.perf_counter()
                result = await workflow.run(runs[name], workflow_id=f"{name}-{round_}", store=store)
                elapsed = time.perf_counter() - started
                assert result.ok, result
                samples[name].append(elapsed / steps)
    return samples


def main() -> int:
    parser = bench_parser(__doc__, "a few seconds")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL as well")
    args = parser.parse_args()
    rounds, steps = (5, 100) if args.quick else (15, 300)
    summary = Summary()
    report: dict[str, Any] = {"targets": TARGETS, "stores": {}}
    stores = ["sqlite", "postgres"] if args.postgres else ["sqlite"]
    for kind in stores:
        for backend in ("asyncio", "trio"):
            with tempfile.TemporaryDirectory() as tmp:
                samples = anyio.run(measure, kind, Path(tmp), rounds, steps, backend=backend)
            medians = {name: sorted(v)[len(v) // 2] * 1e6 for name, v in samples.items()}
            ratios = {
                "unkeyed / keyed": median_ratio(samples["unkeyed"], samples["keyed"]),
                "compensated / keyed": median_ratio(samples["compensated"], samples["keyed"]),
            }
            report["stores"].setdefault(kind, {})[backend] = {
                "us_per_step": medians,
                "ratios": ratios,
            }
            print(f"\n{kind}, {backend} ({steps} steps x {rounds} rounds)")
            for name in KINDS:
                print(f"  {name:12s} {medians[name]:8.1f} us/step")
            for name, ratio in ratios.items():
                verdict = summary.add(f"{kind}: {name}", backend, ratio, target=TARGETS[name])
                print(f"  {name:20s} {ratio:.3f}x  (target <= {TARGETS[name]}x) {verdict}")
    return finish(report, summary, args.json, failed=summary.missed)


if __name__ == "__main__":
    sys.exit(main())
