"""``ctx.step.cached`` and `MemoryCache` (issue 22): hits and misses with their events,
TTLs on a `FakeClock`, invalidation, what is never cached, bad arguments, damaged
entries, cancellation, and a cached step inside a durable run."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from awaitly_anyio import (
    CacheLookup,
    Err,
    MemoryCache,
    Ok,
    SerializationError,
    StepCache,
    UnexpectedError,
    create_workflow,
    register_type,
)
from awaitly_anyio.events import (
    StepCacheHit,
    StepCacheMiss,
    StepComplete,
    StepStart,
    WorkflowEvent,
)
from awaitly_anyio.stores.sqlite import SQLiteStore
from awaitly_anyio.testing import FakeClock

pytestmark = pytest.mark.anyio


@register_type(name="tests.cache.Rate")
@attrs.frozen
class Rate:
    currency: str
    value: float


class Fetcher:
    """A step function that counts its calls."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def types(events: list[WorkflowEvent]) -> list[str]:
    return [e.type for e in events if e.type.startswith("step")]


async def cached_run(cache: StepCache, fetch: Any, *, ttl: Any = 60, **run: Any) -> Any:
    events: list[WorkflowEvent] = []

    async def body(ctx: Any) -> Any:
        return await ctx.step.cached("rates", fetch, key="rates:EUR", ttl=ttl, cache=cache)

    result = await create_workflow("pricing", on_event=events.append).run(body, **run)
    return result, events


# ---- hits and misses -------------------------------------------------------------------


async def test_a_hit_answers_without_running_and_says_cached() -> None:
    cache = MemoryCache()
    fetch = Fetcher({"EUR": 1.08})
    first, miss_events = await cached_run(cache, fetch)
    second, hit_events = await cached_run(cache, fetch)
    assert first == second == Ok({"EUR": 1.08})
    assert fetch.calls == 1
    assert types(miss_events) == ["step_cache_miss", "step_start", "step_complete"]
    assert types(hit_events) == ["step_cache_hit", "step_start", "step_complete"]
    hit = next(e for e in hit_events if isinstance(e, StepCacheHit))
    assert (hit.name, hit.cache_key, hit.workflow_name) == ("rates", "rates:EUR", "pricing")
    miss = next(e for e in miss_events if isinstance(e, StepCacheMiss))
    assert (miss.cache_key, miss.reason) == ("rates:EUR", None)
    [done_miss] = [e for e in miss_events if isinstance(e, StepComplete)]
    [done_hit] = [e for e in hit_events if isinstance(e, StepComplete)]
    assert (done_miss.cached, done_hit.cached) == (False, True)
    assert done_hit.value == {"EUR": 1.08}
    assert [e.name for e in hit_events if isinstance(e, StepStart)] == ["rates"]


async def test_a_hit_is_a_copy_not_the_stored_object() -> None:
    cache = MemoryCache()
    rates = {"EUR": [1.08]}
    await cache.put("k", rates, ttl=10)
    rates["EUR"].append(2.0)  # changed after it was cached: the entry does not move
    found = await cache.lookup("k")
    assert found == CacheLookup(True, {"EUR": [1.08]})
    found.value["EUR"].append(3.0)
    assert (await cache.lookup("k")).value == {"EUR": [1.08]}


async def test_registered_types_round_trip() -> None:
    cache = MemoryCache()
    fetch = Fetcher(Rate("EUR", 1.08))
    await cached_run(cache, fetch)
    second, _ = await cached_run(cache, fetch)
    assert second == Ok(Rate("EUR", 1.08))
    assert fetch.calls == 1


