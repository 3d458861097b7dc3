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
import anyio.lowlevel
import pytest

from awaitly_anyio import (
    Deps,
    Ok,
    RecoveredRun,
    Workflow,
    WorkflowContext,
    WorkflowRegistry,
    create_workflow,
    open_store,
)
from awaitly_anyio._host import HostAtCapacityError, HostClosedError, RunHandle, WorkflowHost
from awaitly_anyio._queues import Queue, enqueue
from awaitly_anyio._schedules import Schedule, add_schedule, tick_run_id
from awaitly_anyio.stores import MemoryStore
from awaitly_anyio.testing import FakeClock, ManualClock

from .kit_base import StoreKit
from .store_kits import KITS, kit_ids

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
    assert snapshot is not None
    assert snapshot.status == "completed"


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


async def _statuses(db: Path, runs: int) -> dict[int, Any]:
    async with open_store(f"sqlite:///{db}") as store:
        found = {}
        for n in range(runs):
            snapshot = await store.load(f"run-{n:03d}")
            found[n] = None if snapshot is None else snapshot.status
        return found


# ---- store ownership ---------------------------------------------------------------------


async def test_a_store_the_caller_opened_stays_open_after_the_host(tmp_path: Path) -> None:
    workflow = create_workflow("jobs")

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return "done"

    async with open_store(f"sqlite:///{tmp_path / 'runs.db'}") as store:
        async with WorkflowHost(store=store) as host:
            assert await host.run(workflow, body, workflow_id="a") == Ok("done")
        # Still the caller's, still open: a second host (a restart) can use it.
        async with WorkflowHost(store=store) as host:
            assert await host.run(workflow, body, workflow_id="b") == Ok("done")
        snapshot = await store.load("a")
        assert snapshot is not None
        assert snapshot.status == "completed"


async def test_a_store_given_as_a_url_is_opened_and_closed_by_the_host(tmp_path: Path) -> None:
    workflow = create_workflow("jobs")

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return "done"

    host = WorkflowHost(store=f"sqlite:///{tmp_path / 'runs.db'}")
    async with host:
        assert await host.run(workflow, body, workflow_id="a") == Ok("done")
    assert host.store is not None
    with pytest.raises(RuntimeError, match="closed"):
        await host.store.load("a")
    async with open_store(f"sqlite:///{tmp_path / 'runs.db'}") as store:
        snapshot = await store.load("a")
        assert snapshot is not None
        assert snapshot.status == "completed"


def test_bad_stores_are_refused_without_showing_a_password() -> None:
    with pytest.raises(TypeError, match=r"store must be a store .* not int"):
        WorkflowHost(store=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid store URL") as caught:
        WorkflowHost(store="postgresql://app:hunter2@db:notaport/orders")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValueError, match="store_options"):
        WorkflowHost(store=MemoryStore(), store_options={"synchronous": "OFF"})


async def test_a_url_store_that_cannot_be_reached_fails_the_start_without_its_password() -> None:
    host = WorkflowHost(store="postgresql://app:hunter2@127.0.0.1:1/orders")
    with pytest.raises(ConnectionError, match="could not open the store") as caught:
        async with host:
            pass
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(caught.value)


# ---- recovery through the host -----------------------------------------------------------


