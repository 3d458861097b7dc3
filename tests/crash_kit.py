"""The SIGKILL crash harness shared by the crash tests and their worker processes.

Parent side (``test_*crash.py``): start a worker script, SIGKILL it once it has done some
work, recover runs with two workers (one on each loop), read the side-effect lines the
workers appended.  Child side (``*_child.py``, run as scripts, so they import this module
as ``crash_kit``; it has no relative imports for that reason): append a side-effect line,
run one durable run to its end on SQLite, recover runs until the named ones have ended.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from awaitly_anyio import WorkflowRegistry, open_store, recover

ROOT = Path(__file__).parent.parent

# ---- parent side ------------------------------------------------------------------------


def spawn(child: Path, *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    """Start ``python CHILD ARGS...`` with its output captured as text."""
    return subprocess.Popen(
        [sys.executable, str(child), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def reap(children: Iterable[subprocess.Popen[str]]) -> None:
    """SIGKILL and collect the children still running: a failed trial leaves no process
    behind."""
    for child in children:
        if child.poll() is None:
            child.kill()
            child.communicate()


def effect_lines(path: Path) -> list[list[str]]:
    """The side-effect lines the workers appended to ``path``, split into words."""
    if not path.exists():
        return []
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines()]


def kill_mid_run(
    script: Path, args: Sequence[str], effects: Path, rng: random.Random
) -> int | None:
    """Start ``script`` with ``args``, wait until it has appended a line to ``effects``,
    SIGKILL it after a random moment; its pid if it was killed, ``None`` if it finished
    first."""
    before = len(effect_lines(effects))
    child = spawn(script, *args)
    deadline = time.monotonic() + 30
    while len(effect_lines(effects)) == before and child.poll() is None:
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


def kill_then_finish(
    script: Path, args: Sequence[str], effects: Path, rng: random.Random, kills: int
) -> set[int]:
    """SIGKILL ``script`` mid-run (:func:`kill_mid_run`) until ``kills`` processes died
    (fewer if the run reached its end first), then run it once more to its end: it must
    exit 0 saying ``RESULT ok``.  The pids killed."""
    killed: set[int] = set()
    for _ in range(kills * 2):
        pid = kill_mid_run(script, args, effects, rng)
        if pid is None:
            break  # the run got to its end before the kill
        killed.add(pid)
        if len(killed) == kills:
            break
    final = spawn(script, *args)
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    assert "RESULT ok" in out
    return killed


def assert_only_the_step_in_flight_ran_again(
    lines: Sequence[tuple[int, Hashable]], committed: Mapping[Hashable, int], killed: set[int]
) -> None:
    """The crash promise, from the effect ``lines`` (``(pid, step)`` in the order they
    ran) and each step's checkpointed pid (``committed``): a step's last execution is the
    one checkpointed (nothing ran it after its checkpoint), and every earlier execution
    was the step in flight in a process that was killed (its last effect)."""
    executions: dict[Hashable, list[int]] = defaultdict(list)
    last_by_pid: dict[int, Hashable] = {}
    for pid, step in lines:
        executions[step].append(pid)
        last_by_pid[pid] = step
    for step, committed_pid in committed.items():
        runs_of_step = executions[step]
        assert runs_of_step[-1] == committed_pid, (step, runs_of_step)
        for pid in runs_of_step[:-1]:
            assert pid in killed, (step, runs_of_step)
            assert last_by_pid[pid] == step, (step, pid)


def recover_all(child: Path, args: Sequence[str], run_ids: Sequence[str]) -> None:
    """Two ``recover`` workers of ``child``, one on each loop, recover the runs until all
    of them have ended; each must exit 0 saying ``DONE``."""
    workers = [
        spawn(child, "recover", *args, backend, ",".join(run_ids), cwd=ROOT)
        for backend in ("asyncio", "trio")
    ]
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=180)
            assert worker.returncode == 0, err
            assert "DONE" in out
    finally:
        reap(workers)


async def load_sqlite(db: Path, run_id: str) -> Any:
    """Run ``run_id``'s snapshot from the SQLite database ``db``."""
    async with open_store(f"sqlite:///{db}") as store:
        return await store.load(run_id)


# ---- child side -------------------------------------------------------------------------


def append_line(path: str, text: str, *, fsync: bool = False) -> None:
    """Append one line to ``path`` with a single ``O_APPEND`` write (whole lines even
    when several processes append at once); ``fsync`` makes it durable first."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (text + "\n").encode())
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


async def run_on_sqlite(workflow: Any, body: Any, db: str, run_id: str) -> None:
    """Run ``body`` as run ``run_id`` on the SQLite database ``db``, taking over from a
    killed worker, and print ``RESULT ok`` (or ``RESULT err ...``)."""
    async with open_store(f"sqlite:///{db}") as store:
        # A killed worker leaves its lease behind: wait the short lease out, then take over.
        result = await workflow.run(
            body, workflow_id=run_id, store=store, lease=0.3, if_running="wait"
        )
    print("RESULT", "ok" if result.ok else f"err {result!r}", flush=True)


async def recover_until_ended(
    url: str,
    options: dict[str, Any],
    registry: WorkflowRegistry,
    run_ids: Sequence[str],
    *,
    lease: float,
    limit: int,
) -> None:
    """Recover abandoned runs of ``registry`` (the library's recovery) until every run
    named has ended (completed or failed)."""
    async with open_store(url, **options) as store:
        while True:
            await recover(store, registry, lease=lease, limit=limit)
            ended = 0
            for run_id in run_ids:
                info = await store.info(run_id)
                if info is not None and info.status in ("completed", "failed"):
                    ended += 1
            if ended == len(run_ids):
                return
            await anyio.sleep(0.05)
