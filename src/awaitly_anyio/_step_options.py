"""The keyword options of ``ctx.step`` and its variants, declared once.

Each variant's overloads take ``**options: Unpack[...]`` of one of these, so
a type checker knows every option's name and type from one place, and a
misspelt option is an error.  (At runtime the implementations spell the
options out as keyword parameters: a ``**options`` dict per step would be a
fifth of a plain step's cost.  mypy and pyright check each implementation
against its overloads, so the two cannot drift apart.)
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any, Protocol, TypeAlias

from typing_extensions import TypedDict

from ._retry import Backoff, RetryPolicy

__all__ = [
    "Compensate",
    "CompensationLike",
    "RetryOptions",
    "RetryPolicyOptions",
    "StepOptions",
    "TryOptions",
]


class CompensationLike(Protocol):
    """What `awaitly_anyio.Compensation` is, as the step options see it (it lives in
    the saga module, above this one): a compensation with options of its own."""

    @property
    def fn(self) -> Callable[[Any], Any]: ...
    @property
    def retry(self) -> RetryPolicy | None: ...


Compensate: TypeAlias = "Callable[[Any], Any] | CompensationLike"
"""What ``compensate=`` takes: a callable given the step's value, or a `Compensation`."""


class TryOptions(TypedDict, total=False):
    """The options every step that calls a function takes (``ctx.step.try_`` takes
    exactly these, beside ``error``)."""

    key: str | None
    """Record the step under this key: a keyed step that already completed (earlier
    in the run, or in the resume state) is not executed again, and a durable run
    checkpoints it."""

    timeout: float | None
    """Seconds the step (each attempt, with a retry policy) may take; past it the work
    is cancelled and the workflow ends with ``Err(StepTimeoutError)``."""

    type: builtins.type[Any] | None
    """The class of the step's value, for a durable run's snapshot (see `register_type`)."""

    compensate: Compensate | None
    """What undoes the step if the workflow fails later: called with the step's value,
    newest first, when the run ends with ``Err`` (see docs/sagas.md)."""


class StepOptions(TryOptions, total=False):
    """The options of ``ctx.step(name, fn, **options)``."""

    checkpoint: bool
    """``False``: in a durable run, the step is not checkpointed (no record, no
    automatic key): it runs again when the run is resumed.  For a cheap, pure step."""

    retry: RetryPolicy | None
    """How the step retries (see `RetryPolicy`)."""


class RetryPolicyOptions(TypedDict, total=False):
    """The fields of `RetryPolicy` beside ``attempts`` (see it for what each means)."""

    backoff: Backoff
    delay: float
    max_delay: float | None
    jitter: float
    retry_on: Callable[[Any], bool] | None
    timeout: float | None


class RetryOptions(RetryPolicyOptions, total=False):
    """The options of ``ctx.step.retry(name, fn, attempts=..., **options)``: the
    `RetryPolicy` fields, and the step's ``key`` and ``type``."""

    key: str | None
    type: builtins.type[Any] | None
    compensate: Compensate | None
