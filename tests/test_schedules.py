"""Schedules (issue 20): interval and cron schedules kept in the store, one run per tick
whatever the number of workers, missed ticks skipped or caught up (bounded), paused,
resumed and removed; bad schedules refused with errors naming what is wrong.

The timetable tests are pure; the store tests run on every store kit (memory, SQLite,
PostgreSQL, Redis), on asyncio and trio, with injected clocks (no real sleeps)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from awaitly_anyio._input import INPUT_KEY
from awaitly_anyio._schedules import (
    MAX_CATCH_UP,
    Schedule,
    ScheduleInfo,
    SchedulePass,
    add_schedule,
    fire_schedules,
    list_schedules,
    pause_schedule,
    remove_schedule,
    resume_schedule,
    run_schedules,
    tick_run_id,
)
from awaitly_anyio.stores import MemoryStore
from awaitly_anyio.testing import FakeClock, ManualClock

from .kit_base import StoreKit
from .store_kits import KITS

MINUTE = 60.0
T0 = 120.0 * 14_166_667  # a multiple of two minutes (2023-11-14T22:14:00Z): ticks are easy to name
WALL = T0


def at(text: str) -> float:
    """Epoch seconds of an ISO time in UTC (``"2026-03-29T01:00:00"``)."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def every_minute(**changes: Any) -> Schedule:
    fields: dict[str, Any] = {"name": "beat", "workflow": "report", "every": 60, "queue": "q"}
    return Schedule(**{**fields, **changes})


# ---- the timetable ---------------------------------------------------------------------------


def test_interval_ticks_are_multiples_of_the_interval_since_the_epoch() -> None:
    schedule = every_minute(every=timedelta(minutes=5))
    assert schedule.every == 300
    assert schedule.next_tick(1000.0) == 1200.0
    assert schedule.next_tick(1200.0) == 1500.0  # strictly after
    assert schedule.due_ticks(1000.0, 1199.0) == ([], False)
    assert schedule.due_ticks(1000.0, 1200.0) == ([1200.0], False)


def test_skip_runs_only_the_latest_missed_tick() -> None:
    schedule = every_minute()
    assert schedule.missed == "skip"
    assert schedule.due_ticks(0.0, 600.0) == ([600.0], True)
    assert schedule.due_ticks(540.0, 600.0) == ([600.0], False)


def test_catch_up_runs_the_latest_missed_ticks_oldest_first_and_is_bounded() -> None:
    schedule = every_minute(catch_up=3)
    assert schedule.missed == "catch_up"
    assert schedule.due_ticks(0.0, 600.0) == ([480.0, 540.0, 600.0], True)
    assert schedule.due_ticks(420.0, 600.0) == ([480.0, 540.0, 600.0], False)
    assert schedule.due_ticks(480.0, 600.0) == ([540.0, 600.0], False)


def test_cron_ticks() -> None:
    schedule = every_minute(every=None, cron="*/5 * * * *")
    start = at("2026-11-29T02:03:10")
    assert schedule.next_tick(start) == at("2026-11-29T02:05:00")
    assert schedule.next_tick(at("2026-11-29T02:05:00")) == at("2026-11-29T02:10:00")
    assert schedule.due_ticks(start, at("2026-11-29T02:20:00")) == (
        [at("2026-11-29T02:20:00")],
        True,
    )
    caught = every_minute(every=None, cron="*/5 * * * *", catch_up=2)
    assert caught.due_ticks(start, at("2026-11-29T02:14:59")) == (
        [at("2026-11-29T02:05:00"), at("2026-11-29T02:10:00")],
        False,
    )
    seconds = every_minute(every=None, cron="*/15 * * * * *")  # 6 fields: seconds first
    assert seconds.next_tick(at("2026-11-29T02:00:01")) == at("2026-11-29T02:00:15")
    daily = every_minute(every=None, cron="@daily")
    assert daily.next_tick(at("2026-11-29T02:00:00")) == at("2026-11-30T00:00:00")


