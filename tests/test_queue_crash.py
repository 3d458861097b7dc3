"""Durable queues survive SIGKILL (issue 20), with real processes on PostgreSQL,
SQLite and Redis.

1,000 runs are enqueued in queue ``crash`` (global concurrency 5); four worker
processes (tests/queue_child.py, two on each loop) drain it; two of them are
SIGKILLed midway, the other two recover what the killed ones held and finish.
What must hold, by the workload's own books (not the store's):

- every run completed, in the store, with its value;
- each run's last step ("record") ran once, or more only when the earlier
  executions were in a killed worker (the step in flight when it died);
- never more than 5 runs executed at once across all workers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from awaitly_anyio import Ok, open_store
from awaitly_anyio._queues import enqueue

from .test_workers import target

CHILD = Path(__file__).with_name("queue_child.py")
ROOT = Path(__file__).parent.parent
RUNS = int(os.environ.get("AWAITLY_QUEUE_CRASH_RUNS", "1000"))
DEADLINE = 240.0  # seconds: against a hang only


async def fill(url: str, options: dict[str, Any]) -> None:
    async with open_store(url, **options) as store:
        for n in range(RUNS):
            await enqueue(store, "crash-job", n, id=f"job-{n:04d}", queue="crash")


async def outcomes(url: str, options: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    async with open_store(url, **options) as store:
        for n in range(RUNS):
            snapshot = await store.load(f"job-{n:04d}")
            found[f"job-{n:04d}"] = (snapshot.status, snapshot.result) if snapshot else None
    return found


async def count_completed(url: str, options: dict[str, Any]) -> int:
    count = 0
    async with open_store(url, **options) as store:
        cursor: str | None = None
        while True:
            page = await store.list(status="completed", limit=500, cursor=cursor)
            count += len(page.items)
            cursor = page.next_cursor
            if cursor is None:
                return count


def completions(state: Path) -> list[tuple[int, str]]:
    path = state / "completions.txt"
    if not path.exists():
        return []
    pairs = []
    for line in path.read_text().splitlines():
        pid, run = line.split()
        pairs.append((int(pid), run))
    return pairs


def tails(state: Path) -> str:
    """The end of each worker's stderr."""
    return "\n".join(
        f"{path.name}: {path.read_text()[-1500:]}" for path in sorted(state.glob("worker-*.err"))
    )


def wait_for(condition: Any, workers: list[subprocess.Popen[str]], state: Path, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        for worker in workers:
            if worker.returncode is None and worker.poll() is not None:
                raise AssertionError(f"a worker died ({worker.returncode}): {tails(state)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {tails(state)}")
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["postgres", "sqlite", "redis"])
def test_killed_workers_lose_nothing_and_the_limit_holds(tmp_path: Path, kind: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with target(kind, tmp_path) as (url, options):
        anyio.run(fill, url, options)
        args = [url, json.dumps(options), str(state)]
        # Their output goes to files: a pipe nobody reads would stall a chatty worker.
        logs = [(state / f"worker-{n}.out", state / f"worker-{n}.err") for n in range(4)]
        workers: list[subprocess.Popen[str]] = []
        for n, (out_path, err_path) in enumerate(logs):
            with out_path.open("w") as out, err_path.open("w") as err:
                workers.append(
                    subprocess.Popen(
                        [sys.executable, str(CHILD), *args, ("asyncio", "trio")[n % 2]],
                        cwd=ROOT,
                        stdout=out,
                        stderr=err,
                        text=True,
                    )
                )
        killed: set[int] = set()
        try:
            wait_for(lambda: len(completions(state)) >= RUNS * 3 // 10, workers, state, "progress")
            for worker in workers[:2]:  # one of each loop
                worker.send_signal(signal.SIGKILL)
                worker.wait()  # reaped at once: a zombie's runs stop counting
                killed.add(worker.pid)
            wait_for(
                lambda: len({run for _, run in completions(state)}) >= RUNS,
                workers,
                state,
                "the rest",
            )
            # A run whose last step ran in a killed worker is over once it is recovered.
            wait_for(
                lambda: anyio.run(count_completed, url, options) >= RUNS or time.sleep(0.5),
                workers,
                state,
                "the recovered runs",
            )
            for worker in workers[2:]:
                worker.send_signal(signal.SIGTERM)
            for worker in workers[2:]:
                assert worker.wait(timeout=60) == 0, tails(state)
            assert all("SERVING" in out.read_text() for out, _ in logs)
        finally:
            for worker in workers:  # a failed test leaves no process behind
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
        stored = anyio.run(outcomes, url, options)

    assert len(killed) == 2
    for n in range(RUNS):
        assert stored[f"job-{n:04d}"] == ("completed", Ok(n * 2)), (n, stored[f"job-{n:04d}"])
    # Exactly once, but for the step in flight in a killed worker.
    by_run: dict[str, list[int]] = {}
    for pid, run in completions(state):
        by_run.setdefault(run, []).append(pid)
    assert len(by_run) == RUNS
    for run, pids in by_run.items():
        assert all(pid in killed for pid in pids[:-1]), (run, pids)
    extra = Counter(len(pids) for pids in by_run.values())
    assert sum(count for times, count in extra.items() if times > 1) <= 10, extra
    books = json.loads((state / "active.json").read_text())
    assert 1 <= books["most"] <= 5, books
    assert books["running"] == []
