"""The variants of ``ctx.step`` that run several children, and the ones that decide what a
failure or a timeout becomes (``with_timeout``, ``with_fallback``).

`Step` (what ``ctx.step`` is) extends `awaitly_anyio._step.StepCore`, the single
step, with the group variants: each group is itself one step (so it is keyed,
timed out and evented as one), and its children run in one anyio task group.
Cancellation from outside propagates into every child; a group's own first
``Err`` (``all``, ``race``, ``for_each``) or first success (``any``) cancels its
siblings.  A batched ``for_each`` is one step per batch inside the group's step, so
a durable run resumes from its first unfinished batch.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from inspect import isawaitable
from typing import Any, Final, TypeVar, cast, overload

import anyio

from ._errors import AllFailedError, StepTimeoutError, UnexpectedError
from ._loops import cancel_due, deliver_cancellation
from ._result import Err, Ok, Result
from ._retry import check_timeout
from ._run import EarlyExit
from ._step import StepCore, _check_fn, timed_out
from ._step_cache import CacheTtl, StepCache, cached_step
from ._thunk import as_result
from .events import BatchProgress, StepFallback

__all__ = ["Step"]

T = TypeVar("T")
K = TypeVar("K")
E = TypeVar("E")
I = TypeVar("I")  # noqa: E741

# ``with_timeout``'s ``on_timeout`` when it is not given: the timeout ends the workflow
# with ``StepTimeoutError`` (``None`` is a meaningful value of the option).
_TIMEOUT_ERROR: Final[Any] = object()


def timeout_outcome(on_timeout: object) -> Result[Any, Any]:
    """What ``with_timeout``'s deadline gives for ``on_timeout`` (not ``Ok``, not left
    out): ``None`` gives ``Ok(None)``, an ``Err`` itself, any other value ``Err(value)``."""
    if on_timeout is None:
        return Ok(None)
    if isinstance(on_timeout, Err):
        given: Err[Any] = on_timeout  # pyright: ignore[reportUnknownVariableType]
        return given
    return Err(on_timeout)


_UNSETTLED: Final[Result[Any, Any]] = Ok(None)

Fallback = (
    Callable[[], Awaitable[Result[T, Any]]]
    | Callable[[], Result[T, Any]]
    | Callable[[], Awaitable[T]]
    | Callable[[], T]
)
"""``with_fallback``'s ``fallback``: a zero-argument callable giving the same type as ``fn``."""

