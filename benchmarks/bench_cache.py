"""What the cross-run step cache and singleflight cost (issue 22), both sides in the same
run, rounds interleaved, on asyncio and trio; each ratio is the median of the rounds'
own ratios.

Cache hits (``ctx.step.cached``, no event listeners), target <= 0.5x of the step they
replace:

- a `MemoryCache` hit against a plain step whose ``fn`` makes one request/response
  over a loopback TCP connection (the cheapest remote call there is: any service the
  cache stands in front of costs at least this);
- a `StoreCache` hit on SQLite against a durable keyed step on SQLite (recording the
  value with the run instead of caching it), on a store with the default settings
  (``synchronous="FULL"``: each checkpoint is synced); the same against a store with
  ``synchronous="NORMAL"`` (no sync per checkpoint) is shown beside it, no target;
- for information, no target: a `MemoryCache` hit against a plain step whose ``fn``
  returns a constant at once (the floor: there the cache can only add its lookup).

Singleflight, target <= 1.2x: 100 concurrent identical ``flight.do`` calls (one
execution) against the least any sharing can cost: one call of the same ``fn`` plus
100 tasks awaiting an ``anyio.Event`` it sets.

    python benchmarks/bench_cache.py [--quick] [--json PATH]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from _report import Summary, bench_parser, finish, median_ratio
from awaitly_anyio import (
    Deps,
    MemoryCache,
    Singleflight,
    StoreCache,
    WorkflowContext,
    create_workflow,
)
from awaitly_anyio.stores.sqlite import SQLiteStore

HIT_TARGET = 0.5
FLIGHT_TARGET = 1.2
RATES = {"EUR": 1.08, "GBP": 0.86, "JPY": 161.2}


# ---- the steps --------------------------------------------------------------------------


def cached_body(steps: int, cache: Any, fn: Callable[[], Any]) -> Any:
    async def body(ctx: WorkflowContext[Deps]) -> None:
        for _ in range(steps):
            await ctx.step.cached("rates", fn, key="rates:EUR", ttl=3600, cache=cache)

    return body


def plain_body(steps: int, fn: Callable[[], Any]) -> Any:
    async def body(ctx: WorkflowContext[Deps]) -> None:
        for _ in range(steps):
            await ctx.step("rates", fn)

    return body


def keyed_body(steps: int, fn: Callable[[], Any]) -> Any:
    async def body(ctx: WorkflowContext[Deps]) -> None:
        for n in range(steps):
            await ctx.step("rates", fn, key=f"rates-{n}")

    return body


async def per_step(body: Any, steps: int, **run: Any) -> float:
    """Microseconds per step of one run of ``body``."""
    started = time.perf_counter()
    result = await create_workflow("bench").run(body, **run)
    elapsed = time.perf_counter() - started
    assert result.ok, result
    return elapsed / steps * 1e6


class Echo:
    """A loopback TCP service answering each request line with the rates."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self._stream = stream

    async def fetch(self) -> dict[str, float]:
        await self._stream.send(b"GET rates\n")
        answer = await self._stream.receive(1024)
        assert answer == b"ok\n"
        return RATES


async def serve(listener: anyio.abc.SocketListener) -> None:
    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            async for _ in stream:
                await stream.send(b"ok\n")

    await listener.serve(handle)


# ---- the rounds -------------------------------------------------------------------------

# The per-step figures cache_rounds measures, in the order main prints them.
STEP_FIGURES = (
    "memory hit",
    "plain step, loopback TCP call",
    "plain step, constant",
    "sqlite hit",
    "sqlite keyed step",
    "sqlite keyed step, NORMAL",
)


async def cache_rounds(directory: Path, rounds: int, steps: int) -> dict[str, Any]:
    memory = MemoryCache()
    const: Callable[[], dict[str, float]] = lambda: RATES  # noqa: E731
    figures: dict[str, list[float]] = {name: [] for name in STEP_FIGURES}
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(serve, listener)
        stream = await anyio.connect_tcp("127.0.0.1", port)
        echo = Echo(stream)
        async with (
            stream,
            SQLiteStore(directory / "bench.db") as store,
            SQLiteStore(directory / "normal.db", synchronous="NORMAL") as normal,
        ):
            sqlite_cache = StoreCache(store)
            await memory.put("rates:EUR", RATES, ttl=3600)
            await sqlite_cache.put("rates:EUR", RATES, ttl=3600)
            await per_step(cached_body(10, memory, const), 10)  # warm up every path
            await per_step(plain_body(10, echo.fetch), 10)
            await per_step(keyed_body(10, const), 10, store=store, workflow_id="warm")
            await per_step(keyed_body(10, const), 10, store=normal, workflow_id="warm")
            for round in range(rounds):
                pairs: list[tuple[str, Any, dict[str, Any]]] = [
                    ("memory hit", cached_body(steps, memory, const), {}),
                    ("plain step, loopback TCP call", plain_body(steps, echo.fetch), {}),
                    ("plain step, constant", plain_body(steps, const), {}),
                    ("sqlite hit", cached_body(steps, sqlite_cache, const), {}),
                    (
                        "sqlite keyed step",
                        keyed_body(steps, const),
                        {"store": store, "workflow_id": f"keyed-{round}"},
                    ),
                    (
                        "sqlite keyed step, NORMAL",
                        keyed_body(steps, const),
                        {"store": normal, "workflow_id": f"keyed-{round}"},
                    ),
                ]
                if round % 2:  # alternate the order: neither side always runs warmer
                    pairs.reverse()
                for name, body, run in pairs:
                    figures[name].append(await per_step(body, steps, **run))
        tg.cancel_scope.cancel()
    out: dict[str, Any] = {name: statistics.median(values) for name, values in figures.items()}
    out["memory hit / loopback call step"] = median_ratio(
        figures["memory hit"], figures["plain step, loopback TCP call"]
    )
    out["memory hit / constant step"] = median_ratio(
        figures["memory hit"], figures["plain step, constant"]
    )
    out["sqlite hit / sqlite keyed step"] = median_ratio(
        figures["sqlite hit"], figures["sqlite keyed step"]
    )
    out["sqlite hit / sqlite keyed step, NORMAL"] = median_ratio(
        figures["sqlite hit"], figures["sqlite keyed step, NORMAL"]
    )
    return out


