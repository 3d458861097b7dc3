"""A process sharing a limiter or a breaker through Redis (for test_shared_reliability).

Usage: python reliability_child.py limiter URL PREFIX OUT BACKEND CALLS
       python reliability_child.py open-breaker URL PREFIX OUT BACKEND FAILURES
"""

from __future__ import annotations

import sys

import anyio

from awaitly_anyio import Err, create_circuit_breaker, create_rate_limiter


async def limiter(url: str, prefix: str, out: str, calls: int) -> None:
    shared = create_rate_limiter("api", max_requests=10, window=0.3, redis=url, key_prefix=prefix)
    times = []
    for _ in range(calls):
        await shared.acquire()
        times.append(shared.last_admitted_at)
    await shared.aclose()
    await anyio.Path(out).write_text("\n".join(map(str, times)))


async def open_breaker(url: str, prefix: str, out: str, failures: int) -> None:
    breaker = create_circuit_breaker(
        "payment", failure_threshold=failures, reset_timeout=60, redis=url, key_prefix=prefix
    )
    for _ in range(failures):
        await breaker(lambda: Err("DOWN"))
    await breaker.aclose()
    await anyio.Path(out).write_text(breaker.state.value)


if __name__ == "__main__":
    mode, url, prefix, out, backend, count = sys.argv[1:7]
    fn = limiter if mode == "limiter" else open_breaker
    anyio.run(fn, url, prefix, out, int(count), backend=backend)