def test_a_year_without_a_worker_costs_only_the_ticks_kept() -> None:
    # Computed backwards from now: half a million missed minutes are not walked through.
    schedule = every_minute(every=None, cron="* * * * *", catch_up=2)
    ticks, dropped = schedule.due_ticks(at("2025-01-01T00:00:00"), at("2026-01-01T00:00:30"))
    assert ticks == [at("2025-12-31T23:59:00"), at("2026-01-01T00:00:00")]
    assert dropped


def test_cron_in_a_timezone_follows_its_daylight_saving_time() -> None:
    schedule = every_minute(every=None, cron="0 2 * * *", timezone="Europe/Paris")
    assert schedule.next_tick(at("2026-01-10T12:00:00")) == at("2026-01-11T01:00:00")  # CET
    assert schedule.next_tick(at("2026-07-10T12:00:00")) == at("2026-07-11T00:00:00")  # CEST
    # 2026-03-29 02:00 does not exist in Paris: like Debian cron, it runs at 03:00 CEST.
    caught = every_minute(every=None, cron="0 2 * * *", timezone="Europe/Paris", catch_up=5)
    ticks, _ = caught.due_ticks(at("2026-03-27T12:00:00"), at("2026-03-30T12:00:00"))
    assert ticks == [
        at("2026-03-28T01:00:00"),
        at("2026-03-29T01:00:00"),
        at("2026-03-30T00:00:00"),
    ]


def test_run_ids_name_the_schedule_and_the_tick_in_utc() -> None:
    assert tick_run_id("nightly", at("2026-11-29T02:00:00")) == "nightly@2026-11-29T02:00:00Z"


def test_a_schedule_survives_its_stored_form() -> None:
    for schedule in (
        every_minute(input={"region": "eu", "n": [1, 2]}, catch_up=4, priority=3),
        every_minute(every=None, cron="0 2 * * 1-5", timezone="Europe/Paris", paused=True),
    ):
        assert Schedule.from_spec(schedule.name, schedule.to_spec()) == schedule


BAD: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"every": None}, ValueError, "needs exactly one of cron= or every=, not neither"),
    ({"cron": "* * * * *"}, ValueError, "needs exactly one of cron= or every=, not both"),
    (
        {"every": None, "cron": "61 * * * *"},
        ValueError,
        "invalid cron expression '61 * * * *': bad minute",
    ),
    ({"every": None, "cron": "* * *"}, ValueError, "'* * *': wrong number of fields"),
    ({"every": None, "cron": "@sometimes"}, ValueError, "'@sometimes': unknown nickname"),
    ({"every": None, "cron": "0 0 31 2 *"}, ValueError, "'0 0 31 2 *': bad day-of-month"),
    ({"every": None, "cron": 5}, TypeError, "cron must be a cron expression string"),
    (
        {"every": None, "cron": "* * * * *", "timezone": "Mars/Olympus"},
        ValueError,
        "unknown timezone 'Mars/Olympus'",
    ),
    ({"timezone": "UTC"}, ValueError, "timezone applies to cron schedules only"),
    ({"every": -5}, ValueError, "every must be finite seconds > 0 (or a timedelta), not -5"),
    ({"every": timedelta(seconds=-1)}, ValueError, "every must be finite seconds > 0"),
    ({"every": 0}, ValueError, "every must be finite seconds > 0"),
    ({"every": 1.5}, ValueError, "every must be a whole number of seconds from 1"),
    ({"every": float("inf")}, ValueError, "every must be finite seconds"),
    ({"every": "60"}, TypeError, "every must be seconds or a timedelta, not '60'"),
    ({"catch_up": 0}, ValueError, f"catch_up must be from 1 to {MAX_CATCH_UP} ticks, not 0"),
    ({"catch_up": MAX_CATCH_UP + 1}, ValueError, "catch_up must be from 1 to"),
    ({"catch_up": True}, TypeError, "catch_up must be None (skip) or a number of ticks"),
    ({"name": ""}, ValueError, "a schedule name must be a non-empty string"),
    ({"name": "a@b"}, ValueError, "a schedule name must not contain '@'"),
    ({"name": "a\x00b"}, ValueError, "a schedule name must not contain NUL"),
    ({"workflow": ""}, ValueError, "a workflow name must be a non-empty string"),
    ({"queue": ""}, ValueError, "a queue name must be a non-empty string"),
    ({"priority": -1}, ValueError, "priority must be an int from 0 to 2**31-1, not -1"),
    ({"paused": "yes"}, TypeError, "paused must be True or False"),
]


