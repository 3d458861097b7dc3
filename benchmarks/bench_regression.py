"""No regression: the current tree against the pre-change commit, side by side, in one run.

    python -m benchmarks.bench_regression [--base fb81b7a] [--new REV|DIR] [--quick]
        [--instructions] [--rounds N] [--pairs N] [--backends asyncio trio]
        [--only plain timeout sqlite postgres redis] [--json PATH] [--remove-worktrees]

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

- time (default): for each benchmark and backend, a session starts one child per
  tree, each warms up and then waits; the parent then asks them in turn for one timed
  repetition each, A B, B A, A B... (``--pairs`` of them), so that the machine's drift
  and the other loads on it reach both trees alike, repetition by repetition.  There
  are ``--rounds`` sessions (fresh processes, so one process's luck with its memory
  layout or hash seed does not decide).  The verdict is on the median of all the
  pairs' own new/old ratios: PASS if <= 1.05.
- ``--instructions``: each child runs under valgrind's cachegrind at two sizes N1 and
  N2; ``(I(N2) - I(N1)) / (N2 - N1)`` is the instructions per operation, with the
  interpreter's start, the imports and the warm-up subtracted out.  A quieter witness
  than time on a shared machine; it counts the client's work only (a server's fsync
  costs no instruction here), so it says whether *our* code got slower.  The steps'
  counts repeat exactly and are taken once; the stores' vary by a few percent with
  how often the event loop has to wait for the server, so they are taken in
  ``--rounds`` (3) and the verdict is on the median of the rounds' ratios.

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
import select
import shutil
import signal
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
# Their instruction counts repeat to within 0.1%; a server's do not (how often the
# client's loop finds an answer already waiting depends on the server's scheduling).
DETERMINISTIC = ("plain", "timeout")
PG_DSN = os.environ.get("AWAITLY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("AWAITLY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CHILD_TIMEOUT = 1800.0  # seconds: a child under valgrind on a busy machine is slow

LABELS = {
    "plain": "plain step",
    "timeout": "step with timeout",
    "sqlite": "SQLite checkpoint (keyed step)",
    "postgres": "PostgreSQL checkpoint (keyed step)",
    "redis": "Redis checkpoint (keyed step)",
}


@dataclass(frozen=True)
class Sizes:
    """Operations per timed repetition (full, ``--quick``), and the two sizes of the
    instruction count."""

    n: int
    quick_n: int
    n1: int
    n2: int


# A repetition takes some tens of milliseconds: long against the timer and a
# context switch, short against the drift of a shared machine.
SIZES = {
    "plain": Sizes(n=20_000, quick_n=5_000, n1=1_000, n2=5_000),
    "timeout": Sizes(n=5_000, quick_n=2_000, n1=1_000, n2=5_000),
    "sqlite": Sizes(n=50, quick_n=20, n1=20, n2=100),
    "postgres": Sizes(n=50, quick_n=20, n1=20, n2=100),
    "redis": Sizes(n=100, quick_n=30, n1=20, n2=100),
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
    """Every figure of one benchmark on one backend, for both trees, pair by pair
    (``old[i]`` and ``new[i]`` were taken back to back)."""

    bench: str
    backend: str
    old: list[float] = field(default_factory=list[float])
    new: list[float] = field(default_factory=list[float])
    old_cpu: list[float] = field(default_factory=list[float])
    new_cpu: list[float] = field(default_factory=list[float])
    error: str | None = None

    @property
    def ratio(self) -> float:
        """The median of the pairs' own new/old ratios."""
        return statistics.median(n / o for n, o in zip(self.new, self.old, strict=True))

    @property
    def cpu_ratio(self) -> float | None:
        """The same on the children's CPU time (time mode only)."""
        if not self.old_cpu:
            return None
        pairs = zip(self.new_cpu, self.old_cpu, strict=True)
        return statistics.median(n / o for n, o in pairs)


# --- the trees ----------------------------------------------------------------------


