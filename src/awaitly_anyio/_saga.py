"""Saga compensation: undo the completed steps of a run that failed, newest first.

INTERFACE STUB (written by the lead so that the step path can be wired while the
engine is built; the saga helper replaces the bodies, keeping these signatures).

A step given ``compensate=fn`` pushes ``(name, key, fn, value)`` onto its run's
`Saga` when it completes (or is replayed from its record).  When the body ends
with ``Err`` (or an unexpected error), `Saga.rollback` runs the compensations
newest first, each once, and returns the ``Err`` the run ends with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._result import Err

if TYPE_CHECKING:
    from ._run import RunState

__all__ = ["ROLLBACK_KEY", "Saga", "check_compensate", "compensation_key"]

ROLLBACK_KEY = "awaitly.rollback"
"""The step key under which a durable run records that its rollback began (its value
is the original error), so that a run recovered mid-rollback finishes the rollback
instead of executing its body again."""


def compensation_key(step_key: str) -> str:
    """The step key under which the compensation of step ``step_key`` is checkpointed."""
    return f"awaitly.compensate:{step_key}"


def check_compensate(name: str, compensate: object) -> Callable[[Any], Any]:
    """``compensate`` if it is callable; ``TypeError`` naming the step otherwise."""
    if not callable(compensate):
        raise TypeError(
            f"step {name!r}: compensate must be a callable taking the step's value, "
            f"not {compensate!r}"
        )
    return compensate


class Saga:
    """One run's compensation stack (made on the first step with ``compensate=``)."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[tuple[str, str | None, Callable[[Any], Any], Any]] = []

    def push(
        self, name: str, key: str | None, compensate: Callable[[Any], Any], value: Any
    ) -> None:
        """Register the compensation of step ``name`` (record ``key``), to be called with
        ``value`` if the run fails later."""
        self.entries.append((name, key, compensate, value))

    async def rollback(self, run: RunState, error: Err[Any]) -> Err[Any]:
        """Run the registered compensations newest first and return the ``Err`` the run
        ends with: ``error`` when every compensation succeeded, or
        ``Err(CompensationError(...))`` carrying ``error`` and each failure."""
        return error