def _stuck_registry(
    effects: Counter[str], release: anyio.Event
) -> tuple[WorkflowRegistry, Workflow[Deps]]:
    registry = WorkflowRegistry()
    workflow = create_workflow("reports")

    @registry.workflow(workflow)
    async def body(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step("gather", lambda: effects.update([ctx.workflow_id]), key="gather")
        await release.wait()
        return f"{ctx.workflow_id} done"

    return registry, workflow


async def _abandon(store: MemoryStore, registry: WorkflowRegistry, ids: list[str]) -> None:
    """Leave runs ``cancelled`` after their first step, as a shutdown past its grace does."""
    async with WorkflowHost(grace=0, store=store) as host:
        workflow, body = registry.get("reports")
        handles: list[RunHandle[Any]] = [host.start(workflow, body, workflow_id=id) for id in ids]
        await anyio.wait_all_tasks_blocked()
    for handle in handles:
        with pytest.raises(HostClosedError):
            await handle.result()


async def test_recovered_runs_count_against_capacity_and_show_in_readiness() -> None:
    effects: Counter[str] = Counter()
    release = anyio.Event()
    registry, workflow = _stuck_registry(effects, release)
    store = MemoryStore()
    async with store:
        await _abandon(store, registry, ["r-1", "r-2", "r-3"])
        recovered: list[RecoveredRun] = []
        async with WorkflowHost(max_active=2, store=store) as host:
            handles = await host.recover(registry, on_recovered=recovered.append)
            # Only as many as the host has room for.
            assert len(handles) == 2
            assert host.active == 2
            assert host.readiness()["ready"] is False
            with pytest.raises(HostAtCapacityError):
                host.start(workflow, registry.get("reports")[1], workflow_id="new")
            assert await host.recover(registry) == []
            release.set()
            results = [await handle.result() for handle in handles]
            assert sorted(r.unwrap() for r in results) == sorted(
                f"{h.workflow_id} done" for h in handles
            )
            [last] = await host.recover(registry, on_recovered=recovered.append)
            assert await last.result() == Ok(f"{last.workflow_id} done")
        assert sorted(run.id for run in recovered) == ["r-1", "r-2", "r-3"]
        assert effects == {"r-1": 1, "r-2": 1, "r-3": 1}  # "gather" never ran twice


@pytest.mark.parametrize("grace", [0, 3600])
async def test_recovered_runs_get_the_grace_period_at_shutdown(grace: int) -> None:
    effects: Counter[str] = Counter()
    release = anyio.Event()
    registry, _ = _stuck_registry(effects, release)
    store = MemoryStore()
    async with store:
        await _abandon(store, registry, ["r-1"])
        async with WorkflowHost(store=store, grace=grace) as host:
            [handle] = await host.recover(registry)
            await anyio.wait_all_tasks_blocked()
            async with anyio.create_task_group() as tg:
                tg.start_soon(host.shutdown)
                await anyio.wait_all_tasks_blocked()
                assert host.shutting_down
                assert host.readiness()["ready"] is False
                release.set()
        snapshot = await store.load("r-1")
        assert snapshot is not None
        if grace:
            # Waited for within the grace period: it finished.
            assert await handle.result() == Ok("r-1 done")
            assert snapshot.status == "completed"
        else:
            # Cancelled at once, and recorded for the next worker.
            with pytest.raises(HostClosedError):
                await handle.result()
            assert snapshot.status == "cancelled"


async def test_the_recovery_loop_runs_in_the_host_and_stops_first_at_shutdown() -> None:
    effects: Counter[str] = Counter()
    release = anyio.Event()
    registry, _ = _stuck_registry(effects, release)
    store = MemoryStore()
    clock = ManualClock()
    async with store:
        await _abandon(store, registry, ["r-1", "r-2", "r-3"])
        recovered: list[RecoveredRun] = []
        async with WorkflowHost(store=store, max_active=1, grace=3600) as host:
            host.start_recovery(registry, interval=5, clock=clock, on_recovered=recovered.append)
            await anyio.wait_all_tasks_blocked()
            assert host.active == 1  # one pass, one free slot
            clock.advance(5)  # a pass while full claims nothing
            await anyio.wait_all_tasks_blocked()
            assert host.active == 1
            assert clock.sleeping == 1
            async with anyio.create_task_group() as tg:
                tg.start_soon(host.shutdown)
                await anyio.wait_all_tasks_blocked()
                # Draining: the loop is already stopped, so time passing claims nothing.
                assert clock.sleeping == 0
                clock.advance(5)
                await anyio.wait_all_tasks_blocked()
                assert host.active == 1
                release.set()
        assert len(recovered) == 1
        left = [await store.load(id) for id in ("r-1", "r-2", "r-3")]
        statuses = sorted(s.status for s in left if s is not None)
        assert statuses == ["cancelled", "cancelled", "completed"]


def test_recovery_needs_a_store_with_leases_and_a_running_host() -> None:
    registry = WorkflowRegistry()
    with pytest.raises(TypeError, match="LeaseStore"):
        WorkflowHost().start_recovery(registry)
    with pytest.raises(HostClosedError):
        WorkflowHost(store=MemoryStore()).start_recovery(registry)
    with pytest.raises(TypeError, match="WorkflowRegistry"):
        WorkflowHost(store=MemoryStore()).start_recovery("reports")  # type: ignore[arg-type]


@pytest.mark.parametrize("kit", KITS, ids=kit_ids())
async def test_every_store_recovers_through_the_host_and_stays_the_callers(
    kit: StoreKit, tmp_path: Path
) -> None:
    effects: Counter[str] = Counter()
    release = anyio.Event()
    registry, _ = _stuck_registry(effects, release)
    workflow = registry.get("reports")[0]
    async with kit.open(tmp_path, FakeClock()) as store:
        started = anyio.Event()

        async def first(ctx: WorkflowContext[Deps]) -> str:
            await ctx.step("gather", lambda: effects.update([ctx.workflow_id]), key="gather")
            started.set()
            await anyio.sleep_forever()
            return "never"

        async with WorkflowHost(grace=0, store=store) as host:
            host.start(workflow, first, workflow_id="r-1")
            await started.wait()
        recovered: list[RecoveredRun] = []
        async with WorkflowHost(store=store, max_active=3) as host:
            release.set()
            [handle] = await host.recover(registry, on_recovered=recovered.append)
            assert await handle.result() == Ok("r-1 done")
        assert [(run.id, run.result) for run in recovered] == [("r-1", Ok("r-1 done"))]
        assert effects == {"r-1": 1}
        # The store is still open: the hosts did not close what they did not open.
        snapshot = await store.load("r-1")
        assert snapshot is not None
        assert snapshot.status == "completed"


async def test_serve_queues_checks_its_arguments() -> None:
    registry = WorkflowRegistry()
    with pytest.raises(TypeError, match="LeaseStore"):
        WorkflowHost().serve_queues(registry, [Queue("q")])
    with pytest.raises(HostClosedError):
        WorkflowHost(store=MemoryStore()).serve_queues(registry, [Queue("q")])
    async with MemoryStore() as store, WorkflowHost(store=store) as host:
        with pytest.raises(TypeError, match="WorkflowRegistry"):
            host.serve_queues("jobs", [Queue("q")])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="Queue"):
            host.serve_queues(registry, "q")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="poll_interval"):
            host.serve_queues(registry, [Queue("q")], poll_interval=0)
        with pytest.raises(ValueError, match="lease"):
            host.serve_queues(registry, [Queue("q")], lease=-1)
        host.serve_queues(registry, [Queue("q")], recovery_interval=None)
        with pytest.raises(ValueError, match="already served"):
            host.serve_queues(registry, [Queue("q")], recovery_interval=None)


