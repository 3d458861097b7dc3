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

from collections.abc import Awaitable, Callable, Iterable
from typing import (
    Any,
    ClassVar,
    Generic,
    Literal,
    NoReturn,
    TypeAlias,
    TypeVar,
    TypeVarTuple,
    Unpack,
    cast,
    overload,
)

import attrs

from ._errors import AwaitlyError

__all__ = [
    "Err",
    "Ok",
    "Result",
    "UnwrapError",
    "all_ok",
    "attempt",
    "attempt_async",
    "err",
    "first_ok",
    "ok",
    "partition",
    "settle",
]

T = TypeVar("T", covariant=True)
E = TypeVar("E", covariant=True)
U = TypeVar("U")
F = TypeVar("F")
D = TypeVar("D")
X = TypeVar("X", bound=Exception)
Ts = TypeVarTuple("Ts")


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

    def unwrap_or_else(self, fn: Callable[[Any], object]) -> T:
        """Return the value; ``fn`` is not called."""
        return self.value

    def expect(self, message: str) -> T:
        """Return the value (``message`` is for the ``Err`` case)."""
        return self.value

    def map_or(self, default: object, fn: Callable[[T], U]) -> U:
        """Return ``fn(value)``; ``default`` is ignored."""
        return fn(self.value)

    def or_else(self, fn: Callable[[Any], object]) -> Ok[T]:
        """Return self: there is no error to recover from."""
        return self

    def tap(self, fn: Callable[[T], object]) -> Ok[T]:
        """Call ``fn(value)`` for its side effect (logging, metrics) and return self
        unchanged; what ``fn`` returns is ignored, what it raises propagates."""
        fn(self.value)
        return self

    def tap_err(self, fn: Callable[[Any], object]) -> Ok[T]:
        """Return self: ``fn`` is not called."""
        return self


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

    def unwrap_or_else(self, fn: Callable[[E], D]) -> D:
        """Return ``fn(error)``: a fallback computed from the error."""
        return fn(self.error)

    def expect(self, message: str) -> NoReturn:
        """Raise `UnwrapError` with ``message`` (chained to the error when it is an exception)."""
        cause = self.error if isinstance(self.error, BaseException) else None
        raise UnwrapError(f"{message}: {self!r}", self) from cause

    def map_or(self, default: D, fn: Callable[[Any], object]) -> D:
        """Return ``default``; ``fn`` is not called."""
        return default

    def or_else(self, fn: Callable[[E], Result[U, F]]) -> Result[U, F]:
        """Recover: return ``fn(error)``, a Result (``Ok`` to recover, ``Err`` to fail
        again, perhaps with another error)."""
        return fn(self.error)

    def tap(self, fn: Callable[[Any], object]) -> Err[E]:
        """Return self: ``fn`` is not called."""
        return self

    def tap_err(self, fn: Callable[[E], object]) -> Err[E]:
        """Call ``fn(error)`` for its side effect (logging, metrics) and return self
        unchanged; what ``fn`` returns is ignored, what it raises propagates."""
        fn(self.error)
        return self


Result: TypeAlias = Ok[T] | Err[E]
"""``Ok[T] | Err[E]``: the return type of every step and workflow."""


def ok(value: U) -> Ok[U]:
    """Build an ``Ok``; the function form reads well in ``return ok(user)``."""
    return Ok(value)


def err(error: F) -> Err[F]:
    """Build an ``Err``; the function form reads well in ``return err("NOT_FOUND")``."""
    return Err(error)


# ---- building a Result from a call that may raise ---------------------------------------


def _check_catch(catch: object) -> tuple[type[Exception], ...]:
    """``catch`` as a tuple of ``Exception`` subclasses; raises ``TypeError`` for anything
    else (a ``BaseException`` that is not an ``Exception`` included), ``ValueError``
    for ``()``."""
    kinds: tuple[object, ...] = (
        cast("tuple[object, ...]", catch) if isinstance(catch, tuple) else (catch,)
    )
    if not kinds:
        raise ValueError("catch must name at least one exception type, not ()")
    for kind in kinds:
        if not isinstance(kind, type) or not issubclass(kind, BaseException):
            raise TypeError(f"catch must be an exception type or a tuple of them, not {catch!r}")
        if not issubclass(kind, Exception):
            # Cancellation, KeyboardInterrupt, SystemExit and the workflow's early exit
            # derive from BaseException: turning them into a value would swallow them.
            raise TypeError(
                f"catch={kind.__name__} is not allowed: only Exception subclasses can become"
                " an Err (cancellation and BaseException always propagate)"
            )
    return cast("tuple[type[Exception], ...]", kinds)  # (checked above)


def _check_map_error(map_error: object) -> None:
    if map_error is not None and not callable(map_error):
        raise TypeError(f"map_error must be callable or None, not {map_error!r}")


