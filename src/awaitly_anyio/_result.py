"""The Result model: ``Ok(value)`` or ``Err(error)``, immutable and pattern-matchable.

Expected failures are values, not exceptions, so the type checker sees every
way a call can fail.  Narrow a ``Result`` with ``match``, ``isinstance`` or by
testing ``.ok``:

    match result:
        case Ok(user):
            print(user.name)
        case Err(error):
            print("failed:", error)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Generic, Literal, NoReturn, TypeAlias, TypeVar

import attrs

from ._errors import AwaitlyError

__all__ = ["Err", "Ok", "Result", "UnwrapError", "err", "ok"]

T = TypeVar("T", covariant=True)
E = TypeVar("E", covariant=True)
U = TypeVar("U")
F = TypeVar("F")
D = TypeVar("D")


class UnwrapError(AwaitlyError):
    """Raised by `Err.unwrap` and `Ok.unwrap_err`: the Result was not the one claimed.

    ``.result`` is the Result that was unwrapped.  When the error is itself an
    exception it is also the ``__cause__``, so its traceback is kept.
    """

    def __init__(self, message: str, result: Result[Any, Any]) -> None:
        super().__init__(message)
        self.result = result


@attrs.frozen(repr=False)
class Ok(Generic[T]):
    """A success carrying ``value``.  ``Ok(v).ok`` is ``True``."""

    value: T

    ok: ClassVar[Literal[True]] = True

    def __repr__(self) -> str:
        return f"Ok({self.value!r})"

    def map(self, fn: Callable[[T], U]) -> Ok[U]:
        """Apply ``fn`` to the value."""
        return Ok(fn(self.value))

    def map_err(self, fn: Callable[[Any], object]) -> Ok[T]:
        """Return self: there is no error to map."""
        return self

    def and_then(self, fn: Callable[[T], Result[U, F]]) -> Result[U, F]:
        """Chain a computation that may itself fail."""
        return fn(self.value)

    def unwrap(self) -> T:
        """Return the value."""
        return self.value

    def unwrap_or(self, default: object) -> T:
        """Return the value; ``default`` is ignored."""
        return self.value

    def unwrap_err(self) -> NoReturn:
        """Raise `UnwrapError`: an ``Ok`` has no error."""
        raise UnwrapError(f"called unwrap_err() on {self!r}", self)


@attrs.frozen(repr=False)
class Err(Generic[E]):
    """A failure carrying ``error``, which may be any value.  ``Err(e).ok`` is ``False``."""

    error: E

    ok: ClassVar[Literal[False]] = False

    def __repr__(self) -> str:
        return f"Err({self.error!r})"

    def map(self, fn: Callable[[Any], object]) -> Err[E]:
        """Return self: there is no value to map."""
        return self

    def map_err(self, fn: Callable[[E], F]) -> Err[F]:
        """Apply ``fn`` to the error."""
        return Err(fn(self.error))

    def and_then(self, fn: Callable[[Any], object]) -> Err[E]:
        """Return self: the chain stops at the first error."""
        return self

    def unwrap(self) -> NoReturn:
        """Raise `UnwrapError` naming the error (chained to it when it is an exception)."""
        cause = self.error if isinstance(self.error, BaseException) else None
        raise UnwrapError(f"called unwrap() on {self!r}", self) from cause

    def unwrap_or(self, default: D) -> D:
        """Return ``default``."""
        return default

    def unwrap_err(self) -> E:
        """Return the error."""
        return self.error


Result: TypeAlias = Ok[T] | Err[E]
"""``Ok[T] | Err[E]``: the return type of every step and workflow."""


def ok(value: U) -> Ok[U]:
    """Build an ``Ok``; the function form reads well in ``return ok(user)``."""
    return Ok(value)


def err(error: F) -> Err[F]:
    """Build an ``Err``; the function form reads well in ``return err("NOT_FOUND")``."""
    return Err(error)


_V = TypeVar("_V")


# Used by the limiter and the breaker, inside the package.
def _ok(  # pyright: ignore[reportUnusedFunction]
    value: _V, _new: Any = object.__new__, _set: Any = object.__setattr__
) -> Ok[_V]:
    """``Ok(value)`` without attrs' ``__init__``: for the hot paths that wrap every
    call's value (the breaker and the limiter); same object, a quarter cheaper."""
    made: Ok[_V] = _new(Ok)
    _set(made, "value", value)
    return made
