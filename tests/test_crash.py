"""Crash safety with real processes: SIGKILL a durable run at random points, rerun it.

What a durable run promises (and what this proves): a keyed step whose
checkpoint was committed never runs again; only the step that was executing
when the process died may run a second time (its side effect happened, its
checkpoint did not); and the run always completes with every step's value.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import anyio
import pytest

from awaitly_anyio import Ok, open_store

CHILD = Path(__file__).with_name("crash_child.py")
STEPS = 25
RUNS = 10
KILLS_PER_RUN = 6


def _start(db: Path, run_id: str, effects: Path, backend: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(db), run_id, str(effects), backend, str(STEPS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lines(effects: Path) -> list[tuple[int, str]]:
    if not effects.exists():
        return []
    pairs = []
    for line in effects.read_text(encoding="utf-8").splitlines():
        pid, key = line.split()
        pairs.append((int(pid), key))
    return pairs


def _kill_mid_run(
    db: Path, run_id: str, effects: Path, backend: str, rng: random.Random
) -> int | None:
    """Start a child, wait until it has done some work, SIGKILL it; return its pid if killed."""
    before = len(_lines(effects))
    child = _start(db, run_id, effects, backend)
    deadline = time.monotonic() + 30
    while len(_lines(effects)) == before and child.poll() is None:
        if time.monotonic() > deadline:
            child.kill()
            raise AssertionError("the child never started working")
        time.sleep(0.002)
    time.sleep(rng.uniform(0, 0.01))
    if child.poll() is not None:
        child.communicate()
        return None
    child.send_signal(signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL
    return child.pid


async def _load(db: Path, run_id: str) -> object:
    async with open_store(f"sqlite:///{db}") as store:
        return await store.load(run_id)


def test_sigkill_at_random_points_never_repeats_a_checkpointed_step(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("AWAITLY_CRASH_SEED", "20261124")))
    db = tmp_path / "runs.db"
    kills = 0
    for run in range(RUNS):
        run_id = f"crash-{run}"
        effects = tmp_path / f"effects-{run}.txt"
        backend = "trio" if run % 2 else "asyncio"
        killed: set[int] = set()
        for _ in range(KILLS_PER_RUN * 2):
            pid = _kill_mid_run(db, run_id, effects, backend, rng)
            if pid is None:
                break  # the run got to its end before the kill
            killed.add(pid)
            if len(killed) == KILLS_PER_RUN:
                break
        kills += len(killed)
        final = _start(db, run_id, effects, backend)
        out, err = final.communicate(timeout=120)
        assert final.returncode == 0, err
        assert "RESULT ok" in out

        snapshot = anyio.run(_load, db, run_id)
        assert snapshot is not None
        assert snapshot.status == "completed"
        keys = [f"step-{n:03d}" for n in range(STEPS)]
        assert isinstance(snapshot.result, Ok)
        assert [value.split("@")[0] for value in snapshot.result.value] == keys

        executions: dict[str, list[int]] = defaultdict(list)
        last_by_pid: dict[int, str] = {}
        for pid, key in _lines(effects):
            executions[key].append(pid)
            last_by_pid[pid] = key
        for key in keys:
            committed_pid = int(snapshot.steps[key].result.value.split("@")[1])
            runs_of_key = executions[key]
            # The committed execution is the last one: nothing ran the step after its checkpoint.
            assert runs_of_key[-1] == committed_pid, (key, runs_of_key)
            # Every earlier execution was the step in flight in a process that was killed.
            for pid in runs_of_key[:-1]:
                assert pid in killed, (key, runs_of_key)
                assert last_by_pid[pid] == key, (key, pid)
    assert kills >= 50, f"only {kills} processes were killed mid-run"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_run_that_was_not_killed_executes_every_step_once(tmp_path: Path, backend: str) -> None:
    db, effects = tmp_path / "runs.db", tmp_path / "effects.txt"
    for _ in range(2):
        child = _start(db, "calm", effects, backend)
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert "RESULT ok" in out
    keys = [key for _, key in _lines(effects)]
    assert keys == [f"step-{n:03d}" for n in range(STEPS)]