@pytest.mark.parametrize(("changes", "kind", "message"), BAD)
def test_a_bad_schedule_is_refused_naming_what_is_wrong(
    changes: dict[str, Any], kind: type[Exception], message: str
) -> None:
    with pytest.raises(kind) as caught:
        every_minute(**changes)
    assert message in str(caught.value)


def test_without_cronsim_a_cron_schedule_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cronsim", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'awaitly-anyio\[cron\]'"):
        every_minute(every=None, cron="* * * * *")
    every_minute()  # interval schedules need no cronsim


def test_an_unreadable_stored_form_is_named() -> None:
    with pytest.raises(ValueError, match="stored schedule 'x' is unreadable: format version 99"):
        Schedule.from_spec("x", {**every_minute().to_spec(), "v": 99})
    with pytest.raises(ValueError, match="stored schedule 'x' is unreadable: no 'workflow'"):
        Schedule.from_spec("x", {"v": 1})
    with pytest.raises(ValueError, match="stored schedule 'x' is unreadable: every must"):
        Schedule.from_spec("x", {**every_minute().to_spec(), "every": -1})


# ---- in the store ------------------------------------------------------------------------------

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def opened(kit: StoreKit, tmp_path: Path, count: int = 1) -> AsyncIterator[list[Any]]:
    """``count`` store objects over one database (as ``count`` workers have)."""
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(kit.open(tmp_path, FakeClock())) for _ in range(count)
        ]


async def runs_of(store: Any, prefix: str = "beat@") -> list[Any]:
    return sorted((await store.list(prefix=prefix, limit=1000)).items, key=lambda info: info.id)


def minute(n: int) -> str:
    """The id of schedule ``beat``'s run for the ``n``-th minute after T0."""
    return tick_run_id("beat", T0 + n * MINUTE)


async def test_a_due_tick_enqueues_one_run_with_the_input(kit: StoreKit, tmp_path: Path) -> None:
    clock = FakeClock(wall=WALL)
    async with opened(kit, tmp_path) as (store,):
        await add_schedule(store, every_minute(input={"region": "eu"}, priority=7), clock=clock)
        first = await fire_schedules(store, clock=clock)
        assert first.started == ()
        assert first.next_tick == T0 + MINUTE
        clock.advance(MINUTE)
        done = await fire_schedules(store, clock=clock)
        assert done.started == (minute(1),)
        assert done.next_tick == T0 + 2 * MINUTE
        assert (await fire_schedules(store, clock=clock)).started == ()  # once per tick
        info = await store.info(minute(1))
        assert (info.status, info.workflow_name, info.queue, info.priority) == (
            "pending",
            "report",
            "q",
            7,
        )
        snapshot = await store.load(minute(1))
        assert snapshot.metadata[INPUT_KEY] == {"region": "eu"}
        [listed] = await list_schedules(store, clock=clock)
        assert listed.schedule == every_minute(input={"region": "eu"}, priority=7)
        assert listed.last_tick == datetime.fromtimestamp(T0 + MINUTE, timezone.utc)
        assert listed.next_tick == datetime.fromtimestamp(T0 + 2 * MINUTE, timezone.utc)


