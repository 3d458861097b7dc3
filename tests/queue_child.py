"""A worker process for the durable-queue crash test (tests/test_queue_crash.py).

Usage: python queue_child.py STORE_URL OPTIONS_JSON STATE_DIR BACKEND

Serves queue ``crash`` (global concurrency 5) with a `WorkflowHost` until SIGTERM
(then it shuts down gracefully and exits 0).  The workload keeps its own books in
STATE_DIR, apart from the store:

- ``active.json`` (under ``active.lock``, an ``flock``): the runs executing now, as
  ``[pid, run]`` pairs, and ``most``, the largest number seen executing at once.
  Entries of processes that died (SIGKILL) are dropped when the next run enters,
  so a killed worker's runs stop counting once it is gone: the count never
  overstates what executes.
- ``completions.txt``: a line ``<pid> <run>`` per run, written by its last step
  (one ``write`` with ``O_APPEND``).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio

from awaitly_anyio import Deps, WorkflowContext, WorkflowRegistry, create_workflow, open_store
from awaitly_anyio._host import WorkflowHost
from awaitly_anyio._queues import Queue

QUEUE = Queue("crash", concurrency=5)
LEASE = 1.0


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


class Books:
    def __init__(self, state: Path) -> None:
        self.lock = state / "active.lock"
        self.active = state / "active.json"
        self.completions = state / "completions.txt"

    def _change(self, change: Any) -> None:
        with open(self.lock, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                doc = json.loads(self.active.read_text()) if self.active.exists() else {}
                running = [pair for pair in doc.get("running", []) if _alive(pair[0])]
                running = change(running)
                most = max(doc.get("most", 0), len(running))
                # Written aside, then renamed: a worker killed mid-write leaves the
                # books whole (the old version or the new one).
                aside = self.active.with_name(f"active.{os.getpid()}.tmp")
                aside.write_text(json.dumps({"running": running, "most": most}))
                os.replace(aside, self.active)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def enter(self, pid: int, run: str) -> None:
        self._change(lambda running: [*running, [pid, run]])

    def leave(self, pid: int, run: str) -> None:
        self._change(lambda running: [pair for pair in running if pair != [pid, run]])

    def complete(self, pid: int, run: str) -> None:
        fd = os.open(self.completions, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{pid} {run}\n".encode())
        finally:
            os.close(fd)


def build(books: Books) -> WorkflowRegistry:
    pid = os.getpid()
    registry = WorkflowRegistry()
    job = create_workflow("crash-job")

    @registry.workflow(job)
    async def body(ctx: WorkflowContext[Deps, Any]) -> Any:
        run = ctx.workflow_id

        async def work() -> int:
            books.enter(pid, run)
            try:
                await anyio.sleep(0.002)
            finally:
                books.leave(pid, run)
            return int(ctx.input)

        value = await ctx.step("work", work, key="work")
        await ctx.step("record", lambda: books.complete(pid, run), key="record")
        return value * 2

    return registry


async def serve(url: str, options: dict[str, Any], state: str) -> None:
    registry = build(Books(Path(state)))
    async with open_store(url, **options) as store, WorkflowHost(store=store, grace=5) as host:
        host.serve_queues(registry, [QUEUE], lease=LEASE, poll_interval=0.2, recovery_interval=0.5)
        print("SERVING", flush=True)
        await host.serve_signals((signal.SIGTERM,))


if __name__ == "__main__":
    url, options_json, state_dir, backend = sys.argv[1:5]
    anyio.run(serve, url, json.loads(options_json), state_dir, backend=backend)
