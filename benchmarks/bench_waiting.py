"""Durable waiting: delivery-to-resume latency, and the memory of parked runs.

1. Delivery-to-resume latency (p50, p99).  A durable run waits in
   ``ctx.step.wait_for("wait", key="k")``; once its waiter is registered (the run is
   recorded ``waiting`` and listening), a sender sends; the figure runs from
   ``time.monotonic_ns()`` taken just before ``send`` to the moment the step returns
   in the run (CLOCK_MONOTONIC is one clock for every process of the machine).  One
   run waits at a time.  Senders:

   - PostgreSQL and Redis: another process (``_waiting_child.py``), so the wake-up
     is the server's push (LISTEN/NOTIFY, pub/sub); the same process is shown too
     (the front wakes its own waiters at once).
   - SQLite: the same process (SQLite cannot push; a sender in another process is
     seen at the waiter's poll interval, ``store.poll_interval``, 5 s by default).

   Beside each, in the same run and the same execution path (direct on asyncio, the
   hosted asyncio loop under trio): one raw round trip of the same server
   (``SELECT 1`` on asyncpg, ``PING`` on redis, one committed write on sqlite3 in a
   worker thread), and on PostgreSQL one raw committed write (an autocommit
   upsert): a delivery is two commits (the send, then the receive that consumes the
   value and writes the step), so that is its floor there.

   DBOS, on the same PostgreSQL (a database of its own, dropped at the end), is
   measured the same way: a workflow waits in ``DBOS.recv_async("k")`` in this
   process, ``DBOSClient.send`` sends from another, once DBOS has registered the
   waiter.  DBOS runs on asyncio only.

   Targets: ours p50 <= 0.2x DBOS's p50 (PostgreSQL), and <= 3 raw round trips of
   the same server (each store).

2. 10,000 parked runs (``_waiting_child.py park``, one process per backend, side
   by side): a `WorkflowHost` with ``park_after`` on SQLite (a file on tmpfs: the
   parked runs must be rows in the store, not objects in the worker, so not the
   memory store), warmed up with two batches of parked runs; its resident set size
   (RSS, ``/proc/self/statm``, after ``gc.collect()``) idle, then after 10,000 more
   runs were started, waited and were parked (in batches of 500).  Target: <= 1 KB
   of RSS per parked run above the idle host.

    python benchmarks/bench_waiting.py [--quick] [--json PATH] [--only latency|memory]
        [--stores sqlite,postgres,redis] [--no-dbos] [--samples N] [--parked N]
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

import bench_dbos
from _report import Summary, bench_parser, finish
from awaitly_anyio import Deps, WorkflowContext, create_workflow, open_store, send
from awaitly_anyio._bridge import DriverLoop
from awaitly_anyio.stores import _front
from bench_servers import PG_DSN, REDIS_URL

HERE = Path(__file__).resolve().parent
CHILD = HERE / "_waiting_child.py"
DBOS_TARGET, ROUND_TRIP_TARGET, MEMORY_TARGET_KB = 0.2, 3.0, 1.0
WARMUP = 10
BACKENDS = ("asyncio", "trio")


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_us": statistics.median(ordered),
        "p99_us": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        "max_us": ordered[-1],
        "n": len(ordered),
    }


# ------------------------------------------------------------------ raw round trips


class RawServer:
    """Raw round trips on the store's execution path: a connection of its own."""

    def __init__(self, kind: str, directory: Path, tag: str) -> None:
        self.kind = kind
        self.table = f"awaitly_bench_wait_raw_{tag}"
        self.loop = DriverLoop(f"raw {kind}")
        self.connection: Any = None
        self.path = directory / "raw.db"

    async def open(self) -> None:
        if self.kind == "sqlite":
            self.connection = sqlite3.connect(self.path, check_same_thread=False)
            self.connection.execute("PRAGMA journal_mode = WAL")
            self.connection.execute("PRAGMA synchronous = FULL")
            self.connection.execute("CREATE TABLE IF NOT EXISTS raw (k INTEGER PRIMARY KEY, v)")
            return

        async def connect() -> None:
            if self.kind == "postgres":
                import asyncpg

                self.connection = await asyncpg.connect(PG_DSN)
                # A logged table (a temporary one skips the WAL, and its commits the fsync).
                await self.connection.execute(
                    f'CREATE TABLE "{self.table}" (k int PRIMARY KEY, v text)'
                )
            else:
                import redis.asyncio

                self.connection = redis.asyncio.Redis.from_url(REDIS_URL)
                await self.connection.ping()

        await self.loop.call(connect)

    async def round_trip(self, n: int) -> None:
        if self.kind == "postgres":
            await self.loop.call(self.connection.fetchval, "SELECT 1")
        elif self.kind == "redis":
            await self.loop.call(self.connection.ping)
        else:
            await anyio.to_thread.run_sync(self._sqlite_write, n)

    async def commit(self, n: int) -> None:
        """One committed write (PostgreSQL: an autocommit upsert)."""
        await self.loop.call(
            self.connection.execute,
            f"INSERT INTO \"{self.table}\" VALUES ($1, 'x')"
            " ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            n % 100,
        )

    def _sqlite_write(self, n: int) -> None:
        with self.connection:
            self.connection.execute("INSERT OR REPLACE INTO raw VALUES (?, 'x')", (n % 100,))

    async def close(self) -> None:
        if self.kind == "sqlite":
            self.connection.close()
            return

        async def close() -> None:
            if self.kind == "redis":
                await self.connection.aclose()
                return
            await self.connection.execute(f'DROP TABLE IF EXISTS "{self.table}"')
            await self.connection.close()

        await self.loop.call(close)
        self.loop.release()