async def test_missed_ticks_are_skipped_or_caught_up(kit: StoreKit, tmp_path: Path) -> None:
    clock = FakeClock(wall=WALL)
    async with opened(kit, tmp_path) as (store,):
        await add_schedule(store, every_minute(), clock=clock)
        await add_schedule(store, every_minute(name="caught", catch_up=3), clock=clock)
        clock.advance(10 * MINUTE)  # no worker ran for ten ticks
        done = await fire_schedules(store, clock=clock)
        caught = [tick_run_id("caught", T0 + n * MINUTE) for n in (8, 9, 10)]
        assert sorted(done.started) == sorted([minute(10), *caught])
        assert [info.id for info in await runs_of(store)] == [minute(10)]
        assert [info.id for info in await runs_of(store, "caught@")] == caught


async def test_two_workers_on_one_tick_make_one_run(kit: StoreKit, tmp_path: Path) -> None:
    clock = FakeClock(wall=WALL)
    async with opened(kit, tmp_path, 2) as (one, two):
        await add_schedule(one, every_minute(), clock=clock)
        await add_schedule(two, every_minute(), clock=clock)  # the same again: no change
        clock.advance(MINUTE)
        passes = [await fire_schedules(store, clock=clock) for store in (one, two)]
        assert [p.started for p in passes] == [(minute(1),), ()]
        assert [info.id for info in await runs_of(two)] == [minute(1)]


async def test_adding_again_keeps_progress_and_pause_and_new_timing_starts_anew(
    kit: StoreKit, tmp_path: Path
) -> None:
    clock = FakeClock(wall=WALL)
    async with opened(kit, tmp_path) as (store,):
        await add_schedule(store, every_minute(), clock=clock)
        clock.advance(MINUTE)
        assert (await fire_schedules(store, clock=clock)).started == (minute(1),)
        assert await pause_schedule(store, "beat")
        clock.advance(5 * MINUTE)
        await add_schedule(store, every_minute(input=2), clock=clock)  # a deploy re-adds it
        [listed] = await list_schedules(store, clock=clock)
        assert listed.schedule is not None
        assert (listed.schedule.paused, listed.schedule.input) == (True, 2)  # still paused
        assert listed.next_tick is None
        assert (await fire_schedules(store, clock=clock)).started == ()
        assert await resume_schedule(store, "beat", clock=clock)
        assert not await resume_schedule(store, "beat", clock=clock)
        # The ticks that passed while paused never run; the next one does.
        assert (await fire_schedules(store, clock=clock)).started == ()
        clock.advance(MINUTE)
        assert (await fire_schedules(store, clock=clock)).started == (minute(7),)
        # New timing: ticks count from now, none of the old timing's missed ones runs.
        clock.advance(10 * MINUTE)
        await add_schedule(store, every_minute(every=120, catch_up=5), clock=clock)
        assert (await fire_schedules(store, clock=clock)).started == ()
        clock.advance(2 * MINUTE)
        assert (await fire_schedules(store, clock=clock)).started == (minute(18),)


async def test_pause_resume_and_remove(kit: StoreKit, tmp_path: Path) -> None:
    clock = FakeClock(wall=WALL)
    async with opened(kit, tmp_path) as (store,):
        await add_schedule(store, every_minute(paused=True), clock=clock)
        clock.advance(MINUTE)
        assert (await fire_schedules(store, clock=clock)).started == ()
        assert not await pause_schedule(store, "beat")
        for call in (pause_schedule(store, "nope"), resume_schedule(store, "nope")):
            with pytest.raises(LookupError, match="there is no schedule 'nope'"):
                await call
        await remove_schedule(store, "beat")
        assert await list_schedules(store, clock=clock) == []
        with pytest.raises(LookupError, match="there is no schedule 'beat'"):
            await remove_schedule(store, "beat")


async def test_an_input_the_store_cannot_keep_is_refused_with_nothing_stored(
    kit: StoreKit, tmp_path: Path
) -> None:
    async with opened(kit, tmp_path) as (store,):
        with pytest.raises(TypeError, match="schedule 'beat': input: cannot store a value of type"):
            await add_schedule(store, every_minute(input=object()))
        assert await list_schedules(store) == []
        with pytest.raises(TypeError, match="keeps no schedules"):
            await add_schedule(object(), every_minute())
        with pytest.raises(TypeError, match="add_schedule takes a Schedule"):
            await add_schedule(store, "beat")  # type: ignore[arg-type]


