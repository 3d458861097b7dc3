"""The API reference documents every public name, and renders cleanly.

The site is built once (``mkdocs build --strict``, as CI does) and the anchors
mkdocstrings gives each documented object (``id="awaitly_anyio.Step.retry"``)
are read from the reference page.  Every name in ``awaitly_anyio.__all__`` and
in the ``__all__`` of every public module (no ``_`` in its dotted name) must
have one, directly or through the same object documented under another path
(``awaitly_anyio.Ok`` documents ``awaitly_anyio._result.Ok``), and so must what
a workflow body uses: ``ctx.step`` and each of its variants, ``ctx.deps``,
``ctx.input``, ``ctx.steps``.  Docstrings use one style that mkdocstrings
renders: no Sphinx roles (``:class:`Deps```), in src/ or in the page.

Needs the ``docs`` extra (mkdocs, mkdocstrings); skipped without it, failed
without it under ``CI=true``.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import awaitly_anyio
from awaitly_anyio._context import _VARIANTS

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "awaitly_anyio"

# A Sphinx/reST cross-reference role: :class:`Deps`, :meth:`~x.y`, :py:func:`f`.
SPHINX_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|exc|data|obj|const|ref|term):`")
# reST's "as a decorator::" before a literal block: Markdown shows the "::".
LITERAL_MARKER = re.compile(r"[\w`)]::$")


def _public_modules() -> list[ModuleType]:
    modules = [awaitly_anyio]
    for info in pkgutil.walk_packages(awaitly_anyio.__path__, "awaitly_anyio."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        modules.append(importlib.import_module(info.name))
    return modules


def _resolve(path: str) -> object:
    """The object a dotted anchor names (a module, then attributes), or a sentinel."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, _MISSING)
            if obj is _MISSING:
                return _MISSING
        return obj
    return _MISSING


_MISSING = object()


@pytest.fixture(scope="module")
def anchors(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The ids of the objects the built reference page documents."""
    try:
        importlib.import_module("mkdocstrings_handlers.python")
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("the docs extra (mkdocs, mkdocstrings-python) is not installed")
    site = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}{done.stderr}"
    html = (site / "reference" / "index.html").read_text(encoding="utf-8")
    roles = sorted(set(SPHINX_ROLE.findall(html)))
    assert not roles, f"the reference renders Sphinx roles literally: {roles}"
    return set(re.findall(r'id="(awaitly_anyio(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"', html))


def _documented(name: str, obj: object, anchors: set[str]) -> bool:
    """``name`` (dotted) has an anchor, or ``obj`` is documented under another path."""
    if name in anchors:
        return True
    last = name.rsplit(".", 1)[-1]
    if isinstance(obj, (int, float, str, bytes, bool)) or obj is None:
        return False  # a constant is only found by its own name (equal values are not it)
    return any(anchor.rsplit(".", 1)[-1] == last and _resolve(anchor) is obj for anchor in anchors)


def _all_names() -> Iterator[tuple[str, object]]:
    for module in _public_modules():
        for attr in getattr(module, "__all__", ()):
            yield f"{module.__name__}.{attr}", getattr(module, attr)


def test_every_public_name_is_in_the_reference(anchors: set[str]) -> None:
    missing = sorted(name for name, obj in _all_names() if not _documented(name, obj, anchors))
    assert not missing, (
        f"{len(missing)} public names are not in docs/reference.md "
        f"(add them, or a `:::` directive that renders them): {missing}"
    )


def test_what_a_workflow_body_uses_is_in_the_reference(anchors: set[str]) -> None:
    wanted = [
        *(f"awaitly_anyio.WorkflowContext.{name}" for name in ("step", "deps", "input", "steps")),
        "awaitly_anyio.WorkflowContext.workflow_id",
        "awaitly_anyio.WorkflowContext.workflow_name",
        "awaitly_anyio.Step.__call__",
        *(f"awaitly_anyio.Step.{variant}" for variant in _VARIANTS),
    ]
    missing = [name for name in wanted if name not in anchors]
    assert not missing, f"not in docs/reference.md: {missing}"


def test_no_sphinx_markup_is_left_in_docstrings() -> None:
    """mkdocstrings renders Markdown: a ``:class:`X``` role, or the ``::`` that opens a
    reST literal block, shows up literally."""
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if SPHINX_ROLE.search(line) or LITERAL_MARKER.search(line.rstrip())
    ]
    assert not found, (
        "reST markup in docstrings (write `Name` or [Name][awaitly_anyio.Name] for a role, "
        "and end the line before a code block with one colon):\n" + "\n".join(found)
    )
