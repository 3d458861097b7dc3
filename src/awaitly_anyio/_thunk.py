"""Calling a thunk the way steps do: a value, a Result, or an awaitable of either."""

from __future__ import annotations

from collections.abc import Callable
from inspect import isawaitable
from typing import Any

from typing_extensions import TypeIs

from ._result import Err, Ok, Result

__all__ = ["as_result", "call_thunk", "is_result"]


def is_result(out: object) -> TypeIs[Result[object, object]]:
    """Whether ``out`` is an ``Ok`` or an ``Err`` (their payloads typed as ``object``,
    which they are: both classes are covariant)."""
    return isinstance(out, (Ok, Err))


def as_result(out: object) -> Result[object, object]:
    """``out`` as a Result: an ``Ok`` or ``Err`` as it is, any other value in ``Ok``."""
    return out if is_result(out) else Ok(out)


async def call_thunk(fn: Callable[[], Any]) -> Result[Any, Any]:
    """``fn()`` awaited if needed, as a Result: ``Ok``/``Err`` as returned, a plain value
    in ``Ok``.  Exceptions propagate (inside a step they become ``UnexpectedError``)."""
    out = fn()
    if isawaitable(out):
        out = await out
    return as_result(out)
