"""Durable waiting survives SIGKILL (issue 19), with real processes on SQLite and
PostgreSQL.

Each trial is one run: a worker process starts it, the run checkpoints a step and
waits; the worker is SIGKILLed (by itself, from the ``step_waiting`` handler, or by
this test once it says it waits); with no worker alive the value is delivered (or the
deadline passes); then other workers (one on each loop, competing) recover the runs.
What must hold for every trial: the run ends as it should, the step before the wait
ran once (it was checkpointed before the kill), the step after it ran once, with the
value, the value was consumed once (the mailbox is empty), and a run whose deadline
passed took the timeout path once.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from awaitly_anyio import Ok, WaitTimeoutError, open_store, send

from . import crash_kit
from .test_workers import target

CHILD = Path(__file__).with_name("waiting_child.py")
ROOT = crash_kit.ROOT
TRIALS = 20


def spawn(*args: str) -> subprocess.Popen[str]:
    return crash_kit.spawn(CHILD, *args, cwd=ROOT)


async def deliver(url: str, options: dict[str, Any], values: dict[str, str]) -> None:
    async with open_store(url, **options) as store:
        for run_id, value in values.items():
            await send(store, run_id, "go", value)


async def outcomes(url: str, options: dict[str, Any], run_ids: list[str]) -> dict[str, Any]:
    async with open_store(url, **options) as store:
        return {run_id: await store.load(run_id) for run_id in run_ids}


async def messages_left(kind: str, url: str, options: dict[str, Any]) -> int:
    if kind == "sqlite":
        path = url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
            count: int = db.execute("SELECT COUNT(*) FROM awaitly_messages").fetchone()[0]
        return count
    from .postgres_kit import admin_fetch

    async with open_store(url, **options) as store:
        table = store._pg.sql.messages
    rows = await admin_fetch(f"SELECT COUNT(*) FROM {table}")
    return int(rows[0][0])


def start_and_kill(
    args: list[str], run_ids: list[str], timeout: str, rng: random.Random
) -> set[int]:
    """Start a worker per run, all at once; each is SIGKILLed once its run waits."""
    starters = []
    for n, run_id in enumerate(run_ids):
        # A deadline is short: the worker must die before it, so it kills itself.
        kill = "self" if timeout != "none" or rng.random() < 0.5 else "parent"
        backend = ("asyncio", "trio")[n % 2]
        starters.append((spawn("start", *args, backend, run_id, timeout, kill), kill))
    killed: set[int] = set()
    try:
        for child, kill in starters:
            said = ""
            if kill == "parent":
                assert child.stdout is not None
                said = child.stdout.readline()  # blocks until the run waits (or it dies)
                assert said.strip() == "WAITING", said
                child.send_signal(signal.SIGKILL)
            out, err = child.communicate(timeout=120)
            assert child.returncode == -signal.SIGKILL, (child.returncode, out, err)
            assert "WAITING" in said + out, err
            killed.add(child.pid)
    finally:
        crash_kit.reap(child for child, _ in starters)
    return killed


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_value_delivered_while_no_worker_lives_is_consumed_once(
    tmp_path: Path, kind: str
) -> None:
    rng = random.Random(20261129)
    effects = tmp_path / "effects.txt"
    run_ids = [f"wait-{n:02d}" for n in range(TRIALS)]
    values = {run_id: f"value-{run_id}-{rng.randrange(10**6)}" for run_id in run_ids}
    with target(kind, tmp_path) as (url, options):
        args = [url, json.dumps(options), str(effects)]
        killed = start_and_kill(args, run_ids, "none", rng)
        assert len(killed) == TRIALS
        anyio.run(deliver, url, options, values)  # no worker is alive now
        crash_kit.recover_all(CHILD, args, run_ids)
        stored = anyio.run(outcomes, url, options, run_ids)
        left = anyio.run(messages_left, kind, url, options)

    lines = crash_kit.effect_lines(effects)
    befores = Counter(run for what, _pid, run, *_ in lines if what == "before")
    afters = [(run, rest) for what, _pid, run, *rest in lines if what == "after"]
    for run_id in run_ids:
        snapshot = stored[run_id]
        assert snapshot is not None, run_id
        assert snapshot.status == "completed", (run_id, snapshot.status)
        assert snapshot.result == Ok(values[run_id])
        assert snapshot.steps["go"].result == Ok(values[run_id])
        assert befores[run_id] == 1, (run_id, befores[run_id])
    assert sorted(afters) == sorted((run_id, [values[run_id]]) for run_id in run_ids)
    # The before-step ran in the killed workers, never again in the recovering ones.
    assert {int(pid) for what, pid, *_ in lines if what == "before"} <= killed
    assert [line for line in lines if line[0] == "timeout"] == []
    assert left == 0


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_deadline_passing_while_no_worker_lives_is_taken_once(tmp_path: Path, kind: str) -> None:
    rng = random.Random(20261130)
    effects = tmp_path / "effects.txt"
    run_ids = [f"late-{n:02d}" for n in range(TRIALS)]
    with target(kind, tmp_path) as (url, options):
        args = [url, json.dumps(options), str(effects)]
        killed = start_and_kill(args, run_ids, "0.2", rng)
        assert len(killed) == TRIALS
        crash_kit.recover_all(CHILD, args, run_ids)
        stored = anyio.run(outcomes, url, options, run_ids)

    lines = crash_kit.effect_lines(effects)
    befores = Counter(run for what, _pid, run, *_ in lines if what == "before")
    timeouts = Counter(run for what, _pid, run, *_ in lines if what == "timeout")
    for run_id in run_ids:
        snapshot = stored[run_id]
        assert snapshot is not None, run_id
        assert snapshot.status == "failed", (run_id, snapshot.status)
        record = snapshot.steps["go"].result
        assert not record.ok
        assert isinstance(record.error, WaitTimeoutError), record
        assert befores[run_id] == 1, (run_id, befores[run_id])
        assert timeouts[run_id] == 1, (run_id, timeouts[run_id])
    assert {int(pid) for what, pid, *_ in lines if what == "timeout"}.isdisjoint(killed)
    assert [line for line in lines if line[0] == "after"] == []
