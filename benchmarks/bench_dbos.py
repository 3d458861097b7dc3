"""A durable three-step workflow in awaitly-anyio against the same workflow in DBOS.

DBOS is the closest peer: durable workflows as a Python library over a
database.  Both sides record each step as it completes, so that a crashed run
resumes after its last completed step: DBOS in its system database, awaitly in
its snapshot store.  The workflow is the same on both sides (three steps, each
using the previous one's value), every run has a fresh workflow id, and the
runs go one after another, so the figure is the latency of one durable run.

Both sides run in one process and one asyncio event loop (DBOS supports asyncio
only), in interleaved rounds: each round runs R workflows with each library,
and the side that goes first alternates.  Done on SQLite (a file each, in a
temporary directory) and on PostgreSQL (a fresh schema for awaitly, a fresh
database for DBOS, both dropped at the end), each library with its own default
settings: on SQLite that is WAL for awaitly and a rollback journal for DBOS
(pre-setting DBOS's file to WAL made its runs about a quarter faster when this
was written), both at the default ``synchronous=FULL``.  Prints the median, min
and max seconds per workflow and the ratio awaitly / DBOS (lower is better;
target <= 1.0).  Without the ``dbos`` package, or when DBOS cannot launch, it
says "DBOS skipped" and reports our figures alone; without a reachable
PostgreSQL (``AWAITLY_TEST_POSTGRES_DSN``) it skips that part.

    python benchmarks/bench_dbos.py [--quick] [--json PATH]
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _report import Summary, bench_parser, finish
from awaitly_anyio import Deps, WorkflowContext, create_workflow, open_store

PG_DSN = os.environ.get("AWAITLY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
TARGET = 1.0
STEPS = 3
WARMUP = 10
QUIET_LOGGERS = ("dbos", "sqlalchemy", "psycopg", "asyncpg", "alembic")


Batch = Callable[[str, int], Awaitable[None]]
"""Runs ``count`` workflows one after another; the string tags their ids."""
Check = Callable[[str], Awaitable[None]]
"""Checks that the first workflow of a batch was recorded with all its steps."""


def _quiet() -> None:
    """DBOS logs its launch and shutdown at INFO through its own handler: keep WARNING up."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at another database on the same server."""
    base, _, tail = dsn.rpartition("/")
    _, sep, query = tail.partition("?")
    return f"{base}/{database}{sep}{query}"


