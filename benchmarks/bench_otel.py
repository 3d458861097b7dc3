"""What tracing a step costs: a step traced by the OTel adapter against a hand-written
step that opens the same span with ``start_as_current_span`` and sets the same
attributes, on asyncio and trio.

Both run N steps inside a workflow run whose span is current, with the OTel SDK
configured (a ``TracerProvider`` exporting to an in-memory exporter through a
``SimpleSpanProcessor``); the figure is ns per step, the median of interleaved
rounds.  Target (issue 17): the adapter's step <= 1.2x the hand-written one.

    python benchmarks/bench_otel.py [--quick] [--check] [--json PATH]
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from _report import Summary, bench_parser, finish, medians
from awaitly_anyio import Deps, Err, Ok, WorkflowContext, create_workflow
from awaitly_anyio.otel import create_otel_adapter

TARGETS = {"adapter / hand-written span": 1.2}


class StepFailedError(Exception):
    """The hand-written step's early exit."""


async def value() -> int:
    return 1


Variant = Callable[[int], Awaitable[float]]


def variants() -> dict[str, Variant]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Status, StatusCode

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")
    adapter = create_otel_adapter("bench", tracer_provider=provider)
    traced_wf = create_workflow("bench", on_event=adapter.handle_event)
    plain_wf = create_workflow("bench")

    async def hand_written(name: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """The step a developer writes by hand around ``fn``: the same span, the same
        attributes, the error status on failure."""
        # The attributes a hand-written step knows up front go in at the start.
        attributes = {"step.name": name, "step.cached": False, "step.attempt": 1}
        with tracer.start_as_current_span(f"step {name}", attributes=attributes) as span:
            try:
                result = await fn()
            except Exception as exc:
                result = Err(exc)
            if not isinstance(result, (Ok, Err)):
                result = Ok(result)
            if isinstance(result, Err):
                span.set_status(Status(StatusCode.ERROR, repr(result.error)))
                raise StepFailedError(result.error)
        return result.value

    async def adapter_steps(n: int) -> float:
        elapsed = 0.0

        async def body(ctx: WorkflowContext[Deps]) -> None:
            nonlocal elapsed
            step = ctx.step
            started = time.perf_counter()
            for _ in range(n):
                await step("s", value)
            elapsed = time.perf_counter() - started

        result = await traced_wf.run(body)
        assert result.ok, result
        exporter.clear()
        return elapsed

    async def hand_written_steps(n: int) -> float:
        elapsed = 0.0

        async def body(ctx: WorkflowContext[Deps]) -> None:
            nonlocal elapsed
            started = time.perf_counter()
            for _ in range(n):
                await hand_written("s", value)
            elapsed = time.perf_counter() - started

        # The same nesting: the run's span is current around the steps.
        with tracer.start_as_current_span("workflow bench"):
            result = await plain_wf.run(body)
        assert result.ok, result
        exporter.clear()
        return elapsed

    return {"adapter": adapter_steps, "hand-written span": hand_written_steps}


CHUNKS = 10


async def measure(rounds: int, n: int) -> list[dict[str, float]]:
    """ns per step for every variant on the running backend, one dict per round.

    A round runs the variants in turn, ``CHUNKS`` times ``n / CHUNKS`` steps each,
    and each turn is a row: the ratio is the median of the turns' own ratios, so
    that the machine's drift (other processes) reaches every variant alike."""
    found = variants()
    for variant in found.values():  # warm-up
        await variant(max(n // 10, 100))
    chunk = max(n // CHUNKS, 1)
    rows: list[dict[str, float]] = []
    for _ in range(rounds):
        for _ in range(CHUNKS):
            row: dict[str, float] = {}
            for name, variant in found.items():
                gc.collect()
                row[name] = await variant(chunk) / chunk * 1e9
            rows.append(row)
    return rows


def ratios(figures: dict[str, float]) -> dict[str, float]:
    return {"adapter / hand-written span": figures["adapter"] / figures["hand-written span"]}


def main() -> int:
    parser = bench_parser(__doc__, "a few seconds instead of a minute")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    try:
        import opentelemetry.sdk  # noqa: F401
    except ImportError:
        print("opentelemetry-sdk is not installed (the dev extra): skipped")
        return 0
    rounds, n = (3, 1_000) if args.quick else (7, 10_000)
    report: dict[str, Any] = {}
    summary = Summary()
    for backend in ("asyncio", "trio"):
        rows = anyio.run(measure, rounds, n, backend=backend)
        figures = medians(rows)
        # Each ratio is the median of the rounds' own, so drift reaches both sides alike.
        found = medians([ratios(row) for row in rows])
        report[backend] = {"ns_per_step": figures, "ratios": found}
        print(
            f"\n{backend}: {n} steps x {rounds} rounds, median ns per step (turns of {n // CHUNKS})"
        )
        for name, ns in figures.items():
            print(f"  {name:32s} {ns:9.0f}")
        for name, ratio in found.items():
            target = TARGETS.get(name)
            verdict = summary.add(f"otel: {name}", backend, ratio, target=target)
            print(f"  {name:40s} {ratio:5.2f}x (target <= {target}) {verdict}")
    return finish(report, summary, args.json, failed=summary.missed and args.check)


if __name__ == "__main__":
    sys.exit(main())
