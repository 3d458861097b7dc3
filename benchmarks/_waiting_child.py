"""The other processes of ``bench_waiting.py``: a sender, and a worker that parks runs.

    python benchmarks/_waiting_child.py send-awaitly URL OPTIONS_JSON
    python benchmarks/_waiting_child.py send-dbos SYSTEM_DATABASE_URL
    python benchmarks/_waiting_child.py park BACKEND TOTAL BATCH

A sender opens its store (or a ``DBOSClient``), prints ``ready``, then for each line
``RUN_ID N`` on stdin takes ``time.monotonic_ns()``, prints it, and sends ``N`` under
key ``k`` to that run (ours from a running asyncio loop, DBOS's client synchronously,
as each is used).  CLOCK_MONOTONIC is one clock for every process of the machine,
so the parent can subtract the time from its own reading.  The time is printed
before the send, so that the parent reads it while the send is in flight rather
than just when the wake-up it measures arrives (a send that fails ends the sender,
and the parent's bound on the delivery fails).  An empty line or end of input ends
it.

``park`` measures a worker's memory: a `WorkflowHost` on a fresh SQLite file with
``park_after`` set, warmed up with two batches of parked runs, then its resident set
size (idle host), then ``TOTAL`` more runs started in batches of ``BATCH``, each
waiting (``ctx.step.wait_for``) until the host parks it, then the resident set size
again (after ``gc.collect()``).  Prints one line of JSON.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from typing import Any

PARK_AFTER = 0.02
"""Seconds a run waits in memory before the host parks it."""


def _send_awaitly(url: str, options: dict[str, Any]) -> None:
    """Sends from a running asyncio loop, as a service would (the loop is not started
    and stopped around each send; stdin is read in a worker thread, before the time
    is taken)."""
    from awaitly_anyio import open_store, send

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        async with open_store(url, **options) as store:
            print("ready", flush=True)
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line.strip():
                    return
                id, n = line.split()
                started = time.monotonic_ns()
                # The reading goes out first, so the parent reads it while the send is
                # in flight, not just when the wake-up it measures arrives.
                print(started, flush=True)
                await send(store, id, "k", int(n))

    asyncio.run(serve())


def _send_dbos(url: str) -> None:
    import logging

    from dbos import DBOSClient

    for name in ("dbos", "sqlalchemy", "psycopg"):
        logging.getLogger(name).setLevel(logging.WARNING)
    client = DBOSClient(system_database_url=url)
    try:
        _serve(lambda id, n: client.send(id, n, topic="k"))
    finally:
        client.destroy()


def _serve(send: Any) -> None:
    print("ready", flush=True)
    for line in sys.stdin:
        if not line.strip():
            return
        id, n = line.split()
        started = time.monotonic_ns()
        print(started, flush=True)  # first, as for ours
        send(id, int(n))


def _rss() -> int:
    """This process's resident set size now (not its peak), in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _park(backend: str, total: int, batch: int) -> None:
    import anyio

    from awaitly_anyio import Deps, WorkflowContext, WorkflowHost, create_workflow, open_store

    workflow = create_workflow("parked")

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.wait_for("wait", key="go")

    async def main(directory: str) -> dict[str, Any]:
        store = open_store(f"sqlite:///{directory}/parked.db")
        async with (
            store,
            WorkflowHost(store=store, park_after=PARK_AFTER, max_active=batch) as host,
        ):

            async def wave(tag: str) -> None:
                handles = [
                    host.start(workflow, body, workflow_id=f"{tag}-{n}") for n in range(batch)
                ]
                with anyio.fail_after(120):
                    for handle in handles:
                        result = await handle.result()
                        assert not result.ok, result  # Err(RunParkedError): parked
                del handles

            for n in range(2):  # warm-up: imports, caches, one batch's worth of arenas
                await wave(f"warm{n}")
            gc.collect()
            idle = _rss()
            started = time.perf_counter()
            for n in range(total // batch):
                await wave(f"run{n}")
            elapsed = time.perf_counter() - started
            gc.collect()
            parked = _rss()
            assert host.active == 0, host.active
            waiting, cursor = 0, None
            while True:
                page = await store.list(status="waiting", limit=1000, cursor=cursor)
                waiting += len(page)
                cursor = page.next_cursor
                if cursor is None:
                    break
        return {
            "backend": backend,
            "runs": total,
            "batch": batch,
            "park_after_s": PARK_AFTER,
            "idle_rss": idle,
            "parked_rss": parked,
            "bytes_per_run": (parked - idle) / total,
            "seconds": elapsed,
            "waiting_rows": waiting,
        }

    # A tmpfs when there is one: the figure is the worker's memory, not the disk's speed.
    where = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=where) as directory:
        report = anyio.run(main, directory, backend=backend)
    print(json.dumps(report), flush=True)


def main() -> None:
    mode = sys.argv[1]
    if mode == "send-awaitly":
        _send_awaitly(sys.argv[2], json.loads(sys.argv[3]))
    elif mode == "send-dbos":
        _send_dbos(sys.argv[2])
    elif mode == "park":
        _park(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
