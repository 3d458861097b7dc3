"""Calling a thunk the way steps do: a value, a Result, or an awaitable of either."""

from __future__ import annotations

from collections.abc import Callable
from inspect import isawaitable
from typing import Any, cast

from ._result import Err, Ok, Result

__all__ = ["call_thunk"]


async def call_thunk(fn: Callable[[], Any]) -> Result[Any, Any]:
    """``fn()`` awaited if needed, as a Result: ``Ok``/``Err`` as returned, a plain value
    in ``Ok``.  Exceptions propagate (inside a step they become ``UnexpectedError``)."""
    out = fn()
    if isawaitable(out):
        out = await out
    if isinstance(out, (Ok, Err)):
        return cast("Result[object, object]", out)  # isinstance: type arguments unknown
    return Ok(out)
