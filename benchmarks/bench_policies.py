"""What dependency policies and the per-run context cost, each against the hand-written
equivalent timed beside it (same process, rounds interleaved, asyncio and trio; each
ratio is the median of the rounds' own ratios).

- ``ctx.steps.charge(n)`` with ``policy(charge, retry=, timeout=, limiter=, breaker=)``
  against ``ctx.step("charge", lambda: breaker(lambda: limiter(lambda: charge(n))),
  retry=, timeout=)`` written out by hand (target <= 1.2x: the policy also keeps the
  limiter's refusals out of the breaker and numbers its timeouts);
- ``ctx.steps.charge(n)`` without a policy against the bound steps as they were before
  policies (a closure made by a failed attribute lookup on every call, copied here)
  (target <= 1.05x: a dependency without a policy pays nothing for them), and, for
  information, against ``ctx.step(name, partial(charge, n))`` under the same numbered
  names (``charge``, ``charge#2``, ...);
- a run given ``context=`` against the same run without, one listener (target <= 1.15x:
  the context is set on every event; a run given none pays nothing).

    python benchmarks/bench_policies.py [--quick] [--json PATH]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio

from _report import Summary, bench_parser, finish, median_ratio
from awaitly_anyio import (
    Deps,
    RetryPolicy,
    WorkflowContext,
    create_circuit_breaker,
    create_rate_limiter,
    create_workflow,
    events,
    policy,
)

TARGETS = {"policy": 1.2, "bound": 1.05, "context": 1.15}


class BoundStepsBefore:
    """``ctx.steps`` as it was before policies (commit 6be9fc5), the baseline."""

    __slots__ = ("_counts", "_deps", "_step")

    def __init__(self, step: Any, deps: object) -> None:
        self._step = step
        self._deps = deps
        self._counts: dict[str, int] = {}

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        dep = getattr(self._deps, name)
        if not callable(dep):
            raise TypeError(f"dependency {name!r} is not callable, so it cannot be a step")
        counts = self._counts

        def call(*args: Any, **kwargs: Any) -> Awaitable[Any]:
            count = counts.get(name, 0) + 1
            counts[name] = count
            step_name = name if count == 1 else f"{name}#{count}"
            return self._step(step_name, partial(dep, *args, **kwargs))

        return call


async def charge(n: int) -> int:
    return n


Body = Callable[[WorkflowContext[Deps]], Awaitable[None]]


def bodies(steps: int) -> dict[str, tuple[dict[str, Any], Body, dict[str, Any]]]:
    """name -> (deps, body, run options)."""
    retry = RetryPolicy(3)
    limiter = create_rate_limiter("bench", max_requests=10**6, window=1.0)
    breaker = create_circuit_breaker("bench", failure_threshold=5, reset_timeout=30.0)
    wrapped = policy(charge, retry=retry, timeout=5.0, limiter=limiter, breaker=breaker)

    async def with_policy(ctx: WorkflowContext[Deps]) -> None:
        for n in range(steps):
            await ctx.steps.charge(n)

    async def by_hand(ctx: WorkflowContext[Deps]) -> None:
        for n in range(steps):
            await ctx.step(
                "charge",
                lambda n=n: breaker(lambda: limiter(lambda: charge(n))),
                retry=retry,
                timeout=5.0,
            )

    async def bound(ctx: WorkflowContext[Deps]) -> None:
        for n in range(steps):
            await ctx.steps.charge(n)

    async def bound_before(ctx: WorkflowContext[Deps]) -> None:
        before = BoundStepsBefore(ctx.step, ctx.deps)
        for n in range(steps):
            await before.charge(n)

    names = ["charge", *(f"charge#{n}" for n in range(2, steps + 1))]

    async def step(ctx: WorkflowContext[Deps]) -> None:
        for n in range(steps):
            await ctx.step(names[n], partial(charge, n))

    return {
        "policy": ({"charge": wrapped}, with_policy, {}),
        "policy by hand": ({"charge": charge}, by_hand, {}),
        "bound step": ({"charge": charge}, bound, {}),
        "bound step before": ({"charge": charge}, bound_before, {}),
        "step": ({"charge": charge}, step, {}),
        "run with context": ({"charge": charge}, step, {"context": {"request_id": "r-1"}}),
        "run without context": ({"charge": charge}, step, {}),
    }


async def timed(name: str, setup: Any, steps: int, repeat: int) -> float:
    """Microseconds per step over ``repeat`` runs of ``steps`` steps."""
    deps, body, options = setup
    seen: list[events.WorkflowEvent] = []
    listener = seen.append if "context" in name else None
    workflow = create_workflow("bench", deps, on_event=listener)
    started = time.perf_counter()
    for _ in range(repeat):
        result = await workflow.run(body, **options)
        assert result.ok, result
        seen.clear()
    return (time.perf_counter() - started) / (steps * repeat) * 1e6


PAIRS = {
    "policy": ("policy", "policy by hand"),
    "bound": ("bound step", "bound step before"),
    "bound/step": ("bound step", "step"),
    "context": ("run with context", "run without context"),
}


async def measure(rounds: int, steps: int, repeat: int) -> dict[str, Any]:
    setups = bodies(steps)
    figures: dict[str, list[float]] = {name: [] for name in setups}
    for name, setup in setups.items():  # warm up
        await timed(name, setup, steps, 2)
    names = list(dict.fromkeys(name for pair in PAIRS.values() for name in pair))
    for run in range(rounds):
        # Alternate the order, so no side always meets a warmer cache.
        for name in names if run % 2 else names[::-1]:
            figures[name].append(await timed(name, setups[name], steps, repeat))
    out: dict[str, Any] = {name: statistics.median(values) for name, values in figures.items()}
    for pair, (ours, baseline) in PAIRS.items():
        out[f"{pair} ratio"] = median_ratio(figures[ours], figures[baseline])
    return out


def main() -> int:
    parser = bench_parser(__doc__, "a few seconds instead of a minute")
    args = parser.parse_args()
    rounds, steps, repeat = (5, 100, 20) if args.quick else (15, 200, 50)
    report: dict[str, Any] = {"targets": TARGETS, "backends": {}}
    summary = Summary()
    labels = {
        "policy": "ctx.steps.dep() with a policy / the same guards written by hand",
        "bound": "ctx.steps.dep() without a policy / ctx.steps.dep() before policies",
        "bound/step": "ctx.steps.dep() / ctx.step(same name, partial(dep, ...))",
        "context": "a run with context= / the same run without (one listener)",
    }
    for backend in ("asyncio", "trio"):
        figures = anyio.run(measure, rounds, steps, repeat, backend=backend)
        report["backends"][backend] = figures
        print(f"\n{backend} ({steps} steps x {repeat} runs x {rounds} rounds)")
        for name in bodies(1):
            print(f"  {name:22s} {figures[name]:8.2f} us/step")
        for pair, label in labels.items():
            ratio = figures[f"{pair} ratio"]
            target = TARGETS.get(pair)
            verdict = summary.add(label, backend, ratio, target=target)
            aim = f"(target <= {target}x)" if target else "(no target)"
            print(f"  {label}: {ratio:.3f}x {aim} {verdict}")
    return finish(report, summary, args.json, failed=summary.missed)


if __name__ == "__main__":
    sys.exit(main())
