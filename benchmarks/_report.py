"""The one row format every benchmark script reports, so ``python -m benchmarks`` can
tabulate and plot them all: a ratio of our code to its baseline or peer, with its target."""

from __future__ import annotations

import argparse
import gc
import json
import statistics
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


class Summary:
    """Rows of ``{"name", "backend", "ratio", "target", "op"}``; ``op`` says which side
    of the target passes (``"<="``: we must be at most ``target`` times the baseline)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        name: str,
        backend: str,
        ratio: float,
        *,
        target: float | None = None,
        op: str = "<=",
    ) -> str:
        """Record one ratio and return its verdict for printing (``PASS``/``MISS``/``""``)."""
        self.rows.append(
            {"name": name, "backend": backend, "ratio": ratio, "target": target, "op": op}
        )
        return verdict(ratio, target, op)

    @property
    def missed(self) -> bool:
        return any(verdict(r["ratio"], r["target"], r["op"]) == "MISS" for r in self.rows)


def verdict(ratio: float, target: float | None, op: str) -> str:
    if target is None:
        return ""
    ok = ratio <= target if op == "<=" else ratio >= target
    return "PASS" if ok else "MISS"


def medians(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """The median of each figure over rounds (one dict of figures per round)."""
    return {name: statistics.median(row[name] for row in rows) for name in rows[0]}


def median_ratio(ours: Iterable[float], baseline: Iterable[float]) -> float:
    """The median of the rounds' own ratios, ours against the baseline timed beside it
    in the same round, so that drift in the machine's speed reaches both alike."""
    return statistics.median(o / b for o, b in zip(ours, baseline, strict=True))


def bench_parser(doc: str | None, quick: str | None = None) -> argparse.ArgumentParser:
    """The options every benchmark script takes: ``--quick`` (``quick`` says what it
    gives) and ``--json PATH`` (also write the report there); add the script's own."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser


def finish(
    report: dict[str, Any], summary: Summary, json_path: Path | None, *, failed: bool
) -> int:
    """Put the summary rows in ``report``, write it to ``json_path`` if given, and return
    the script's exit status: 1 if ``failed`` (a target the script enforces was missed)."""
    report["summary"] = summary.rows
    if json_path:
        json_path.write_text(json.dumps(report, indent=2))
    return 1 if failed else 0


async def timed_rounds(
    found: Mapping[str, Callable[[int], Awaitable[float]]],
    rounds: int,
    n: int,
    *,
    warmup: int,
    scale: float,
) -> list[dict[str, float]]:
    """Time every variant (``variant(n)`` returns the seconds ``n`` operations took) once
    with ``warmup`` operations, then ``rounds`` times, interleaved, with a collection
    before each; one dict per round of seconds per operation times ``scale``."""
    for variant in found.values():
        await variant(warmup)
    rows: list[dict[str, float]] = []
    for _ in range(rounds):
        row: dict[str, float] = {}
        for name, variant in found.items():
            gc.collect()
            row[name] = await variant(n) / n * scale
        rows.append(row)
    return rows