def _reason(exc: BaseException) -> str:
    """One line saying what went wrong (SQLAlchemy's messages run over several)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


async def _admin(dsn: str, *statements: str) -> None:
    """Run ``statements`` one by one, in autocommit, on the database ``dsn`` names."""
    import asyncpg

    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


# --------------------------------------------------------------------- awaitly


def _ours(store: Any, steps: int) -> tuple[Batch, Check]:
    """The awaitly side: a batch of durable runs, and a look at what one run stored."""
    workflow = create_workflow("bench")
    keys = [f"s{n}" for n in range(steps)]

    async def body(ctx: WorkflowContext[Deps]) -> int:
        value = 0
        for key in keys:
            value = await ctx.step(key, lambda value=value: value + 1, key=key)
        return value

    async def batch(tag: str, count: int) -> None:
        for n in range(count):
            result = await workflow.run(body, workflow_id=f"awaitly-{tag}-{n}", store=store)
            assert result.ok, result
            assert result.unwrap() == steps, result

    async def check(tag: str) -> None:
        snapshot = await store.load(f"awaitly-{tag}-0")
        assert snapshot is not None
        assert snapshot.status == "completed", snapshot
        assert sorted(snapshot.steps) == sorted(keys), snapshot.steps

    return batch, check


# ------------------------------------------------------------------------ DBOS

_DBOS_WORKFLOW: list[Callable[[int], Awaitable[int]]] = []


def _dbos_workflow() -> Callable[[int], Awaitable[int]]:
    """The DBOS side, registered once per process: DBOS keeps its registry globally
    (``DBOS.destroy()`` leaves it), and the decorators need ``dbos`` importable."""
    if not _DBOS_WORKFLOW:
        from dbos import DBOS

        @DBOS.step()
        async def bench_add_one(value: int) -> int:
            return value + 1

        @DBOS.workflow()
        async def bench_workflow(steps: int) -> int:
            value = 0
            for _ in range(steps):
                value = await bench_add_one(value)
            return value

        _DBOS_WORKFLOW.append(bench_workflow)
    return _DBOS_WORKFLOW[0]


def _launch_dbos(system_database_url: str, steps: int) -> tuple[Batch, Check]:
    """Configure and launch DBOS inside the running loop (which DBOS takes as its main
    loop), then return its side: a batch of workflows, and a look at what one stored."""
    from dbos import DBOS, SetWorkflowID

    workflow = _dbos_workflow()
    DBOS(
        config={
            "name": "awaitly-bench",
            "system_database_url": system_database_url,
            "log_level": "WARNING",
        }
    )
    _quiet()
    DBOS.launch()

    async def batch(tag: str, count: int) -> None:
        for n in range(count):
            with SetWorkflowID(f"dbos-{tag}-{n}"):
                result = await workflow(steps)
            assert result == steps, result

    async def check(tag: str) -> None:
        workflow_id = f"dbos-{tag}-0"
        status = await DBOS.get_workflow_status_async(workflow_id)
        assert status is not None
        assert status.status == "SUCCESS", status
        stored = await DBOS.list_workflow_steps_async(workflow_id)
        assert len(stored) == steps, stored

    return batch, check


# ----------------------------------------------------------------- measurement


async def compare(
    kind: str,
    directory: Path,
    runs: int,
    rounds: int,
    dbos_skipped: str | None,
    steps: int = STEPS,
) -> dict[str, Any]:
    """Seconds per workflow for each side on one database kind, in interleaved rounds.

    ``dbos_skipped`` is why DBOS cannot take part (``None``: it can); when it cannot
    launch here either, the reason goes in the result and only our side is timed.
    """
    tag = uuid.uuid4().hex[:8]
    if kind == "sqlite":
        store_url, options = f"sqlite:///{directory / 'awaitly.db'}", {}
        dbos_url = f"sqlite:///{directory / 'dbos.sqlite'}"
        database = schema = ""
    else:
        schema = database = f"awaitly_bench_dbos_{tag}"
        store_url, options = PG_DSN, {"schema": schema}
        dbos_url = _with_database(PG_DSN, database)
    sides: dict[str, tuple[Batch, Check]] = {}
    samples: dict[str, list[float]] = {}
    launched = False
    try:
        async with open_store(store_url, **options) as store:
            sides["awaitly"] = _ours(store, steps)
            if dbos_skipped is None:
                try:
                    if database:
                        await _admin(
                            _with_database(PG_DSN, "postgres"), f'CREATE DATABASE "{database}"'
                        )
                    launched = True
                    sides["DBOS"] = _launch_dbos(dbos_url, steps)
                except Exception as exc:
                    dbos_skipped = _reason(exc)
            for batch, check in sides.values():  # warm-up, then a look at what was stored
                await batch(f"{tag}-warmup", WARMUP)
                await check(f"{tag}-warmup")
            samples = {name: [] for name in sides}
            for run in range(rounds):
                order = list(sides) if run % 2 == 0 else list(reversed(sides))
                for name in order:
                    gc.collect()
                    started = time.perf_counter()
                    await sides[name][0](f"{tag}-{run}", runs)
                    samples[name].append((time.perf_counter() - started) / runs)
    finally:
        if launched:
            from dbos import DBOS

            DBOS.destroy()
        if kind == "postgres":
            await _admin(
                _with_database(PG_DSN, "postgres"),
                f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)',
            )
            await _admin(PG_DSN, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    report: dict[str, Any] = {
        name: {
            "median_s": statistics.median(values),
            "min_s": min(values),
            "max_s": max(values),
            "rounds_s": values,
        }
        for name, values in samples.items()
    }
    if dbos_skipped is None:
        report["ratio"] = report["awaitly"]["median_s"] / report["DBOS"]["median_s"]
    else:
        report["dbos_skipped"] = dbos_skipped
    return report


def dbos_missing() -> str | None:
    """Why DBOS cannot take part at all, or ``None`` when it is importable."""
    try:
        import dbos  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install failing on import
        return f"cannot import dbos ({_reason(exc)}); pip install dbos to compare"
    return None


def _postgres_unreachable() -> str | None:
    """Why PostgreSQL cannot be used, or ``None`` when it answers."""
    try:
        asyncio.run(_admin(PG_DSN, "SELECT 1"))
    except Exception as exc:  # no asyncpg, refused, timed out, bad credentials
        return _reason(exc)
    return None


def main() -> int:
    parser = bench_parser(__doc__, "seconds instead of minutes")
    args = parser.parse_args()
    runs, rounds = (30, 2) if args.quick else (200, 5)
    _quiet()
    started = time.perf_counter()
    dbos_skipped = dbos_missing()
    if dbos_skipped is not None:
        print(f"DBOS skipped: {dbos_skipped}")
    report: dict[str, Any] = {
        "workflows_per_round": runs,
        "rounds": rounds,
        "warmup_workflows": WARMUP,
        "target": TARGET,
    }
    summary = Summary()
    for kind in ("sqlite", "postgres"):
        if kind == "postgres" and (reason := _postgres_unreachable()) is not None:
            print(f"\npostgres: skipped, {PG_DSN} is not reachable ({reason})")
            report[kind] = {"skipped": reason}
            continue
        with tempfile.TemporaryDirectory() as tmp:
            figures = asyncio.run(compare(kind, Path(tmp), runs, rounds, dbos_skipped))
        report[kind] = figures
        print(f"\n{kind}: {runs} sequential durable 3-step workflows per side x {rounds} rounds")
        for name in ("awaitly", "DBOS"):
            if name in figures:
                f = figures[name]
                print(
                    f"  {name:8s} {f['median_s'] * 1e3:8.3f} ms/workflow"
                    f"  (min {f['min_s'] * 1e3:.3f}, max {f['max_s'] * 1e3:.3f})"
                )
        if "ratio" in figures:
            ratio = figures["ratio"]
            mark = summary.add(
                f"durable 3-step workflow vs DBOS ({kind})", "asyncio", ratio, target=TARGET
            )
            print(f"  awaitly / DBOS: {ratio:.2f}x  (lower is better; target <= {TARGET}) {mark}")
        elif dbos_skipped is None:
            print(f"  DBOS skipped: {figures['dbos_skipped']}")
    print(f"\ntook {time.perf_counter() - started:.1f} s")
    return finish(report, summary, args.json, failed=summary.missed)


if __name__ == "__main__":
    sys.exit(main())
