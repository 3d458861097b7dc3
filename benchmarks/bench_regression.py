"""No regression: the current tree against the pre-change commit, side by side, in one run.

    python -m benchmarks.bench_regression [--base fb81b7a] [--new REV|DIR] [--quick]
        [--instructions] [--rounds N] [--only plain timeout sqlite postgres redis]
        [--backends asyncio trio] [--json PATH] [--remove-worktrees]

Issue 18 asks that a plain step, a step with a timeout, and a keyed step checkpointed
to SQLite, PostgreSQL and Redis stay within 5% of the commit before the architecture
work (``fb81b7a``), on asyncio and trio.  This script checks out the base commit in a
``git worktree`` in the temp directory (reused by later runs), and runs the same
benchmark bodies (``benchmarks/_regression_child.py``, public API only) against the
old tree and the new one, each in its own child process whose ``PYTHONPATH`` (and
first ``sys.path`` entry) is that tree's ``src/``; each child reports which
``awaitly_anyio`` it imported, and the run stops if it is not the expected tree's.

The new tree is this checkout's working tree by default (uncommitted edits
included); ``--new REV`` measures a commit instead, in a worktree of its own, and
``--new DIR`` another checkout as it is (a copy with a deliberate slowdown, say, to
see the check catch it).

Two modes:

- time (default): rounds of A B A B children (the order flips every round), so the
  machine's drift and the other loads on it reach both trees alike.  A child warms up,
  then times a few repetitions; its figure is their median.  The verdict is on the
  median over rounds of each round's own new/old ratio: PASS if <= 1.05.
- ``--instructions``: each child runs under valgrind's cachegrind at two sizes N1 and
  N2; ``(I(N2) - I(N1)) / (N2 - N1)`` is the instructions per operation, with the
  interpreter's start, the imports and the warm-up subtracted out.  A quieter witness
  than time on a shared machine; it counts the client's work only (a server's fsync
  costs no instruction here), so it says whether *our* code got slower.

PostgreSQL and Redis children write into their own schema / key prefix, named after a
tag of this run, and drop them before they exit; whatever a crashed child left behind
is swept at the end.  Exit status 1 when a ratio misses its target or a benchmark
failed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    from ._report import Summary, verdict
except ImportError:  # run as a file (python benchmarks/bench_regression.py), as __main__ does
    from _report import Summary, verdict  # type: ignore[no-redef,import-not-found]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CHILD = HERE / "_regression_child.py"
DEFAULT_BASE = "fb81b7a"
TARGET = 1.05
BENCHES = ("plain", "timeout", "sqlite", "postgres", "redis")
BACKENDS = ("asyncio", "trio")
PG_DSN = os.environ.get("AWAITLY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("AWAITLY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

LABELS = {
    "plain": "plain step",
    "timeout": "step with timeout",
    "sqlite": "SQLite checkpoint (keyed step)",
    "postgres": "PostgreSQL checkpoint (keyed step)",
    "redis": "Redis checkpoint (keyed step)",
}


@dataclass(frozen=True)
class Sizes:
    """Operations per timed repetition, repetitions per child, and the two sizes
    of the instruction count."""

    n: int
    reps: int
    quick_n: int
    n1: int
    n2: int


SIZES = {
    "plain": Sizes(n=50_000, reps=5, quick_n=5_000, n1=1_000, n2=5_000),
    "timeout": Sizes(n=20_000, reps=5, quick_n=5_000, n1=1_000, n2=5_000),
    "sqlite": Sizes(n=200, reps=5, quick_n=50, n1=20, n2=100),
    "postgres": Sizes(n=200, reps=5, quick_n=50, n1=20, n2=100),
    "redis": Sizes(n=200, reps=5, quick_n=50, n1=20, n2=100),
}


@dataclass(frozen=True)
class Tree:
    """One side of the comparison: ``label`` is "old" or "new"."""

    label: str
    root: Path
    description: str

    @property
    def src(self) -> Path:
        return self.root / "src"


class ChildError(RuntimeError):
    """A child process failed; the message carries the tail of its stderr."""


@dataclass
class Result:
    """Every round's figure of one benchmark on one backend, for both trees."""

    bench: str
    backend: str
    old: list[float] = field(default_factory=list[float])
    new: list[float] = field(default_factory=list[float])
    error: str | None = None

    @property
    def ratio(self) -> float:
        """The median of the rounds' own new/old ratios."""
        return statistics.median(n / o for n, o in zip(self.new, self.old, strict=True))