async def _time_each(fn: Any, count: int) -> list[float]:
    samples = []
    for n in range(count):
        started = time.perf_counter_ns()
        await fn(n)
        samples.append((time.perf_counter_ns() - started) / 1e3)
    return samples


# ------------------------------------------------------------------- the senders


class Sender:
    """Sends from this process, or from a child process (``_waiting_child.py``)."""

    def __init__(self, store: Any = None, command: list[str] | None = None) -> None:
        self.store = store
        self.command = command
        self.process: Process | None = None
        self.reader: BufferedByteReceiveStream | None = None

    async def start(self) -> None:
        if self.command is None:
            return
        self.process = await anyio.open_process(self.command, stderr=None)
        assert self.process.stdout is not None
        self.reader = BufferedByteReceiveStream(self.process.stdout)
        with anyio.fail_after(60):
            line = await self.reader.receive_until(b"\n", 1024)
        if line != b"ready":
            raise RuntimeError(f"the sender did not start: {line!r}")

    async def send(self, run_id: str, n: int) -> int:
        """Send ``n`` to ``run_id``; return the monotonic time taken just before."""
        if self.process is None:
            started = time.monotonic_ns()
            await send(self.store, run_id, "k", n)
            return started
        assert self.process.stdin is not None
        assert self.reader is not None
        await self.process.stdin.send(f"{run_id} {n}\n".encode())
        with anyio.fail_after(60):
            return int(await self.reader.receive_until(b"\n", 1024))

    async def stop(self) -> None:
        if self.process is None:
            return
        assert self.process.stdin is not None
        with anyio.CancelScope(shield=True):
            await self.process.stdin.send(b"\n")
            await self.process.stdin.aclose()
            with anyio.move_on_after(30):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()


async def _until(ready: Any, what: str) -> None:
    """Poll ``ready()`` every 0.2 ms: the registration of a waiter has no event."""
    try:
        with anyio.fail_after(30):
            while not ready():  # noqa: ASYNC110  (nothing to wait on but the table)
                await anyio.sleep(0.0002)
    except TimeoutError:
        raise RuntimeError(f"{what} was not registered within 30 s") from None


# ------------------------------------------------------------------------- ours


async def our_latency(kind: str, store: Any, sender: Sender, count: int, tag: str) -> list[float]:
    """``count`` runs, one at a time: each waits, is sent its value, and completes."""
    workflow = create_workflow("bench-wait")
    resumed: dict[str, int] = {}

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        value = await ctx.step.wait_for("wait", key="k")
        resumed[ctx.workflow_id] = time.monotonic_ns()
        return value

    driver = store._driver
    receive = driver.receive
    looked: set[str] = set()

    async def receive_and_note(id: str, *args: Any, **kwargs: Any) -> Any:
        got = await receive(id, *args, **kwargs)
        if got is None:
            looked.add(id)
        return got

    # The run waits once its look found nothing: it watches for sends before it looks
    # (`_waiting._receive_until`), so then it is listening.  (Another watcher of the
    # run, the lease keeper's, registers at the claim already: the front's table of
    # waiters alone does not say the run is waiting.)
    driver.receive = receive_and_note
    samples = []
    try:
        samples = await _our_samples(store, workflow, body, resumed, sender, count, tag, looked)
    finally:
        del driver.receive
    return samples


