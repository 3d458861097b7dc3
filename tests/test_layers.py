"""The package's layers (DESIGN.md, docs/architecture.md) hold: import-linter's contracts
in pyproject.toml are kept, every module is in a layer, and no import circle exists.

Imports made only for annotations (under ``TYPE_CHECKING``) count here as they do in
the contracts: the graph is built with them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import grimp
import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "awaitly_anyio"


def _config() -> Mapping[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        config: Mapping[str, Any] = tomllib.load(file)["tool"]["importlinter"]
    return config


def _contract(id: str) -> Mapping[str, Any]:
    for contract in _config()["contracts"]:
        if contract["id"] == id:
            found: Mapping[str, Any] = contract
            return found
    raise AssertionError(f"no import-linter contract {id!r} in pyproject.toml")


def _layer_modules() -> list[list[str]]:
    """The layers contract's layers, highest first, each a list of module names."""
    layers: list[str] = _contract("layers")["layers"]
    return [[name.strip().strip("()") for name in re.split(r"[:|]", layer)] for layer in layers]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(PACKAGE, exclude_type_checking_imports=False, cache_dir=None)


def _children(graph: grimp.ImportGraph) -> set[str]:
    """The package's direct submodules and subpackages, without the prefix."""
    prefix = PACKAGE + "."
    return {m[len(prefix) :] for m in graph.find_children(PACKAGE)}


def test_the_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    if not lint_imports.exists():  # pragma: no cover - the dev extra installs it
        pytest.fail("lint-imports is missing: install the dev extra (import-linter)")
    done = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_module_is_in_exactly_one_layer(graph: grimp.ImportGraph) -> None:
    listed = [name for layer in _layer_modules() for name in layer]
    twice = sorted({name for name in listed if listed.count(name) > 1})
    assert twice == [], f"in more than one layer: {twice}"
    missing = sorted(_children(graph) - set(listed))
    assert missing == [], (
        f"modules in no layer (add them to [tool.importlinter] layers in pyproject.toml "
        f"and to docs/architecture.md): {missing}"
    )
    gone = sorted(set(listed) - _children(graph))
    assert gone == [], f"layers name modules that do not exist: {gone}"


def _strongly_connected(nodes: Iterable[str], edges: Mapping[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative: the components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[set[str]] = []
    counter = 0
    for start in sorted(nodes):
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(edges.get(start, ())))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(edges.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def _pending_edges() -> set[tuple[str, str]]:
    """The imports the acyclic contract ignores until their integration lands."""
    pending: set[tuple[str, str]] = set()
    for entry in _contract("acyclic").get("ignore_imports", []):
        importer, imported = (part.strip() for part in entry.split("->"))
        pending.add((importer, imported))
    return pending


def test_no_module_is_part_of_an_import_circle(graph: grimp.ImportGraph) -> None:
    # Module by module (finer than import-linter's siblings contract), without the
    # package's __init__, which re-exports everything and is imported by nothing inside.
    modules = {m for m in graph.modules if m != PACKAGE}
    pending = _pending_edges()
    edges = {
        m: {
            n
            for n in graph.find_modules_directly_imported_by(m)
            if n in modules and (m, n) not in pending
        }
        for m in modules
    }
    circles = [sorted(c) for c in _strongly_connected(modules, edges)]
    assert circles == [], f"import circles: {circles}"


def test_the_durable_layer_and_the_workflow_do_not_import_each_other(
    graph: grimp.ImportGraph,
) -> None:
    durable, workflow = f"{PACKAGE}._durable", f"{PACKAGE}._workflow"
    assert workflow not in graph.find_modules_directly_imported_by(durable)
    assert durable not in graph.find_modules_directly_imported_by(workflow)
    assert not graph.chain_exists(importer=workflow, imported=durable)


def test_the_architecture_page_places_every_module_of_the_layers() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`([A-Za-z_][\w.]*)`", page))
    missing = sorted(
        name
        for layer in _layer_modules()
        for name in layer
        if name not in named and f"{PACKAGE}.{name}" not in named
    )
    assert missing == [], f"docs/architecture.md does not place: {missing}"
