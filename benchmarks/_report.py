"""The one row format every benchmark script reports, so ``python -m benchmarks`` can
tabulate and plot them all: a ratio of our code to its baseline or peer, with its target."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
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