async def flight_once(callers: int) -> float:
    """Microseconds for ``callers`` concurrent identical calls through a Singleflight."""
    flight = Singleflight()
    calls = 0

    async def fetch() -> dict[str, float]:
        nonlocal calls
        calls += 1
        await anyio.lowlevel.checkpoint()  # the call in flight: the others arrive meanwhile
        return RATES

    async def call() -> None:
        await flight.do("rates:EUR", fetch)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(callers):
            tg.start_soon(call)
    elapsed = time.perf_counter() - started
    assert calls == 1, calls
    return elapsed * 1e6


async def event_once(callers: int) -> float:
    """Microseconds for one call of the same ``fn`` plus ``callers - 1`` tasks awaiting an
    ``anyio.Event`` it sets: the floor for sharing one execution."""
    done = anyio.Event()

    async def fetch() -> dict[str, float]:
        await anyio.lowlevel.checkpoint()
        return RATES

    async def first() -> None:
        await fetch()
        done.set()

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        for _ in range(callers - 1):
            tg.start_soon(done.wait)
    return (time.perf_counter() - started) * 1e6


async def flight_rounds(rounds: int, callers: int, pairs: int) -> dict[str, Any]:
    ours: list[float] = []
    floor: list[float] = []
    ratios: list[float] = []
    for _ in range(20):
        await flight_once(callers)
        await event_once(callers)
    for _ in range(rounds):
        # One timing is ~1 ms and the machine's speed drifts: each round times ``pairs``
        # pairs back to back, in alternating order, and keeps the median of their ratios.
        round_ours: list[float] = []
        round_floor: list[float] = []
        for n in range(pairs):
            if n % 2:
                b = await event_once(callers)
                a = await flight_once(callers)
            else:
                a = await flight_once(callers)
                b = await event_once(callers)
            round_ours.append(a)
            round_floor.append(b)
        ours.append(statistics.median(round_ours))
        floor.append(statistics.median(round_floor))
        ratios.append(median_ratio(round_ours, round_floor))
    return {
        "singleflight, 100 callers": statistics.median(ours),
        "1 call + 99 Event waits": statistics.median(floor),
        "singleflight / event floor": statistics.median(ratios),
    }


async def measure(directory: Path, rounds: int, steps: int) -> dict[str, Any]:
    figures = await cache_rounds(directory, rounds, steps)
    figures.update(await flight_rounds(rounds, 100, 100))
    return figures


def main() -> int:
    parser = bench_parser(__doc__, "a few seconds instead of a minute")
    args = parser.parse_args()
    rounds, steps = (5, 200) if args.quick else (15, 1000)
    report: dict[str, Any] = {
        "targets": {"hit": HIT_TARGET, "singleflight": FLIGHT_TARGET},
        "backends": {},
    }
    summary = Summary()
    for backend in ("asyncio", "trio"):
        with tempfile.TemporaryDirectory() as tmp:
            figures = anyio.run(measure, Path(tmp), rounds, steps, backend=backend)
        report["backends"][backend] = figures
        print(f"\n{backend} ({steps} steps x {rounds} rounds; singleflight: 100 callers)")
        for name in STEP_FIGURES:
            print(f"  {name:34s} {figures[name]:9.2f} us/step")
        for name in ("singleflight, 100 callers", "1 call + 99 Event waits"):
            print(f"  {name:34s} {figures[name]:9.2f} us")
        rows = [
            (
                "memory hit / loopback call step",
                "memory cache hit / plain step (loopback TCP call)",
                HIT_TARGET,
            ),
            (
                "sqlite hit / sqlite keyed step",
                "SQLite cache hit / durable keyed step (SQLite, FULL)",
                HIT_TARGET,
            ),
            (
                "sqlite hit / sqlite keyed step, NORMAL",
                "SQLite cache hit / durable keyed step (SQLite, NORMAL)",
                None,
            ),
            ("memory hit / constant step", "memory cache hit / plain step (constant fn)", None),
            (
                "singleflight / event floor",
                "singleflight 100 callers / 1 call + Event waits",
                FLIGHT_TARGET,
            ),
        ]
        for key, label, target in rows:
            verdict = summary.add(label, backend, figures[key], target=target)
            bound = f"(target <= {target}x) {verdict}" if target is not None else "(no target)"
            print(f"  {label:52s} {figures[key]:6.3f}x  {bound}")
    return finish(report, summary, args.json, failed=summary.missed)


if __name__ == "__main__":
    sys.exit(main())
