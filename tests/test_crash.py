"""Crash safety with real processes: SIGKILL a durable run at random points, rerun it.

What a durable run promises (and what this proves): a keyed step whose
checkpoint was committed never runs again; only the step that was executing
when the process died may run a second time (its side effect happened, its
checkpoint did not); and the run always completes with every step's value.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import anyio
import pytest

from awaitly_anyio import Ok

from .crash_kit import (
    assert_only_the_step_in_flight_ran_again,
    effect_lines,
    kill_then_finish,
    load_sqlite,
    spawn,
)

CHILD = Path(__file__).with_name("crash_child.py")
STEPS = 25
RUNS = 10
KILLS_PER_RUN = 6


def _args(db: Path, run_id: str, effects: Path, backend: str) -> list[str]:
    return [str(db), run_id, str(effects), backend, str(STEPS)]


def _lines(effects: Path) -> list[tuple[int, str]]:
    return [(int(pid), key) for pid, key in effect_lines(effects)]


def test_sigkill_at_random_points_never_repeats_a_checkpointed_step(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("AWAITLY_CRASH_SEED", "20261124")))
    db = tmp_path / "runs.db"
    kills = 0
    for run in range(RUNS):
        run_id = f"crash-{run}"
        effects = tmp_path / f"effects-{run}.txt"
        backend = "trio" if run % 2 else "asyncio"
        args = _args(db, run_id, effects, backend)
        killed = kill_then_finish(CHILD, args, effects, rng, KILLS_PER_RUN)
        kills += len(killed)

        snapshot = anyio.run(load_sqlite, db, run_id)
        assert snapshot is not None
        assert snapshot.status == "completed"
        keys = [f"step-{n:03d}" for n in range(STEPS)]
        assert isinstance(snapshot.result, Ok)
        assert [value.split("@")[0] for value in snapshot.result.value] == keys

        committed = {key: int(snapshot.steps[key].result.value.split("@")[1]) for key in keys}
        assert_only_the_step_in_flight_ran_again(_lines(effects), committed, killed)
    assert kills >= 50, f"only {kills} processes were killed mid-run"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_run_that_was_not_killed_executes_every_step_once(tmp_path: Path, backend: str) -> None:
    db, effects = tmp_path / "runs.db", tmp_path / "effects.txt"
    for _ in range(2):
        child = spawn(CHILD, *_args(db, "calm", effects, backend))
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert "RESULT ok" in out
    keys = [key for _, key in _lines(effects)]
    assert keys == [f"step-{n:03d}" for n in range(STEPS)]