async def test_an_unreadable_schedule_is_listed_and_skipped(
    kit: StoreKit, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(wall=WALL)
    async with opened(kit, tmp_path) as (store,):
        await store.put_schedule("future", {"v": 99})  # a later release's schedule
        await add_schedule(store, every_minute(), clock=clock)
        [beat, future] = await list_schedules(store, clock=clock)
        assert beat.schedule is not None
        assert future == ScheduleInfo(
            "future",
            None,
            None,
            None,
            "stored schedule 'future' is unreadable: format version 99 (this release reads 1)",
        )
        clock.advance(MINUTE)
        with caplog.at_level(logging.WARNING, logger="awaitly_anyio"):
            assert (await fire_schedules(store, clock=clock)).started == (minute(1),)
        assert "schedule 'future' is skipped" in caplog.text


async def test_a_damaged_schedule_row_does_not_stop_the_others(tmp_path: Path) -> None:
    import sqlite3

    from .store_kits import SQLITE

    clock = FakeClock(wall=WALL)
    async with SQLITE.open(tmp_path, FakeClock()) as store:
        await add_schedule(store, every_minute(), clock=clock)
        await add_schedule(store, every_minute(name="broken"), clock=clock)
        with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as db:
            db.execute("UPDATE awaitly_schedules SET spec_json = '[1' WHERE name = 'broken'")
        [beat, broken] = await list_schedules(store, clock=clock)
        assert beat.schedule is not None
        assert (broken.schedule, broken.problem) == (
            None,
            "stored schedule 'broken' is unreadable: its spec is empty or damaged "
            "(not a JSON object)",
        )
        clock.advance(MINUTE)
        assert (await fire_schedules(store, clock=clock)).started == (minute(1),)
        await remove_schedule(store, "broken")
        assert [info.name for info in await list_schedules(store, clock=clock)] == ["beat"]


async def test_the_loop_runs_each_tick_and_sleeps_until_the_next(
    kit: StoreKit, tmp_path: Path
) -> None:
    clock = ManualClock(wall=WALL)
    async with opened(kit, tmp_path) as (store,), anyio.create_task_group() as group:
        await add_schedule(store, every_minute(every=120), clock=clock)
        group.start_soon(lambda: run_schedules(store, clock=clock, recheck=1000))
        for n in (2, 4, 6):
            await asleep(clock, 1)
            clock.advance(2 * MINUTE)
            with anyio.fail_after(20):
                while len(await runs_of(store)) < n // 2:
                    await anyio.lowlevel.checkpoint()
        assert [info.id for info in await runs_of(store)] == [minute(2), minute(4), minute(6)]
        group.cancel_scope.cancel()


async def asleep(clock: ManualClock, count: int) -> None:
    """Until ``count`` tasks sleep on ``clock``."""
    with anyio.fail_after(30):
        while clock.sleeping < count:
            await anyio.lowlevel.checkpoint()


async def test_a_failing_pass_is_logged_and_tried_again(
    kit: StoreKit, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(wall=WALL)
    async with opened(kit, tmp_path) as (store,):
        pass
    # The store is closed now: every pass fails, and the loop waits `recheck` each time.
    with caplog.at_level(logging.WARNING, logger="awaitly_anyio"):
        with anyio.move_on_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(lambda: run_schedules(store, clock=clock, recheck=7))
                while len(clock.sleeps) < 3:
                    await anyio.lowlevel.checkpoint()
                group.cancel_scope.cancel()
    assert clock.sleeps[:3] == [7.0, 7.0, 7.0]
    assert "schedules pass failed, retrying in 7.0 s: RuntimeError" in caplog.text
    with pytest.raises(ValueError, match="recheck must be finite seconds > 0"):
        await run_schedules(store, recheck=0)


async def test_a_hundred_ticks_served_by_three_schedulers_make_a_hundred_runs(
    kit: StoreKit, tmp_path: Path
) -> None:
    clock = ManualClock(wall=WALL)
    started: list[str] = []

    async def scheduler(store: Any) -> None:
        # run_schedules' loop, keeping what each pass enqueued itself.
        while True:
            done = await fire_schedules(store, clock=clock)
            started.extend(done.started)
            assert done.next_tick is not None
            await clock.sleep(done.next_tick - clock.time())

    async with opened(kit, tmp_path, 3) as stores, anyio.create_task_group() as group:
        await add_schedule(stores[0], every_minute(catch_up=5), clock=clock)
        for store in stores:
            group.start_soon(scheduler, store)
        for _ in range(100):
            await asleep(clock, 3)  # all three are through their pass
            clock.advance(MINUTE)  # and all three wake for the same tick
        await asleep(clock, 3)
        group.cancel_scope.cancel()
        expected = [minute(n) for n in range(1, 101)]
        assert sorted(started) == expected  # each tick enqueued by exactly one of them
        assert [info.id for info in await runs_of(stores[1])] == expected


async def test_a_change_made_elsewhere_wakes_the_loop_before_recheck(
    kit: StoreKit, tmp_path: Path
) -> None:
    """add/pause/resume/remove through another store object over the same database
    wake a loop that sleeps for ``recheck`` (an hour here) at once: a pass after each
    sees it.  (A store that pushes may wake the loop twice for one change: at once in
    this process, and again when the database's push comes back.)"""
    clock = ManualClock(wall=WALL)
    passes: list[SchedulePass] = []

    async def sees(change: Any, next_tick: float | None) -> SchedulePass:
        """Make ``change``, then wait for a pass that finds ``next_tick``."""
        before = len(passes)
        await change
        with anyio.fail_after(30):  # a bound against a hang: the wake-up is at once
            while not any(done.next_tick == next_tick for done in passes[before:]):
                await anyio.lowlevel.checkpoint()
        return passes[-1]

    async with opened(kit, tmp_path, 2) as (mine, other), anyio.create_task_group() as group:
        group.start_soon(
            lambda: run_schedules(mine, clock=clock, recheck=3600, on_pass=passes.append)
        )
        await sees(anyio.lowlevel.checkpoint(), None)  # nothing to run: asleep for an hour
        await sees(add_schedule(other, every_minute(), clock=clock), T0 + MINUTE)
        await asleep(clock, 1)
        clock.advance(MINUTE)
        await sees(anyio.lowlevel.checkpoint(), T0 + 2 * MINUTE)
        await sees(pause_schedule(other, "beat"), None)
        clock.advance(MINUTE)  # paused: wakes nothing (the loop sleeps for an hour)
        await sees(resume_schedule(other, "beat", clock=clock), T0 + 3 * MINUTE)
        await sees(remove_schedule(other, "beat"), None)
        group.cancel_scope.cancel()
    assert [run for done in passes for run in done.started] == [minute(1)]


async def test_a_tick_whose_run_was_deleted_before_the_schedule_moved_on_runs_again(
    kit: StoreKit, tmp_path: Path
) -> None:
    """The documented caveat of enqueue-then-advance: a worker enqueued the tick and died
    before moving the schedule on; the run completed and was deleted (delete_on_success,
    a short TTL).  The next pass finds no run with the tick's id: the tick runs again.
    (Were the run still there, the pass would keep it: one run.)"""
    clock = FakeClock(wall=WALL)
    kept = tick_run_id("kept", T0 + MINUTE)
    async with opened(kit, tmp_path) as (store,):
        await add_schedule(store, every_minute(), clock=clock)
        await add_schedule(store, every_minute(name="kept"), clock=clock)
        clock.advance(MINUTE)
        # The dead worker's half pass: the enqueues, not the compare-and-sets.
        for run_id in (minute(1), kept):
            assert await store.enqueue(run_id, "report", queue="q") is None
        assert await store.delete(minute(1))  # ended and deleted; "kept" is still there
        assert (await fire_schedules(store, clock=clock)).started == (minute(1),)
        assert [info.id for info in await runs_of(store, "")] == [minute(1), kept]


async def test_a_failing_on_pass_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(wall=WALL)
    calls: list[SchedulePass] = []

    def broken(done: SchedulePass) -> None:
        calls.append(done)
        raise RuntimeError("boom")

    async with MemoryStore() as store:
        with caplog.at_level(logging.ERROR, logger="awaitly_anyio"):
            async with anyio.create_task_group() as group:
                group.start_soon(
                    lambda: run_schedules(store, clock=clock, recheck=7, on_pass=broken)
                )
                with anyio.fail_after(30):
                    while len(calls) < 3:
                        await anyio.lowlevel.checkpoint()
                group.cancel_scope.cancel()
    assert "on_pass failed" in caplog.text
    assert clock.sleeps[:2] == [7.0, 7.0]


# ---- real processes ------------------------------------------------------------------------

SPEED = 600.0  # the children's clock: a minute every tenth of a second
TICKS = 100

# A scheduler process: opens the store by URL and runs run_schedules' loop on a clock
# SPEED times faster than the real one (the same in every process: fake time BASE at
# real time ORIGIN), until fake time END; then prints the runs it enqueued itself.  It
# says "half" once it fired the tick halfway to END.
# argv: URL OPTIONS_JSON BASE ORIGIN END BACKEND.
SCHEDULER = f"""
import json, sys, time
import anyio
from awaitly_anyio import open_store
from awaitly_anyio._schedules import fire_schedules

SPEED = {SPEED}

class Fast:
    def __init__(self, base, origin):
        self.base, self.origin = base, origin
    def monotonic(self):
        return time.monotonic() * SPEED
    def time(self):
        return self.base + (time.time() - self.origin) * SPEED
    async def sleep(self, seconds):
        await anyio.sleep(seconds / SPEED)

async def main(url, options, base, origin, end):
    clock, started, half = Fast(base, origin), [], False
    async with open_store(url, **options) as store:
        while True:
            done = await fire_schedules(store, clock=clock)
            started.extend(done.started)
            now = clock.time()
            if not half and now >= (base + end) / 2:
                print("half", flush=True)
                half = True
            if now >= end:
                break
            await clock.sleep(min(60.0, max(done.next_tick - clock.time(), 0.0)))
    print(json.dumps(started), flush=True)

anyio.run(main, sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]),
          float(sys.argv[5]), backend=sys.argv[6])
"""


def url_of(kind: str, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """The URL and options another process opens the kit's store of ``tmp_path`` with."""
    from .postgres_kit import DSN, schema_for
    from .redis_kit import URL, prefix_for

    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.db'}", {"synchronous": "NORMAL"}
    if kind == "postgres":
        return DSN, {"schema": schema_for(tmp_path)}
    return URL, {"prefix": prefix_for(tmp_path)}


# The children run on asyncio and trio; the parent on one of them is enough.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("kill", [False, True], ids=["all-live", "one-killed"])
@pytest.mark.parametrize("kind", ["sqlite", "postgres", "redis"])
async def test_three_scheduler_processes_make_one_run_per_tick(
    tmp_path: Path, kind: str, kill: bool, anyio_backend: str
) -> None:
    """Three scheduler processes fire a hundred ticks: each tick is enqueued by exactly
    one of them.  With ``kill``, the first is SIGKILLed halfway (perhaps between its
    enqueue and its compare-and-set): the two others go on, and every tick still has
    its one run."""
    import json
    import subprocess
    import time

    from anyio.streams.buffered import BufferedByteReceiveStream

    [kit] = [kit for kit in KITS if kit.name == kind]
    url, options = url_of(kind, tmp_path)
    end = T0 + TICKS * MINUTE
    async with opened(kit, tmp_path) as (store,):
        await add_schedule(store, every_minute(catch_up=MAX_CATCH_UP), clock=FakeClock(wall=T0))
        origin = time.time() + 1.0  # fake time T0: the children start about then
        args = [url, json.dumps(options), str(T0), str(origin), str(end)]
        outputs: dict[int, list[str]] = {}

        async def scheduler(index: int, backend: str) -> None:
            async with await anyio.open_process(
                [sys.executable, "-c", SCHEDULER, *args, backend],
                cwd=Path(__file__).parent.parent,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ) as child:
                assert child.stdout is not None
                assert child.stderr is not None
                lines = BufferedByteReceiveStream(child.stdout)
                said = []
                with contextlib.suppress(anyio.EndOfStream, anyio.IncompleteRead):
                    while True:
                        said.append((await lines.receive_until(b"\n", 1 << 20)).decode())
                        if kill and index == 0 and said == ["half"]:
                            child.kill()  # SIGKILL
                code = await child.wait()
                errors = b"".join([chunk async for chunk in child.stderr])
            if kill and index == 0:
                assert code == -9, errors.decode(errors="replace")
                return
            assert code == 0, errors.decode(errors="replace")
            assert said[0] == "half", said
            outputs[index] = json.loads(said[-1])

        with anyio.fail_after(120):
            async with anyio.create_task_group() as group:
                for index, backend in enumerate(["asyncio", "trio", "trio"]):
                    group.start_soon(scheduler, index, backend)
        expected = [minute(n) for n in range(1, TICKS + 1)]
        started = [run for out in outputs.values() for run in out if run <= minute(TICKS)]
        assert len(started) == len(set(started))  # no tick enqueued by two of them
        if not kill:
            assert sorted(started) == expected  # each tick enqueued by exactly one
        else:
            assert minute(TICKS) in started  # the survivors went on to the end
        listed = [info.id for info in await runs_of(store) if info.id <= minute(TICKS)]
        assert listed == expected


# A scheduler process that only says "pass" after each pass; its recheck is an hour, so a
# pass after the first is a wake-up.  argv: URL OPTIONS_JSON BACKEND.
WATCHER = """
import json, sys
import anyio
from awaitly_anyio import open_store
from awaitly_anyio._schedules import run_schedules

async def main(url, options):
    async with open_store(url, **options) as store:
        await run_schedules(store, recheck=3600, on_pass=lambda done: print("pass", flush=True))

anyio.run(main, sys.argv[1], json.loads(sys.argv[2]), backend=sys.argv[3])
"""


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("child_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("kind", ["postgres", "redis"])
async def test_a_change_wakes_the_loop_of_another_process_through_the_push(
    tmp_path: Path, kind: str, child_backend: str, anyio_backend: str
) -> None:
    """A schedule added in this process wakes run_schedules in another one through the
    database's push (NOTIFY, PUBLISH), long before its hour of ``recheck``.  The change
    is made again until the child hears one (a push sent before its listener is up is
    not delivered)."""
    import json
    import subprocess

    from anyio.streams.buffered import BufferedByteReceiveStream

    [kit] = [kit for kit in KITS if kit.name == kind]
    url, options = url_of(kind, tmp_path)
    async with (
        opened(kit, tmp_path) as (store,),
        await anyio.open_process(
            [sys.executable, "-c", WATCHER, url, json.dumps(options), child_backend],
            cwd=Path(__file__).parent.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as child,
    ):
        assert child.stdout is not None
        lines = BufferedByteReceiveStream(child.stdout)
        try:
            with anyio.fail_after(60):
                assert await lines.receive_until(b"\n", 100) == b"pass"
            heard = False
            for priority in range(1, 31):
                # every=10**9: the next tick is years away, so only a wake-up passes.
                await add_schedule(store, every_minute(every=10**9, priority=priority))
                with anyio.move_on_after(1):  # then change it again
                    heard = await lines.receive_until(b"\n", 100) == b"pass"
                if heard:
                    break
            assert heard, "the other process never woke"
        finally:
            child.kill()
