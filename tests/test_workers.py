"""Many worker processes sharing runs on a real store, some of them SIGKILLed.

What must hold: every run completes; a keyed step runs again only if the
worker that ran it was killed before its checkpoint landed; and two
executions of one run never overlap, even when many processes start it at once.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from awaitly_anyio import Ok, open_store

from . import crash_kit
from .kit_base import server_or_skip
from .postgres_kit import DSN, admin, schema_for
from .redis_kit import URL as REDIS_URL
from .redis_kit import prefix_for, wipe

CHILD = Path(__file__).with_name("worker_child.py")
ROOT = Path(__file__).parent.parent
RUNS = 16
STEPS = 5


@contextlib.contextmanager
def target(kind: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """A store URL and options every process can open, cleaned up afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'runs.db'}", {"synchronous": "NORMAL"}
        return
    if kind == "redis":
        prefix = prefix_for(tmp_path)
        try:
            wipe(prefix)
        except Exception as exc:
            server_or_skip("Redis", REDIS_URL, exc)
        try:
            yield REDIS_URL, {"prefix": prefix}
        finally:
            wipe(prefix)
        return
    schema = schema_for(tmp_path)
    try:
        anyio.run(admin, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    except OSError as exc:
        server_or_skip("PostgreSQL", DSN, exc)
    try:
        yield DSN, {"schema": schema}
    finally:
        anyio.run(admin, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def spawn(*args: str) -> subprocess.Popen[str]:
    return crash_kit.spawn(CHILD, *args, cwd=ROOT)


def lines(effects: Path) -> list[tuple[str, int, str, str]]:
    if not effects.exists():
        return []
    found = []
    for line in effects.read_text().splitlines():
        what, pid, run, key = line.split()
        found.append((what, int(pid), run, key))
    return found


async def seed(url: str, options: dict[str, Any]) -> None:
    async with open_store(url, **options) as store:
        for n in range(RUNS):
            await store.mark_running(f"job-{n:02d}", "job", metadata={"input": n})


async def outcomes(url: str, options: dict[str, Any]) -> dict[str, Any]:
    async with open_store(url, **options) as store:
        return {f"job-{n:02d}": await store.load(f"job-{n:02d}") for n in range(RUNS)}


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "redis"])
def test_workers_share_runs_and_survive_sigkill(tmp_path: Path, kind: str) -> None:
    rng = random.Random(20261125)
    effects = tmp_path / "effects.txt"
    with target(kind, tmp_path) as (url, options):
        anyio.run(seed, url, options)
        args = ["work", url, json.dumps(options), str(effects)]
        workers = [spawn(*args, ("asyncio", "trio")[n % 2]) for n in range(3)]
        killed: set[int] = set()
        deadline = time.monotonic() + 120
        while len(killed) < 6 and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.05, 0.2))
            alive = [w for w in workers if w.poll() is None]
            if not alive:
                break
            victim = rng.choice(alive)
            victim.send_signal(signal.SIGKILL)
            victim.communicate()
            killed.add(victim.pid)
            workers.remove(victim)
            workers.append(spawn(*args, rng.choice(["asyncio", "trio"])))
        for worker in workers:
            _out, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err
        # Whatever the kills left unfinished, one last worker completes.
        last = spawn(*args, "trio")
        _out, err = last.communicate(timeout=120)
        assert last.returncode == 0, err
        stored = anyio.run(outcomes, url, options)

    assert len(killed) >= 3, "the workers finished before enough of them were killed"
    executions: dict[tuple[str, str], list[int]] = defaultdict(list)
    last_of_pid: dict[tuple[int, str], str] = {}
    for what, pid, run, key in lines(effects):
        if what == "start":
            executions[run, key].append(pid)
            last_of_pid[pid, run] = key
    for run_id, snapshot in stored.items():
        assert snapshot is not None, run_id
        assert snapshot.status == "completed", (run_id, snapshot.status)
        assert isinstance(snapshot.result, Ok)
        for n in range(STEPS):
            key = f"k{n}"
            committed = int(snapshot.steps[key].result.value.split("@")[1])
            runs_of_key = executions[run_id, key]
            assert runs_of_key[-1] == committed, (run_id, key, runs_of_key)
            for pid in runs_of_key[:-1]:
                # Only a killed worker's in-flight step is ever repeated.
                assert pid in killed, (run_id, key, runs_of_key)
                assert last_of_pid[pid, run_id] == key, (run_id, key, pid)


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "redis"])
def test_one_run_started_everywhere_at_once_never_overlaps(tmp_path: Path, kind: str) -> None:
    effects = tmp_path / "effects.txt"
    with target(kind, tmp_path) as (url, options):
        racers = [
            spawn("race", url, json.dumps(options), str(effects), backend, "hot")
            for backend in ("asyncio", "trio", "asyncio", "trio")
        ]
        for racer in racers:
            _out, err = racer.communicate(timeout=120)
            assert racer.returncode == 0, err
        stored = anyio.run(outcomes_of_hot, url, options)

    assert stored is not None
    assert stored.status == "completed"
    events = [(what, pid, key) for what, pid, run, key in lines(effects) if run == "hot"]
    # One execution per step, each one finished before the next began.
    assert [(what, key) for what, _, key in events] == [
        (what, f"k{n}") for n in range(STEPS) for what in ("start", "end")
    ]


async def outcomes_of_hot(url: str, options: dict[str, Any]) -> Any:
    async with open_store(url, **options) as store:
        return await store.load("hot")
