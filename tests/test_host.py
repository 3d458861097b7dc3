"""WorkflowHost: capacity, graceful shutdown, and a real process stopped by SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from awaitly_anyio import Deps, Ok, WorkflowContext, create_workflow, open_store
from awaitly_anyio.host import HostAtCapacityError, HostClosedError, WorkflowHost
from awaitly_anyio.stores import MemoryStore

pytestmark = pytest.mark.anyio
CHILD = Path(__file__).with_name("host_child.py")


async def test_runs_are_taken_up_to_capacity() -> None:
    workflow = create_workflow("jobs")
    release = anyio.Event()

    async def waits(ctx: WorkflowContext[Deps]) -> str:
        await release.wait()
        return ctx.workflow_id

    async with WorkflowHost(max_active=2) as host:
        first = host.start(workflow, waits, workflow_id="a")
        second = host.start(workflow, waits, workflow_id="b")
        assert host.active == 2
        assert host.readiness()["ready"] is False
        with pytest.raises(HostAtCapacityError, match="max_active=2"):
            host.start(workflow, waits, workflow_id="c")
        release.set()
        assert await first.result() == Ok("a")
        assert await second.result() == Ok("b")
        assert host.active == 0
        assert await host.run(workflow, waits, workflow_id="d") == Ok("d")
    with pytest.raises(HostClosedError):
        host.start(workflow, waits)


async def test_shutdown_lets_active_runs_finish_within_the_grace_period() -> None:
    workflow = create_workflow("jobs")
    started, release = anyio.Event(), anyio.Event()
    closed: list[str] = []

    async def flush() -> None:
        closed.append("telemetry")

    async def body(ctx: WorkflowContext[Deps]) -> str:
        started.set()
        await release.wait()
        return "finished"

    store = MemoryStore()
    async with WorkflowHost(store=store, grace=3600, on_shutdown=[flush]) as host:
        handle = host.start(workflow, body, workflow_id="slow")
        await started.wait()
        async with anyio.create_task_group() as tg:
            tg.start_soon(host.shutdown)
            await anyio.wait_all_tasks_blocked()
            assert host.shutting_down
            with pytest.raises(HostClosedError):
                host.start(workflow, body)
            release.set()
        assert await handle.result() == Ok("finished")
    assert closed == ["telemetry"]
    # The store is the caller's: the host did not close it.
    snapshot = await store.load("slow")
    assert snapshot is not None and snapshot.status == "completed"


async def test_runs_still_active_after_the_grace_period_are_cancelled_and_resumable() -> None:
    workflow = create_workflow("jobs")
    effects: Counter[str] = Counter()
    started = anyio.Event()

    async def body(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step("one", lambda: effects.update(["one"]), key="one")
        started.set()
        await anyio.sleep_forever()
        return "never"

    async def finish(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step("one", lambda: effects.update(["one"]), key="one")
        return "resumed"

    store = MemoryStore()
    async with store:
        async with WorkflowHost(grace=0) as host:
            handle = host.start(workflow, body, workflow_id="stuck", store=store)
            await started.wait()
        with pytest.raises(HostClosedError, match="cancelled"):
            await handle.result()
        snapshot = await store.load("stuck")
        assert snapshot is not None
        assert snapshot.status == "cancelled"
        # Its lease is released: another worker resumes it at once, without step "one".
        assert await workflow.run(finish, workflow_id="stuck", store=store) == Ok("resumed")
        assert effects == {"one": 1}


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="max_active"):
        WorkflowHost(max_active=0)
    with pytest.raises(ValueError, match="grace"):
        WorkflowHost(grace=-1)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigterm_stops_a_busy_service_within_its_grace_period(tmp_path: Path, backend: str) -> None:
    db, effects, runs = tmp_path / "runs.db", tmp_path / "effects.txt", 300
    args = [str(db), str(effects), backend, str(runs)]
    service = subprocess.Popen(
        [sys.executable, str(CHILD), "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert service.stdout is not None
    assert service.stdout.readline().strip() == "READY", service.stderr
    deadline = time.monotonic() + 30
    while (not effects.exists() or len(effects.read_text().splitlines()) < 50) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.01)
    signalled = time.monotonic()
    service.send_signal(signal.SIGTERM)
    out, err = service.communicate(timeout=60)
    took = time.monotonic() - signalled
    assert service.returncode == 0, err
    assert "STOPPED" in out
    assert took < 1.0 + 5.0, f"shutdown took {took:.1f}s for a 1s grace period"

    statuses = anyio.run(_statuses, db, runs)
    assert set(statuses.values()) <= {"completed", "cancelled"}
    assert "cancelled" in statuses.values(), "every run finished before the signal"

    resumer = subprocess.run(
        [sys.executable, str(CHILD), "recover", *args], capture_output=True, text=True, timeout=120
    )
    assert resumer.returncode == 0, resumer.stderr
    assert set(anyio.run(_statuses, db, runs).values()) == {"completed"}
    done = Counter(effects.read_text().splitlines())
    assert len(done) == runs * 3
    assert max(done.values()) == 1, [line for line, n in done.items() if n > 1][:5]


async def _statuses(db: Path, runs: int) -> dict[str, Any]:
    async with open_store(f"sqlite:///{db}") as store:
        found = {}
        for n in range(runs):
            snapshot = await store.load(f"run-{n:03d}")
            found[n] = None if snapshot is None else snapshot.status
        return found
