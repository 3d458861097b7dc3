"""The layout says what is public: a module's name does, and so does every object's
``__module__``.

- An exported object (in the ``__all__`` of the package or of a public module, one
  without an underscore in its dotted name) reports a public module as its
  ``__module__``, so reprs, tracebacks and pickles name a path users can import.
- Every public module is documented in the reference page.
- Every class a public function or method returns (walking ``X | None``,
  ``list[X]``, ``Result[X, E]``...) that this package defines is itself exported,
  so users can name what they are handed.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import awaitly_anyio

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = (ROOT / "docs" / "reference.md").read_text()


def _public_module_names() -> list[str]:
    names = ["awaitly_anyio"]
    for info in pkgutil.walk_packages(awaitly_anyio.__path__, "awaitly_anyio."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


PUBLIC_MODULES = _public_module_names()


def _exported() -> Iterator[tuple[str, str, object]]:
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            yield module_name, name, getattr(module, name)


def _is_public_module(name: str) -> bool:
    return not any(part.startswith("_") for part in name.split("."))


def _ours(obj: object) -> bool:
    return inspect.isclass(obj) or inspect.isfunction(obj)


def _exported_objects() -> set[int]:
    return {id(obj) for _, _, obj in _exported()}


@pytest.mark.parametrize(
    ("module_name", "name"),
    [(module_name, name) for module_name, name, obj in _exported() if _ours(obj)],
)
def test_exported_objects_report_a_public_module(module_name: str, name: str) -> None:
    obj = getattr(importlib.import_module(module_name), name)
    where = obj.__module__
    if not where.startswith("awaitly_anyio"):
        return  # re-exported from another package (none today), reported as it is
    assert _is_public_module(where), f"{module_name}.{name} reports {where}"
    assert getattr(importlib.import_module(where), obj.__name__, None) is obj, (
        f"{module_name}.{name} reports {where}, which does not hold it"
    )


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_module_is_in_the_reference(module_name: str) -> None:
    parent = module_name.rpartition(".")[0]
    assert f"::: {module_name}\n" in REFERENCE or (
        # A package's documented submodules document it (awaitly_anyio.stores).
        module_name != "awaitly_anyio"
        and any(other.startswith(module_name + ".") for other in PUBLIC_MODULES)
        and f"`{module_name}`" in REFERENCE
    ), f"{module_name} is public (no underscore) but the reference does not document it"
    assert parent == "" or parent.startswith("awaitly_anyio") or parent == "awaitly_anyio"


def test_library_errors_pickle_through_their_public_path() -> None:
    # The __module__ rewrite must keep pickling working (a pickle names the class by
    # its module and qualified name): errors cross process boundaries in user code.
    error = awaitly_anyio.StepTimeoutError("charge", 1.5)
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is awaitly_anyio.StepTimeoutError
    assert pickle.dumps(error).count(b"awaitly_anyio._") == 0


def _namespace() -> dict[str, Any]:
    """Every name every loaded module of the package holds, to resolve annotations
    written under ``TYPE_CHECKING``."""
    found: dict[str, Any] = {}
    for name, module in list(sys.modules.items()):
        if name.startswith("awaitly_anyio") and module is not None:
            found.update(vars(module))
    found.update(vars(typing))
    return found


def _classes_in(hint: object) -> Iterator[type]:
    if inspect.isclass(hint) and not typing.get_args(hint):
        yield hint
    origin = typing.get_origin(hint)
    if origin is not None and inspect.isclass(origin):
        yield origin
    for arg in typing.get_args(hint):
        yield from _classes_in(arg)
    if isinstance(hint, types.UnionType):
        for arg in hint.__args__:
            yield from _classes_in(arg)


def _callables() -> Iterator[tuple[str, Callable[..., Any]]]:
    for module_name, name, obj in _exported():
        if inspect.isfunction(obj):
            yield f"{module_name}.{name}", obj
        elif inspect.isclass(obj) and obj.__module__.startswith("awaitly_anyio"):
            for attr, member in vars(obj).items():
                if attr.startswith("_") and attr not in ("__call__", "__aenter__"):
                    continue
                if isinstance(member, property) and member.fget is not None:
                    yield f"{module_name}.{name}.{attr}", member.fget
                elif isinstance(member, (staticmethod, classmethod)):
                    if inspect.isfunction(member.__func__):  # not a builtin (time.time)
                        yield f"{module_name}.{name}.{attr}", member.__func__
                elif inspect.isfunction(member):
                    yield f"{module_name}.{name}.{attr}", member


def test_every_class_a_public_call_returns_is_exported() -> None:
    namespace = _namespace()
    exported = _exported_objects()
    missing: list[str] = []
    for where, fn in _callables():
        try:
            hints = typing.get_type_hints(fn, globalns={**namespace, **fn.__globals__})
        except Exception as exc:  # an annotation this test cannot resolve is a finding too
            missing.append(f"{where}: unresolvable annotations ({exc})")
            continue
        for cls in _classes_in(hints.get("return")):
            module = getattr(cls, "__module__", "")
            if module.startswith("awaitly_anyio") and id(cls) not in exported:
                missing.append(f"{where} returns {module}.{cls.__qualname__}, not exported")
    assert not missing, "\n".join(missing)
