"""The benchmark bodies of ``bench_regression``, run in a child process against one tree.

    python benchmarks/_regression_child.py --src TREE/src --bench plain --backend trio \
        --n 20000 --reps 3 --tag TAG

The same file drives the old tree and the new one, so both run exactly the same
bodies; they reach the library through its public API only (``create_workflow``,
``open_store``, ``ctx.step``), since internal module names differ between the trees.
``--src`` goes first on ``sys.path`` *before* ``awaitly_anyio`` is imported (the venv's
editable install points at the main checkout, and would win otherwise), and the
file actually imported is reported back so the parent can check it.

Prints one JSON object on stdout: ``{"file", "seconds_per_op": [...], "n"}``; each
element of ``seconds_per_op`` is one timed repetition of ``n`` operations (steps,
or keyed steps of a durable run), after a warm-up.  Whatever the body wrote to
PostgreSQL (its own schema) or Redis (its own key prefix) is removed before exit,
through the drivers directly, on a fresh asyncio loop.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

PG_DSN = os.environ.get("AWAITLY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("AWAITLY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

BENCHES = ("plain", "timeout", "sqlite", "postgres", "redis")


def schema_name(tag: str) -> str:
    """The PostgreSQL schema a child with ``tag`` writes into."""
    return f"awaitly_regress_{tag}"


def key_prefix(tag: str) -> str:
    """The Redis key prefix a child with ``tag`` writes under."""
    return f"awaitly-regress-{tag}:"


async def _value() -> int:
    return 1


async def steps(kind: str, n: int, reps: int) -> list[float]:
    """Seconds per step of ``n`` plain (or ``timeout=10``) steps in one workflow run."""
    from awaitly_anyio import create_workflow

    workflow: Any = create_workflow("bench")

    async def run_once(count: int) -> float:
        elapsed = 0.0

        # Literal keywords, as user code calls a step (a **splat would add a dict).
        async def body(ctx: Any) -> None:
            nonlocal elapsed
            step = ctx.step
            started = time.perf_counter()
            if kind == "timeout":
                for _ in range(count):
                    await step("s", _value, timeout=10.0)
            else:
                for _ in range(count):
                    await step("s", _value)
            elapsed = time.perf_counter() - started

        result = await workflow.run(body)
        assert result.ok, result
        return elapsed

    await run_once(max(n // 10, 100))  # warm-up
    found: list[float] = []
    for _ in range(reps):
        gc.collect()
        found.append(await run_once(n) / n)
    return found


def _open(bench: str, tag: str, directory: Path) -> Any:
    from awaitly_anyio import open_store

    if bench == "sqlite":
        return open_store(f"sqlite:///{directory / 'regress.db'}", synchronous="FULL")
    if bench == "postgres":
        return open_store(PG_DSN, schema=schema_name(tag))
    return open_store(REDIS_URL, prefix=key_prefix(tag))


async def checkpoints(bench: str, n: int, reps: int, tag: str, directory: Path) -> list[float]:
    """Seconds per keyed step of a durable run of ``n`` keyed steps (claim, ``n``
    checkpoints and the finish, divided by ``n``), each run a new workflow id."""
    from awaitly_anyio import create_workflow

    workflow: Any = create_workflow("bench")

    def keyed(count: int) -> Callable[[Any], Awaitable[None]]:
        async def body(ctx: Any) -> None:
            for i in range(count):
                await ctx.step("s", lambda i=i: i, key=f"k{i}")

        return body

    found: list[float] = []
    async with _open(bench, tag, directory) as store:
        # Warm-up: connections (the pool's too), prepared statements, scripts, tables.
        for i in range(10):
            warm = await workflow.run(keyed(1), workflow_id=f"warm-{i}", store=store)
            assert warm.ok, warm
        warm = await workflow.run(keyed(10), workflow_id="warm-keyed", store=store)
        assert warm.ok, warm
        for rep in range(reps):
            gc.collect()
            started = time.perf_counter()
            result = await workflow.run(keyed(n), workflow_id=f"run-{rep}", store=store)
            elapsed = time.perf_counter() - started
            assert result.ok, result
            found.append(elapsed / n)
    return found


async def drop_postgres(tag: str) -> None:
    """Drop this child's schema on its own connection (asyncio only: asyncpg)."""
    asyncpg: Any = importlib.import_module("asyncpg")

    connection = await asyncpg.connect(PG_DSN)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema_name(tag)}" CASCADE')
    finally:
        await connection.close()


async def drop_redis(tag: str) -> None:
    """Delete this child's keys on its own client (asyncio only: redis.asyncio)."""
    redis_asyncio: Any = importlib.import_module("redis.asyncio")
    client: Any = redis_asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(f"{key_prefix(tag)}*", count=1000)]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
    finally:
        await client.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(
        description="The benchmark bodies of bench_regression, against one tree."
    )
    parser.add_argument("--src", required=True, type=Path, help="the tree's src/ directory")
    parser.add_argument("--bench", required=True, choices=BENCHES)
    parser.add_argument("--backend", required=True, choices=("asyncio", "trio"))
    parser.add_argument("--n", required=True, type=int)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tag", default=f"p{os.getpid()}")
    args = parser.parse_args()

    src = str(args.src.resolve())
    # First on sys.path, before the first import of the package (PYTHONPATH says the
    # same; this holds even if the caller forgot it).
    sys.path.insert(0, src)
    import anyio

    import awaitly_anyio

    try:
        with tempfile.TemporaryDirectory(prefix="awaitly-regress-") as tmp:
            if args.bench in ("plain", "timeout"):
                found = anyio.run(steps, args.bench, args.n, args.reps, backend=args.backend)
            else:
                found = anyio.run(
                    checkpoints,
                    args.bench,
                    args.n,
                    args.reps,
                    args.tag,
                    Path(tmp),
                    backend=args.backend,
                )
    finally:
        if args.bench == "postgres":
            asyncio.run(drop_postgres(args.tag))
        elif args.bench == "redis":
            asyncio.run(drop_redis(args.tag))
    report = {"file": awaitly_anyio.__file__, "n": args.n, "seconds_per_op": found}
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
