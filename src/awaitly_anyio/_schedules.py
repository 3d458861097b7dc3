"""Schedules: interval and cron schedules kept in the store, each tick of which
starts exactly one queued run, whatever the number of workers.

``await add_schedule(store, Schedule(name="nightly", workflow="report",
cron="0 2 * * *", timezone="Europe/Paris", queue="reports"))`` stores the
schedule; `run_schedules` is the loop every worker may run: it enqueues one run
per due tick, with the id ``NAME@TICK`` (the tick in UTC, ``nightly@2026-11-29T01:00:00Z``),
so that N workers firing the same tick make one run (`QueueStore.enqueue` keeps
the first), then moves the schedule's ``last_tick`` on with a compare-and-set.
Ticks that passed while no worker ran are dropped but for the latest one
(``catch_up=None``, the default) or run, the ``catch_up`` latest of them.

Enqueue first, advance second: a worker that dies between the two leaves the tick
to be enqueued again by the next pass (the same id: one run), where the other order
would lose it.  The price: a tick whose run is already gone from the store (deleted
on success, or by a TTL shorter than a tick) when a late worker fires it runs twice.

A change made through this module (`add_schedule`, `pause_schedule`,
`resume_schedule`, `remove_schedule`) wakes every `run_schedules` of the same
database at once: in this process directly, in others through the store's push
(PostgreSQL ``NOTIFY``, Redis pub/sub); SQLite cannot push, so other processes
see it within ``recheck``.

Cron expressions are evaluated by cronsim (the ``cron`` extra), imported when a
cron schedule is first made.  See docs/schedules.md.
"""

from __future__ import annotations

import contextlib
import math
import zoneinfo
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, NoReturn

import attrs

from ._checks import check_key, check_seconds
from ._clock import Clock, SystemClock, sleep_until_woken
from ._errors import describe
from ._input import metadata_with_input
from ._run import logger
from ._store import SCHEDULES_CHANGED, QueueStore, SendWatch, StoredSchedule
from .serialization import TypeRegistry, decode_value, default_registry, encode_value

__all__ = [
    "MAX_CATCH_UP",
    "Schedule",
    "ScheduleInfo",
    "SchedulePass",
    "add_schedule",
    "fire_schedules",
    "list_schedules",
    "pause_schedule",
    "remove_schedule",
    "resume_schedule",
    "run_schedules",
    "tick_run_id",
]

MAX_CATCH_UP = 10_000
"""The most missed ticks one schedule may catch up (``Schedule.catch_up``)."""

_SPEC_VERSION = 1
_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_CRON_HELP = (
    "5 fields (minute hour day-of-month month day-of-week), 6 with seconds first, "
    f"or one of {', '.join(_NICKNAMES)}"
)
_TIMING = ("cron", "timezone", "every")


# ---- the store ---------------------------------------------------------------------------------


def _store_of(store: object) -> QueueStore:
    if not isinstance(store, QueueStore):
        raise TypeError(
            f"{type(store).__name__} keeps no schedules; use a store from open_store() "
            f"(memory, SQLite, PostgreSQL, Redis)"
        )
    return store


def _registry_of(store: object) -> TypeRegistry:
    registry = getattr(store, "registry", None)
    return registry if isinstance(registry, TypeRegistry) else default_registry


# ---- the schedule ----------------------------------------------------------------------------


def _cronsim() -> Any:
    """The cronsim module; ``ImportError`` naming the extra when it is missing."""
    try:
        import cronsim
    except ImportError:
        raise ImportError(
            "cron schedules need the cronsim package: pip install 'awaitly-anyio[cron]'"
        ) from None
    return cronsim


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, not {value!r}")
    try:
        check_key(value)
    except ValueError as exc:
        raise ValueError(str(exc).replace("a step key", what)) from None
    return value


def _check_schedule_name(_: object, __: object, value: Any) -> None:
    _check_name(value, "a schedule name")
    assert isinstance(value, str)
    if "@" in value:
        # Run ids are NAME@TICK: an "@" in NAME would let two schedules' ids meet.
        raise ValueError(f"a schedule name must not contain '@', not {value!r}")


