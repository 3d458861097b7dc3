"""What a step costs: ``ctx.step`` against a bare await, a hand-written minimal step,
and the retry libraries people use today (tenacity, stamina), on asyncio and trio.

Each variant runs N steps inside one workflow run; the figure is ns per step,
the median of interleaved rounds (every round runs every variant once, so noise
hits all alike).  Targets (from the core issue):

- plain ``ctx.step`` <= 2x the hand-written minimal step (try/except, two attrs
  events, ``Ok``);
- a step with a retry policy that never fires <= 1.15x the plain step (issue 18:
  ``ctx.step`` is the `Step` object itself, whose keyword arguments cost a dict);
- a step with a timeout <= 1.2x the minimal step inside ``anyio.fail_after``;
- a step with one plain ``on_event`` listener <= 1.2x the hand-written minimal step
  that builds the same two events (our ``StepStart`` and ``StepComplete``, with the
  same fields) and hands them to the same listener.

    python benchmarks/bench_steps.py [--quick] [--check] [--json PATH]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import attrs

from _report import Summary, bench_parser, finish, medians, timed_rounds
from awaitly_anyio import Deps, Err, Ok, RetryPolicy, WorkflowContext, create_workflow
from awaitly_anyio.events import StepComplete, StepStart

TARGETS = {
    "plain / minimal": 2.0,
    "retry (not triggered) / plain": 1.15,
    "timeout / minimal + fail_after": 1.2,
    "evented / minimal with our events": 1.2,
}


@attrs.frozen
class _Started:
    name: str
    ts: float


@attrs.frozen
class _Finished:
    name: str
    ts: float
    ok: bool


class StepFailedError(Exception):
    """The hand-written step's early exit."""


async def value() -> int:
    return 1


