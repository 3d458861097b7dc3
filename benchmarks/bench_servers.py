"""Durable runs on PostgreSQL and Redis against the raw driver writes they stand on.

For each store and each backend, in one process, in rounds that alternate the
backends (each round a fresh store and raw table, warmed up first):

- checkpoint cost per keyed step (a durable run of N keyed steps, per step)
  against one raw write of a new key: an asyncpg upsert (autocommit) or a
  redis ``SET``;
- 1-step durable workflows per second against raw writes per second;
- 100 concurrent durable workflows: their aggregate checkpoint rate;
- the trio path (through the hosted asyncio loop) against the asyncio path.

Ratios are taken within each round, ours against the raw writes timed just before
(and trio against the asyncio round just before), and their median is reported:
this machine's speed drifts by tens of percent over a minute, and a ratio of two
medians taken minutes apart carried that drift into the result.

Targets: checkpoint <= 1.3x the raw write; 1-step workflows/s >= 1/3 of raw
writes/s; trio <= 1.5x asyncio.  With ``dbos`` installed, DBOS runs the same
one-step workflow on the same PostgreSQL and is printed beside ours.  Raw
writes take the same execution path as the store (direct on asyncio, through the
hosted asyncio loop on trio).

    python benchmarks/bench_servers.py [--quick] [--json PATH] [--only postgres|redis]
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

import bench_dbos
from _report import Summary, bench_parser, finish, median_ratio, medians
from awaitly_anyio import Deps, WorkflowContext, create_workflow, open_store
from awaitly_anyio._bridge import DriverLoop

PG_DSN = os.environ.get("AWAITLY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("AWAITLY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CHECKPOINT_TARGET, WORKFLOWS_TARGET, TRIO_TARGET = 1.3, 1 / 3, 1.5


class RawPostgres:
    """One asyncpg connection doing autocommit upserts, on the store's execution path."""

    def __init__(self) -> None:
        self.loop = DriverLoop("raw asyncpg")
        self.connection: Any = None

    async def open(self) -> None:
        async def connect() -> None:
            import asyncpg

            self.connection = await asyncpg.connect(PG_DSN)
            await self.connection.execute(
                "CREATE TABLE IF NOT EXISTS awaitly_bench_raw (k text PRIMARY KEY, v jsonb)"
            )

        await self.loop.call(connect)

    async def write(self, key: str) -> None:
        await self.loop.call(
            self.connection.execute,
            "INSERT INTO awaitly_bench_raw VALUES ($1, $2::jsonb)"
            " ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            key,
            '{"ok":true,"value":1,"attempts":1}',
        )

    async def close(self) -> None:
        async def close() -> None:
            await self.connection.execute("DROP TABLE IF EXISTS awaitly_bench_raw")
            await self.connection.close()

        await self.loop.call(close)
        self.loop.release()


class RawRedis:
    """One redis.asyncio client doing SETs, on the store's execution path."""

    def __init__(self) -> None:
        self.loop = DriverLoop("raw redis")
        self.client: Any = None

    async def open(self) -> None:
        async def connect() -> None:
            import redis.asyncio

            self.client = redis.asyncio.Redis.from_url(REDIS_URL)
            await self.client.ping()

        await self.loop.call(connect)

    async def write(self, key: str) -> None:
        await self.loop.call(
            self.client.set, f"awaitly-bench-raw:{key}", '{"ok":true,"value":1}', 600
        )

    async def close(self) -> None:
        async def close() -> None:
            keys = [k async for k in self.client.scan_iter("awaitly-bench-raw:*")]
            if keys:
                await self.client.delete(*keys)
            await self.client.aclose()

        await self.loop.call(close)
        self.loop.release()