async def _our_samples(
    store: Any,
    workflow: Any,
    body: Any,
    resumed: dict[str, int],
    sender: Sender,
    count: int,
    tag: str,
    looked: set[str],
) -> list[float]:
    channel = store._driver.channel
    samples = []
    for n in range(count):
        run_id = f"{tag}-{n}"

        def registered(run_id: str = run_id) -> bool:
            # The run looked for its value, found none, and its waiter is in the
            # front's table (`StoreFront.sends`).
            return run_id in looked and bool(_front._local.get(channel, {}).get((run_id,)))

        outcome: list[Any] = []
        with anyio.fail_after(60):  # a lost wake-up is caught at the poll interval (5 s)
            async with anyio.create_task_group() as group:

                async def run(run_id: str = run_id, outcome: list[Any] = outcome) -> None:
                    outcome.append(await workflow.run(body, workflow_id=run_id, store=store))

                group.start_soon(run)
                await _until(registered, "a waiter")
                started = await sender.send(run_id, n)
        assert outcome[0].ok, outcome
        assert outcome[0].unwrap() == n, outcome
        samples.append((resumed.pop(run_id) - started) / 1e3)
    return samples


def _store_options(kind: str, tag: str, directory: Path) -> tuple[str, dict[str, Any]]:
    if kind == "postgres":
        return PG_DSN, {"schema": f"awaitly_bench_wait_{tag}"}
    if kind == "redis":
        return REDIS_URL, {"prefix": f"awaitly-bench-wait-{tag}:"}
    return f"sqlite:///{directory / 'store.db'}", {}


async def _drop(kind: str, store: Any, tag: str) -> None:
    if kind == "postgres":

        async def drop(connection: Any) -> None:
            await connection.execute(f'DROP SCHEMA IF EXISTS "awaitly_bench_wait_{tag}" CASCADE')

        await store._call(drop)
    elif kind == "redis":
        cursor: str | None = None
        while True:
            page = await store.list(limit=1000, cursor=cursor)
            for info in page:
                await store.delete(info.id)
            cursor = page.next_cursor
            if cursor is None:
                return


async def measure_store(kind: str, count: int) -> dict[str, Any]:
    """On the current backend: raw round trips, then our latency per sender."""
    tag = uuid.uuid4().hex[:8]
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        url, options = _store_options(kind, tag, directory)
        raw = RawServer(kind, directory, tag)
        await raw.open()
        try:
            await _time_each(raw.round_trip, WARMUP)
            report["raw round trip"] = _percentiles(await _time_each(raw.round_trip, count))
            if kind == "postgres":
                await _time_each(raw.commit, WARMUP)
                report["raw committed write"] = _percentiles(await _time_each(raw.commit, count))
        finally:
            await raw.close()
        async with open_store(url, **options) as store:
            try:
                senders = {"same process": Sender(store)}
                if kind != "sqlite":
                    command = [sys.executable, str(CHILD), "send-awaitly", url, json.dumps(options)]
                    senders = {"other process": Sender(command=command), **senders}
                for where, sender in senders.items():
                    await sender.start()
                    try:
                        await our_latency(kind, store, sender, WARMUP, f"{tag}-warm-{where[0]}")
                        samples = await our_latency(kind, store, sender, count, f"{tag}-{where[0]}")
                    finally:
                        await sender.stop()
                    report[where] = _percentiles(samples)
            finally:
                await _drop(kind, store, tag)
    return report


# ------------------------------------------------------------------------- DBOS

_DBOS_WORKFLOW: list[Any] = []
_DBOS_RESUMED: dict[str, int] = {}


