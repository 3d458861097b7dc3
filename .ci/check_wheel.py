"""Check an installed awaitly-anyio (from the wheel, in a clean venv) against the work tree.

Usage: ``python check_wheel.py WORK_TREE EXTRA`` with the venv's python, from a directory
outside the work tree (so ``src/`` cannot be imported by accident).

- the package is imported from the venv, not from the work tree;
- every file of ``src/awaitly_anyio`` (``py.typed`` and any data file included) is installed;
- every public module (no ``_`` in its dotted name) imports; a module whose optional
  dependency is not installed may instead raise an ``ImportError`` naming the extra to
  install (``awaitly-anyio[...]``), except in the ``all`` venv where everything must import;
- every name in each module's ``__all__`` exists;
- the demo runs (on asyncio, and on trio when trio is installed) and ``runs list`` reads
  the store it wrote.

Exits 1 with one line per problem.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    tree, extra = Path(sys.argv[1]).resolve(), sys.argv[2]
    problems: list[str] = []
    source = tree / "src" / "awaitly_anyio"

    import awaitly_anyio

    installed = Path(awaitly_anyio.__file__).resolve().parent
    if installed.is_relative_to(tree):
        return _fail([f"awaitly_anyio was imported from the work tree ({installed})"])
    wanted = {
        path.relative_to(source).as_posix()
        for path in source.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    present = {
        path.relative_to(installed).as_posix()
        for path in installed.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    problems += [f"not in the wheel: src/awaitly_anyio/{name}" for name in sorted(wanted - present)]

    modules = sorted(
        "awaitly_anyio." + name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for name in wanted
        if name.endswith(".py")
    )
    public = [
        name
        for name in ["awaitly_anyio", *modules]
        if not any(part.startswith("_") for part in name.split("."))
    ]
    need_extra: list[str] = []
    for name in public:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if extra == "all" or "awaitly-anyio[" not in str(exc):
                problems.append(f"import {name}: {type(exc).__name__}: {exc}")
            need_extra.append(name)
            continue
        except Exception as exc:
            problems.append(f"import {name}: {type(exc).__name__}: {exc}")
            continue
        problems += [
            f"{name}.__all__ names {attr!r}, which does not exist"
            for attr in getattr(module, "__all__", ())
            if not hasattr(module, attr)
        ]

    backends = ["asyncio"] + (["trio"] if importlib.util.find_spec("trio") else [])
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            store = f"sqlite:///{tmp}/demo-{backend}.db"
            for command in (
                ["demo", "--backend", backend, "--store", store],
                ["runs", "--store", store, "list"],
            ):
                done = subprocess.run(
                    [sys.executable, "-m", "awaitly_anyio", *command],
                    capture_output=True,
                    text=True,
                    cwd=tmp,
                    check=False,
                )
                if done.returncode != 0:
                    problems.append(
                        f"`python -m awaitly_anyio {' '.join(command)}` exited "
                        f"{done.returncode}: {(done.stderr or done.stdout).strip()[-2000:]}"
                    )
    if problems:
        return _fail(problems)
    needing = f" ({len(need_extra)} need another extra)" if need_extra else ""
    print(
        f"[{extra}] wheel ok: {len(public) - len(need_extra)} public modules import{needing}, "
        f"demo on {' and '.join(backends)}"
    )
    return 0


def _fail(problems: list[str]) -> int:
    extra = sys.argv[2]
    for problem in problems:
        print(f"[{extra}] {problem}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