# --- the trees ----------------------------------------------------------------------


def git(*args: str, cwd: Path = REPO) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def worktree(rev: str) -> Path:
    """A detached worktree of ``rev`` in the temp directory, created or reused."""
    sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    path = Path(tempfile.gettempdir()) / f"awaitly-regress-{sha[:12]}"
    if path.exists():
        try:
            head = git("rev-parse", "HEAD", cwd=path)
        except RuntimeError:
            head = ""
        if head != sha or not (path / "src" / "awaitly_anyio" / "__init__.py").exists():
            raise SystemExit(f"{path} exists but is not a clean worktree of {sha[:12]}: remove it")
        print(f"reusing the worktree of {sha[:12]} at {path}", flush=True)
        return path
    # --force: the path may still be registered from a worktree whose directory the
    # temp cleaner removed; it is ours (named after the commit), so taking it is safe.
    git("worktree", "add", "--force", "--detach", str(path), sha)
    print(f"created a worktree of {sha[:12]} at {path}", flush=True)
    return path


def remove_worktree(path: Path) -> None:
    git("worktree", "remove", "--force", str(path))
    print(f"removed the worktree at {path}")


def describe(root: Path) -> str:
    sha = git("rev-parse", "--short=12", "HEAD", cwd=root)
    dirty = git("status", "--porcelain", "--", "src", cwd=root)
    return f"{sha}{' + uncommitted edits in src/' if dirty else ''} ({root})"


# --- the children -------------------------------------------------------------------