def _dbos_workflow() -> Any:
    """Registered once per process, before DBOS is configured (as bench_dbos does)."""
    if not _DBOS_WORKFLOW:
        from dbos import DBOS

        @DBOS.workflow()
        async def bench_wait_workflow() -> Any:
            value = await DBOS.recv_async("k", timeout_seconds=60)
            _DBOS_RESUMED[DBOS.workflow_id or ""] = time.monotonic_ns()
            return value

        _DBOS_WORKFLOW.append(bench_wait_workflow)
    return _DBOS_WORKFLOW[0]


async def dbos_latency(count: int) -> dict[str, Any]:
    """DBOS's recv woken by a DBOSClient.send from another process, on PostgreSQL."""
    from dbos import DBOS, SetWorkflowID
    from dbos._dbos import _get_dbos_instance

    workflow = _dbos_workflow()
    database = f"awaitly_bench_wait_dbos_{uuid.uuid4().hex[:8]}"
    url = bench_dbos._with_database(PG_DSN, database)
    admin = bench_dbos._with_database(PG_DSN, "postgres")
    await bench_dbos._admin(admin, f'CREATE DATABASE "{database}"')
    launched = False
    try:
        DBOS(
            config={
                "name": "awaitly-bench-wait",
                "system_database_url": url,
                "log_level": "WARNING",
            }
        )
        bench_dbos._quiet()
        DBOS.launch()
        launched = True
        system = _get_dbos_instance()._sys_db
        sender = Sender(command=[sys.executable, str(CHILD), "send-dbos", url])
        await sender.start()

        async def one(run_id: str, n: int) -> float:
            payload = system._waiter(run_id, "k")[0]
            with SetWorkflowID(run_id):
                handle = await DBOS.start_workflow_async(workflow)
            await _until(lambda: system.notifications_map.get(payload) is not None, "DBOS recv")
            started = await sender.send(run_id, n)
            with anyio.fail_after(60):
                value = await handle.get_result()
            assert value == n, value
            return (_DBOS_RESUMED.pop(run_id) - started) / 1e3

        try:
            for n in range(WARMUP):
                await one(f"warm-{n}", n)
            samples = [await one(f"run-{n}", n) for n in range(count)]
        finally:
            await sender.stop()
    finally:
        if launched:
            DBOS.destroy()
        await bench_dbos._admin(admin, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return _percentiles(samples)


# ----------------------------------------------------------------------- memory


def parked_memory(total: int, batch: int) -> dict[str, Any]:
    """One worker process per backend, side by side; each prints its JSON report."""
    children = {
        backend: subprocess.Popen(
            [sys.executable, str(CHILD), "park", backend, str(total), str(batch)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for backend in BACKENDS
    }
    report = {}
    for backend, child in children.items():
        out, _ = child.communicate(timeout=300)
        if child.returncode != 0:
            raise RuntimeError(f"the {backend} worker failed (exit {child.returncode})")
        report[backend] = json.loads(out.strip().splitlines()[-1])
    return report


# ------------------------------------------------------------------------- main


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--only", choices=("latency", "memory"))
    parser.add_argument("--samples", type=int)
    parser.add_argument("--parked", type=int)
    parser.add_argument(
        "--stores", default="sqlite,postgres,redis", help="comma-separated: sqlite,postgres,redis"
    )
    parser.add_argument("--no-dbos", action="store_true", help="leave out the DBOS comparison")
    args = parser.parse_args()
    samples, parked, batch = (60, 2_000, 500) if args.quick else (200, 10_000, 500)
    samples = args.samples or samples
    parked = args.parked or parked
    began = time.perf_counter()
    summary = Summary()
    report: dict[str, Any] = {"samples": samples, "warmup": WARMUP}

    if args.only in (None, "latency"):
        wanted = set(args.stores.split(","))
        stores = ["sqlite"] if "sqlite" in wanted else []
        for kind, reachable in (("postgres", _pg_reachable()), ("redis", _redis_reachable())):
            if kind not in wanted:
                continue
            if reachable is None:
                stores.insert(len(stores) - ("sqlite" in stores), kind)
            else:
                print(f"{kind}: skipped ({reachable})")
                report[kind] = {"skipped": reachable}
        for kind in stores:
            report[kind] = {}
            for backend in BACKENDS:
                print(f"  {kind} on {backend} ...", flush=True)
                report[kind][backend] = anyio.run(measure_store, kind, samples, backend=backend)
        if "postgres" in stores and not args.no_dbos:
            why = bench_dbos.dbos_missing()
            if why is None:
                print("  DBOS on asyncio ...", flush=True)
                try:
                    report["dbos"] = asyncio.run(dbos_latency(samples))
                except Exception as exc:
                    why = bench_dbos._reason(exc)
            if why is not None:
                print(f"DBOS skipped: {why}")
                report["dbos"] = {"skipped": why}
        _print_latency(report, stores, samples, summary)

    if args.only in (None, "memory"):
        memory = parked_memory(parked, batch)
        report["parked"] = memory
        print(f"\n{parked:,} parked waiting runs on SQLite (tmpfs), RSS after gc.collect()")
        for backend, figures in memory.items():
            per_kb = figures["bytes_per_run"] / 1024
            assert figures["waiting_rows"] == parked + 2 * batch, figures
            mark = summary.add(
                "KB of worker RSS per parked waiting run (SQLite)",
                backend,
                per_kb,
                target=MEMORY_TARGET_KB,
            )
            print(
                f"  {backend:8s} idle host {figures['idle_rss'] / 2**20:6.1f} MiB -> "
                f"{figures['parked_rss'] / 2**20:6.1f} MiB with {parked:,} parked:"
                f" {figures['bytes_per_run']:6.0f} B/run (<= {MEMORY_TARGET_KB:g} KB) {mark}"
                f"  [{figures['seconds']:.1f} s to start and park them]"
            )

    print(f"\ntook {time.perf_counter() - began:.1f} s")
    return finish(report, summary, args.json, failed=summary.missed)


def _print_latency(
    report: dict[str, Any], stores: list[str], samples: int, summary: Summary
) -> None:
    print(f"\ndelivery -> resume latency, one waiting run at a time, {samples} sends each")
    dbos = report.get("dbos", {})
    if "p50_us" in dbos:
        print(
            f"  DBOS recv / DBOSClient.send (postgres, other process, asyncio):"
            f" p50 {dbos['p50_us']:8.0f} us  p99 {dbos['p99_us']:8.0f} us"
        )
    for kind in stores:
        for backend in BACKENDS:
            figures = report[kind][backend]
            raw = figures["raw round trip"]["p50_us"]
            line = f"  {kind:8s} {backend:8s} raw round trip p50 {raw:6.0f} us"
            if "raw committed write" in figures:
                line += (
                    f", raw committed write p50 {figures['raw committed write']['p50_us']:6.0f} us"
                )
            print(line)
            for where in ("other process", "same process"):
                if where not in figures:
                    continue
                f = figures[where]
                print(
                    f"    sender in the {where:13s} p50 {f['p50_us']:8.0f} us"
                    f"  p99 {f['p99_us']:8.0f} us  = {f['p50_us'] / raw:5.1f} round trips"
                )
            headline = figures["other process" if kind != "sqlite" else "same process"]
            ratio = headline["p50_us"] / raw
            mark = summary.add(
                f"{kind} send->resume p50 / raw round trip",
                backend,
                ratio,
                target=ROUND_TRIP_TARGET,
            )
            print(f"    p50 / raw round trip: {ratio:.1f}x (<= {ROUND_TRIP_TARGET:g}) {mark}")
            if kind == "postgres" and "p50_us" in dbos:
                ratio = headline["p50_us"] / dbos["p50_us"]
                mark = summary.add(
                    "postgres send->resume p50 / DBOS send/recv p50",
                    backend,
                    ratio,
                    target=DBOS_TARGET,
                )
                print(f"    p50 / DBOS p50: {ratio:.2f}x (<= {DBOS_TARGET:g}) {mark}")
            if "raw committed write" in figures:
                commits = headline["p50_us"] / figures["raw committed write"]["p50_us"]
                summary.add(f"{kind} send->resume p50 / raw committed write", backend, commits)
                print(f"    p50 / raw committed write: {commits:.1f}x (a delivery commits twice)")


def _pg_reachable() -> str | None:
    try:
        asyncio.run(bench_dbos._admin(PG_DSN, "SELECT 1"))
    except Exception as exc:
        return bench_dbos._reason(exc)
    return None


def _redis_reachable() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_timeout=5).ping()
    except Exception as exc:
        return bench_dbos._reason(exc)
    return None


if __name__ == "__main__":
    sys.exit(main())
