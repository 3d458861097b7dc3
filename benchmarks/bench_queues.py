"""Durable queues (issue 20): awaitly-anyio's against DBOS's, on the same PostgreSQL.

Two figures per side:

- **throughput**: ``RUNS`` one-step queued workflows enqueued and drained by one
  worker process (this one): the clock runs from the first enqueue to the last
  run's end, so both sides pay their enqueues and their worker's dequeues.  Both
  queues allow 100 runs at once in the worker.  Runs/s (higher is better; target:
  ours >= 5x DBOS's).
- **enqueue-to-start latency**: an idle worker (this process) serves the queue;
  another process enqueues one run at a time; the time from just before the
  enqueue (taken in the other process, ``time.monotonic_ns``: one clock for every
  process of the machine) to the first line of the workflow's body.  p50 (lower
  is better; target: ours <= 0.2x DBOS's).

Ours on asyncio and on trio (a fresh schema each, dropped at the end); DBOS on
asyncio only (all it supports), with its own defaults (its queue polls the
database every second), in a database of its own, dropped at the end.  Without
the ``dbos`` package, or when DBOS cannot launch, it says "DBOS skipped" and
reports ours alone; without a reachable PostgreSQL (``AWAITLY_TEST_POSTGRES_DSN``)
it skips everything.

    python benchmarks/bench_queues.py [--quick] [--runs N] [--samples N] [--json PATH]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
import uuid
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

import bench_dbos
from _report import Summary, bench_parser, finish
from awaitly_anyio import (
    Deps,
    Queue,
    WorkflowContext,
    WorkflowRegistry,
    create_workflow,
    enqueue,
    open_store,
)
from awaitly_anyio._host import WorkflowHost

PG_DSN = bench_dbos.PG_DSN
THROUGHPUT_TARGET, LATENCY_TARGET = 5.0, 0.2
WORKER_CONCURRENCY = 100
QUEUE = "bench_q"
WARMUP = 5


# ------------------------------------------------------------------ the enqueuer


class Enqueuer:
    """A child process (this file, ``--child``) that enqueues a run per line it reads:
    it prints the monotonic time taken just before each enqueue (read by the parent
    while the enqueue is in flight), then ``enqueued``."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.process: Process | None = None
        self.reader: BufferedByteReceiveStream | None = None

    async def __aenter__(self) -> Enqueuer:
        self.process = await anyio.open_process(self.command, stderr=None)
        assert self.process.stdout is not None
        self.reader = BufferedByteReceiveStream(self.process.stdout)
        with anyio.fail_after(60):
            line = await self.reader.receive_until(b"\n", 1024)
        if line != b"ready":
            raise RuntimeError(f"the enqueuer did not start: {line!r}")
        return self

    async def enqueue(self, run_id: str, n: int) -> int:
        assert self.process is not None
        assert self.process.stdin is not None
        assert self.reader is not None
        await self.process.stdin.send(f"{run_id} {n}\n".encode())
        with anyio.fail_after(60):
            before = int(await self.reader.receive_until(b"\n", 1024))
            # Then "enqueued": the run exists (DBOS's handle can be looked up).
            await self.reader.receive_until(b"\n", 1024)
        return before

    async def __aexit__(self, *exc_info: object) -> None:
        if self.process is None:
            return
        assert self.process.stdin is not None
        with anyio.CancelScope(shield=True):
            await self.process.stdin.send(b"\n")
            await self.process.stdin.aclose()
            with anyio.move_on_after(30):
                await self.process.wait()


def _child(kind: str, url: str, extra: str) -> None:
    """The enqueuing process: ours from a running asyncio loop, DBOS's client as it is
    used (synchronously)."""
    if kind == "awaitly":

        async def serve() -> None:
            loop = asyncio.get_running_loop()
            async with open_store(url, **json.loads(extra)) as store:
                print("ready", flush=True)
                while True:
                    line = await loop.run_in_executor(None, sys.stdin.readline)
                    if not line.strip():
                        return
                    run_id, n = line.split()
                    print(time.monotonic_ns(), flush=True)
                    await enqueue(store, "bench-queued", int(n), id=run_id, queue=QUEUE)
                    print("enqueued", flush=True)

        asyncio.run(serve())
        return
    from dbos import DBOSClient

    bench_dbos._quiet()
    client = DBOSClient(system_database_url=url)
    try:
        print("ready", flush=True)
        for line in sys.stdin:
            if not line.strip():
                return
            run_id, n = line.split()
            print(time.monotonic_ns(), flush=True)
            client.enqueue(
                {"queue_name": QUEUE, "workflow_name": extra, "workflow_id": run_id}, int(n)
            )
            print("enqueued", flush=True)
    finally:
        client.destroy()