OnError = type[object] | tuple[type[object], ...] | Callable[[Any], bool]
"""What ``with_fallback(..., on=...)`` falls back on: an error class, a tuple of them,
or a predicate given the failure."""


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
        on_timeout: None,
    ) -> T | None: ...
    @overload
    async def with_timeout(
        self,
        name: str,
        fn: Callable[[], Result[T, Any]],
        *,
        seconds: float,
        key: str | None = None,
        on_timeout: None,
    ) -> T | None: ...
    @overload
    async def with_timeout(
        self,
        name: str,
        fn: Callable[[], Awaitable[T]],
        *,
        seconds: float,
        key: str | None = None,
        on_timeout: None,
    ) -> T | None: ...
    @overload
    async def with_timeout(
        self,
        name: str,
        fn: Callable[[], T],
        *,
        seconds: float,
        key: str | None = None,
        on_timeout: None,
    ) -> T | None: ...
    @overload
    async def with_timeout(
        self,
        name: str,
        fn: Callable[[], Awaitable[Result[T, Any]]],
        *,
        seconds: float,
        key: str | None = None,
        on_timeout: object = ...,
    ) -> T: ...
    @overload
    async def with_timeout(
        self,
        name: str,
        fn: Callable[[], Result[T, Any]],
        *,
        seconds: float,
        key: str | None = None,
        on_timeout: object = ...,
    ) -> T: ...
    @overload
    async def with_timeout(
        self,
        name: str,
        fn: Callable[[], Awaitable[T]],
        *,
        seconds: float,
        key: str | None = None,
        on_timeout: object = ...,
    ) -> T: ...
    @overload
    async def with_timeout(
        self,
        name: str,
        fn: Callable[[], T],
        *,
        seconds: float,
        key: str | None = None,
        on_timeout: object = ...,
    ) -> T: ...
    async def with_timeout(
        self,
        name: str,
        fn: Callable[[], Any],
        *,
        seconds: float,
        key: str | None = None,
        on_timeout: object = _TIMEOUT_ERROR,
    ) -> Any:
        """Run ``fn`` with a deadline of ``seconds``; past it the work is cancelled.

        What a timeout becomes is ``on_timeout``'s choice: left out, the workflow ends
        with ``Err(StepTimeoutError(name, seconds))``; ``None``, the step's value is
        ``None`` (typed ``T | None``) and the workflow goes on; any other value ``e``,
        the workflow ends with ``Err(e)`` (an ``Err`` is used as it is).  Either way a
        ``step_timeout`` event reports the timeout, and an error of ``fn`` itself ends
        the workflow as usual.  Cancellation from outside propagates.  ``seconds``
        that is not a number > 0 raises ``TypeError`` / ``ValueError`` naming it; an
        ``Ok`` as ``on_timeout`` raises ``TypeError`` (use ``None``).
        """
        seconds = check_timeout(seconds, f"step {name!r}: seconds")
        if on_timeout is _TIMEOUT_ERROR:
            return await self(name, fn, key=key, timeout=seconds)
        if isinstance(on_timeout, Ok):
            raise TypeError(
                f"step {name!r}: on_timeout must be None or an error value, not {on_timeout!r}"
            )
        _check_fn(name, fn)
        instead = timeout_outcome(on_timeout)

        async def bounded() -> Result[Any, Any]:
            with anyio.move_on_after(seconds):
                return await self._settle(fn)
            # Only our own deadline lands here: outside cancellation propagates.
            timed_out(self._run, name, key, seconds)
            return instead

        return await self(name, bounded, key=key)

    @overload
    async def with_fallback(
        self,
        name: str,
        fn: Callable[[], Awaitable[Result[T, Any]]],
        fallback: Fallback[T],
        *,
        on: OnError,
        key: str | None = None,
        timeout: float | None = None,
    ) -> T: ...
    @overload
    async def with_fallback(
        self,
        name: str,
        fn: Callable[[], Result[T, Any]],
        fallback: Fallback[T],
        *,
        on: OnError,
        key: str | None = None,
        timeout: float | None = None,
    ) -> T: ...
    @overload
    async def with_fallback(
        self,
        name: str,
        fn: Callable[[], Awaitable[T]],
        fallback: Fallback[T],
        *,
        on: OnError,
        key: str | None = None,
        timeout: float | None = None,
    ) -> T: ...
    @overload
    async def with_fallback(
        self,
        name: str,
        fn: Callable[[], T],
        fallback: Fallback[T],
        *,
        on: OnError,
        key: str | None = None,
        timeout: float | None = None,
    ) -> T: ...
    async def with_fallback(
        self,
        name: str,
        fn: Callable[[], Any],
        fallback: Callable[[], Any],
        *,
        on: OnError,
        key: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Run ``fn``; if it fails with one of the errors ``on`` chooses, run ``fallback``
        (a zero-argument callable like ``fn``) and give its outcome instead.

        ``on`` is an error class, a tuple of them, or a predicate.  It looks at the
        *failure*: the exception itself when ``fn`` raised, otherwise the ``Err``'s
        error value; a class also matches an `UnexpectedError` (from a nested step
        that raised) whose ``cause`` is an instance.  A predicate gets the failure and
        returns whether to fall back.  Any other failure ends the workflow as a plain
        step's would; a failing fallback ends it with the fallback's error.

        ``timeout`` (seconds) bounds ``fn`` only: past it ``fn`` is cancelled and the
        failure is ``StepTimeoutError(name, timeout)``, so ``on=StepTimeoutError``
        falls back on a slow ``fn``.  For retries, make ``fn`` a nested
        ``ctx.step.retry``: its last failure is what ``on`` sees.  The whole is one
        step (``key`` records whichever value won).  Cancellation from outside
        propagates.  A bad ``on``, ``fallback`` or ``timeout`` raises ``TypeError`` /
        ``ValueError`` naming the step and the option.
        """
        _check_fn(name, fn)
        if not callable(fallback):
            raise TypeError(
                f"step {name!r}: fallback must be a zero-argument callable, not {fallback!r}"
            )
        matches = _matcher(name, on)
        if timeout is not None:
            timeout = check_timeout(timeout, f"step {name!r}: timeout")
        run = self._run

        async def attempt() -> tuple[Result[Any, Any], Exception | None]:
            if cancel_due():
                await deliver_cancellation()
            try:
                out = fn()
                if isawaitable(out):
                    out = await out
            except EarlyExit as exc:
                if exc.run is not run:
                    raise
                return exc.result, None
            except Exception as exc:
                return Err(exc), exc
            return as_result(out), None

        async def primary_or_fallback() -> Result[Any, Any]:
            result: Result[Any, Any]
            raised: Exception | None
            if timeout is None:
                result, raised = await attempt()
            else:
                result, raised = Err(StepTimeoutError(name, timeout)), None
                finished = False
                with anyio.move_on_after(timeout):
                    result, raised = await attempt()
                    finished = True
                if not finished:
                    # Only our own deadline lands here: outside cancellation propagates.
                    result, raised = timed_out(self._run, name, key, timeout), None
            if result.ok is True:
                return result
            failure = raised if raised is not None else result.error
            if not matches(failure):
                return result if raised is None else Err(run.map_exception(raised))
            emit = run.emit
            if emit is not None:
                emit(
                    StepFallback(
                        workflow_id=run.workflow_id,
                        workflow_name=run.name,
                        ts=run.clock.time(),
                        name=name,
                        step_key=key,
                        error=failure,
                    )
                )
            # The fallback is not under fn's timeout: it is what runs when fn was too slow.
            return await self._settle(fallback)

        return await self(name, primary_or_fallback, key=key)

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

    # A dict first: pyright reads a dict literal given for a Mapping[K, ...] with K
    # unsolved, and then cannot choose between the overloads.
    @overload
    async def all_settled(
        self,
        name: str,
        fns: dict[K, Callable[[], Awaitable[Result[T, E]]]],
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> dict[K, Result[T, Any]]: ...
    @overload
    async def all_settled(
        self,
        name: str,
        fns: Mapping[K, Callable[[], Awaitable[Result[T, Any]]]],
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> dict[K, Result[T, Any]]: ...
    @overload
    async def all_settled(
        self,
        name: str,
        fns: Mapping[K, Callable[[], Any]],
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> dict[K, Result[Any, Any]]: ...
    @overload
    async def all_settled(
        self,
        name: str,
        fns: Sequence[Callable[[], Awaitable[Result[T, Any]]]],
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> list[Result[T, Any]]: ...
    @overload
    async def all_settled(
        self,
        name: str,
        fns: Sequence[Callable[[], Any]],
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> list[Result[Any, Any]]: ...
    async def all_settled(
        self,
        name: str,
        fns: Mapping[Any, Callable[[], Any]] | Sequence[Callable[[], Any]],
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> dict[Any, Result[Any, Any]] | list[Result[Any, Any]]:
        """Run every child concurrently in one task group, let each finish, and return
        every outcome as a `Result`: ``{label: Result}`` for a mapping, a list in the
        same order for a sequence.

        A child's ``Err`` (or exception, as ``Err(UnexpectedError)``) is collected,
        never ends the workflow, and cancels nobody.  Only ``timeout`` (the whole
        group's) ends it, with ``StepTimeoutError``; cancellation from outside
        propagates into every child.  A bad ``fns`` raises ``TypeError``.
        """
        labels, thunks = _labelled(name, fns)

        async def settle_all() -> Ok[Any]:
            outcomes: list[Result[Any, Any]] = [_UNSETTLED] * len(thunks)
            async with anyio.create_task_group() as tg:

                async def child(index: int, fn: Callable[[], Any]) -> None:
                    outcomes[index] = await self._settle(fn)

                for index, fn in enumerate(thunks):
                    tg.start_soon(child, index, fn)
            return Ok(outcomes if labels is None else dict(zip(labels, outcomes, strict=True)))

        result: dict[Any, Result[Any, Any]] | list[Result[Any, Any]] = await self(
            name, settle_all, key=key, timeout=timeout
        )
        return result

    @overload
    async def any(
        self,
        name: str,
        fns: Sequence[Callable[[], Awaitable[Result[T, Any]]]],
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> T: ...
    @overload
    async def any(
        self,
        name: str,
        fns: Sequence[Callable[[], Result[T, Any]]],
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> T: ...
    @overload
    async def any(
        self,
        name: str,
        fns: Sequence[Callable[[], Awaitable[T]]],
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> T: ...
    @overload
    async def any(
        self,
        name: str,
        fns: Sequence[Callable[[], T]],
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> T: ...
    async def any(
        self,
        name: str,
        fns: Sequence[Callable[[], Any]],
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Run the children concurrently; the first to *succeed* gives the step's value
        and the others are cancelled.

        A child's failure does not stop the others.  When every child failed, the
        workflow ends with ``Err(AllFailedError(name, errors))``, ``errors`` in the
        order of ``fns``.  ``timeout`` bounds the whole group (``StepTimeoutError``);
        cancellation from outside propagates into every child.  An empty ``fns``
        raises ``ValueError``; one that is not a list or tuple of callables,
        ``TypeError``.
        """
        if isinstance(fns, Mapping):
            raise TypeError(f"step {name!r}: any takes a list of callables, not a mapping")
        _, thunks = _labelled(name, fns)
        if not thunks:
            raise ValueError(f"step {name!r}: any needs at least one child")

        async def first_success() -> Result[Any, Any]:
            errors: list[Any] = [None] * len(thunks)
            winner: list[Ok[Any]] = []
            async with anyio.create_task_group() as tg:

                async def child(index: int, fn: Callable[[], Any]) -> None:
                    res = await self._settle(fn)
                    if isinstance(res, Ok):
                        if not winner:
                            winner.append(res)
                            tg.cancel_scope.cancel()
                    else:
                        errors[index] = res.error

                for index, fn in enumerate(thunks):
                    tg.start_soon(child, index, fn)
            if winner:
                return winner[0]
            return Err(AllFailedError(name, tuple(errors)))

        return await self(name, first_success, key=key, timeout=timeout)

    @overload
    async def for_each(
        self,
        name: str,
        items: Iterable[I],
        fn: Callable[[I], Awaitable[Result[T, Any]]],
        *,
        concurrency: int = 1,
        batch_size: int | None = None,
        pause: float | None = None,
        on_progress: Callable[[int, int], object] | None = None,
        key: str | None = None,
        timeout: float | None = None,
    ) -> list[T]: ...
    @overload
    async def for_each(
        self,
        name: str,
        items: Iterable[I],
        fn: Callable[[I], Result[T, Any]],
        *,
        concurrency: int = 1,
        batch_size: int | None = None,
        pause: float | None = None,
        on_progress: Callable[[int, int], object] | None = None,
        key: str | None = None,
        timeout: float | None = None,
    ) -> list[T]: ...
    @overload
    async def for_each(
        self,
        name: str,
        items: Iterable[I],
        fn: Callable[[I], Awaitable[T]],
        *,
        concurrency: int = 1,
        batch_size: int | None = None,
        pause: float | None = None,
        on_progress: Callable[[int, int], object] | None = None,
        key: str | None = None,
        timeout: float | None = None,
    ) -> list[T]: ...
    @overload
    async def for_each(
        self,
        name: str,
        items: Iterable[I],
        fn: Callable[[I], T],
        *,
        concurrency: int = 1,
        batch_size: int | None = None,
        pause: float | None = None,
        on_progress: Callable[[int, int], object] | None = None,
        key: str | None = None,
        timeout: float | None = None,
    ) -> list[T]: ...
    async def for_each(
        self,
        name: str,
        items: Iterable[I],
        fn: Callable[[I], Any],
        *,
        concurrency: int = 1,
        batch_size: int | None = None,
        pause: float | None = None,
        on_progress: Callable[[int, int], object] | None = None,
        key: str | None = None,
        timeout: float | None = None,
    ) -> list[Any]:
        """Call ``fn(item)`` for every item, at most ``concurrency`` at a time, and return
        the values in the order of ``items``.  The first ``Err`` stops the rest.

        With ``batch_size``, the items go in batches of that many, one after the other
        (``concurrency`` applies within a batch).  Each batch is a step of its own,
        named ``<name>/batch-<n>`` (``n`` from 0) and, when ``key`` is given, keyed
        ``<key>/batch-<n>``: in a durable run each finished batch is checkpointed, and
        a resumed run replays the finished batches from their records and goes on with
        the first unfinished one.  ``pause`` waits that many seconds on the workflow's
        clock between two batches that execute (not before a replayed one).  After
        each batch ``on_progress(done, total)`` is called (awaited if it returns an
        awaitable) and a ``batch_progress`` event is emitted; ``pause`` and
        ``on_progress`` need ``batch_size``.  An exception raised by ``on_progress``
        ends the workflow like one raised by a step.

        ``timeout`` bounds the whole ``for_each``.  Cancellation from outside
        propagates (a resumed run restarts the batch it interrupted).  A bad option
        raises ``TypeError`` / ``ValueError`` naming the step and the option.
        """
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(
                f"step {name!r}: concurrency must be an integer >= 1, not {concurrency!r}"
            )
        _check_fn(name, fn)
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(
                f"step {name!r}: batch_size must be an integer >= 1, not {batch_size!r}"
            )
        if pause is not None:
            if isinstance(pause, bool) or not isinstance(pause, (int, float)):
                raise TypeError(f"step {name!r}: pause must be a number >= 0, not {pause!r}")
            if not 0 <= pause < float("inf"):
                raise ValueError(f"step {name!r}: pause must be a number >= 0, not {pause!r}")
        if on_progress is not None and not callable(on_progress):
            raise TypeError(
                f"step {name!r}: on_progress must be a callable (done, total), not {on_progress!r}"
            )
        if batch_size is None and (pause is not None or on_progress is not None):
            raise ValueError(f"step {name!r}: pause and on_progress need batch_size")
        pending = list(items)
        if batch_size is not None:
            return await self._batches(
                name, pending, fn, concurrency, batch_size, pause, on_progress, key, timeout
            )

        async def each() -> Result[Any, Any]:
            return await self._map(pending, fn, concurrency)

        result: list[Any] = await self(name, each, key=key, timeout=timeout)
        return result

    async def _map(
        self, items: list[Any], fn: Callable[[Any], Any], concurrency: int
    ) -> Result[list[Any], Any]:
        """``fn`` over ``items``, ``concurrency`` at a time: the values, or the first Err."""
        values: list[Any] = [None] * len(items)
        if concurrency == 1:
            for index, item in enumerate(items):
                res = await self._settle(partial(fn, item))
                if isinstance(res, Err):
                    return res
                values[index] = res.value
            return Ok(values)
        failure: list[Err[Any]] = []
        work = iter(enumerate(items))
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

            for _ in range(min(concurrency, len(items))):
                tg.start_soon(worker)
        return failure[0] if failure else Ok(values)

    async def _batches(
        self,
        name: str,
        items: list[Any],
        fn: Callable[[Any], Any],
        concurrency: int,
        batch_size: int,
        pause: float | None,
        on_progress: Callable[[int, int], object] | None,
        key: str | None,
        timeout: float | None,
    ) -> list[Any]:
        run = self._run
        total = len(items)

        async def batches() -> Ok[list[Any]]:
            values: list[Any] = []
            ran_last = False  # whether the previous batch executed (rather than replayed)
            for number, start in enumerate(range(0, total, batch_size)):
                chunk = items[start : start + batch_size]
                batch_key = None if key is None else f"{key}/batch-{number}"
                replayed = batch_key is not None and batch_key in run.completed
                if ran_last and not replayed and pause:
                    await run.clock.sleep(pause)

                async def one_batch(chunk: list[Any] = chunk) -> Result[list[Any], Any]:
                    return await self._map(chunk, fn, concurrency)

                batch_values: list[Any] = await self(
                    f"{name}/batch-{number}", one_batch, key=batch_key
                )
                values.extend(batch_values)
                ran_last = not replayed
                done = len(values)
                if run.emit is not None:
                    run.emit(
                        BatchProgress(
                            workflow_id=run.workflow_id,
                            workflow_name=run.name,
                            ts=run.clock.time(),
                            name=name,
                            step_key=key,
                            done=done,
                            total=total,
                            batch=number,
                        )
                    )
                if on_progress is not None:
                    out = on_progress(done, total)
                    if isawaitable(out):
                        await out
            return Ok(values)

        # The batches are the records (the group's own step is not checkpointed, not even
        # under an automatic key): the values are stored once, and a finished for_each
        # replays batch by batch.
        result: list[Any] = await self(name, batches, timeout=timeout, checkpoint=False)
        return result

    @overload
    async def cached(
        self,
        name: str,
        fn: Callable[[], Awaitable[Result[T, Any]]],
        *,
        key: str,
        ttl: CacheTtl,
        cache: StepCache,
        timeout: float | None = None,
    ) -> T: ...
    @overload
    async def cached(
        self,
        name: str,
        fn: Callable[[], Result[T, Any]],
        *,
        key: str,
        ttl: CacheTtl,
        cache: StepCache,
        timeout: float | None = None,
    ) -> T: ...
    @overload
    async def cached(
        self,
        name: str,
        fn: Callable[[], Awaitable[T]],
        *,
        key: str,
        ttl: CacheTtl,
        cache: StepCache,
        timeout: float | None = None,
    ) -> T: ...
    @overload
    async def cached(
        self,
        name: str,
        fn: Callable[[], T],
        *,
        key: str,
        ttl: CacheTtl,
        cache: StepCache,
        timeout: float | None = None,
    ) -> T: ...
    async def cached(
        self,
        name: str,
        fn: Callable[[], Any],
        *,
        key: str,
        ttl: CacheTtl,
        cache: StepCache,
        timeout: float | None = None,
    ) -> Any:
        """Answer the step ``name`` from ``cache`` under ``key`` (a cross-run cache key,
        not a step key) while an entry lives; else run ``fn`` as ``ctx.step(name, fn,
        timeout=timeout)`` does and store its ``Ok`` value for ``ttl`` seconds (or a
        ``timedelta``), so a later run (any run sharing the cache) gets it back.

        A hit emits ``step_cache_hit``, then ``step_start`` and ``step_complete`` with
        ``cached=True``, and does not call ``fn``; a miss emits ``step_cache_miss`` and
        runs the step.  An ``Err`` (or an exception) is never cached: it ends the
        workflow as a step's would.  A value the cache cannot encode ends the workflow
        with ``Err(SerializationError)`` naming the step; an entry the cache cannot
        read is a miss (with its reason on ``step_cache_miss``, and a warning logged)
        and is overwritten.  A cancellation point (the lookup, then the step);
        cancellation propagates.  ``TypeError`` / ``ValueError`` naming the step for a
        bad key, TTL or cache; the cache's own errors (a database down) propagate."""
        return await cached_step(self, self._run, name, fn, key, ttl, cache, timeout)


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


def _matcher(name: str, on: object) -> Callable[[object], bool]:
    """``with_fallback``'s ``on`` as a test of a failure (see its docstring)."""
    classes: type[Any] | tuple[type[Any], ...] | None = None
    if isinstance(on, type):
        classes = on
    elif isinstance(on, tuple):
        members = cast("tuple[object, ...]", on)
        if members and all(isinstance(cls, type) for cls in members):
            classes = cast("tuple[type[Any], ...]", members)
    elif callable(on):
        predicate: Callable[[object], object] = on

        def chosen(failure: object) -> bool:
            return bool(predicate(failure))

        return chosen
    if classes is not None:
        chosen_classes = classes

        def is_one_of(failure: object) -> bool:
            return isinstance(failure, chosen_classes) or (
                isinstance(failure, UnexpectedError) and isinstance(failure.cause, chosen_classes)
            )

        return is_one_of
    raise TypeError(
        f"step {name!r}: on must be an error class, a non-empty tuple of classes "
        f"or a predicate, not {on!r}"
    )
