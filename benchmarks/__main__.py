"""Run every benchmark, then print one table of ratios and optionally save JSON and a plot.

    python -m benchmarks [--quick] [--only NAME ...] [--json PATH] [--plot PATH]

Each script runs in its own process (so one's memory and threads cannot skew the
next), shows its own progress, and reports rows of "our code / its baseline or
peer" with the target the issues set.  Peers that are not installed are skipped
by the scripts with a note.  ``--plot`` draws the ratios (needs matplotlib, in the
``bench`` extra).  The exit status is 1 when a target was missed.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from ._report import verdict

HERE = Path(__file__).resolve().parent

# In the order they run: the cheap in-memory ones first.
SCRIPTS = {
    "steps": "bench_steps.py",
    "groups": "bench_groups.py",
    "otel": "bench_otel.py",
    "reliability": "bench_reliability.py",
    "cache": "bench_cache.py",
    "policies": "bench_policies.py",
    "concurrency": "bench_concurrency.py",
    "sqlite": "bench_checkpoint.py",
    "keys": "bench_keys.py",
    "servers": "bench_servers.py",
    "durable_load": "bench_durable_load.py",
    "durable_floor": "bench_durable_floor.py",
    "regression": "bench_regression.py",
    "dbos": "bench_dbos.py",
    "waiting": "bench_waiting.py",
    "queues": "bench_queues.py",
    "saga": "bench_saga.py",
    "reliability_extras": "bench_reliability_extras.py",
    "dashboard": "bench_dashboard.py",
}

PACKAGES = (
    "awaitly-anyio",
    "anyio",
    "trio",
    "asyncpg",
    "redis",
    "tenacity",
    "stamina",
    "aiolimiter",
    "purgatory",
    "pybreaker",
    "dbos",
)


def machine() -> dict[str, Any]:
    """Where the figures were taken: they mean little without it."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": _cpus(),
        "versions": versions,
    }


def _cpus() -> int | None:
    import os

    return os.cpu_count()


def run_script(name: str, quick: bool, index: int, total: int) -> dict[str, Any] | None:
    """Run one script in a child process, streaming its output; return its JSON report."""
    script = HERE / SCRIPTS[name]
    print(f"\n=== [{index}/{total}] {name} ({script.name}) ===", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        command = [sys.executable, str(script), "--json", str(out)]
        if quick:
            command.append("--quick")
        code = subprocess.call(command)
        elapsed = time.perf_counter() - started
        if not out.exists():
            print(f"--- {name}: no report (exit {code}) after {elapsed:.0f} s", flush=True)
            return None
        report: dict[str, Any] = json.loads(out.read_text())
    print(f"--- {name}: done in {elapsed:.0f} s", flush=True)
    report["elapsed_s"] = elapsed
    return report


def table(rows: list[dict[str, Any]]) -> str:
    """The summary as a Markdown table (it prints well and pastes into the README)."""
    lines = [
        "| benchmark | backend | ours / baseline | target | |",
        "|---|---|---:|---:|---|",
    ]
    for row in rows:
        target = "" if row["target"] is None else f"{row['op']} {row['target']:g}"
        mark = verdict(row["ratio"], row["target"], row["op"])
        lines.append(
            f"| {row['name']} | {row['backend']} | {row['ratio']:.2f}x | {target} | {mark} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """A horizontal bar per ratio, on a log scale, with its target as a tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{row['name']} [{row['backend']}]" for row in rows]
    ratios = [row["ratio"] for row in rows]
    colours = [
        {"PASS": "#2a9d8f", "MISS": "#e76f51", "": "#8d99ae"}[
            verdict(row["ratio"], row["target"], row["op"])
        ]
        for row in rows
    ]
    height = max(3.0, 0.32 * len(rows) + 1.2)
    figure, axes = plt.subplots(figsize=(11, height))
    positions = list(range(len(rows)))[::-1]
    axes.barh(positions, ratios, color=colours)
    for position, row in zip(positions, rows, strict=True):
        if row["target"] is not None:
            axes.plot([row["target"]] * 2, [position - 0.4, position + 0.4], color="black")
        axes.text(row["ratio"], position, f" {row['ratio']:.2f}x", va="center", fontsize=8)
    axes.set_yticks(positions, labels, fontsize=8)
    axes.set_xscale("log")
    axes.axvline(1.0, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xlabel("ours / baseline or peer (black tick: target; green: met, red: missed)")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    parser.add_argument("--only", nargs="+", choices=sorted(SCRIPTS), help="run only these")
    parser.add_argument("--json", type=Path, help="write every report and the summary here")
    parser.add_argument("--plot", type=Path, help="draw the ratios into this PNG")
    args = parser.parse_args()

    names = args.only or list(SCRIPTS)
    started = time.perf_counter()
    reports: dict[str, Any] = {}
    for index, name in enumerate(names, 1):
        if not (HERE / SCRIPTS[name]).exists():
            print(f"\n=== [{index}/{len(names)}] {name}: script missing, skipped")
            continue
        report = run_script(name, args.quick, index, len(names))
        if report is not None:
            reports[name] = report
    rows = [row for report in reports.values() for row in report.get("summary", [])]
    about = machine()
    mode = "quick" if args.quick else "full"
    print(f"\n=== summary ({time.perf_counter() - started:.0f} s, {mode})")
    print(f"Python {about['python']} on {about['platform']}, {about['cpus']} CPUs")
    print(table(rows))
    missing = [name for name in names if name not in reports]
    if missing:
        print(f"\nno report from: {', '.join(missing)}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": about, "quick": args.quick, "summary": rows, "reports": reports},
                indent=2,
            )
        )
        print(f"\nwrote {args.json}")
    if args.plot:
        try:
            title = f"awaitly-anyio {about['versions']['awaitly-anyio']}, Python {about['python']}"
            plot(rows, args.plot, title)
            print(f"wrote {args.plot}")
        except ImportError:
            print("matplotlib is not installed: no plot (pip install 'awaitly-anyio[bench]')")
    failed = any(verdict(r["ratio"], r["target"], r["op"]) == "MISS" for r in rows)
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