def minimal_step_factory() -> Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]:
    """The step an experienced developer writes by hand: two events, try/except, Ok."""
    sink: list[object] = []
    emit = sink.append

    async def step(name: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        emit(_Started(name, time.time()))
        try:
            result = await fn()
        except Exception as exc:
            result = Err(exc)
        if not isinstance(result, (Ok, Err)):
            result = Ok(result)
        emit(_Finished(name, time.time(), result.ok))
        sink.clear()
        if isinstance(result, Err):
            raise StepFailedError(result.error)
        return result.value

    return step


def minimal_evented_factory(
    listener: Callable[[object], object],
) -> Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]:
    """The minimal step, building our two events with the fields ours carry (the run's
    id and name, wall-clock stamps, the duration on the monotonic clock, the value)
    and handing them to ``listener``."""
    workflow_id, workflow_name = "run-1", "bench"

    async def step(name: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        started = time.monotonic()
        listener(
            StepStart(
                workflow_id=workflow_id, workflow_name=workflow_name, ts=time.time(), name=name
            )
        )
        try:
            result = await fn()
        except Exception as exc:
            result = Err(exc)
        if not isinstance(result, (Ok, Err)):
            result = Ok(result)
        if isinstance(result, Err):
            raise StepFailedError(result.error)
        listener(
            StepComplete(
                workflow_id=workflow_id,
                workflow_name=workflow_name,
                ts=time.time(),
                name=name,
                duration_ms=(time.monotonic() - started) * 1000.0,
                value=result.value,
            )
        )
        return result.value

    return step


Variant = Callable[[int], Awaitable[float]]


def variants() -> dict[str, Variant]:
    """Each variant runs ``n`` steps and returns the seconds they took."""
    plain_wf = create_workflow("bench")
    evented_wf = create_workflow("bench", on_event=lambda event: None)
    never = RetryPolicy(attempts=3, delay=0.0)
    minimal = minimal_step_factory()
    minimal_evented = minimal_evented_factory(lambda event: None)

    async def bare(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await value()
        return time.perf_counter() - started

    async def minimal_step(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await minimal("s", value)
        return time.perf_counter() - started

    async def minimal_with_events(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await minimal_evented("s", value)
        return time.perf_counter() - started

    async def minimal_fail_after(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            with anyio.fail_after(10.0):
                await minimal("s", value)
        return time.perf_counter() - started

    def in_workflow(workflow: Any, kind: str) -> Variant:
        # Each kind calls ctx.step with literal keywords, as user code does (a **splat
        # would add a dict to every call and measure that instead).
        async def variant(n: int) -> float:
            elapsed = 0.0

            async def body(ctx: WorkflowContext[Deps]) -> None:
                nonlocal elapsed
                step = ctx.step
                started = time.perf_counter()
                if kind == "retry":
                    for _ in range(n):
                        await step("s", value, retry=never)
                elif kind == "timeout":
                    for _ in range(n):
                        await step("s", value, timeout=10.0)
                else:
                    for _ in range(n):
                        await step("s", value)
                elapsed = time.perf_counter() - started

            result = await workflow.run(body)
            assert result.ok, result
            return elapsed

        return variant

    found: dict[str, Variant] = {
        "bare await": bare,
        "minimal": minimal_step,
        "minimal + fail_after": minimal_fail_after,
        "minimal with our events": minimal_with_events,
        "plain": in_workflow(plain_wf, "plain"),
        "retry (not triggered)": in_workflow(plain_wf, "retry"),
        "timeout": in_workflow(plain_wf, "timeout"),
        "evented": in_workflow(evented_wf, "plain"),
    }
    try:
        import tenacity
    except ImportError:
        pass
    else:

        async def tenacity_retry(n: int) -> float:
            retrying = tenacity.AsyncRetrying(
                stop=tenacity.stop_after_attempt(3), sleep=anyio.sleep, reraise=True
            )
            started = time.perf_counter()
            for _ in range(n):
                await retrying(value)
            return time.perf_counter() - started

        found["tenacity retry (not triggered)"] = tenacity_retry
    try:
        import stamina
    except ImportError:
        pass
    else:

        async def stamina_retry(n: int) -> float:
            started = time.perf_counter()
            for _ in range(n):
                async for attempt in stamina.retry_context(on=Exception, attempts=3):
                    with attempt:
                        await value()
            return time.perf_counter() - started

        found["stamina retry (not triggered)"] = stamina_retry
    return found


async def measure(rounds: int, n: int) -> list[dict[str, float]]:
    """ns per step for every variant on the running backend, one dict per round."""
    return await timed_rounds(variants(), rounds, n, warmup=max(n // 10, 100), scale=1e9)


def ratios(figures: dict[str, float]) -> dict[str, float]:
    found = {
        "plain / minimal": figures["plain"] / figures["minimal"],
        "retry (not triggered) / plain": figures["retry (not triggered)"] / figures["plain"],
        "timeout / minimal + fail_after": figures["timeout"] / figures["minimal + fail_after"],
        "evented / minimal": figures["evented"] / figures["minimal"],
        "evented / minimal with our events": figures["evented"]
        / figures["minimal with our events"],
    }
    for peer in ("tenacity", "stamina"):
        name = f"{peer} retry (not triggered)"
        if name in figures:
            found[f"retry (not triggered) / {peer}"] = (
                figures["retry (not triggered)"] / figures[name]
            )
    return found


def main() -> int:
    parser = bench_parser(__doc__, "a few seconds instead of a minute")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    rounds, n = (3, 2_000) if args.quick else (7, 20_000)
    report: dict[str, Any] = {}
    summary = Summary()
    missed = False
    for backend in ("asyncio", "trio"):
        rows = anyio.run(measure, rounds, n, backend=backend)
        figures = medians(rows)
        # Each ratio is the median of the rounds' own, so drift reaches both sides alike.
        found = medians([ratios(row) for row in rows])
        report[backend] = {"ns_per_step": figures, "ratios": found}
        print(f"\n{backend}: {n} steps x {rounds} rounds, median ns per step")
        for name, ns in figures.items():
            print(f"  {name:32s} {ns:9.0f}")
        for name, ratio in found.items():
            target = TARGETS.get(name)
            summary.add(f"step: {name}", backend, ratio, target=target)
            verdict = ""
            if target is not None:
                ok = ratio <= target
                missed |= not ok
                verdict = f"(target <= {target}) {'PASS' if ok else 'MISS'}"
            print(f"  {name:40s} {ratio:5.2f}x {verdict}")
    return finish(report, summary, args.json, failed=missed and args.check)


if __name__ == "__main__":
    sys.exit(main())
