"""Automatic keys under real crashes: SIGKILL a durable run whose steps have no keys at
random points, run it again: a step whose checkpoint was committed never runs again
(only the step in flight when the process died may), and the run completes with every
step's value.  Both backends (alternating runs), SQLite."""

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

from awaitly_anyio import Ok, open_store

CHILD = Path(__file__).with_name("auto_keys_crash_child.py")
STEPS = 20
RUNS = 6
KILLS_PER_RUN = 5


def _start(db: Path, run_id: str, effects: Path, backend: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(db), run_id, str(effects), backend, str(STEPS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lines(effects: Path) -> list[tuple[int, int]]:
    if not effects.exists():
        return []
    pairs = []
    for line in effects.read_text(encoding="utf-8").splitlines():
        pid, n = line.split()
        pairs.append((int(pid), int(n)))
    return pairs


def _kill_mid_run(
    db: Path, run_id: str, effects: Path, backend: str, rng: random.Random
) -> int | None:
    """Start a child, wait until it has done some work, SIGKILL it; its pid if killed."""
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


def test_sigkill_never_repeats_a_step_checkpointed_under_an_automatic_key(
    tmp_path: Path,
) -> None:
    rng = random.Random(int(os.environ.get("AWAITLY_CRASH_SEED", "20261129")))
    db = tmp_path / "runs.db"
    kills = 0
    for run in range(RUNS):
        run_id = f"auto-{run}"
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
        assert isinstance(snapshot.result, Ok)
        assert [int(value.split("@")[0]) for value in snapshot.result.value] == list(range(STEPS))
        assert list(snapshot.steps) == [f"awaitly.step:work#{n + 1}" for n in range(STEPS)]

        executions: dict[int, list[int]] = defaultdict(list)
        last_by_pid: dict[int, int] = {}
        for pid, n in _lines(effects):
            executions[n].append(pid)
            last_by_pid[pid] = n
        for n in range(STEPS):
            record = snapshot.steps[f"awaitly.step:work#{n + 1}"].result.value
            committed_pid = int(record.split("@")[1])
            runs_of_step = executions[n]
            # The committed execution is the last: nothing ran the step after its checkpoint.
            assert runs_of_step[-1] == committed_pid, (n, runs_of_step)
            # Every earlier execution was the step in flight in a process that was killed.
            for pid in runs_of_step[:-1]:
                assert pid in killed, (n, runs_of_step)
                assert last_by_pid[pid] == n, (n, pid)
    assert kills >= 20, f"only {kills} processes were killed mid-run"