@overload
def attempt(
    fn: Callable[[Unpack[Ts]], U],
    *args: Unpack[Ts],
    catch: None = None,
    map_error: None = None,
) -> Result[U, Exception]: ...
@overload
def attempt(
    fn: Callable[[Unpack[Ts]], U],
    *args: Unpack[Ts],
    catch: type[X] | tuple[type[X], ...],
    map_error: None = None,
) -> Result[U, X]: ...
@overload
def attempt(
    fn: Callable[[Unpack[Ts]], U],
    *args: Unpack[Ts],
    catch: None = None,
    map_error: Callable[[Exception], F],
) -> Result[U, F]: ...
@overload
def attempt(
    fn: Callable[[Unpack[Ts]], U],
    *args: Unpack[Ts],
    catch: type[X] | tuple[type[X], ...],
    map_error: Callable[[X], F],
) -> Result[U, F]: ...
def attempt(
    fn: Callable[[Unpack[Ts]], Any],
    *args: Unpack[Ts],
    catch: Any = None,
    map_error: Callable[[Any], Any] | None = None,
) -> Result[Any, Any]:
    """Call ``fn(*args)`` and return ``Ok(its value)``, or ``Err(the exception)`` when
    it raises one of ``catch`` (default: any ``Exception``), passed through
    ``map_error`` if given.

    For code outside a workflow (inside one, a step already turns exceptions into
    ``Err(UnexpectedError)``).  Pass keyword arguments with a ``lambda`` or
    ``functools.partial``.  An exception ``catch`` does not name propagates, as do
    ``BaseException``s (cancellation, ``KeyboardInterrupt``): ``catch`` may only name
    ``Exception`` subclasses (``TypeError`` otherwise; ``ValueError`` for an empty tuple),
    and an exception raised by ``map_error`` itself propagates.
    """
    kinds = (Exception,) if catch is None else _check_catch(catch)
    _check_map_error(map_error)
    try:
        value = fn(*args)
    except kinds as exc:
        return Err(exc if map_error is None else map_error(exc))
    return Ok(value)


@overload
async def attempt_async(
    fn: Callable[[Unpack[Ts]], Awaitable[U]],
    *args: Unpack[Ts],
    catch: None = None,
    map_error: None = None,
) -> Result[U, Exception]: ...
@overload
async def attempt_async(
    fn: Callable[[Unpack[Ts]], Awaitable[U]],
    *args: Unpack[Ts],
    catch: type[X] | tuple[type[X], ...],
    map_error: None = None,
) -> Result[U, X]: ...
@overload
async def attempt_async(
    fn: Callable[[Unpack[Ts]], Awaitable[U]],
    *args: Unpack[Ts],
    catch: None = None,
    map_error: Callable[[Exception], F],
) -> Result[U, F]: ...
@overload
async def attempt_async(
    fn: Callable[[Unpack[Ts]], Awaitable[U]],
    *args: Unpack[Ts],
    catch: type[X] | tuple[type[X], ...],
    map_error: Callable[[X], F],
) -> Result[U, F]: ...
async def attempt_async(
    fn: Callable[[Unpack[Ts]], Awaitable[Any]],
    *args: Unpack[Ts],
    catch: Any = None,
    map_error: Callable[[Any], Any] | None = None,
) -> Result[Any, Any]:
    """Await ``fn(*args)`` and return ``Ok(its value)``, or ``Err(the exception)`` when
    it raises one of ``catch`` (default: any ``Exception``), passed through
    ``map_error`` if given: `attempt` for coroutine functions.

    Cancellation is never caught: ``trio.Cancelled`` and ``asyncio.CancelledError``
    (``BaseException``s, which ``catch`` may not name) propagate, so a cancelled
    call is cancelled, not an ``Err``.  Raises like `attempt` for a bad ``catch``.
    """
    kinds = (Exception,) if catch is None else _check_catch(catch)
    _check_map_error(map_error)
    try:
        value = await fn(*args)
    except kinds as exc:
        return Err(exc if map_error is None else map_error(exc))
    return Ok(value)


# ---- aggregating independent Results ----------------------------------------------------


def all_ok(results: Iterable[Result[U, F]]) -> Result[list[U], F]:
    """``Ok([every value])`` in order, or the first ``Err`` met (the rest are not looked at).

    For Results already in hand (to run calls concurrently, use ``ctx.step.all``).
    An empty input gives ``Ok([])``.
    """
    values: list[U] = []
    for result in results:
        if isinstance(result, Err):
            return result
        values.append(result.value)
    return Ok(values)


def settle(results: Iterable[Result[U, F]]) -> Result[list[U], list[F]]:
    """``Ok([every value])`` when all succeeded, else ``Err([every error])`` in order:
    nothing is lost to the first failure (a form to report all validation errors)."""
    values: list[U] = []
    errors: list[F] = []
    for result in results:
        if isinstance(result, Err):
            errors.append(result.error)
        else:
            values.append(result.value)
    return Err(errors) if errors else Ok(values)


def first_ok(results: Iterable[Result[U, F]]) -> Result[U, list[F]]:
    """The first ``Ok`` (the rest are not looked at), else ``Err([every error])`` in
    order; an empty input gives ``Err([])``.  A fallback chain: ``first_ok(r for r in
    tries)`` with a generator stops calling at the first success."""
    errors: list[F] = []
    for result in results:
        if isinstance(result, Ok):
            return result
        errors.append(result.error)
    return Err(errors)


def partition(results: Iterable[Result[U, F]]) -> tuple[list[U], list[F]]:
    """``(values, errors)``: the successes' values and the failures' errors, each in order."""
    values: list[U] = []
    errors: list[F] = []
    for result in results:
        if isinstance(result, Err):
            errors.append(result.error)
        else:
            values.append(result.value)
    return values, errors


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
