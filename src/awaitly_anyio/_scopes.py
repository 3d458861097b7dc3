"""The cancel scopes a durable run enters on every step and at its end, the cheapest
each event loop has.

anyio's ``CancelScope`` works everywhere, but on trio it wraps trio's own and costs
about three times as much; a one-step durable run enters three of them (the body's
scope, which lease loss cancels, and a shielded one around each final write).
On trio these are trio's scopes; on asyncio, anyio's (asyncio has none of its own
that shields), made from anyio's asyncio class directly, which skips the look-up of
the running backend that ``anyio.CancelScope(...)`` does each time (a quarter of a
shielded scope's cost there).  Both kinds cancel and shield the same way for the
code inside.
"""

from __future__ import annotations

import asyncio
import sys
from types import TracebackType
from typing import Any, Protocol, Self

import anyio

from ._bridge import current_async_library

__all__ = ["Scope", "cancel_scope", "shielded"]


class Scope(Protocol):
    """What both kinds of cancel scope offer here."""

    @property
    def cancelled_caught(self) -> bool: ...

    def cancel(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...


def _trio() -> Any:
    """The trio module if the caller runs on trio, else ``None`` (asyncio)."""
    return sys.modules["trio"] if current_async_library() == "trio" else None


_asyncio_scope: Any = None


def _asyncio_scope_class() -> Any:
    """The class ``anyio.CancelScope(...)`` gives on asyncio (learnt from the first one)."""
    global _asyncio_scope
    if _asyncio_scope is None:
        _asyncio_scope = type(anyio.CancelScope())
    return _asyncio_scope


def cancel_scope() -> Scope:
    """A new cancel scope for the current event loop."""
    trio = _trio()
    if trio is not None:
        return trio.CancelScope()  # type: ignore[no-any-return]
    return _asyncio_scope_class()()  # type: ignore[no-any-return]


def shielded(seconds: float) -> Scope:
    """A scope that keeps outside cancellation from its body for at most ``seconds``,
    then cancels it: for short, bounded clean-up that must not be cut off (check
    ``cancelled_caught`` afterwards to learn whether the bound was hit)."""
    trio = _trio()
    if trio is not None:
        return trio.CancelScope(shield=True, deadline=trio.current_time() + seconds)  # type: ignore[no-any-return]
    deadline = asyncio.get_running_loop().time() + seconds  # anyio's clock there
    return _asyncio_scope_class()(shield=True, deadline=deadline)  # type: ignore[no-any-return]
