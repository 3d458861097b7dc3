"""The benchmark bodies of ``bench_regression``, run in a child process against one tree.

    python benchmarks/_regression_child.py --src TREE/src --bench plain --backend trio \
        --n 20000 [--reps 3 | --serve] --tag TAG

The same file drives the old tree and the new one, so both run exactly the same
bodies; they reach the library through its public API only (``create_workflow``,
``open_store``, ``ctx.step``), since internal module names differ between the trees.
``--src`` goes first on ``sys.path`` *before* ``awaitly_anyio`` is imported (the venv's
editable install also puts the main checkout's ``src/`` on ``sys.path``, after it), and
every message names the ``awaitly_anyio`` file actually imported, so the parent can
check it.

The child prepares its benchmark (a workflow; a store opened once for the checkpoint
benchmarks) and warms it up.  Then either it times ``--reps`` repetitions of ``--n``
operations (steps, or keyed steps of a durable run) and prints one JSON object,
``{"file", "n", "seconds_per_op": [...]}``; or, with ``--serve``, it prints
``{"file", "ready"}`` and then times one repetition per ``go`` line on stdin, answering
``{"file", "seconds_per_op", "cpu_per_op"}``, until ``stop`` or the end of stdin.
Whatever it wrote to PostgreSQL (its own schema) or Redis (its own key prefix) is
removed before it exits, through the drivers directly, on a fresh asyncio loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

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


#: One repetition of ``count`` operations: (wall-clock seconds, CPU seconds) per operation.
#: CPU time is the whole process's (every thread: the worker threads of SQLite, the
#: hosted asyncio loop), so being descheduled on a busy machine does not count.
Rep = Callable[[int], Awaitable[tuple[float, float]]]


async def steps(kind: str, stack: contextlib.AsyncExitStack) -> Rep:
    """One repetition: seconds per step of ``count`` plain (or ``timeout=10``) steps
    in one workflow run."""
    from awaitly_anyio import create_workflow

    workflow: Any = create_workflow("bench")

    async def rep(count: int) -> tuple[float, float]:
        elapsed = cpu = 0.0

        # Literal keywords, as user code calls a step (a **splat would add a dict).
        async def body(ctx: Any) -> None:
            nonlocal elapsed, cpu
            step = ctx.step
            cpu_started = time.process_time()
            started = time.perf_counter()
            if kind == "timeout":
                for _ in range(count):
                    await step("s", _value, timeout=10.0)
            else:
                for _ in range(count):
                    await step("s", _value)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started

        result = await workflow.run(body)
        assert result.ok, result
        return elapsed / count, cpu / count

    await rep(1_000)  # warm-up
    return rep


def _open(bench: str, tag: str, directory: Path) -> Any:
    from awaitly_anyio import open_store

    if bench == "sqlite":
        return open_store(f"sqlite:///{directory / 'regress.db'}", synchronous="FULL")
    if bench == "postgres":
        return open_store(PG_DSN, schema=schema_name(tag))
    return open_store(REDIS_URL, prefix=key_prefix(tag))


async def checkpoints(
    bench: str, tag: str, directory: Path, stack: contextlib.AsyncExitStack
) -> Rep:
    """One repetition: seconds per keyed step of a durable run of ``count`` keyed
    steps (its claim, ``count`` checkpoints and its finish, over ``count``), each
    run a new workflow id, on a store opened once and kept open on ``stack``."""
    from awaitly_anyio import create_workflow

    workflow: Any = create_workflow("bench")
    runs = itertools.count()

    def keyed(count: int) -> Callable[[Any], Awaitable[None]]:
        async def body(ctx: Any) -> None:
            for i in range(count):
                await ctx.step("s", lambda i=i: i, key=f"k{i}")

        return body

    store = await stack.enter_async_context(_open(bench, tag, directory))

    async def rep(count: int) -> tuple[float, float]:
        cpu_started = time.process_time()
        started = time.perf_counter()
        result = await workflow.run(keyed(count), workflow_id=f"run-{next(runs)}", store=store)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        assert result.ok, result
        return elapsed / count, cpu / count

    # Warm-up: connections (the pool's too), prepared statements, scripts, tables.
    for _ in range(10):
        await rep(1)
    await rep(10)
    return rep


async def session(
    bench: str, n: int, reps: int, tag: str, directory: Path, serve: bool
) -> list[float]:
    """Prepare ``bench`` (and warm it up), then either time ``reps`` repetitions of
    ``n`` operations, or (``serve``) say ready and time one repetition per ``go``
    line on stdin until ``stop`` or the end of stdin, answering each on stdout."""
    found: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        if bench in ("plain", "timeout"):
            rep = await steps(bench, stack)
        else:
            rep = await checkpoints(bench, tag, directory, stack)
        if not serve:
            for _ in range(reps):
                gc.collect()
                found.append((await rep(n))[0])
            return found
        _say({"ready": True})
        # Waiting for the parent happens in a thread, so the event loop is idle
        # between repetitions rather than blocked inside a read.
        while (await anyio.to_thread.run_sync(sys.stdin.readline)).strip() == "go":
            gc.collect()
            wall, cpu = await rep(n)
            _say({"seconds_per_op": wall, "cpu_per_op": cpu})
    return found


def _say(message: dict[str, Any]) -> None:
    import awaitly_anyio

    print(json.dumps({"file": awaitly_anyio.__file__, **message}), flush=True)


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
    parser.add_argument("--serve", action="store_true", help="one repetition per 'go' line")
    args = parser.parse_args()

    src = str(args.src.resolve())
    # First on sys.path, before the first import of the package (PYTHONPATH says the
    # same; this holds even if the caller forgot it).
    sys.path.insert(0, src)
    try:
        with tempfile.TemporaryDirectory(prefix="awaitly-regress-") as tmp:
            found = anyio.run(
                session,
                args.bench,
                args.n,
                args.reps,
                args.tag,
                Path(tmp),
                args.serve,
                backend=args.backend,
            )
    finally:
        if args.bench == "postgres":
            asyncio.run(drop_postgres(args.tag))
        elif args.bench == "redis":
            asyncio.run(drop_redis(args.tag))
    if not args.serve:
        _say({"n": args.n, "seconds_per_op": found})
    return 0


if __name__ == "__main__":
    sys.exit(main())