# ---------------------------------------------------------------------- awaitly


async def _ours(schema: str, runs: int, samples: int) -> dict[str, Any]:
    started: dict[str, int] = {}
    ended: dict[str, anyio.Event] = {}
    registry = WorkflowRegistry()

    def on_event(event: Any) -> None:
        if event.type in ("workflow_complete", "workflow_error"):
            done = ended.get(event.workflow_id)
            if done is not None:
                done.set()

    workflow = create_workflow("bench-queued", on_event=on_event)

    @registry.workflow(workflow)
    async def body(ctx: WorkflowContext[Deps, Any]) -> int:
        started[ctx.workflow_id] = time.monotonic_ns()
        value: int = await ctx.step("one", lambda: int(ctx.input) + 1, key="one")
        return value

    queue = Queue(QUEUE, worker_concurrency=WORKER_CONCURRENCY)
    async with (
        open_store(PG_DSN, schema=schema) as store,
        WorkflowHost(store=store, max_active=WORKER_CONCURRENCY) as host,
    ):
        host.serve_queues(registry, [queue], recovery_interval=None)
        # Throughput: enqueue all, wait for all.
        ids = [f"t-{n}" for n in range(runs)]
        for id in ids:
            ended[id] = anyio.Event()
        begin = time.perf_counter()
        for n, id in enumerate(ids):
            await enqueue(store, workflow, n, id=id, queue=QUEUE)
        for id in ids:
            await ended[id].wait()
        seconds = time.perf_counter() - begin
        # Latency: one run at a time, enqueued by another process.
        command = [sys.executable, __file__, "--child", "awaitly", PG_DSN]
        command.append(json.dumps({"schema": schema}))
        latencies: list[float] = []
        async with Enqueuer(command) as enqueuer:
            for n in range(WARMUP + samples):
                id = f"l-{n}"
                ended[id] = anyio.Event()
                before = await enqueuer.enqueue(id, n)
                with anyio.fail_after(60):
                    await ended[id].wait()
                if n >= WARMUP:
                    latencies.append((started[id] - before) / 1e6)
    return {"runs_per_s": runs / seconds, "latency_ms": latencies}