def git(*args: str, cwd: Path = REPO) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def worktree(rev: str) -> Path:
    """A detached worktree of ``rev`` in the temp directory, created or reused (only
    if its ``src/`` is the commit's, unedited)."""
    sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    path = Path(tempfile.gettempdir()) / f"awaitly-regress-{sha[:12]}"
    if not path.exists():
        try:
            # --force: the path may still be registered from a worktree whose directory
            # the temp cleaner removed; it is named after the commit, so it is this one.
            git("worktree", "add", "--force", "--detach", str(path), sha)
            print(f"created a worktree of {sha[:12]} at {path}", flush=True)
            return path
        except RuntimeError:
            if not path.exists():
                raise
            # Another run created it at the same moment: check it like any other.
    try:
        head = git("rev-parse", "HEAD", cwd=path)
        edited = git("status", "--porcelain", "--untracked-files=no", "--", "src", cwd=path)
    except RuntimeError:
        head, edited = "", ""
    if head != sha or edited or not (path / "src" / "awaitly_anyio" / "__init__.py").exists():
        raise SystemExit(f"{path} exists but is not a clean worktree of {sha[:12]}: remove it")
    print(f"reusing the worktree of {sha[:12]} at {path}", flush=True)
    return path


def remove_worktree(path: Path) -> None:
    git("worktree", "remove", "--force", str(path))
    print(f"removed the worktree at {path}")


def describe(root: Path) -> str:
    sha = git("rev-parse", "--short=12", "HEAD", cwd=root)
    dirty = git("status", "--porcelain", "--", "src", cwd=root)
    return f"{sha}{' + uncommitted edits in src/' if dirty else ''} ({root})"


# --- the children -------------------------------------------------------------------


