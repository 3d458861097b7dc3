"""Checkpoint cost per keyed step on SQLite, against one raw sqlite3 insert + commit.

Both sides take the same execution path: the write runs in a worker thread
(``anyio.to_thread.run_sync``) on a WAL database with the same ``synchronous``
setting, one transaction per step.  Rounds are interleaved and both backends
run in the same process.  Target: ours <= 1.5x raw.

    python benchmarks/bench_checkpoint.py [--quick] [--json PATH] [--synchronous FULL|NORMAL]
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from _report import Summary, bench_parser, finish
from awaitly_anyio import Deps, WorkflowContext, create_workflow
from awaitly_anyio.stores.sqlite import SQLiteStore

TARGET = 1.5


async def ours(store: SQLiteStore, steps: int, run: int) -> float:
    """Seconds per keyed step of one durable run with ``steps`` keyed steps."""
    workflow = create_workflow("bench")

    async def body(ctx: WorkflowContext[Deps]) -> None:
        for n in range(steps):
            await ctx.step("s", lambda n=n: n, key=f"k{n}")

    started = time.perf_counter()
    result = await workflow.run(body, workflow_id=f"bench-{run}", store=store)
    elapsed = time.perf_counter() - started
    assert result.ok, result
    return elapsed / steps


def _raw_connection(path: Path, synchronous: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute(
        "CREATE TABLE IF NOT EXISTS steps (run_id TEXT, key TEXT, record TEXT, "
        "PRIMARY KEY (run_id, key))"
    )
    return connection


async def raw(connection: sqlite3.Connection, steps: int, run: int) -> float:
    """Seconds per raw insert + commit, each in a worker thread."""
    record = '{"ok":true,"value":1,"attempts":1}'

    def write(key: str) -> None:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            "INSERT OR REPLACE INTO steps VALUES (?, ?, ?)", (f"raw-{run}", key, record)
        )
        connection.execute("COMMIT")

    started = time.perf_counter()
    for n in range(steps):
        await anyio.to_thread.run_sync(write, f"k{n}")
    return (time.perf_counter() - started) / steps


async def measure(directory: Path, rounds: int, steps: int, synchronous: str) -> dict[str, Any]:
    connection = _raw_connection(directory / "raw.db", synchronous)
    samples: dict[str, list[float]] = {"raw sqlite3 insert+commit": [], "awaitly keyed step": []}
    async with SQLiteStore(directory / "ours.db", synchronous=synchronous) as store:
        await ours(store, 10, -1)
        await raw(connection, 10, -1)
        for run in range(rounds):
            samples["raw sqlite3 insert+commit"].append(await raw(connection, steps, run))
            samples["awaitly keyed step"].append(await ours(store, steps, run))
    connection.close()
    return {
        name: {
            "median_us": statistics.median(values) * 1e6,
            "min_us": min(values) * 1e6,
            "max_us": max(values) * 1e6,
        }
        for name, values in samples.items()
    }


def main() -> int:
    parser = bench_parser(__doc__, "a few seconds instead of a minute")
    parser.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    args = parser.parse_args()
    rounds, steps = (3, 50) if args.quick else (9, 200)
    report: dict[str, Any] = {"target": TARGET, "synchronous": args.synchronous, "backends": {}}
    summary = Summary()
    missed = False
    for backend in ("asyncio", "trio"):
        with tempfile.TemporaryDirectory() as tmp:
            figures = anyio.run(
                measure, Path(tmp), rounds, steps, args.synchronous, backend=backend
            )
        ratio = (
            figures["awaitly keyed step"]["median_us"]
            / figures["raw sqlite3 insert+commit"]["median_us"]
        )
        figures["ratio"] = ratio
        summary.add(
            f"SQLite checkpoint / raw sqlite3 write ({args.synchronous})",
            backend,
            ratio,
            target=TARGET,
        )
        report["backends"][backend] = figures
        print(f"\n{backend} (synchronous={args.synchronous}, {steps} steps x {rounds} rounds)")
        for name in ("raw sqlite3 insert+commit", "awaitly keyed step"):
            f = figures[name]
            print(
                f"  {name:28s} {f['median_us']:9.1f} us/step  "
                f"(min {f['min_us']:.1f}, max {f['max_us']:.1f})"
            )
        verdict = "PASS" if ratio <= TARGET else "MISS"
        missed |= ratio > TARGET
        print(f"  checkpoint / raw write: {ratio:.2f}x  (target <= {TARGET}x) {verdict}")
    try:
        import dbos  # noqa: F401
    except ImportError:
        print("\nDBOS is not installed: skipped (pip install dbos to compare)")
    return finish(report, summary, args.json, failed=missed)


if __name__ == "__main__":
    sys.exit(main())
