"""What registering a compensation costs a step whose run never fails: a keyed step with
``compensate=`` against the same keyed step without, in a durable run on SQLite.

Both sides run the same body (``steps`` keyed steps) in the same process, rounds
interleaved, on asyncio and trio; the ratio is the median of the rounds' own ratios.
Target (issue 21): <= 1.1x.  A plain run's (no store) step is measured the same way,
for information (no target: there a step costs a few microseconds and the
compensation's registration is a visible part of it).

    python benchmarks/bench_saga.py [--quick] [--json PATH] [--synchronous FULL|NORMAL]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from _report import Summary, bench_parser, finish, median_ratio
from awaitly_anyio import Deps, WorkflowContext, create_workflow
from awaitly_anyio.stores.sqlite import SQLiteStore

TARGET = 1.1


def _undo(value: int) -> None:
    raise AssertionError("never called: the run succeeds")


def _body(steps: int, compensate: Callable[[int], None] | None) -> Any:
    async def body(ctx: WorkflowContext[Deps]) -> None:
        for n in range(steps):
            if compensate is None:
                await ctx.step("s", lambda n=n: n, key=f"k{n}")
            else:
                await ctx.step("s", lambda n=n: n, key=f"k{n}", compensate=compensate)

    return body


async def durable(store: SQLiteStore, steps: int, run: str, compensate: Any) -> float:
    """Seconds per keyed step of one durable run."""
    workflow = create_workflow("bench")
    body = _body(steps, compensate)
    started = time.perf_counter()
    result = await workflow.run(body, workflow_id=run, store=store)
    elapsed = time.perf_counter() - started
    assert result.ok, result
    return elapsed / steps


async def plain(steps: int, compensate: Any, repeat: int) -> float:
    """Seconds per step of runs without a store."""
    workflow = create_workflow("bench")
    body = _body(steps, compensate)
    started = time.perf_counter()
    for _ in range(repeat):
        result = await workflow.run(body)
        assert result.ok, result
    return (time.perf_counter() - started) / (steps * repeat)


async def measure(directory: Path, rounds: int, steps: int, synchronous: str) -> dict[str, Any]:
    keyed: list[float] = []
    compensated: list[float] = []
    plain_keyed: list[float] = []
    plain_compensated: list[float] = []
    async with SQLiteStore(directory / "bench.db", synchronous=synchronous) as store:
        await durable(store, 10, "warm-a", None)
        await durable(store, 10, "warm-b", _undo)
        for run in range(rounds):
            # Alternate which side goes first, so neither always meets a warmer cache.
            if run % 2:
                compensated.append(await durable(store, steps, f"c-{run}", _undo))
                keyed.append(await durable(store, steps, f"k-{run}", None))
            else:
                keyed.append(await durable(store, steps, f"k-{run}", None))
                compensated.append(await durable(store, steps, f"c-{run}", _undo))
            plain_keyed.append(await plain(steps, None, 20))
            plain_compensated.append(await plain(steps, _undo, 20))
    return {
        "durable keyed step": statistics.median(keyed) * 1e6,
        "durable keyed step + compensate": statistics.median(compensated) * 1e6,
        "durable ratio": median_ratio(compensated, keyed),
        "plain keyed step": statistics.median(plain_keyed) * 1e6,
        "plain keyed step + compensate": statistics.median(plain_compensated) * 1e6,
        "plain ratio": median_ratio(plain_compensated, plain_keyed),
    }


def main() -> int:
    parser = bench_parser(__doc__, "a few seconds instead of a minute")
    parser.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="NORMAL")
    args = parser.parse_args()
    rounds, steps = (5, 50) if args.quick else (15, 200)
    report: dict[str, Any] = {"target": TARGET, "synchronous": args.synchronous, "backends": {}}
    summary = Summary()
    for backend in ("asyncio", "trio"):
        with tempfile.TemporaryDirectory() as tmp:
            figures = anyio.run(
                measure, Path(tmp), rounds, steps, args.synchronous, backend=backend
            )
        report["backends"][backend] = figures
        ratio = figures["durable ratio"]
        verdict = summary.add(
            f"keyed step + unused compensate / keyed step (SQLite {args.synchronous})",
            backend,
            ratio,
            target=TARGET,
        )
        summary.add("plain step + unused compensate / plain step", backend, figures["plain ratio"])
        print(f"\n{backend} (SQLite synchronous={args.synchronous}, {steps} steps x {rounds})")
        for name in (
            "durable keyed step",
            "durable keyed step + compensate",
            "plain keyed step",
            "plain keyed step + compensate",
        ):
            print(f"  {name:34s} {figures[name]:9.2f} us/step")
        print(f"  durable: compensate / plain keyed: {ratio:.3f}x  (target <= {TARGET}x) {verdict}")
        print(f"  plain:   compensate / plain keyed: {figures['plain ratio']:.3f}x  (no target)")
    return finish(report, summary, args.json, failed=summary.missed)


if __name__ == "__main__":
    sys.exit(main())