async def timed(fn: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await fn()
    return time.perf_counter() - started


async def one_round(kind: str, steps: int, flows: int) -> dict[str, float]:
    """One round on the current backend, each of ours right after the raw writes it is
    compared with: a fresh store and raw table, warmed up, then every figure once."""
    tag = uuid.uuid4().hex[:8]
    if kind == "postgres":
        raw: RawPostgres | RawRedis = RawPostgres()
        store_cm = open_store(PG_DSN, schema=f"awaitly_bench_{tag}")
    else:
        raw = RawRedis()
        store_cm = open_store(REDIS_URL, prefix=f"awaitly-bench-{tag}:")
    workflow = create_workflow("bench")

    async def keyed(ctx: WorkflowContext[Deps]) -> None:
        for n in range(steps):
            await ctx.step("s", lambda n=n: n, key=f"k{n}")

    async def one_step(ctx: WorkflowContext[Deps]) -> int:
        return await ctx.step("s", lambda: 1, key="k")

    figures: dict[str, float] = {}
    await raw.open()
    try:
        async with store_cm as store:

            async def warm(n: int) -> None:
                assert (await workflow.run(one_step, workflow_id=f"warm-{n}", store=store)).ok

            # Warm-up: connections (the pool's too), prepared statements, scripts.
            for n in range(10):
                await raw.write(f"{tag}-warm-{n}")
                await warm(n)
            async with anyio.create_task_group() as tg:
                for n in range(10, 60):
                    tg.start_soon(warm, n)

            async def raw_writes() -> None:
                # A new key each time, as each checkpoint is a new step record
                # (rewriting one row would be PostgreSQL's cheaper in-place update).
                for n in range(steps):
                    await raw.write(f"{tag}-{n}")

            elapsed = await timed(raw_writes)
            figures["raw write us"] = elapsed / steps * 1e6
            figures["raw writes/s"] = steps / elapsed

            async def keyed_run() -> None:
                assert (await workflow.run(keyed, workflow_id=f"keyed-{tag}", store=store)).ok

            figures["checkpoint us"] = await timed(keyed_run) / steps * 1e6

            async def one_step_runs() -> None:
                for n in range(flows):
                    result = await workflow.run(one_step, workflow_id=f"one-{n}", store=store)
                    assert result.ok

            figures["1-step workflows/s"] = flows / await timed(one_step_runs)

            async def concurrent() -> None:
                async def one(n: int) -> None:
                    result = await workflow.run(keyed, workflow_id=f"many-{n}", store=store)
                    assert result.ok

                async with anyio.create_task_group() as tg:
                    for n in range(100):
                        tg.start_soon(one, n)

            figures["100 concurrent checkpoints/s"] = 100 * steps / await timed(concurrent)
            await _drop(kind, store, tag)
    finally:
        await raw.close()
    return figures


def measure(kind: str, rounds: int, steps: int, flows: int) -> dict[str, dict[str, Any]]:
    """Every figure on both backends, in rounds that alternate the backends, so slow
    drift in the machine's speed reaches both alike.  Ratios are taken within each
    round (ours against the raw writes just before, trio against the asyncio round
    just before) and their median reported beside the medians of the figures."""
    samples: dict[str, list[dict[str, float]]] = {"asyncio": [], "trio": []}
    for _ in range(rounds):
        for backend, runs in samples.items():
            runs.append(anyio.run(one_round, kind, steps, flows, backend=backend))
    report: dict[str, dict[str, Any]] = {}
    for backend, runs in samples.items():
        raw = [r["raw write us"] for r in runs]
        raw_rate = [r["raw writes/s"] for r in runs]
        figures: dict[str, Any] = medians(runs)
        figures["ratios"] = {
            "checkpoint / raw write": median_ratio((r["checkpoint us"] for r in runs), raw),
            "1-step workflows/s / raw writes/s": median_ratio(
                (r["1-step workflows/s"] for r in runs), raw_rate
            ),
            "100 concurrent checkpoints/s / sequential raw writes/s": median_ratio(
                (r["100 concurrent checkpoints/s"] for r in runs), raw_rate
            ),
        }
        report[backend] = figures
    report["trio"]["ratios"]["checkpoint, trio / asyncio"] = median_ratio(
        (r["checkpoint us"] for r in samples["trio"]),
        (r["checkpoint us"] for r in samples["asyncio"]),
    )
    return report


async def _drop(kind: str, store: Any, tag: str) -> None:
    """Remove what the benchmark wrote."""
    if kind == "postgres":

        async def drop(connection: Any) -> None:
            await connection.execute(f'DROP SCHEMA IF EXISTS "awaitly_bench_{tag}" CASCADE')

        await store._call(drop)
    else:
        cursor: str | None = None
        while True:
            page = await store.list(limit=1000, cursor=cursor)
            for info in page:
                await store.delete(info.id)
            cursor = page.next_cursor
            if cursor is None:
                return


def dbos_beside(flows: int, rounds: int) -> dict[str, Any] | None:
    """DBOS running the same one-step workflow on the same PostgreSQL, timed in
    interleaved rounds with ours (asyncio: DBOS has no trio support); ``None`` and a
    note when DBOS is not installed."""
    reason = bench_dbos.dbos_missing()
    if reason is not None:
        print(f"\nDBOS skipped: {reason}")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        figures = asyncio.run(bench_dbos.compare("postgres", Path(tmp), flows, rounds, None, 1))
    if "dbos_skipped" in figures:
        print(f"\nDBOS skipped: {figures['dbos_skipped']}")
        return figures
    ours, theirs = figures["awaitly"]["median_s"], figures["DBOS"]["median_s"]
    print(
        f"\nbeside DBOS, the same 1-step workflow on the same PostgreSQL (asyncio):"
        f" ours {1 / ours:.0f}/s, DBOS {1 / theirs:.0f}/s: ours takes {ours / theirs:.2f}x"
        " the time"
    )
    return figures


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--only", choices=("postgres", "redis"))
    args = parser.parse_args()
    rounds, steps, flows = (2, 30, 30) if args.quick else (9, 100, 100)
    kinds = [args.only] if args.only else ["postgres", "redis"]
    report: dict[str, Any] = {}
    summary = Summary()
    missed = False
    for kind in kinds:
        if kind == "redis":
            try:
                import awaitly_anyio.stores.redis  # noqa: F401
            except ImportError as exc:
                print(f"\n{kind}: skipped ({exc})")
                continue
        per_backend = measure(kind, rounds, steps, flows)
        report[kind] = per_backend
        print(f"\n{kind} ({steps} keyed steps, {flows} one-step runs, {rounds} rounds)")
        for backend in ("asyncio", "trio"):
            f = per_backend[backend]
            ratios = f["ratios"]
            checkpoint = ratios["checkpoint / raw write"]
            flows_ratio = ratios["1-step workflows/s / raw writes/s"]
            concurrent = ratios["100 concurrent checkpoints/s / sequential raw writes/s"]
            print(
                f"  {backend:8s} raw write {f['raw write us']:7.1f} us | checkpoint"
                f" {f['checkpoint us']:7.1f} us = {checkpoint:.2f}x (<= {CHECKPOINT_TARGET})"
                f" | 1-step {f['1-step workflows/s']:7.0f}/s = {flows_ratio:.2f} of raw"
                f" {f['raw writes/s']:.0f}/s (>= {WORKFLOWS_TARGET:.2f})"
                f" | 100 concurrent: {f['100 concurrent checkpoints/s']:.0f} checkpoints/s"
            )
            missed |= checkpoint > CHECKPOINT_TARGET or flows_ratio < WORKFLOWS_TARGET
            summary.add(
                f"{kind} checkpoint / raw write", backend, checkpoint, target=CHECKPOINT_TARGET
            )
            summary.add(
                f"{kind} 1-step workflows/s / raw writes/s",
                backend,
                flows_ratio,
                target=WORKFLOWS_TARGET,
                op=">=",
            )
            summary.add(
                f"{kind} 100 concurrent checkpoints/s / sequential raw writes/s",
                backend,
                concurrent,
                target=2.0 if kind == "postgres" else None,
                op=">=",
            )
        trio_ratio = per_backend["trio"]["ratios"]["checkpoint, trio / asyncio"]
        missed |= trio_ratio > TRIO_TARGET
        summary.add(f"{kind} checkpoint, trio / asyncio", "trio", trio_ratio, target=TRIO_TARGET)
        print(f"  trio / asyncio checkpoint: {trio_ratio:.2f}x (<= {TRIO_TARGET})")
    if "postgres" in kinds:
        dbos = dbos_beside(flows, rounds)
        if dbos is not None:
            report["dbos"] = dbos
            if "ratio" in dbos:
                summary.add(
                    "postgres 1-step workflow vs DBOS", "asyncio", dbos["ratio"], target=1.0
                )
    return finish(report, summary, args.json, failed=missed)


if __name__ == "__main__":
    sys.exit(main())
