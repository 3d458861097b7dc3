"""The former home of the cancel scopes a durable run enters (now
`awaitly_anyio._loops`, one class per event loop), kept until every caller imports
from there: ``cancel_scope()`` is ``_loops.current().cancel_scope()``,
``shielded(s)`` is ``_loops.current().shielded(s)``, and `cancel_due` /
`deliver_cancellation` are `awaitly_anyio._loops`'s own functions.
"""

from __future__ import annotations

from ._loops import Scope, cancel_due, current, deliver_cancellation

__all__ = [
    "Scope",
    "cancel_due",
    "cancel_scope",
    "deliver_cancellation",
    "shielded",
]


def cancel_scope() -> Scope:
    """A new cancel scope, the cheapest the caller's event loop has
    (`awaitly_anyio._loops.Loop.cancel_scope`)."""
    return current().cancel_scope()


def shielded(seconds: float) -> Scope:
    """A scope that shields its body from outside cancellation for ``seconds``, then
    cancels it (`awaitly_anyio._loops.Loop.shielded`)."""
    return current().shielded(seconds)