def run_child(
    tree: Tree,
    bench: str,
    backend: str,
    n: int,
    reps: int,
    tag: str,
    *,
    valgrind: bool = False,
) -> dict[str, Any]:
    """Run one child against ``tree``; return its report (plus ``instructions`` under
    valgrind).  Raises `ChildError` if it fails or imported another tree's package."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tree.src), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    command = [
        sys.executable,
        str(CHILD),
        "--src",
        str(tree.src),
        "--bench",
        bench,
        "--backend",
        backend,
        "--n",
        str(n),
        "--reps",
        str(reps),
        "--tag",
        tag,
    ]
    if valgrind:
        # A fixed hash seed: set and dict orders, and so the work done, repeat exactly.
        env["PYTHONHASHSEED"] = "0"
        command = [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            *command,
        ]
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=1800, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ChildError(
            f"{tree.label} {bench} {backend}: timed out after {exc.timeout} s"
        ) from None
    if done.returncode != 0 or not done.stdout.strip():
        tail = "\n".join(done.stderr.strip().splitlines()[-6:])
        raise ChildError(f"{tree.label} {bench} {backend}: exit {done.returncode}\n{tail}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    imported = Path(report["file"]).resolve()
    if not imported.is_relative_to(tree.src.resolve()):
        raise SystemExit(
            f"the {tree.label} child imported {imported}, not the package under {tree.src}:"
            " the comparison would be meaningless"
        )
    if valgrind:
        found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
        if found is None:
            raise ChildError(f"{tree.label} {bench} {backend}: no 'I refs' in valgrind's output")
        report["instructions"] = int(found.group(1).replace(",", ""))
    return report


def check_trees(trees: Sequence[Tree], benches: Sequence[str], tag: str) -> dict[str, str]:
    """One tiny native run of every benchmark on every tree: it checks both trees run
    the bodies (and compiles their bytecode, so that no measured child pays for it).
    Returns the benchmarks that failed, with why."""
    failed: dict[str, str] = {}
    for tree in trees:
        for bench in benches:
            if bench in failed:
                continue
            try:
                report = run_child(tree, bench, "asyncio", 10, 1, f"{tag}_chk_{tree.label}")
            except ChildError as exc:
                failed[bench] = str(exc)
                print(f"  {bench}: FAILED on the {tree.label} tree:\n{exc}", flush=True)
                continue
            if bench == benches[0]:
                print(f"  {tree.label} tree imports {report['file']}", flush=True)
    return failed


# --- the two modes ------------------------------------------------------------------


def one_figure(
    tree: Tree, bench: str, backend: str, tag: str, *, quick: bool, instructions: bool
) -> float:
    """Seconds per operation (median of the child's repetitions) or, with
    ``instructions``, instructions per operation (the two-size difference)."""
    sizes = SIZES[bench]
    if instructions:
        small = run_child(tree, bench, backend, sizes.n1, 1, f"{tag}a", valgrind=True)
        large = run_child(tree, bench, backend, sizes.n2, 1, f"{tag}b", valgrind=True)
        return float(large["instructions"] - small["instructions"]) / (sizes.n2 - sizes.n1)
    n = sizes.quick_n if quick else sizes.n
    reps = 2 if quick else sizes.reps
    report = run_child(tree, bench, backend, n, reps, tag)
    return float(statistics.median(report["seconds_per_op"]))


def measure(
    trees: Sequence[Tree],
    benches: Sequence[str],
    backends: Sequence[str],
    rounds: int,
    tag: str,
    *,
    quick: bool,
    instructions: bool,
) -> list[Result]:
    """Every benchmark on every backend, ``rounds`` times, the two trees back to back
    (old first in even rounds, new first in odd ones)."""
    results = {(b, k): Result(b, k) for b in benches for k in backends}
    for round_ in range(rounds):
        order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
        print(f"\nround {round_ + 1}/{rounds}", flush=True)
        for bench in benches:
            for backend in backends:
                result = results[bench, backend]
                if result.error is not None:
                    continue
                figures: dict[str, float] = {}
                for tree in order:
                    child_tag = f"{tag}_{tree.label}_{backend[0]}{round_}"
                    try:
                        figures[tree.label] = one_figure(
                            tree, bench, backend, child_tag, quick=quick, instructions=instructions
                        )
                    except ChildError as exc:
                        # A tree being edited may fail now and then: one retry.
                        print(f"  {bench} {backend}: {exc}\n  retrying once", flush=True)
                        try:
                            figures[tree.label] = one_figure(
                                tree,
                                bench,
                                backend,
                                f"{child_tag}r",
                                quick=quick,
                                instructions=instructions,
                            )
                        except ChildError as again:
                            result.error = str(again)
                            break
                if result.error is not None:
                    print(f"  {bench:9s} {backend:8s} FAILED, dropped", flush=True)
                    continue
                result.old.append(figures["old"])
                result.new.append(figures["new"])
                print(
                    f"  {bench:9s} {backend:8s} old {fmt(bench, figures['old'], instructions):>12s}"
                    f"  new {fmt(bench, figures['new'], instructions):>12s}"
                    f"  new/old {figures['new'] / figures['old']:.3f}",
                    flush=True,
                )
    return list(results.values())


def fmt(bench: str, figure: float, instructions: bool) -> str:
    if instructions:
        return f"{figure / 1000:.1f}k instr"
    if bench in ("plain", "timeout"):
        return f"{figure * 1e9:.0f} ns"
    return f"{figure * 1e6:.1f} us"


def table(results: Sequence[Result], instructions: bool) -> str:
    """The verdicts as a Markdown table (it pastes into the docs)."""
    unit = "instructions per op" if instructions else "median per op"
    lines = [
        f"| benchmark | backend | old ({unit}) | new | new / old | target | |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for result in results:
        name = LABELS[result.bench]
        if result.error is not None or not result.old:
            lines.append(f"| {name} | {result.backend} | | | | <= {TARGET} | ERROR |")
            continue
        old = fmt(result.bench, statistics.median(result.old), instructions)
        new = fmt(result.bench, statistics.median(result.new), instructions)
        ratio = result.ratio
        lines.append(
            f"| {name} | {result.backend} | {old} | {new} | {ratio:.3f}x | <= {TARGET} |"
            f" {verdict(ratio, TARGET, '<=')} |"
        )
    return "\n".join(lines)


# --- clean-up -----------------------------------------------------------------------


async def sweep(tag: str, benches: Sequence[str]) -> None:
    """Drop whatever a crashed child of this run left: schemas and keys named after
    ``tag`` (each child drops its own; this finds nothing after a clean run)."""
    if "postgres" in benches:
        asyncpg: Any = importlib.import_module("asyncpg")

        connection = await asyncpg.connect(PG_DSN)
        try:
            rows = await connection.fetch(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1",
                f"awaitly\\_regress\\_{tag}%",
            )
            for row in rows:
                await connection.execute(f'DROP SCHEMA IF EXISTS "{row["nspname"]}" CASCADE')
            if rows:
                print(f"swept {len(rows)} schemas a child left behind")
        finally:
            await connection.close()
    if "redis" in benches:
        redis_asyncio: Any = importlib.import_module("redis.asyncio")
        client: Any = redis_asyncio.Redis.from_url(REDIS_URL)
        try:
            keys = [key async for key in client.scan_iter(f"awaitly-regress-{tag}*", count=1000)]
            for start in range(0, len(keys), 500):
                await client.delete(*keys[start : start + 500])
            if keys:
                print(f"swept {len(keys)} Redis keys a child left behind")
        finally:
            await client.aclose()


# --- main ---------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_regression",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--base", default=DEFAULT_BASE, help="the old commit (fb81b7a)")
    parser.add_argument(
        "--new", help="a commit or a checkout to measure as the new side (default: this one)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 rounds")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under valgrind"
    )
    parser.add_argument("--rounds", type=int, help="rounds (11; 3 with --quick; 1 counting)")
    parser.add_argument("--only", nargs="+", choices=BENCHES, help="run only these benchmarks")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--remove-worktrees", action="store_true", help="remove the worktrees afterwards"
    )
    args = parser.parse_args()

    benches = [b for b in BENCHES if b in (args.only or BENCHES)]
    backends = [b for b in BACKENDS if b in args.backends]
    if args.rounds is not None:
        rounds = args.rounds
    elif args.instructions:
        rounds = 1
    else:
        rounds = 3 if args.quick else 11
    if args.instructions and subprocess.run(["which", "valgrind"], capture_output=True).returncode:
        raise SystemExit("--instructions needs valgrind (apt-get install -y valgrind)")

    started = time.perf_counter()
    made: list[Path] = []
    base_root = worktree(args.base)
    made.append(base_root)
    if args.new is None:
        new_root = REPO
    elif (Path(args.new) / "src" / "awaitly_anyio" / "__init__.py").exists():
        new_root = Path(args.new).resolve()
    else:
        new_root = worktree(args.new)
        made.append(new_root)
    trees = [
        Tree("old", base_root, describe(base_root)),
        Tree("new", new_root, describe(new_root)),
    ]
    tag = uuid.uuid4().hex[:8]
    mode = "instructions (cachegrind, two-size difference)" if args.instructions else "time"
    print(f"old: {trees[0].description}\nnew: {trees[1].description}")
    print(f"mode: {mode}; {rounds} rounds; backends: {', '.join(backends)}; tag {tag}")
    try:
        print("\nchecking both trees run every benchmark", flush=True)
        failed = check_trees(trees, benches, tag)
        results = measure(
            trees,
            [b for b in benches if b not in failed],
            backends,
            rounds,
            tag,
            quick=args.quick,
            instructions=args.instructions,
        )
        for bench, why in failed.items():
            for backend in backends:
                results.append(Result(bench, backend, error=why))
    finally:
        try:
            asyncio.run(sweep(tag, benches))
        except Exception as exc:
            print(f"clean-up sweep failed: {exc!r}")
        if args.remove_worktrees:
            for path in made:
                remove_worktree(path)

    order = {(b, k): i for i, (b, k) in enumerate((b, k) for b in BENCHES for k in BACKENDS)}
    results.sort(key=lambda r: order[r.bench, r.backend])
    print(f"\n=== new / old ({time.perf_counter() - started:.0f} s, {mode}, {rounds} rounds)")
    print(table(results, args.instructions))

    summary = Summary()
    for result in results:
        if result.error is None and result.old:
            kind = "instructions" if args.instructions else "time"
            summary.add(
                f"regression: {LABELS[result.bench]}, new / old ({kind})",
                result.backend,
                result.ratio,
                target=TARGET,
            )
    errors = [r for r in results if r.error is not None or not r.old]
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "old": trees[0].description,
                    "new": trees[1].description,
                    "mode": "instructions" if args.instructions else "time",
                    "rounds": rounds,
                    "target": TARGET,
                    "results": [
                        {
                            "bench": r.bench,
                            "backend": r.backend,
                            "old": r.old,
                            "new": r.new,
                            "ratio": r.ratio if r.error is None and r.old else None,
                            "error": r.error,
                        }
                        for r in results
                    ],
                    "summary": summary.rows,
                },
                indent=2,
            )
        )
        print(f"\nwrote {args.json}")
    return 1 if summary.missed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