def child_env(tree: Tree, *, valgrind: bool = False) -> dict[str, str]:
    """The environment of a child of ``tree``: its ``src/`` first on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tree.src), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    if valgrind:
        # A fixed hash seed: set and dict orders, and so the work done, repeat exactly.
        env["PYTHONHASHSEED"] = "0"
    return env


def child_command(
    tree: Tree, bench: str, backend: str, n: int, reps: int, tag: str, *extra: str
) -> list[str]:
    return [
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
        *extra,
    ]


def check_import(tree: Tree, report: dict[str, Any]) -> None:
    """Stop the run if a child imported another tree's package."""
    imported = Path(report["file"]).resolve()
    if not imported.is_relative_to(tree.src.resolve()):
        raise SystemExit(
            f"the {tree.label} child imported {imported}, not the package under {tree.src}:"
            " the comparison would be meaningless"
        )


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
    """Run one child against ``tree`` to its end; return its report (plus
    ``instructions`` under valgrind).  Raises `ChildError` if it fails."""
    command = child_command(tree, bench, backend, n, reps, tag)
    if valgrind:
        command = [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            *command,
        ]
    try:
        done = subprocess.run(
            command,
            env=child_env(tree, valgrind=valgrind),
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        why = f"timed out after {exc.timeout} s"
        raise ChildError(f"{tree.label} {bench} {backend}: {why}") from None
    if done.returncode != 0 or not done.stdout.strip():
        tail = "\n".join(done.stderr.strip().splitlines()[-6:])
        raise ChildError(f"{tree.label} {bench} {backend}: exit {done.returncode}\n{tail}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    check_import(tree, report)
    if valgrind:
        found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
        if found is None:
            raise ChildError(f"{tree.label} {bench} {backend}: no 'I refs' in valgrind's output")
        report["instructions"] = int(found.group(1).replace(",", ""))
    return report


class Server:
    """A child of one tree in ``--serve`` mode: warmed up, it times one repetition
    each time `go` asks.  Raises `ChildError` when it fails or stays silent for
    ``CHILD_TIMEOUT`` seconds."""

    def __init__(self, tree: Tree, bench: str, backend: str, n: int, tag: str) -> None:
        self.tree, self.what = tree, f"{tree.label} {bench} {backend}"
        # Closed in close(): the file outlives this method, as the child does.
        self.errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.process = subprocess.Popen(
            child_command(tree, bench, backend, n, 0, tag, "--serve"),
            env=child_env(tree),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            text=True,
        )
        try:
            self._read()  # ready: warmed up
        except BaseException:
            self.close()
            raise

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        # One line per request and nothing else on stdout, so the pipe's readiness
        # is the line's (no line waits in the reader's buffer).
        ready, _, _ = select.select([self.process.stdout], [], [], CHILD_TIMEOUT)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.close()
            self.errors.seek(0)
            tail = "\n".join(self.errors.read().strip().splitlines()[-6:])
            why = f"exit {self.process.returncode}" if ready else "no answer"
            raise ChildError(f"{self.what}: {why}\n{tail}")
        report: dict[str, Any] = json.loads(line)
        check_import(self.tree, report)
        return report

    def go(self) -> tuple[float, float]:
        """Wall-clock and CPU seconds per operation of one repetition."""
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        report = self._read()
        return float(report["seconds_per_op"]), float(report["cpu_per_op"])

    def close(self) -> None:
        """Ask the child to stop (it drops what it wrote), and wait for it."""
        try:
            assert self.process.stdin is not None
            self.process.stdin.write("stop\n")
            self.process.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.errors.close()


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


def time_session(
    trees: Sequence[Tree], bench: str, backend: str, pairs: int, tag: str, *, quick: bool
) -> dict[str, list[float]]:
    """One session: a server per tree, then ``pairs`` repetitions of each, back to
    back, the order flipping every pair.  Seconds per operation, per tree (and per
    tree + ``" cpu"``, CPU seconds)."""
    n = SIZES[bench].quick_n if quick else SIZES[bench].n
    figures: dict[str, list[float]] = {}
    for tree in trees:
        figures[tree.label], figures[f"{tree.label} cpu"] = [], []
    servers: dict[str, Server] = {}
    try:
        for tree in trees:
            servers[tree.label] = Server(tree, bench, backend, n, f"{tag}_{tree.label}")
        for pair in range(pairs):
            for tree in trees if pair % 2 == 0 else reversed(trees):
                wall, cpu = servers[tree.label].go()
                figures[tree.label].append(wall)
                figures[f"{tree.label} cpu"].append(cpu)
    finally:
        for server in servers.values():
            server.close()
    return figures


def instruction_session(
    trees: Sequence[Tree], bench: str, backend: str, tag: str
) -> dict[str, list[float]]:
    """Instructions per operation of each tree: ``(I(N2) - I(N1)) / (N2 - N1)``."""
    sizes = SIZES[bench]
    figures: dict[str, list[float]] = {}
    for tree in trees:
        small = run_child(tree, bench, backend, sizes.n1, 1, f"{tag}_{tree.label}a", valgrind=True)
        large = run_child(tree, bench, backend, sizes.n2, 1, f"{tag}_{tree.label}b", valgrind=True)
        per_op = (large["instructions"] - small["instructions"]) / (sizes.n2 - sizes.n1)
        figures[tree.label] = [float(per_op)]
    return figures


def measure(
    trees: Sequence[Tree],
    benches: Sequence[str],
    backends: Sequence[str],
    rounds: int,
    pairs: int,
    tag: str,
    *,
    quick: bool,
    instructions: bool,
) -> list[Result]:
    """Every benchmark on every backend, ``rounds`` sessions each (the old tree
    first in even rounds, the new one in odd ones)."""
    results = {(b, k): Result(b, k) for b in benches for k in backends}
    for round_ in range(rounds):
        order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
        print(f"\nround {round_ + 1}/{rounds}", flush=True)
        for bench in benches:
            for backend in backends:
                result = results[bench, backend]
                if result.error is not None:
                    continue
                if instructions and round_ and bench in DETERMINISTIC:
                    continue  # the same count every time: once is enough
                session_tag = f"{tag}_{backend[0]}{round_}"
                figures: dict[str, list[float]] = {}
                for attempt in range(2):
                    try:
                        if instructions:
                            figures = instruction_session(order, bench, backend, session_tag)
                        else:
                            figures = time_session(
                                order, bench, backend, pairs, session_tag, quick=quick
                            )
                        break
                    except ChildError as exc:
                        # A tree being edited may fail now and then: one retry.
                        print(f"  {bench} {backend}: {exc}", flush=True)
                        if attempt:
                            result.error = str(exc)
                        session_tag += "r"
                if result.error is not None:
                    print(f"  {bench:9s} {backend:8s} FAILED, dropped", flush=True)
                    continue
                result.old.extend(figures["old"])
                result.new.extend(figures["new"])
                result.old_cpu.extend(figures.get("old cpu", []))
                result.new_cpu.extend(figures.get("new cpu", []))
                ratios = [n / o for n, o in zip(figures["new"], figures["old"], strict=True)]
                old = fmt(bench, statistics.median(figures["old"]), instructions)
                new = fmt(bench, statistics.median(figures["new"]), instructions)
                line = f"  {bench:9s} {backend:8s} old {old:>12s}  new {new:>12s}"
                line += f"  new/old {statistics.median(ratios):.3f}"
                if len(ratios) > 1:
                    line += f" ({min(ratios):.2f}-{max(ratios):.2f})"
                if "old cpu" in figures:
                    cpu = zip(figures["new cpu"], figures["old cpu"], strict=True)
                    line += f"  cpu {statistics.median(n / o for n, o in cpu):.3f}"
                print(line, flush=True)
    return list(results.values())


def fmt(bench: str, figure: float, instructions: bool) -> str:
    if instructions:
        return f"{figure / 1000:.1f}k instr"
    if bench in ("plain", "timeout"):
        return f"{figure * 1e9:.0f} ns"
    return f"{figure * 1e6:.1f} us"


def table(results: Sequence[Result], instructions: bool) -> str:
    """The verdicts as a Markdown table (it pastes into the docs)."""
    if instructions:
        lines = [
            "| benchmark | backend | old (instructions per op) | new | new / old | target | |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
    else:
        lines = [
            "| benchmark | backend | old (median per op) | new | new / old"
            " | CPU time new / old | target | |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
    for result in results:
        name = LABELS[result.bench]
        cells = [name, result.backend]
        if result.error is not None or not result.old:
            cells += [""] * (3 if instructions else 4) + [f"<= {TARGET}", "ERROR"]
        else:
            ratio = result.ratio
            cells += [
                fmt(result.bench, statistics.median(result.old), instructions),
                fmt(result.bench, statistics.median(result.new), instructions),
                f"{ratio:.3f}x",
            ]
            if not instructions:
                cpu = result.cpu_ratio
                cells.append("" if cpu is None else f"{cpu:.3f}x")
            cells += [f"<= {TARGET}", verdict(ratio, TARGET, "<=")]
        lines.append("| " + " | ".join(cells) + " |")
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
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer pairs")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under valgrind"
    )
    parser.add_argument("--rounds", type=int, help="sessions per benchmark (3; 2 quick)")
    parser.add_argument("--pairs", type=int, help="timed pairs per session (15; 5 quick)")
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
        rounds = 3
    else:
        rounds = 2 if args.quick else 3
    pairs = args.pairs if args.pairs is not None else 5 if args.quick else 15
    if args.instructions and shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install -y valgrind)")

    # A SIGTERM ends the run through the clean-up below (children stopped, schemas
    # and keys swept), not in the middle of it.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
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
        if new_root not in made:
            made.append(new_root)
    trees = [
        Tree("old", base_root, describe(base_root)),
        Tree("new", new_root, describe(new_root)),
    ]
    tag = uuid.uuid4().hex[:8]
    mode = "instructions (cachegrind, two-size difference)" if args.instructions else "time"
    print(f"old: {trees[0].description}\nnew: {trees[1].description}")
    shape = f"{rounds} rounds" if args.instructions else f"{rounds} sessions x {pairs} pairs"
    print(f"mode: {mode}; {shape}; backends: {', '.join(backends)}; tag {tag}")
    try:
        print("\nchecking both trees run every benchmark", flush=True)
        failed = check_trees(trees, benches, tag)
        results = measure(
            trees,
            [b for b in benches if b not in failed],
            backends,
            rounds,
            pairs,
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
    print(f"\n=== new / old ({time.perf_counter() - started:.0f} s, {mode}, {shape})")
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
                    "pairs": None if args.instructions else pairs,
                    "target": TARGET,
                    "results": [
                        {
                            "bench": r.bench,
                            "backend": r.backend,
                            "old": r.old,
                            "new": r.new,
                            "old_cpu": r.old_cpu,
                            "new_cpu": r.new_cpu,
                            "cpu_ratio": r.cpu_ratio if r.error is None and r.old else None,
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