async def test_ready_reports_the_served_queues_and_a_run_of_an_unknown_workflow_waits() -> None:
    """A queued run of a workflow this host has not registered is never claimed (the
    store filters by the registry's names): it stays pending for a worker that knows it,
    and the host's health reports its workflow as unregistered."""
    import httpx

    from awaitly_anyio.health import create_health_app

    async with MemoryStore() as store:
        await enqueue(store, "elsewhere", 1, id="stray", queue="q")
        async with WorkflowHost(
            store=store, registry=WorkflowRegistry(), queues=[Queue("q")]
        ) as host:
            await anyio.wait_all_tasks_blocked()
            app = create_health_app(host=host)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as http:
                health = (await http.get("/health")).json()
                ready = await http.get("/ready")
        assert health["status"] == "healthy"  # reported, not a failure of this worker
        assert health["unregistered_workflows"] == {
            "elsewhere": {"pending": 1, "abandoned": 0, "last_run": "stray"}
        }
        assert ready.status_code == 200
        assert ready.json()["queues"] == {"q": 0}
        info = await store.info("stray")
        assert info is not None
        assert (info.status, info.lease_owner) == ("pending", None)


@pytest.mark.parametrize("kit", KITS, ids=kit_ids())
async def test_every_store_reports_queued_and_abandoned_runs_of_unregistered_workflows(
    kit: StoreKit, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 20: runs no worker of this registry takes are reported (readiness, one
    warning per workflow), not left silently pending or running for ever."""
    clock = ManualClock(wall=WALL)
    seen: list[tuple[str, Any]] = []
    registry = _report_registry(seen, anyio.Event())
    async with kit.open(tmp_path, clock) as store:  # type: ignore[arg-type]
        await enqueue(store, "elsewhere", 1, id="stray", queue="q")
        await enqueue(store, "elsewhere", 2, id="stray-2", queue="q")
        await enqueue(store, "other", 1, id="not-ours", queue="r")  # a queue not served here
        await store.claim("lost", "gone", owner="dead-worker", lease=5)
        await store.claim("busy", "alive", owner="live-worker", lease=3600)
        clock.advance(10)  # "lost"'s lease has expired, "busy"'s has not
        async with WorkflowHost(store=store, max_active=1) as host:
            host.serve_queues(registry, [Queue("q")], clock=clock, recovery_interval=30)
            await _until(lambda: "gone" in host.readiness()["unregistered_workflows"])
            await _until(lambda: "elsewhere" in host.readiness()["unregistered_workflows"])
            assert host.readiness()["unregistered_workflows"] == {
                "elsewhere": {"pending": 2, "abandoned": 0, "last_run": "stray"},
                "gone": {"pending": 0, "abandoned": 1, "last_run": "lost"},
            }
            # The next pass finds them again: the counts stay, no new warning.
            clock.advance(30)
            await _until(lambda: clock.sleeping >= 2)
            await anyio.wait_all_tasks_blocked()
            assert host.readiness()["unregistered_workflows"]["elsewhere"]["pending"] == 2
            await host.shutdown(grace=0)
        warned = [r.getMessage() for r in caplog.records if "is not registered" in r.getMessage()]
        assert len(warned) == 2, warned
        assert any("'gone'" in text and "abandoned" in text for text in warned)
        for id in ("stray", "stray-2", "lost"):  # reported, never taken
            info = await store.info(id)
            assert info is not None
            assert info.lease_owner in (None, "dead-worker")
        assert seen == []


async def test_a_large_store_is_swept_a_page_per_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """One page per status and pass: the report is replaced when a sweep ends, so a
    run that was taken care of leaves it."""
    from awaitly_anyio import _host

    monkeypatch.setattr(_host, "ORPHAN_PAGE", 2)
    clock = ManualClock(wall=WALL)
    async with MemoryStore(clock=clock) as store:
        for n in range(5):
            await store.claim(f"lost-{n}", "gone", owner="dead-worker", lease=5)
        clock.advance(10)
        async with WorkflowHost(store=store) as host:
            host.start_recovery(WorkflowRegistry(), interval=1, clock=clock)

            async def passes(count: int) -> dict[str, Any]:
                for _ in range(count):
                    await _until(lambda: clock.sleeping >= 1)
                    await anyio.wait_all_tasks_blocked()
                    clock.advance(1)
                await _until(lambda: clock.sleeping >= 1)
                await anyio.wait_all_tasks_blocked()
                report: dict[str, Any] = host.readiness()["unregistered_workflows"]
                return report

            assert await passes(0) == {}  # 2 of 5 read: the sweep goes on
            assert await passes(2) == {"gone": {"pending": 0, "abandoned": 5, "last_run": "lost-0"}}
            await store.delete("lost-0")
            await store.delete("lost-1")
            assert (await passes(2))["gone"]["abandoned"] == 3
            for n in range(2, 5):
                await store.delete(f"lost-{n}")
            assert await passes(2) == {}
            await host.shutdown(grace=0)


# ---- schedules ---------------------------------------------------------------------------

WALL = 120.0 * 14_166_667  # a multiple of a minute: the ticks are easy to name


def _beat(**changes: Any) -> Schedule:
    fields: dict[str, Any] = {"name": "beat", "workflow": "report", "every": 60, "queue": "q"}
    return Schedule(**{**fields, **changes})


def _report_registry(seen: list[tuple[str, Any]], release: anyio.Event) -> WorkflowRegistry:
    registry = WorkflowRegistry()
    workflow = create_workflow("report")

    @registry.workflow(workflow)
    async def body(ctx: WorkflowContext[Deps]) -> str:
        seen.append((ctx.workflow_id or "?", ctx.input))
        await release.wait()
        return "reported"

    return registry


async def _until(check: Any) -> None:
    """Until ``check()`` holds (a bound against a hang, not a timing)."""
    with anyio.fail_after(30):
        while not check():
            await anyio.lowlevel.checkpoint()


async def test_the_host_serves_schedules_and_stops_them_first_at_shutdown() -> None:
    clock = ManualClock(wall=WALL)
    seen: list[tuple[str, Any]] = []
    release = anyio.Event()
    registry = _report_registry(seen, release)
    async with MemoryStore() as store:
        await add_schedule(store, _beat(input={"n": 1}), clock=clock)
        async with WorkflowHost(store=store, grace=3600) as host:
            try:
                host.serve_queues(registry, [Queue("q")], clock=clock, recovery_interval=None)
                host.serve_schedules(clock=clock, recheck=3600)
                await anyio.wait_all_tasks_blocked()
                assert host.readiness()["schedules"] == {
                    "passes": 1,
                    "last_pass": WALL,
                    "started": 0,
                }
                clock.advance(60)  # the first tick
                await _until(lambda: len(seen) == 1)
                assert seen == [(tick_run_id("beat", WALL + 60), {"n": 1})]
                await anyio.wait_all_tasks_blocked()
                assert host.readiness()["schedules"] == {
                    "passes": 2,
                    "last_pass": WALL + 60,
                    "started": 1,
                }
                assert host.active == 1  # the tick's run holds the host through the drain
                async with anyio.create_task_group() as tg:
                    tg.start_soon(host.shutdown)
                    await anyio.wait_all_tasks_blocked()
                    assert clock.sleeping == 0  # the schedules loop (and the queue's) stopped
                    clock.advance(600)  # ten ticks pass during the drain: none is enqueued
                    await anyio.wait_all_tasks_blocked()
                    release.set()
            finally:
                release.set()  # also when an assertion failed (the drain waits an hour)
        listed = (await store.list(prefix="beat@", limit=100)).items
        assert [(info.id, info.status) for info in listed] == [
            (tick_run_id("beat", WALL + 60), "completed")
        ]


@pytest.mark.parametrize("kit", KITS, ids=kit_ids())
async def test_every_store_runs_a_schedule_added_while_the_host_serves_it(
    kit: StoreKit, tmp_path: Path
) -> None:
    clock = ManualClock(wall=WALL)
    seen: list[tuple[str, Any]] = []
    release = anyio.Event()
    release.set()
    registry = _report_registry(seen, release)
    async with kit.open(tmp_path, FakeClock()) as store:
        async with WorkflowHost(store=store, grace=60) as host:
            host.serve_queues(registry, [Queue("q")], clock=clock, recovery_interval=None)
            # recheck an hour: only the push of the change below makes the loop look
            # again before the clock is moved a minute on.
            host.serve_schedules(clock=clock, recheck=3600)
            await _until(lambda: host.readiness()["schedules"]["passes"] == 1)
            await add_schedule(store, _beat(input="hi"), clock=clock)
            await _until(lambda: host.readiness()["schedules"]["passes"] == 2)
            # Both loops asleep on the clock (the queue's, and the schedules' until the
            # first tick), so moving it on wakes them.
            await _until(lambda: clock.sleeping == 2)
            clock.advance(60)
            await _until(lambda: len(seen) == 1)
        assert seen == [(tick_run_id("beat", WALL + 60), "hi")]
        info = await store.info(tick_run_id("beat", WALL + 60))
        assert info is not None
        assert info.status == "completed"


async def test_a_host_given_schedules_serves_them_from_its_start() -> None:
    async with MemoryStore() as store, WorkflowHost(store=store, schedules=True) as host:
        await _until(lambda: host.readiness()["schedules"]["passes"] >= 1)
        state = host.readiness()["schedules"]
        assert state["started"] == 0
        assert isinstance(state["last_pass"], float)
        with pytest.raises(ValueError, match="serves the schedules already"):
            host.serve_schedules()
    async with MemoryStore() as store, WorkflowHost(store=store) as host:
        assert "schedules" not in host.readiness()  # not served: not reported


async def test_serve_schedules_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="schedules need a store"):
        WorkflowHost(schedules=True)
    with pytest.raises(TypeError, match="schedules must be True or False"):
        WorkflowHost(store=MemoryStore(), schedules=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="QueueStore"):
        WorkflowHost().serve_schedules()
    with pytest.raises(HostClosedError):
        WorkflowHost(store=MemoryStore()).serve_schedules()
    async with MemoryStore() as store, WorkflowHost(store=store) as host:
        with pytest.raises(ValueError, match="recheck"):
            host.serve_schedules(recheck=0)
        await host.shutdown()
        with pytest.raises(HostClosedError):
            host.serve_schedules()