async def test_the_ttl_runs_on_the_caches_clock() -> None:
    clock = FakeClock()
    cache = MemoryCache(clock=clock)
    fetch = Fetcher(1, 2, 3)
    assert (await cached_run(cache, fetch, ttl=timedelta(seconds=30)))[0] == Ok(1)
    clock.advance(29.9)
    assert (await cached_run(cache, fetch))[0] == Ok(1)
    clock.advance(0.1)
    assert (await cached_run(cache, fetch))[0] == Ok(2)
    assert fetch.calls == 2
    clock.advance(100)
    assert len(cache) == 1
    assert await cache.purge_expired() == 1
    assert len(cache) == 0


async def test_invalidate_makes_the_next_run_execute() -> None:
    cache = MemoryCache()
    fetch = Fetcher(1, 2)
    await cached_run(cache, fetch)
    assert await cache.invalidate("rates:EUR") is True
    assert await cache.invalidate("rates:EUR") is False
    assert (await cached_run(cache, fetch))[0] == Ok(2)
    assert fetch.calls == 2


async def test_different_keys_are_different_entries() -> None:
    cache = MemoryCache()

    async def body(ctx: Any) -> list[str]:
        return [
            await ctx.step.cached(
                f"rate {c}", lambda c=c: f"{c}!", key=f"rates:{c}", ttl=5, cache=cache
            )
            for c in ("EUR", "USD")
        ]

    assert await create_workflow("w").run(body) == Ok(["EUR!", "USD!"])
    assert (await cache.lookup("rates:USD")).value == "USD!"


async def test_a_sync_fn_and_a_result_returning_fn_work() -> None:
    cache = MemoryCache()

    async def body(ctx: Any) -> tuple[int, int]:
        a: int = await ctx.step.cached("a", lambda: 1, key="a", ttl=5, cache=cache)
        b: int = await ctx.step.cached("b", lambda: Ok(2), key="b", ttl=5, cache=cache)
        return a, b

    assert await create_workflow("w").run(body) == Ok((1, 2))
    assert (await cache.lookup("b")).value == 2  # the value, not the Ok


# ---- never cached ----------------------------------------------------------------------


async def test_an_err_ends_the_run_and_is_not_cached() -> None:
    cache = MemoryCache()
    fetch = Fetcher(Err("down"), 7)
    first, events = await cached_run(cache, fetch)
    assert first == Err("down")
    assert "step_error" in types(events)
    assert (await cache.lookup("rates:EUR")).hit is False
    assert (await cached_run(cache, fetch))[0] == Ok(7)


async def test_an_exception_is_unexpected_and_not_cached() -> None:
    cache = MemoryCache()

    def boom() -> int:
        raise RuntimeError("boom")

    result, _ = await cached_run(cache, boom)
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    assert len(cache) == 0


async def test_a_value_that_cannot_be_encoded_fails_its_step_by_name() -> None:
    cache = MemoryCache()
    result, events = await cached_run(cache, lambda: object())
    assert isinstance(result, Err)
    assert isinstance(result.error, SerializationError)
    assert result.error.step == "rates"
    assert "step_error" in types(events)
    assert len(cache) == 0


async def test_a_cancelled_step_caches_nothing_and_the_cancel_propagates() -> None:
    cache = MemoryCache()
    started = anyio.Event()

    async def slow() -> int:
        started.set()
        await anyio.sleep_forever()
        return 1

    async def body(ctx: Any) -> int:
        value: int = await ctx.step.cached("slow", slow, key="slow", ttl=5, cache=cache)
        return value

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(create_workflow("w").run, body)
            await started.wait()
            scope.cancel()
    assert scope.cancelled_caught
    assert len(cache) == 0


# ---- damaged entries -------------------------------------------------------------------