def measure_ours(backend: str, runs: int, samples: int) -> dict[str, Any]:
    """Our figures on ``backend``, in a fresh schema (dropped at the end, from asyncio:
    the admin connection is asyncpg's)."""
    schema = f"awaitly_bench_queues_{uuid.uuid4().hex[:8]}"
    try:
        figures: dict[str, Any] = anyio.run(_ours, schema, runs, samples, backend=backend)
    finally:
        asyncio.run(bench_dbos._admin(PG_DSN, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    return figures


# ------------------------------------------------------------------------- DBOS

_DBOS: dict[str, Any] = {}
_DBOS_STARTED: dict[str, int] = {}


def _dbos_parts() -> dict[str, Any]:
    """The DBOS workflow, registered once per process (DBOS keeps its registry
    globally), before DBOS is configured."""
    if not _DBOS:
        from dbos import DBOS

        @DBOS.step()
        async def bench_queued_step(n: int) -> int:
            return n + 1

        @DBOS.workflow()
        async def bench_queued_workflow(n: int) -> int:
            _DBOS_STARTED[DBOS.workflow_id or ""] = time.monotonic_ns()
            return await bench_queued_step(n)

        _DBOS["workflow"] = bench_queued_workflow
    return _DBOS


async def _dbos(runs: int, samples: int) -> dict[str, Any]:
    from dbos import DBOS, SetWorkflowID

    parts = _dbos_parts()
    workflow = parts["workflow"]
    database = f"awaitly_bench_queues_dbos_{uuid.uuid4().hex[:8]}"
    url = bench_dbos._with_database(PG_DSN, database)
    admin = bench_dbos._with_database(PG_DSN, "postgres")
    await bench_dbos._admin(admin, f'CREATE DATABASE "{database}"')
    launched = False
    try:
        DBOS(config={"name": "awaitly-bench-queues", "system_database_url": url})
        bench_dbos._quiet()
        DBOS.launch()
        launched = True
        # Registered once launched (DBOS keeps queue settings in its database).
        queue = await DBOS.register_queue_async(QUEUE, worker_concurrency=WORKER_CONCURRENCY)
        begin = time.perf_counter()
        handles = []
        for n in range(runs):
            with SetWorkflowID(f"t-{n}"):
                handles.append(await queue.enqueue_async(workflow, n))
        for n, handle in enumerate(handles):
            assert await handle.get_result() == n + 1
        seconds = time.perf_counter() - begin
        name = getattr(workflow, "__qualname__", "bench_queued_workflow")
        command = [sys.executable, __file__, "--child", "dbos", url, name]
        latencies: list[float] = []
        async with Enqueuer(command) as enqueuer:
            for n in range(WARMUP + samples):
                id = f"l-{n}"
                before = await enqueuer.enqueue(id, n)
                handle = await DBOS.retrieve_workflow_async(id)
                with anyio.fail_after(60):
                    assert await handle.get_result() == n + 1
                if n >= WARMUP:
                    latencies.append((_DBOS_STARTED.pop(id) - before) / 1e6)
    finally:
        if launched:
            DBOS.destroy()
        await bench_dbos._admin(admin, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return {"runs_per_s": runs / seconds, "latency_ms": latencies}


# ------------------------------------------------------------------------ report


def _p50(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], sys.argv[4])
        return 0
    parser = bench_parser(__doc__, "seconds instead of minutes")
    parser.add_argument("--runs", type=int, help="queued runs for the throughput figure")
    parser.add_argument("--samples", type=int, help="runs for the latency figure")
    parser.add_argument("--no-dbos", action="store_true", help="leave out the DBOS comparison")
    args = parser.parse_args()
    runs = args.runs or (200 if args.quick else 1000)
    samples = args.samples or (10 if args.quick else 40)
    bench_dbos._quiet()
    unreachable = bench_dbos._postgres_unreachable()
    if unreachable is not None:
        print(f"skipped: PostgreSQL at {PG_DSN} is not reachable ({unreachable})")
        return 0
    report: dict[str, Any] = {"runs": runs, "samples": samples}
    for backend in ("asyncio", "trio"):
        report[backend] = measure_ours(backend, runs, samples)
    skipped = "--no-dbos" if args.no_dbos else bench_dbos.dbos_missing()
    if skipped is None:
        try:
            report["DBOS"] = asyncio.run(_dbos(runs, samples))
        except Exception as exc:
            skipped = bench_dbos._reason(exc)
    summary = Summary()
    print(f"PostgreSQL: {runs} one-step queued workflows; enqueue-to-start over {samples} runs")
    dbos = report.get("DBOS")
    if dbos is not None:
        print(
            f"  DBOS (asyncio)   {dbos['runs_per_s']:9.1f} runs/s"
            f"   p50 {_p50(dbos['latency_ms']):8.2f} ms"
        )
    else:
        print(f"  DBOS skipped: {skipped}")
    for backend in ("asyncio", "trio"):
        ours = report[backend]
        line = (
            f"  awaitly ({backend:7s}) {ours['runs_per_s']:9.1f} runs/s"
            f"   p50 {_p50(ours['latency_ms']):8.2f} ms"
        )
        if dbos is not None:
            speed = ours["runs_per_s"] / dbos["runs_per_s"]
            delay = _p50(ours["latency_ms"]) / _p50(dbos["latency_ms"])
            ours["throughput_ratio"], ours["latency_ratio"] = speed, delay
            mark_speed = summary.add(
                "queue throughput vs DBOS", backend, speed, target=THROUGHPUT_TARGET, op=">="
            )
            mark_delay = summary.add(
                "enqueue-to-start p50 vs DBOS", backend, delay, target=LATENCY_TARGET
            )
            line += (
                f"   throughput {speed:6.1f}x DBOS (target >= {THROUGHPUT_TARGET:g}) {mark_speed}"
                f"   latency {delay:5.3f}x DBOS (target <= {LATENCY_TARGET:g}) {mark_delay}"
            )
        print(line)
    return finish(report, summary, args.json, failed=summary.missed)


if __name__ == "__main__":
    sys.exit(main())
