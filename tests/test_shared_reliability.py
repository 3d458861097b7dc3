"""The Redis-shared rate limiter and circuit breaker, across real processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from awaitly_anyio import CircuitOpenError, CircuitState, Err, create_circuit_breaker

from .redis_kit import URL, fresh_prefix

pytestmark = pytest.mark.anyio
CHILD = Path(__file__).with_name("reliability_child.py")


@pytest.fixture
def prefix() -> Iterator[str]:
    yield from fresh_prefix("shared")


def children(mode: str, prefix: str, tmp_path: Path, count: int, n: int) -> list[Path]:
    outs = [tmp_path / f"{mode}-{i}.txt" for i in range(n)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(CHILD),
                mode,
                URL,
                prefix,
                str(out),
                ("asyncio", "trio")[i % 2],
                str(count),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, out in enumerate(outs)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    return outs


def test_processes_sharing_a_limiter_stay_under_the_rate_together(
    tmp_path: Path, prefix: str
) -> None:
    outs = children("limiter", prefix, tmp_path, count=20, n=4)
    times = sorted(int(t) for out in outs for t in out.read_text().split())
    assert len(times) == 80
    # By the Redis server's clock (µs): no 0.3 s window admitted more than 10 calls.
    for i in range(len(times) - 10):
        assert times[i + 10] - times[i] >= 300_000, i
    # And the processes did use the whole rate: 80 calls need 7 full windows, not many more.
    assert times[-1] - times[0] < 7 * 300_000 + 1_500_000


async def test_a_breaker_opened_by_one_process_is_open_for_all(tmp_path: Path, prefix: str) -> None:
    [out] = await anyio.to_thread.run_sync(
        lambda: children("open-breaker", prefix, tmp_path, count=3, n=1)
    )
    assert out.read_text() == "OPEN"
    breaker = create_circuit_breaker(
        "payment", failure_threshold=3, reset_timeout=60, redis=URL, key_prefix=prefix
    )
    called: list[int] = []
    try:
        result = await breaker(lambda: called.append(1))
        assert isinstance(result, Err)
        assert isinstance(result.error, CircuitOpenError)
        assert 0 < result.error.retry_after <= 60
        assert called == []
        assert breaker.state is CircuitState.OPEN
    finally:
        await breaker.aclose()


async def test_shared_half_open_trials_and_recovery(prefix: str) -> None:
    one = create_circuit_breaker(
        "svc",
        failure_threshold=1,
        reset_timeout=0.05,
        half_open_requests=1,
        redis=URL,
        key_prefix=prefix,
    )
    two = create_circuit_breaker(
        "svc",
        failure_threshold=1,
        reset_timeout=0.05,
        half_open_requests=1,
        redis=URL,
        key_prefix=prefix,
    )
    try:
        await one(lambda: Err("DOWN"))
        assert await two.fetch_state() is CircuitState.OPEN
        # The Redis server's clock must pass reset_timeout: poll the shared state.
        while await two.fetch_state() is CircuitState.OPEN:  # noqa: ASYNC110
            await anyio.sleep(0.01)
        release = anyio.Event()

        async def slow_trial() -> str:
            await release.wait()
            return "ok"

        async with anyio.create_task_group() as tg:
            results: list[object] = []

            async def trial() -> None:
                results.append(await one(slow_trial))

            tg.start_soon(trial)
            await anyio.wait_all_tasks_blocked()
            # The one trial place is taken: the other process is refused meanwhile.
            refused = await two(lambda: "never")
            assert refused == Err(CircuitOpenError("svc", 0.0))
            release.set()
        assert await two.fetch_state() is CircuitState.CLOSED
    finally:
        await one.aclose()
        await two.aclose()