def _check_workflow(_: object, __: object, value: Any) -> None:
    _check_name(value, "a workflow name")


def _to_every(value: Any) -> int | None:
    if value is None:
        return None
    seconds = check_seconds(value, "every")
    if seconds < 1 or seconds != math.floor(seconds) or seconds > 1e10:
        raise ValueError(
            f"every must be a whole number of seconds from 1 (or a timedelta), not {value!r}"
        )
    return int(seconds)


def _check_catch_up(_: object, __: object, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"catch_up must be None (skip) or a number of ticks, not {value!r}")
    if not 1 <= value <= MAX_CATCH_UP:
        raise ValueError(f"catch_up must be from 1 to {MAX_CATCH_UP} ticks, not {value!r}")


def _check_priority(_: object, __: object, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**31 - 1:
        raise ValueError(f"priority must be an int from 0 to 2**31-1, not {value!r}")


def _check_bool(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be True or False, not {value!r}")


def _zone(name: str | None) -> zoneinfo.ZoneInfo | timezone:
    if name is None:
        return timezone.utc
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown timezone {name!r} (an IANA name such as 'Europe/Paris' or 'UTC')"
        ) from None


@attrs.frozen(kw_only=True)
class Schedule:
    """A workflow started on a timetable: ``cron="*/5 * * * *"`` (with an optional
    IANA ``timezone``, UTC by default) or ``every=timedelta(minutes=5)`` (or seconds),
    one run per tick on ``queue`` with ``input``.

    - ``name``: the schedule's name (the rules of a step key, without ``"@"``); its
      runs' ids are ``NAME@TICK``, the tick in UTC (`tick_run_id`).
    - ``every``: whole seconds from 1; its ticks are the multiples of ``every``
      since the epoch (``every=3600`` fires on the hour, UTC), wherever and whenever
      the schedule was added.
    - ``catch_up``: ticks missed while no worker ran (or was late): ``None`` runs
      the latest one only (skip); ``N`` runs each of the ``N`` latest
      (at most `MAX_CATCH_UP`), oldest first.
    - ``paused``: the state the schedule is created in (`add_schedule` keeps the
      stored state of an existing one).
    - ``input`` is stored as a durable run's input (values the store's type
      registry can encode; checked by `add_schedule`); ``priority`` as a queued
      run's.

    Validated here: ``ValueError`` (``TypeError`` for a value of the wrong kind)
    naming what is wrong: both or neither of ``cron``/``every``, a cron expression
    cronsim does not read (or one that never fires), an unknown timezone, a
    timezone with ``every``, a zero, negative or fractional interval, a bad name,
    queue, ``catch_up`` or ``priority``.  ``ImportError`` naming the ``cron`` extra
    when cronsim is not installed.
    """

    name: str = attrs.field(validator=_check_schedule_name)
    workflow: str = attrs.field(validator=_check_workflow)
    cron: str | None = None
    every: int | None = attrs.field(default=None, converter=_to_every)
    timezone: str | None = None
    queue: str = "default"
    input: Any = attrs.field(default=None, hash=False)
    priority: int = attrs.field(default=0, validator=_check_priority)
    catch_up: int | None = attrs.field(default=None, validator=_check_catch_up)
    paused: bool = attrs.field(default=False, validator=_check_bool)

    def __attrs_post_init__(self) -> None:
        _check_name(self.queue, "a queue name")
        if (self.cron is None) == (self.every is None):
            raise ValueError(
                f"schedule {self.name!r} needs exactly one of cron= or every=, "
                f"not {'both' if self.cron is not None else 'neither'}"
            )
        if self.timezone is not None and not isinstance(self.timezone, str):
            raise TypeError(f"timezone must be an IANA name or None, not {self.timezone!r}")
        if self.cron is None:
            if self.timezone is not None:
                raise ValueError(
                    f"timezone applies to cron schedules only (schedule {self.name!r} "
                    f"runs every {self.every} s)"
                )
            return
        if not isinstance(self.cron, str):
            raise TypeError(f"cron must be a cron expression string, not {self.cron!r}")
        _check_cron(self.cron, _zone(self.timezone))

    @property
    def missed(self) -> Literal["skip", "catch_up"]:
        """The policy for missed ticks: ``"skip"`` or ``"catch_up"`` (see ``catch_up``)."""
        return "skip" if self.catch_up is None else "catch_up"

    def next_tick(self, after: float) -> float | None:
        """The first tick strictly after ``after`` (epoch seconds), or ``None`` when a
        cron expression has no more (none within 50 years)."""
        if self.every is not None:
            return float((math.floor(after / self.every) + 1) * self.every)
        cronsim = _cronsim()
        zone = _zone(self.timezone)
        found = next(cronsim.CronSim(_expanded(self.cron), _at(after, zone)), None)
        return None if found is None else float(found.timestamp())

    def due_ticks(self, after: float, upto: float) -> tuple[list[float], bool]:
        """The ticks in ``(after, upto]`` that this schedule runs, oldest first (the
        latest one, or the ``catch_up`` latest), and whether older ones were left out."""
        most = 1 if self.catch_up is None else self.catch_up
        if self.every is not None:
            every = self.every
            first, last = math.floor(after / every) + 1, math.floor(upto / every)
            if last < first:
                return [], False
            low = max(first, last - most + 1)
            return [float(k * every) for k in range(low, last + 1)], low > first
        cronsim = _cronsim()
        zone = _zone(self.timezone)
        # Backwards from the second after `upto` (ticks are whole seconds): only the
        # ticks we keep are computed, however long no worker ran.
        back = cronsim.CronSim(_expanded(self.cron), _at(math.floor(upto) + 1, zone), reverse=True)
        ticks: list[float] = []
        for found in back:
            tick = float(found.timestamp())
            if tick > upto:
                continue
            if tick <= after:
                return ticks[::-1], False
            if len(ticks) == most:
                return ticks[::-1], True
            ticks.append(tick)
        return ticks[::-1], False

    def to_spec(self, registry: TypeRegistry = default_registry) -> dict[str, Any]:
        """The schedule as the JSON document the store keeps (without ``since``).
        ``TypeError`` naming the type when ``input`` cannot be stored."""
        try:
            encoded = encode_value(self.input, registry)
        except TypeError as exc:
            raise TypeError(f"schedule {self.name!r}: input: {exc}") from None
        return {
            "v": _SPEC_VERSION,
            "workflow": self.workflow,
            "cron": self.cron,
            "timezone": self.timezone,
            "every": self.every,
            "queue": self.queue,
            "input": encoded,
            "priority": self.priority,
            "catch_up": self.catch_up,
            "paused": self.paused,
        }

    @classmethod
    def from_spec(
        cls, name: str, spec: Mapping[str, Any], registry: TypeRegistry = default_registry
    ) -> Schedule:
        """The schedule stored as ``spec``; ``ValueError`` naming the schedule and what
        is wrong for a spec this release cannot read."""
        try:
            if not isinstance(spec, Mapping):
                raise TypeError(f"a spec should be a mapping, found {spec!r}")
            if not spec:  # what a store gives for a spec that is not a JSON object
                raise ValueError("its spec is empty or damaged (not a JSON object)")
            version = spec.get("v")
            if version != _SPEC_VERSION:
                raise ValueError(f"format version {version!r} (this release reads 1)")
            return cls(
                name=name,
                workflow=spec["workflow"],
                cron=spec.get("cron"),
                every=spec.get("every"),
                timezone=spec.get("timezone"),
                queue=spec["queue"],
                input=decode_value(spec.get("input"), registry),
                priority=spec.get("priority", 0),
                catch_up=spec.get("catch_up"),
                paused=spec.get("paused", False),
            )
        except KeyError as exc:
            raise ValueError(f"stored schedule {name!r} is unreadable: no {exc}") from None
        except (ValueError, TypeError, ImportError) as exc:
            raise ValueError(f"stored schedule {name!r} is unreadable: {exc}") from None


def _expanded(cron: str | None) -> str:
    assert cron is not None
    return _NICKNAMES.get(cron.strip().lower(), cron)


def _at(seconds: float, zone: zoneinfo.ZoneInfo | timezone) -> datetime:
    return datetime.fromtimestamp(seconds, zone)


def _check_cron(cron: str, zone: zoneinfo.ZoneInfo | timezone) -> None:
    cronsim = _cronsim()
    expression = _expanded(cron)
    if expression.startswith("@"):
        raise ValueError(f"invalid cron expression {cron!r}: unknown nickname ({_CRON_HELP})")
    try:
        found = next(cronsim.CronSim(expression, datetime(2000, 1, 1, tzinfo=zone)), None)
    except cronsim.CronSimError as exc:
        reason = str(exc)
        reason = reason[:1].lower() + reason[1:] if reason else "not understood"
        raise ValueError(f"invalid cron expression {cron!r}: {reason} ({_CRON_HELP})") from None
    if found is None:
        raise ValueError(f"cron expression {cron!r} never fires")


def tick_run_id(name: str, tick: float) -> str:
    """The id of the run schedule ``name`` starts for ``tick`` (epoch seconds):
    ``NAME@2026-11-29T02:00:00Z``."""
    return f"{name}@{datetime.fromtimestamp(tick, timezone.utc):%Y-%m-%dT%H:%M:%SZ}"


# ---- the API ----------------------------------------------------------------------------------


@attrs.frozen
class ScheduleInfo:
    """A stored schedule as `list_schedules` reports it.

    ``schedule`` is ``None`` when the stored spec cannot be read (``problem`` says
    why; such a schedule never fires, `remove_schedule` removes it).  ``last_tick``
    is the latest tick a worker ran (``None``: none yet); ``next_tick`` the next one
    it will run (``None`` when paused, unreadable, or a cron expression with no
    more).
    """

    name: str
    schedule: Schedule | None
    last_tick: datetime | None
    next_tick: datetime | None
    problem: str | None = None


@attrs.frozen
class SchedulePass:
    """What one `fire_schedules` pass did: the runs it enqueued (ids, in order;
    ticks whose run another worker had already enqueued are not in it) and the next
    tick of any active schedule (epoch seconds; ``None``: none)."""

    started: tuple[str, ...]
    next_tick: float | None


def _since(spec: Mapping[str, Any]) -> float | None:
    since = spec.get("since")
    if isinstance(since, bool) or not isinstance(since, (int, float)) or not math.isfinite(since):
        return None
    return float(since)


def _start(stored: StoredSchedule, since: float) -> float:
    # Ticks count from when the schedule was added or resumed, and after the last one run.
    last = stored.last_tick
    return since if last is None else max(last, since)


def _epoch_datetime(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, timezone.utc)


async def _find(store: QueueStore, name: str) -> StoredSchedule:
    for stored in await store.schedules():
        if stored.name == name:
            return stored
    raise LookupError(f"there is no schedule {name!r} in the store")


async def add_schedule(
    store: QueueStore, schedule: Schedule, *, clock: Clock | None = None
) -> None:
    """Store ``schedule``, or update the stored schedule of that name.

    A new schedule's ticks count from now (``clock.time()``): its first tick is the
    first one after now.  Updating keeps the stored schedule's paused state and the
    ticks already run; when its timing (``cron``, ``timezone``, ``every``) changed,
    ticks count anew from now (no missed tick of the old timing runs).  Adding the
    same schedule again (every worker may, at start-up) writes nothing.

    Raises ``TypeError`` for a store that keeps no schedules or an ``input`` its
    registry cannot encode; ``ValueError`` for a schedule name the store refuses.
    A cancellation point; the store writes all of it or nothing.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"add_schedule takes a Schedule, not {schedule!r}")
    target = _store_of(store)
    spec = schedule.to_spec(_registry_of(store))
    now = (clock if clock is not None else SystemClock()).time()
    existing = next((s for s in await target.schedules() if s.name == schedule.name), None)
    since = now
    if existing is not None:
        old = existing.spec
        spec["paused"] = old.get("paused", False) is True
        old_since = _since(old)
        if old_since is not None and all(old.get(key) == spec[key] for key in _TIMING):
            since = old_since
        if {**spec, "since": since} == dict(old):
            return
    spec["since"] = since
    await target.put_schedule(schedule.name, spec)


async def list_schedules(store: QueueStore, *, clock: Clock | None = None) -> list[ScheduleInfo]:
    """Every stored schedule, by name, with its last and next tick (from now,
    ``clock.time()``).  A schedule whose stored spec cannot be read is listed with
    ``schedule=None`` and the ``problem``.  ``TypeError`` for a store that keeps no
    schedules.  A cancellation point."""
    target = _store_of(store)
    registry = _registry_of(store)
    now = (clock if clock is not None else SystemClock()).time()
    found: list[ScheduleInfo] = []
    for stored in await target.schedules():
        last = _epoch_datetime(stored.last_tick)
        try:
            schedule = Schedule.from_spec(stored.name, stored.spec, registry)
        except ValueError as exc:
            found.append(ScheduleInfo(stored.name, None, last, None, str(exc)))
            continue
        next_tick = None
        if not schedule.paused:
            since = _since(stored.spec)
            start = now if since is None else _start(stored, since)
            next_tick = schedule.next_tick(max(start, now))
        found.append(ScheduleInfo(stored.name, schedule, last, _epoch_datetime(next_tick)))
    return found


async def _set_paused(store: QueueStore, name: str, paused: bool, clock: Clock | None) -> bool:
    target = _store_of(store)
    stored = await _find(target, name)
    spec = dict(stored.spec)
    if spec.get("paused", False) is paused:
        return False
    spec["paused"] = paused
    if not paused:
        # Ticks that passed while it was paused are not missed ones: none of them runs.
        spec["since"] = (clock if clock is not None else SystemClock()).time()
    await target.put_schedule(name, spec)
    return True


async def pause_schedule(store: QueueStore, name: str) -> bool:
    """Pause schedule ``name``: no tick of it runs until `resume_schedule`.  Whether
    it was running (``False``: already paused).  ``LookupError`` naming an unknown
    schedule.  A cancellation point."""
    return await _set_paused(store, name, True, None)


async def resume_schedule(store: QueueStore, name: str, *, clock: Clock | None = None) -> bool:
    """Resume paused schedule ``name``: its ticks run again from now on (those that
    passed while it was paused never run).  Whether it was paused.  ``LookupError``
    naming an unknown schedule.  A cancellation point."""
    return await _set_paused(store, name, False, clock)


async def remove_schedule(store: QueueStore, name: str) -> None:
    """Remove schedule ``name`` (runs it already started are left alone).
    ``LookupError`` naming an unknown schedule.  A cancellation point."""
    target = _store_of(store)
    if not await target.delete_schedule(name):
        raise LookupError(f"there is no schedule {name!r} in the store")


async def fire_schedules(store: QueueStore, *, clock: Clock | None = None) -> SchedulePass:
    """One pass of `run_schedules`: for each active schedule, enqueue one run per due
    tick (see `Schedule.catch_up`) with the id `tick_run_id` (a run another worker
    already enqueued for the tick is kept: one run per tick), then move the
    schedule's ``last_tick`` on (compare-and-set: of several workers, one does).

    A schedule whose stored spec cannot be read is skipped with a warning in the
    log.  The store's errors propagate (a pass is safe to repeat: ticks already
    enqueued are not enqueued twice).  A cancellation point.
    """
    target = _store_of(store)
    registry = _registry_of(store)
    now = (clock if clock is not None else SystemClock()).time()
    started: list[str] = []
    next_tick: float | None = None
    for stored in await target.schedules():
        try:
            schedule = Schedule.from_spec(stored.name, stored.spec, registry)
        except ValueError as exc:
            logger.warning("schedule %r is skipped: %s", stored.name, exc)
            continue
        if schedule.paused:
            continue
        since = _since(stored.spec)
        start = now if since is None else _start(stored, since)
        ticks, dropped = schedule.due_ticks(start, now)
        if dropped:
            logger.info(
                "schedule %r: missed ticks before %s are not run (catch_up=%r)",
                schedule.name,
                tick_run_id(schedule.name, ticks[0]),
                schedule.catch_up,
            )
        for tick in ticks:
            run_id = tick_run_id(schedule.name, tick)
            existing = await target.enqueue(
                run_id,
                schedule.workflow,
                queue=schedule.queue,
                metadata=metadata_with_input(None, schedule.input),
                priority=schedule.priority,
            )
            if existing is None:
                started.append(run_id)
        if ticks:
            await target.advance_schedule(schedule.name, stored.last_tick, ticks[-1])
        following = schedule.next_tick(max(now, start))
        if following is not None and (next_tick is None or following < next_tick):
            next_tick = following
    return SchedulePass(tuple(started), next_tick)


async def run_schedules(
    store: QueueStore,
    *,
    clock: Clock | None = None,
    recheck: float | timedelta = 60.0,
    on_pass: Callable[[SchedulePass], object] | None = None,
) -> NoReturn:
    """Run every stored schedule's ticks until cancelled: a `fire_schedules` pass,
    then a sleep (on ``clock``) until the next tick of any schedule, at most
    ``recheck`` seconds, or until a schedule changes.

    A change made with `add_schedule`, `pause_schedule`, `resume_schedule` or
    `remove_schedule` wakes the loop at once when it is made in this process (any
    store object over the same database) or pushed by the database from another one
    (PostgreSQL, Redis); otherwise (SQLite from another process, a change written
    some other way, a push missed while the connection was down) the loop sees it
    within ``recheck``: the bound.  ``on_pass`` (optional) is called with each
    successful pass's `SchedulePass` (what it raises is logged, not propagated).

    Every worker may run it: each tick starts one run however many do.  A pass
    that fails (the store unreachable) is logged and tried again after
    ``recheck`` (or at the next change).  Returns only by cancellation, which it
    never swallows.  ``TypeError`` for a store that keeps no schedules; ``ValueError``
    or ``TypeError`` for a bad ``recheck``.
    """
    target = _store_of(store)
    every = check_seconds(recheck, "recheck")
    timer = clock if clock is not None else SystemClock()
    try:
        watch: SendWatch | None = target.sends(SCHEDULES_CHANGED)
    except RuntimeError:  # a closed store: every pass fails; ``recheck`` paces them
        watch = None
    # The watch is open before the first pass: a change made during a pass wakes the
    # wait that follows it (nothing is missed between the two).
    with watch if watch is not None else contextlib.nullcontext():
        while True:
            delay = every
            try:
                done = await fire_schedules(target, clock=timer)
            except Exception as exc:  # a service loop: log and try again (cancellation passes)
                logger.warning("schedules pass failed, retrying in %s s: %s", every, describe(exc))
            else:
                if done.next_tick is not None:
                    delay = min(every, max(done.next_tick - timer.time(), 0.0))
                if on_pass is not None:
                    try:
                        on_pass(done)
                    except Exception:
                        logger.exception("on_pass failed")
            await _until_changed(timer, delay, watch)


async def _until_changed(clock: Clock, seconds: float, watch: SendWatch | None) -> None:
    """Sleep ``seconds`` on ``clock``, or less: until ``watch`` sees a change."""
    if watch is None:
        await clock.sleep(seconds)
        return
    await sleep_until_woken(clock, seconds, watch.wait)
