"""A durable three-step workflow in awaitly-anyio against the same workflow in DBOS.

Both record each step in a database as it completes, so that a crashed run
resumes after its last completed step: DBOS in its system database, awaitly in
its snapshot store.  Each side runs ``--runs`` workflows one after another, with
a fresh workflow id each, in interleaved rounds (the first side alternates), on
SQLite and on PostgreSQL.  asyncio only: DBOS has no trio support.  Prints the
median time per workflow, min-max, and the ratio awaitly / DBOS (lower is
better).  Without the ``dbos`` package the script says so and reports nothing.

    python benchmarks/bench_dbos.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from _report import Summary
from awaitly_anyio import Deps, WorkflowContext, create_workflow, open_store

PG_DSN = os.environ.get("AWAITLY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _dbos_database_url(database: str) -> str:
    base, _, _ = PG_DSN.rpartition("/")
    return f"{base}/{database}"


_REGISTERED: list[Callable[[int], Awaitable[int]]] = []


def _dbos_workflow() -> Callable[[int], Awaitable[int]]:
    """The DBOS side, registered once per process (DBOS keeps registrations globally)."""
    if not _REGISTERED:
        from dbos import DBOS

        @DBOS.step()
        async def add_one(x: int) -> int:
            return x + 1

        @DBOS.workflow()
        async def dbos_workflow(x: int) -> int:
            a = await add_one(x)
            b = await add_one(a)
            return await add_one(b)

        _REGISTERED.append(dbos_workflow)
    return _REGISTERED[0]


async def measure(kind: str, directory: str, runs: int, rounds: int) -> dict[str, Any]:
    """Seconds per workflow for each side, in interleaved rounds, on one database kind."""
    from dbos import DBOS, SetWorkflowID

    tag = uuid.uuid4().hex[:8]
    dbos_workflow = _dbos_workflow()
    workflow = create_workflow("bench")

    async def body(ctx: WorkflowContext[Deps]) -> int:
        x: int = ctx.input
        a = await ctx.step("one", lambda: x + 1, key="one")
        b = await ctx.step("two", lambda: a + 1, key="two")
        return await ctx.step("three", lambda: b + 1, key="three")

    if kind == "sqlite":
        url = f"sqlite:///{directory}/awaitly.db"
        options: dict[str, Any] = {}
        dbos_url = f"sqlite:///{directory}/dbos.sqlite"
    else:
        url = PG_DSN
        options = {"schema": f"awaitly_bench_{tag}"}
        dbos_url = _dbos_database_url(f"awaitly_bench_dbos_{tag}")
    DBOS(config={"name": "bench", "system_database_url": dbos_url, "log_level": "WARNING"})
    DBOS.launch()
    samples: dict[str, list[float]] = {"awaitly": [], "DBOS": []}
    try:
        async with open_store(url, **options) as store:

            async def ours(run: int) -> None:
                for n in range(runs):
                    result = await workflow.run(
                        body, workflow_id=f"a-{tag}-{run}-{n}", store=store, input=n
                    )
                    assert result.unwrap() == n + 3

            async def theirs(run: int) -> None:
                for n in range(runs):
                    with SetWorkflowID(f"d-{tag}-{run}-{n}"):
                        assert await dbos_workflow(n) == n + 3

            sides: dict[str, Callable[[int], Awaitable[None]]] = {"awaitly": ours, "DBOS": theirs}
            for side in sides.values():  # warm-up
                await side(-1)
            for run in range(rounds):
                order = list(sides) if run % 2 == 0 else list(reversed(sides))
                for name in order:
                    started = time.perf_counter()
                    await sides[name](run)
                    samples[name].append((time.perf_counter() - started) / runs)
            if kind == "postgres":
                await _drop_schema(options["schema"])
    finally:
        DBOS.destroy()
        if kind == "postgres":
            await _drop_database(f"awaitly_bench_dbos_{tag}")
    return {
        name: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v)}
        for name, v in samples.items()
    }


async def _admin(database: str, sql: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(_dbos_database_url(database), timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _drop_schema(schema: str) -> None:
    await _admin(PG_DSN.rpartition("/")[2], f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def _drop_database(database: str) -> None:
    await _admin("postgres", f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=str)
    args = parser.parse_args()
    report: dict[str, Any] = {}
    summary = Summary()
    try:
        import dbos  # noqa: F401
    except ImportError:
        print("DBOS is not installed: skipped (pip install dbos to compare)")
        report["summary"] = summary.rows
        if args.json:
            with open(args.json, "w") as out:
                json.dump(report, out, indent=2)
        return 0
    for name in ("dbos", "sqlalchemy", "asyncpg"):
        logging.getLogger(name).setLevel(logging.WARNING)
    runs, rounds = (30, 2) if args.quick else (200, 5)
    for kind in ("sqlite", "postgres"):
        with tempfile.TemporaryDirectory() as directory:
            try:
                figures = asyncio.run(measure(kind, directory, runs, rounds))
            except OSError as exc:
                print(f"\n{kind}: skipped, the server is not reachable ({exc})")
                continue
        ratio = figures["awaitly"]["median_s"] / figures["DBOS"]["median_s"]
        report[kind] = {"figures": figures, "ratio": ratio}
        mark = summary.add(
            f"durable 3-step workflow vs DBOS ({kind})", "asyncio", ratio, target=1.0
        )
        print(f"\n{kind}: {runs} sequential durable 3-step workflows x {rounds} rounds")
        for name, f in figures.items():
            print(
                f"  {name:8s} {f['median_s'] * 1000:8.2f} ms/workflow"
                f" (min {f['min_s'] * 1000:.2f}, max {f['max_s'] * 1000:.2f})"
            )
        print(f"  awaitly / DBOS: {ratio:.2f}x (target <= 1.0) {mark}")
    report["summary"] = summary.rows
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
