"""The variants of ``ctx.step`` that run several children, and ``with_timeout``.

`Step` (what ``ctx.step`` is) extends `awaitly_anyio._step.StepCore`, the single
step, with the group variants: each group is itself one step (so it is keyed,
timed out and evented as one), and its children run in one anyio task group.
Cancellation from outside propagates into every child; a group's own first
``Err`` cancels its siblings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar, overload

import anyio

from ._result import Err, Ok, Result
from ._retry import check_timeout
from ._step import StepCore, _check_fn

__all__ = ["Step"]

T = TypeVar("T")
K = TypeVar("K")
I = TypeVar("I")  # noqa: E741


class Step(StepCore):
    """``ctx.step``: run a step, or one of its variants (``retry``, ``all``, ``race``, ...).

    Every variant accepts ``key=``: a keyed step whose key already completed
    (earlier in this run, or in the resume state) is not executed again.
    The options each takes are declared once (``StepOptions``, ``TryOptions``,
    ``RetryOptions`` in ``awaitly_anyio._step_options``).
    """

    __slots__ = ()

    @overload
    async def with_timeout(
        self,
        name: str,
        fn: Callable[[], Awaitable[Result[T, Any]]],
        *,
        seconds: float,
        key: str | None = None,
    ) -> T: ...
    @overload
    async def with_timeout(
        self, name: str, fn: Callable[[], Result[T, Any]], *, seconds: float, key: str | None = None
    ) -> T: ...
    @overload
    async def with_timeout(
        self, name: str, fn: Callable[[], Awaitable[T]], *, seconds: float, key: str | None = None
    ) -> T: ...
    @overload
    async def with_timeout(
        self, name: str, fn: Callable[[], T], *, seconds: float, key: str | None = None
    ) -> T: ...
    async def with_timeout(
        self, name: str, fn: Callable[[], Any], *, seconds: float, key: str | None = None
    ) -> Any:
        """Run ``fn`` with a deadline of ``seconds``; past it the work is cancelled and
        the workflow ends with ``Err(StepTimeoutError(name, seconds))``.  ``seconds``
        that is not a number > 0 raises ``TypeError`` / ``ValueError`` naming it."""
        seconds = check_timeout(seconds, f"step {name!r}: seconds")
        return await self(name, fn, key=key, timeout=seconds)

    @overload
    async def all(
        self,
        name: str,
        fns: Mapping[K, Callable[[], Any]],
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> dict[K, Any]: ...
    @overload
    async def all(
        self,
        name: str,
        fns: Sequence[Callable[[], Any]],
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> list[Any]: ...
    async def all(
        self,
        name: str,
        fns: Mapping[Any, Callable[[], Any]] | Sequence[Callable[[], Any]],
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> dict[Any, Any] | list[Any]:
        """Run every child concurrently in one task group and return all their values.

        Given a mapping ``{label: fn}`` it returns ``{label: value}``; given a
        sequence, a list in the same order.  The first child to end in
        ``Err`` (or raise) cancels its siblings and ends the workflow.
        """
        labels, thunks = _labelled(name, fns)

        async def gather() -> Result[Any, Any]:
            values: list[Any] = [None] * len(thunks)
            failure: list[Err[Any]] = []
            async with anyio.create_task_group() as tg:

                async def child(index: int, fn: Callable[[], Any]) -> None:
                    res = await self._settle(fn)
                    if isinstance(res, Ok):
                        values[index] = res.value
                    elif not failure:
                        failure.append(res)
                        tg.cancel_scope.cancel()

                for index, fn in enumerate(thunks):
                    tg.start_soon(child, index, fn)
            if failure:
                return failure[0]
            return Ok(values if labels is None else dict(zip(labels, values, strict=True)))

        result: dict[Any, Any] | list[Any] = await self(name, gather, key=key, timeout=timeout)
        return result

    @overload
    async def race(
        self,
        name: str,
        fns: Sequence[Callable[[], Awaitable[Result[T, Any]]]],
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> T: ...
    @overload
    async def race(
        self,
        name: str,
        fns: Sequence[Callable[[], Result[T, Any]]],
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> T: ...
    @overload
    async def race(
        self,
        name: str,
        fns: Sequence[Callable[[], Awaitable[T]]],
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> T: ...
    @overload
    async def race(
        self,
        name: str,
        fns: Sequence[Callable[[], T]],
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> T: ...
    async def race(
        self,
        name: str,
        fns: Sequence[Callable[[], Any]],
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Run the children concurrently; the first to finish decides and the rest are cancelled.

        If the first to finish ends in ``Err`` (or raises), the workflow ends with it.
        """
        _, thunks = _labelled(name, fns)
        if not thunks:
            raise ValueError(f"step {name!r}: race needs at least one child")

        async def first() -> Result[Any, Any]:
            winner: list[Result[Any, Any]] = []
            async with anyio.create_task_group() as tg:

                async def child(fn: Callable[[], Any]) -> None:
                    res = await self._settle(fn)
                    if not winner:
                        winner.append(res)
                        tg.cancel_scope.cancel()

                for fn in thunks:
                    tg.start_soon(child, fn)
            return winner[0]

        return await self(name, first, key=key, timeout=timeout)

    async def for_each(
        self,
        name: str,
        items: Iterable[I],
        fn: Callable[[I], Any],
        *,
        concurrency: int = 1,
        key: str | None = None,
        timeout: float | None = None,
    ) -> list[Any]:
        """Call ``fn(item)`` for every item, at most ``concurrency`` at a time, and return
        the values in the order of ``items``.  The first ``Err`` stops the rest."""
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(
                f"step {name!r}: concurrency must be an integer >= 1, not {concurrency!r}"
            )
        _check_fn(name, fn)
        pending = list(items)

        async def each() -> Result[Any, Any]:
            values: list[Any] = [None] * len(pending)
            if concurrency == 1:
                for index, item in enumerate(pending):
                    res = await self._settle(partial(fn, item))
                    if isinstance(res, Err):
                        return res
                    values[index] = res.value
                return Ok(values)
            failure: list[Err[Any]] = []
            work = iter(enumerate(pending))
            async with anyio.create_task_group() as tg:

                async def worker() -> None:
                    for index, item in work:
                        res = await self._settle(partial(fn, item))
                        if isinstance(res, Ok):
                            values[index] = res.value
                        else:
                            if not failure:
                                failure.append(res)
                                tg.cancel_scope.cancel()
                            return

                for _ in range(min(concurrency, len(pending))):
                    tg.start_soon(worker)
            return failure[0] if failure else Ok(values)

        result: list[Any] = await self(name, each, key=key, timeout=timeout)
        return result


def _labelled(
    name: str, fns: Mapping[Any, Callable[[], Any]] | Sequence[Callable[[], Any]]
) -> tuple[list[Any] | None, list[Callable[[], Any]]]:
    if isinstance(fns, Mapping):
        labels: list[Any] | None = list(fns.keys())
        thunks = list(fns.values())
    elif isinstance(fns, (list, tuple)):
        labels = None
        thunks = list(fns)
    else:
        raise TypeError(f"step {name!r}: expected a mapping or a list of callables, not {fns!r}")
    for thunk in thunks:
        _check_fn(name, thunk)
    return labels, thunks
