"""Automatic keys under real crashes: SIGKILL a durable run whose steps have no keys at
random points, run it again: a step whose checkpoint was committed never runs again
(only the step in flight when the process died may), and the run completes with every
step's value.  Both backends (alternating runs), SQLite."""

from __future__ import annotations

import os
import random
from pathlib import Path

import anyio

from awaitly_anyio import Ok

from .crash_kit import (
    assert_only_the_step_in_flight_ran_again,
    effect_lines,
    kill_then_finish,
    load_sqlite,
)

CHILD = Path(__file__).with_name("auto_keys_crash_child.py")
STEPS = 20
RUNS = 6
KILLS_PER_RUN = 5


def _args(db: Path, run_id: str, effects: Path, backend: str) -> list[str]:
    return [str(db), run_id, str(effects), backend, str(STEPS)]


def _lines(effects: Path) -> list[tuple[int, int]]:
    return [(int(pid), int(n)) for pid, n in effect_lines(effects)]


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
        args = _args(db, run_id, effects, backend)
        killed = kill_then_finish(CHILD, args, effects, rng, KILLS_PER_RUN)
        kills += len(killed)

        snapshot = anyio.run(load_sqlite, db, run_id)
        assert snapshot is not None
        assert snapshot.status == "completed"
        assert isinstance(snapshot.result, Ok)
        assert [int(value.split("@")[0]) for value in snapshot.result.value] == list(range(STEPS))
        assert list(snapshot.steps) == [f"awaitly.step:work#{n + 1}" for n in range(STEPS)]

        committed = {
            n: int(snapshot.steps[f"awaitly.step:work#{n + 1}"].result.value.split("@")[1])
            for n in range(STEPS)
        }
        assert_only_the_step_in_flight_ran_again(_lines(effects), committed, killed)
    assert kills >= 20, f"only {kills} processes were killed mid-run"
