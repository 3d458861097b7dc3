"""How a step retries: `RetryPolicy` and its `Backoff`, and the checks of their options.

Every check raises ``TypeError`` for a value of the wrong type and ``ValueError``
for one out of range or a misspelt choice; the message names the option, the
value given and what is allowed (never attrs' ``Attribute(...)`` repr).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any, Literal

import attrs

__all__ = ["Backoff", "RetryPolicy", "check_timeout"]

Backoff = Literal["exponential", "linear", "constant"]
"""How the wait between retry attempts grows (see `RetryPolicy`)."""
_BACKOFFS = ("exponential", "linear", "constant")


def check_timeout(value: object, what: str) -> float:
    """``value`` as seconds, if it is a number > 0; ``what`` names it in the error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds > 0, not {value!r}")
    if not value > 0:
        raise ValueError(f"{what} must be a number of seconds > 0, not {value!r}")
    return float(value)


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    allowed = f"{attribute.name} must be a finite number >= 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{allowed}, not {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{allowed}, not {value!r}")


def _optional_timeout(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        check_timeout(value, attribute.name)


def _positive_int(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an integer >= 1, not {value!r}")
    if value < 1:
        raise ValueError(f"{attribute.name} must be an integer >= 1, not {value!r}")


def _backoff(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in _BACKOFFS or not isinstance(value, str):
        choices = ", ".join(repr(choice) for choice in _BACKOFFS)
        error = ValueError if isinstance(value, str) else TypeError
        raise error(f"{attribute.name} must be one of {choices}, not {value!r}")


def _optional_callable(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(
            f"{attribute.name} must be a function taking the failure and returning a bool "
            f"(or None), not {value!r}"
        )


@attrs.frozen
class RetryPolicy:
    """How a step retries: up to ``attempts`` attempts in all, waiting between them.

    The wait after attempt *n* is ``delay`` (``constant``), ``delay * n``
    (``linear``) or ``delay * 2 ** (n - 1)`` (``exponential``), capped at
    ``max_delay``, then spread by ``jitter`` (a fraction: 0.2 means ±20%).
    ``retry_on`` sees the failure (the raised exception, the ``Err``'s error, or
    a `StepTimeoutError`) and returns whether to try again; by default
    every failure is retried.  ``timeout`` bounds each attempt.

    Raises ``TypeError`` for an option of the wrong type and ``ValueError`` for a
    value out of range or an unknown ``backoff``; the message names the option,
    the value given and what is allowed.
    """

    attempts: int = attrs.field(validator=_positive_int)
    backoff: Backoff = attrs.field(default="exponential", validator=_backoff)
    delay: float = attrs.field(default=0.1, validator=_non_negative)
    max_delay: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_non_negative)
    )
    jitter: float = attrs.field(default=0.0, validator=_non_negative)
    retry_on: Callable[[Any], bool] | None = attrs.field(default=None, validator=_optional_callable)
    timeout: float | None = attrs.field(default=None, validator=_optional_timeout)

    def __attrs_post_init__(self) -> None:
        if self.jitter > 1:
            raise ValueError(f"jitter must be a fraction between 0 and 1, not {self.jitter!r}")

    def delay_for(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if self.backoff == "exponential":
            wait = self.delay * 2.0 ** (attempt - 1)
        elif self.backoff == "linear":
            wait = self.delay * attempt
        else:
            wait = self.delay
        if self.max_delay is not None:
            wait = min(wait, self.max_delay)
        if self.jitter:
            wait *= 1.0 + self.jitter * (2.0 * rand() - 1.0)
        return max(wait, 0.0)