async def test_a_damaged_entry_is_a_reported_miss_and_is_overwritten(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = MemoryCache()
    await cache.put("rates:EUR", 1, ttl=60)
    cache._entries["rates:EUR"] = ('{"$t": "no.such.Type", "v": 1}', cache._entries["rates:EUR"][1])
    fetch = Fetcher(2)
    with caplog.at_level(logging.WARNING, logger="awaitly_anyio"):
        result, events = await cached_run(cache, fetch)
    assert result == Ok(2)
    assert fetch.calls == 1
    miss = next(e for e in events if isinstance(e, StepCacheMiss))
    assert miss.reason is not None
    assert "no.such.Type" in miss.reason
    assert any("rates:EUR" in r.getMessage() for r in caplog.records)
    assert (await cache.lookup("rates:EUR")).value == 2


# ---- bad arguments ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"key": ""}, ValueError, "step 'rates': a cache key"),
        ({"key": None}, ValueError, "cache key"),
        ({"key": "a\x00b"}, ValueError, "NUL"),
        ({"ttl": 0}, ValueError, "step 'rates': ttl"),
        ({"ttl": -5}, ValueError, "ttl"),
        ({"ttl": float("inf")}, ValueError, "ttl"),
        ({"ttl": "60"}, TypeError, "ttl"),
        ({"ttl": None}, TypeError, "ttl"),
        ({"cache": {}}, TypeError, "step 'rates': cache must be"),
        ({"fn": 5}, TypeError, "fn must be"),
        ({"name": ""}, ValueError, "non-empty string name"),
    ],
)
async def test_bad_arguments_are_named(options: dict[str, Any], error: type, match: str) -> None:
    cache = MemoryCache()
    call: dict[str, Any] = {"name": "rates", "fn": lambda: 1, "key": "k", "ttl": 60, "cache": cache}
    call.update(options)
    raised: list[BaseException] = []

    async def body(ctx: Any) -> None:
        try:
            await ctx.step.cached(call.pop("name"), call.pop("fn"), **call)
        except Exception as exc:
            raised.append(exc)

    await create_workflow("w").run(body)
    assert len(raised) == 1
    assert isinstance(raised[0], error)
    assert match in str(raised[0])
    assert len(cache) == 0


async def test_memory_cache_checks_what_it_is_given_directly() -> None:
    cache = MemoryCache()
    with pytest.raises(ValueError, match="cache key"):
        await cache.put("", 1, ttl=1)
    with pytest.raises(ValueError, match="ttl"):
        await cache.put("k", 1, ttl=0)
    with pytest.raises(SerializationError, match="'<cache>'"):
        await cache.put("k", object(), ttl=1)
    with pytest.raises(TypeError, match="registry"):
        MemoryCache(registry={})  # type: ignore[arg-type]
    assert isinstance(cache, StepCache)


# ---- in a durable run ------------------------------------------------------------------


async def test_a_cached_step_in_a_durable_run(tmp_path: Path) -> None:
    cache = MemoryCache()
    fetch = Fetcher(5)
    async with SQLiteStore(tmp_path / "runs.db") as store:
        one, _ = await cached_run(cache, fetch, store=store, workflow_id="run-1")
        two, events = await cached_run(cache, fetch, store=store, workflow_id="run-2")
    assert one == two == Ok(5)
    assert fetch.calls == 1
    assert "step_cache_hit" in types(events)


async def test_a_cached_step_inside_a_keyed_step_is_recorded_with_the_run(tmp_path: Path) -> None:
    cache = MemoryCache()
    fetch = Fetcher({"EUR": 1.08})

    async def body(ctx: Any) -> Any:
        return await ctx.step(
            "rates",
            lambda: ctx.step.cached("rates (cache)", fetch, key="rates:EUR", ttl=60, cache=cache),
            key="rates",
        )

    async with SQLiteStore(tmp_path / "runs.db") as store:
        workflow = create_workflow("pricing")
        assert await workflow.run(body, store=store, workflow_id="r1") == Ok({"EUR": 1.08})
        snapshot = await store.load("r1")
        assert snapshot is not None
        assert snapshot.steps["rates"].result == Ok({"EUR": 1.08})
        assert await workflow.run(body, store=store, workflow_id="r2") == Ok({"EUR": 1.08})
    assert fetch.calls == 1
