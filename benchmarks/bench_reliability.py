"""What the rate limiter and the circuit breaker cost on their fast paths, against peers.

- limiter, capacity available: ``await limiter(fn)`` against aiolimiter's
  ``async with AsyncLimiter(...)`` (asyncio) and a bare ``await fn()`` (both
  backends).  Target: <= 1.0x aiolimiter.
- closed breaker: ``await breaker(fn)`` against purgatory's async breaker and
  (for reference) pybreaker's synchronous ``call``.  Target: <= 0.5x purgatory.

Interleaved rounds, medians in ns per call.

    python benchmarks/bench_reliability.py [--quick] [--json PATH]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from _report import Summary, bench_parser, finish, medians, timed_rounds
from awaitly_anyio import create_circuit_breaker, create_rate_limiter

LIMITER_TARGET, BREAKER_TARGET = 1.0, 0.5


async def work() -> int:
    return 1


def variants(backend: str) -> dict[str, Callable[[int], Awaitable[float]]]:
    limiter = create_rate_limiter("bench", max_requests=10**8, window=1.0)
    breaker = create_circuit_breaker("bench", failure_threshold=5, reset_timeout=30)

    async def bare(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await work()
        return time.perf_counter() - started

    async def ours_limiter(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await limiter(work)
        return time.perf_counter() - started

    async def ours_breaker(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await breaker(work)
        return time.perf_counter() - started

    found: dict[str, Callable[[int], Awaitable[float]]] = {
        "bare await": bare,
        "awaitly limiter": ours_limiter,
        "awaitly breaker": ours_breaker,
    }
    if backend == "asyncio":
        try:
            from aiolimiter import AsyncLimiter
        except ImportError:
            pass
        else:
            peer_limiter = AsyncLimiter(10**8, 1.0)

            async def aiolimiter_(n: int) -> float:
                started = time.perf_counter()
                for _ in range(n):
                    async with peer_limiter:
                        await work()
                return time.perf_counter() - started

            found["aiolimiter"] = aiolimiter_
        try:
            from purgatory import AsyncCircuitBreakerFactory
        except ImportError:
            pass
        else:
            factory = AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)

            async def purgatory_(n: int) -> float:
                started = time.perf_counter()
                for _ in range(n):
                    async with await factory.get_breaker("bench"):
                        await work()
                return time.perf_counter() - started

            found["purgatory"] = purgatory_
    try:
        import pybreaker
    except ImportError:
        pass
    else:
        sync_breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)

        def sync_work() -> int:
            return 1

        async def pybreaker_(n: int) -> float:
            started = time.perf_counter()
            for _ in range(n):
                sync_breaker.call(sync_work)
            return time.perf_counter() - started

        found["pybreaker (sync call)"] = pybreaker_
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
            print(f"  {name:24s} {ns:9.0f}")
        if "aiolimiter" in figures:
            ratio = figures["awaitly limiter"] / figures["aiolimiter"]
            summary.add("rate limiter / aiolimiter", backend, ratio, target=LIMITER_TARGET)
            verdict = "PASS" if ratio <= LIMITER_TARGET else "MISS"
            print(f"  limiter / aiolimiter: {ratio:.2f}x (target <= {LIMITER_TARGET}) {verdict}")
        if "purgatory" in figures:
            ratio = figures["awaitly breaker"] / figures["purgatory"]
            summary.add("circuit breaker / purgatory", backend, ratio, target=BREAKER_TARGET)
            verdict = "PASS" if ratio <= BREAKER_TARGET else "MISS"
            print(f"  breaker / purgatory:  {ratio:.2f}x (target <= {BREAKER_TARGET}) {verdict}")
        print(f"  limiter / bare await: {figures['awaitly limiter'] / figures['bare await']:.2f}x")
    return finish(report, summary, args.json, failed=False)


if __name__ == "__main__":
    sys.exit(main())
