"""What issue 22's limiter and breaker options cost on their fast paths, against peers.

- weighted limiter call, capacity available: ``await limiter(fn, cost=3)`` against
  aiolimiter's ``await AsyncLimiter.acquire(3)`` then the call (asyncio).  Reported,
  no target: the sliding log stays exact by writing one timestamp per unit (a
  leaky bucket keeps one number, and lets bursts through), so a call of cost n
  costs O(n); the unit call's target is in bench_reliability.py.
- closed breaker with a failure-rate window (``failure_rate=0.5, window=60``; each
  call reads the clock and counts into the window): ``await breaker(fn)`` against
  purgatory's async breaker (asyncio), and against our consecutive-failures breaker
  (both backends, for reference).  Target: <= 1.0x purgatory.

Interleaved rounds, medians in ns per call.

    python benchmarks/bench_reliability_extras.py [--quick] [--json PATH]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from _report import Summary, bench_parser, finish, medians, timed_rounds
from awaitly_anyio import create_circuit_breaker, create_rate_limiter

WEIGHTED_TARGET, RATE_BREAKER_TARGET = None, 1.0


async def work() -> int:
    return 1


def variants(backend: str) -> dict[str, Callable[[int], Awaitable[float]]]:
    limiter = create_rate_limiter("bench", max_requests=10**8, window=1.0)
    consecutive = create_circuit_breaker("bench", failure_threshold=5, reset_timeout=30)
    by_rate = create_circuit_breaker("bench", failure_rate=0.5, window=60, reset_timeout=30)

    async def weighted(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await limiter(work, cost=3)
        return time.perf_counter() - started

    async def rate_breaker(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await by_rate(work)
        return time.perf_counter() - started

    async def consecutive_breaker(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await consecutive(work)
        return time.perf_counter() - started

    found: dict[str, Callable[[int], Awaitable[float]]] = {
        "awaitly limiter cost=3": weighted,
        "awaitly breaker (rate)": rate_breaker,
        "awaitly breaker (in a row)": consecutive_breaker,
    }
    if backend == "asyncio":
        try:
            from aiolimiter import AsyncLimiter
        except ImportError:
            print("aiolimiter is not installed: skipped (pip install 'awaitly-anyio[bench]')")
        else:
            peer_limiter = AsyncLimiter(10**8, 1.0)

            async def aiolimiter_(n: int) -> float:
                started = time.perf_counter()
                for _ in range(n):
                    await peer_limiter.acquire(3)
                    await work()
                return time.perf_counter() - started

            found["aiolimiter acquire(3)"] = aiolimiter_
        try:
            from purgatory import AsyncCircuitBreakerFactory
        except ImportError:
            print("purgatory is not installed: skipped (pip install 'awaitly-anyio[bench]')")
        else:
            factory = AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)

            async def purgatory_(n: int) -> float:
                started = time.perf_counter()
                for _ in range(n):
                    async with await factory.get_breaker("bench"):
                        await work()
                return time.perf_counter() - started

            found["purgatory"] = purgatory_
    return found


async def measure(backend: str, rounds: int, n: int) -> dict[str, float]:
    rows = await timed_rounds(variants(backend), rounds, n, warmup=max(n // 10, 100), scale=1e9)
    return medians(rows)


def main() -> int:
    parser = bench_parser(__doc__)
    args = parser.parse_args()
    rounds, n = (3, 5_000) if args.quick else (7, 50_000)
    report: dict[str, Any] = {}
    summary = Summary()
    for backend in ("asyncio", "trio"):
        figures = anyio.run(measure, backend, rounds, n, backend=backend)
        report[backend] = figures
        print(f"\n{backend}: {n} calls x {rounds} rounds, median ns per call")
        for name, ns in figures.items():
            print(f"  {name:28s} {ns:9.0f}")
        if "aiolimiter acquire(3)" in figures:
            ratio = figures["awaitly limiter cost=3"] / figures["aiolimiter acquire(3)"]
            mark = summary.add(
                "weighted limiter / aiolimiter", backend, ratio, target=WEIGHTED_TARGET
            )
            print(f"  weighted limiter / aiolimiter: {ratio:.2f}x {mark}")
        if "purgatory" in figures:
            ratio = figures["awaitly breaker (rate)"] / figures["purgatory"]
            mark = summary.add(
                "rate breaker / purgatory", backend, ratio, target=RATE_BREAKER_TARGET
            )
            print(f"  rate breaker / purgatory: {ratio:.2f}x (<= {RATE_BREAKER_TARGET}) {mark}")
        rate_cost = figures["awaitly breaker (rate)"] / figures["awaitly breaker (in a row)"]
        print(f"  rate breaker / in-a-row breaker: {rate_cost:.2f}x")
    return finish(report, summary, args.json, failed=summary.missed)


if __name__ == "__main__":
    sys.exit(main())
