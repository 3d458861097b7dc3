"""Dependency policies, the per-run context and input validation.

A *policy* is what every call of one dependency goes through when a workflow calls
it as a step (``ctx.steps.charge_card(card)``): a retry policy, a timeout, a rate
limiter and a circuit breaker.  It is attached to the dependency once,
``policy(charge_card, retry=RetryPolicy(3), timeout=2.0, limiter=..., breaker=...)``,
and travels with it: whatever deps a run is given (the workflow's, or the ones
``run(..., deps=...)`` puts over them), a dependency wrapped with a policy brings
it along, and a plain one runs as a plain step.  Outside a workflow the wrapped
dependency is the function itself (calling it calls the function; no policy).

Each attempt of such a step (the retry policy repeats attempts) goes through, from
the outside in: the breaker (an open circuit fails the attempt at once, with
``CircuitOpenError``, without waiting for the limiter), the limiter (its turn, or
``RateLimitExceededError``), then the timeout, which bounds the dependency's call
itself, not the wait for a turn.  The breaker counts what the dependency did (its
exceptions, its ``Err``, its timeouts), never the limiter's refusals.

Limiters and breakers are reached through `Guard`, the shape both already have
(awaited around a thunk, returning a Result), so this module, in the core layer,
imports nothing of the reliability layer.

The module also holds the checks and helpers of ``workflow.run(..., context=...)``
(`check_context`, `with_context`) and of ``create_workflow(..., validate_input=...)``
(`InputValidator`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Awaitable, Callable, Mapping
from inspect import isawaitable
from typing import TYPE_CHECKING, Any, Generic, NoReturn, Protocol, TypeVar, cast, overload

import anyio
import attrs
from typing_extensions import ParamSpec, TypedDict, Unpack

from ._errors import InputValidationError
from ._result import Err, Ok, Result
from ._retry import RetryPolicy, check_timeout
from ._run import Emit, RunState
from ._step import timed_out
from ._thunk import as_result, call_thunk
from .events import WorkflowEvent

if TYPE_CHECKING:
    from ._step_groups import Step

__all__ = [
    "EMPTY_CONTEXT",
    "Guard",
    "InputValidator",
    "Policy",
    "PolicyOptions",
    "WithPolicy",
    "check_context",
    "policy",
    "policy_step",
    "with_context",
]

P = ParamSpec("P")
R = TypeVar("R")


class Guard(Protocol):
    """What a policy's ``limiter`` and ``breaker`` are: awaited around a thunk, they
    return its Result or their own ``Err`` without calling it (`RateLimiter`,
    `CircuitBreaker`, their Redis forms, or your own).  A guard of your own must let
    what the thunk raises outside ``Exception`` (cancellation, and the signals the
    library passes through it) propagate untouched, as anyio code must anyway."""

    def __call__(self, fn: Callable[[], Any], /) -> Awaitable[Result[Any, Any]]: ...


class PolicyOptions(TypedDict, total=False):
    """The settings of a `Policy`, as keywords (``policy(fn, **options)``,
    ``Policy.replace(**options)``, ``ctx.steps.dep.options(**options)``)."""

    retry: RetryPolicy | None
    """How the step retries (see `RetryPolicy`); each attempt goes through the guards."""

    timeout: float | None
    """Seconds each call of the dependency may take (the wait for the limiter's turn
    is not counted); past it the call is cancelled and the attempt fails with
    ``StepTimeoutError``."""

    limiter: Guard | None
    """A rate limiter each attempt waits its turn in (``create_rate_limiter``)."""

    breaker: Guard | None
    """A circuit breaker each attempt goes through (``create_circuit_breaker``)."""


class CallOptions(PolicyOptions, total=False):
    """The options of one call, ``ctx.steps.dep.options(**options)(...)``: the
    policy's settings, and the step's ``key``."""

    key: str | None
    """The step's key (see ``ctx.step``'s ``key=``)."""


_POLICY_OPTIONS = ("retry", "timeout", "limiter", "breaker")
_CALL_OPTIONS = (*_POLICY_OPTIONS, "key")


def _check_retry(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, RetryPolicy):
        raise TypeError(f"policy {attribute.name} must be a RetryPolicy (or None), not {value!r}")


def _check_policy_timeout(value: object) -> float | None:
    if value is None:
        return None
    seconds = check_timeout(value, "policy timeout")
    if not math.isfinite(seconds):
        raise ValueError(f"policy timeout must be a finite number of seconds, not {value!r}")
    return seconds


def _check_guard(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(
            f"policy {attribute.name} must be awaitable around a thunk "
            f"(a rate limiter or a circuit breaker), not {value!r}"
        )


@attrs.frozen
class Policy:
    """What every call of a dependency goes through when a workflow runs it as a step
    (``ctx.steps.<name>(...)``): ``retry`` (a `RetryPolicy`), ``timeout`` (seconds
    per call), ``limiter`` and ``breaker`` (see `Guard`).  Every setting is optional.

    Attach it with `policy` or `Policy.wrap`.  An attempt goes through the breaker,
    then the limiter, then the timeout (see the module docs for why).  A bad
    setting raises ``TypeError`` or ``ValueError`` naming it, when the policy is
    made.
    """

    retry: RetryPolicy | None = attrs.field(default=None, validator=_check_retry)
    timeout: float | None = attrs.field(default=None, converter=_check_policy_timeout)
    limiter: Guard | None = attrs.field(default=None, validator=_check_guard)
    breaker: Guard | None = attrs.field(default=None, validator=_check_guard)

    def replace(self, **changes: Unpack[PolicyOptions]) -> Policy:
        """A copy with ``changes`` (``None`` turns a setting off); unknown names raise
        ``TypeError``."""
        _check_names(changes, _POLICY_OPTIONS, "a policy")
        return attrs.evolve(self, **changes)

    def wrap(self, fn: Callable[P, R]) -> WithPolicy[P, R]:
        """``fn`` with this policy (see `policy`).  Wrapping a dependency that already
        has one puts this policy's settings over it (those that are not ``None``)."""
        if isinstance(fn, WithPolicy):
            inner = cast("WithPolicy[P, R]", fn)
            changes = {
                name: getattr(self, name)
                for name in _POLICY_OPTIONS
                if getattr(self, name) is not None
            }
            return WithPolicy(inner.__wrapped__, attrs.evolve(inner.policy, **changes))
        return WithPolicy(fn, self)


def _check_names(given: Mapping[str, object], known: tuple[str, ...], what: str) -> None:
    for name in given:
        if name not in known:
            raise TypeError(f"{what} has no option {name!r} (the options are {', '.join(known)})")


class WithPolicy(Generic[P, R]):
    """A dependency with its `Policy` (made by `policy`).

    Calling it calls the function, with no policy: outside a workflow, and through
    ``ctx.deps``, it is the plain function.  ``ctx.steps.<name>(...)`` runs it as a
    step under its policy.  ``__wrapped__`` is the function, ``policy`` the policy.
    """

    __wrapped__: Callable[P, R]
    policy: Policy
    # Copied from the function (functools.update_wrapper), like a decorator's result.
    __name__: str
    __qualname__: str

    def __init__(self, fn: Callable[P, R], policy: Policy) -> None:
        if not callable(fn):
            raise TypeError(f"a policy wraps a callable dependency, not {fn!r}")
        if not isinstance(policy, Policy):
            raise TypeError(f"policy must be a Policy, not {policy!r}")
        functools.update_wrapper(self, fn)
        self.__wrapped__ = fn
        self.policy = policy

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.__wrapped__(*args, **kwargs)

    def __repr__(self) -> str:
        return f"WithPolicy({self.__wrapped__!r}, {self.policy!r})"


@overload
def policy(fn: Callable[P, R], /, **options: Unpack[PolicyOptions]) -> WithPolicy[P, R]: ...
@overload
def policy(
    fn: None = None, /, **options: Unpack[PolicyOptions]
) -> Callable[[Callable[P, R]], WithPolicy[P, R]]: ...
def policy(
    fn: Callable[P, R] | None = None, /, **options: Unpack[PolicyOptions]
) -> WithPolicy[P, R] | Callable[[Callable[P, R]], WithPolicy[P, R]]:
    """Attach a `Policy` to a dependency: ``policy(charge_card, retry=RetryPolicy(3),
    timeout=2.0, limiter=limiter, breaker=breaker)``, or as a decorator,
    ``@policy(timeout=2.0)``.

    Every ``ctx.steps.charge_card(...)`` call then runs under the policy;
    ``ctx.steps.charge_card.options(timeout=5)(...)`` changes it for one call.
    Calling the result directly calls ``charge_card`` (no policy).  A bad option
    raises ``TypeError`` or ``ValueError`` naming it, here and not at the first call.
    """
    _check_names(options, _POLICY_OPTIONS, "policy()")
    made = Policy(**options)
    if fn is None:
        return made.wrap
    return made.wrap(fn)


def call_options(
    base: Policy | None, key: str | None, options: Mapping[str, Any]
) -> tuple[Policy | None, str | None]:
    """``ctx.steps.dep.options(**options)`` over the dependency's policy ``base`` and
    key ``key``: the policy and key of the call, every option checked here."""
    _check_names(options, _CALL_OPTIONS, "ctx.steps.<dependency>.options()")
    if "key" in options:
        key = options["key"]
        if key is not None and (type(key) is not str or not key):
            raise ValueError(f"key must be a non-empty string (or None), not {key!r}")
    changes = {name: options[name] for name in _POLICY_OPTIONS if name in options}
    if changes:
        base = (base or _NO_POLICY).replace(**changes)
    return base, key


_NO_POLICY = Policy()


class _Refused(BaseException):
    """Carries a limiter's own ``Err`` (its refusal) out through the breaker, so the
    breaker does not count it as a failure of the dependency.  A ``BaseException``:
    breakers count ``Exception``s only, and let others through as calls that did not
    happen."""

    def __init__(self, result: Result[Any, Any]) -> None:
        super().__init__()
        self.result = result


def policy_step(
    step: Step, name: str, call: Callable[[], Any], policy: Policy, key: str | None
) -> Awaitable[Any]:
    """The step ``name`` (key ``key``) running ``call`` under ``policy``, to await for
    its value: the step's retries and events as ``ctx.step`` gives them, each attempt
    through the breaker, the limiter and the timeout.  Failures end the workflow
    as any step's do; cancellation from outside propagates.  (The step's own
    coroutine is returned: no frame of ours stays between the body and the step.)"""
    retry = policy.retry
    timeout = policy.timeout
    limiter = policy.limiter
    breaker = policy.breaker
    if limiter is None and breaker is None:
        # Nothing to put between the step's own timeout and the call: the step's.
        return step(name, call, key=key, retry=retry, timeout=timeout)
    if retry is not None and retry.timeout is not None:
        # The retry policy's own per-attempt timeout, when the policy sets none, is
        # the policy's: it bounds the call, inside the guards, like ``timeout``.
        if timeout is None:
            timeout = retry.timeout
        retry = attrs.evolve(retry, timeout=None)
    run: RunState = step._run
    # Made once per step, not per attempt: the step's attempts run one after the other.
    attempt = 0  # numbers the step_timeout events, as the step numbers its attempts
    called = False  # whether the limiter let this attempt's call through

    target: Callable[[], Any] = call
    if timeout is not None:
        seconds = timeout

        async def timed() -> Result[Any, Any]:
            nonlocal called
            called = True
            # Our own deadline only: outside cancellation propagates through the scope.
            with anyio.move_on_after(seconds):
                out = call()
                if isawaitable(out):
                    out = await out
                return as_result(out)
            return timed_out(run, name, key, seconds, attempt)

        target = timed

    if limiter is None or breaker is None:
        # One guard: the call goes through it (a refusal is the attempt's failure).
        guard = breaker if limiter is None else limiter
        assert guard is not None

        async def guarded() -> Result[Any, Any]:
            nonlocal attempt
            attempt += 1
            return await guard(target)

        return step(name, guarded, key=key, retry=retry)
    turn = limiter
    gate = breaker
    inner = target
    if timeout is None:

        async def untimed() -> Result[Any, Any]:
            nonlocal called
            called = True
            return await call_thunk(call)

        inner = untimed

    async def through_limiter() -> Result[Any, Any]:
        out = await turn(inner)
        if not called and out.ok is False:
            raise _Refused(out)
        return out

    async def both() -> Result[Any, Any]:
        nonlocal attempt, called
        attempt += 1
        called = False
        try:
            return await gate(through_limiter)
        except _Refused as refused:
            return refused.result

    return step(name, both, key=key, retry=retry)


# ---- the per-run context -------------------------------------------------------------


def _read_only(*args: object, **kwargs: object) -> NoReturn:
    raise TypeError("a run's context is read-only")


class FrozenContext(dict[str, Any]):
    """A run's context: a read-only dict (every change raises ``TypeError``), so that
    ``json.dumps(event.context)`` and pickling work as for a dict, while no handler or
    step can change what the others see."""

    __slots__ = ()

    __setitem__ = __delitem__ = _read_only
    clear = pop = popitem = setdefault = update = __ior__ = _read_only

    def __reduce__(self) -> tuple[type[FrozenContext], tuple[dict[str, Any]]]:
        return FrozenContext, (dict(self),)


EMPTY_CONTEXT: Mapping[str, Any] = FrozenContext()
"""``ctx.context`` of a run given none."""

_MAX_DEPTH = 32


def _check_json(value: object, where: str, depth: int = 0) -> object:
    """``value`` as a JSON value (lists for tuples, dicts copied); raises ``TypeError``
    naming ``where`` for anything else."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"context{where} must be a finite number, not {value!r}")
        return value
    if depth >= _MAX_DEPTH:
        raise ValueError(f"context{where} is nested more than {_MAX_DEPTH} levels deep")
    if isinstance(value, (list, tuple)):
        items = cast("list[object] | tuple[object, ...]", value)
        return tuple(_check_json(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(items))
    if isinstance(value, Mapping):
        fields = cast("Mapping[object, object]", value)
        copied: dict[str, object] = {}
        for name, item in fields.items():
            if not isinstance(name, str):
                raise TypeError(f"context{where} keys must be strings, not {name!r}")
            copied[name] = _check_json(item, f"{where}[{name!r}]", depth + 1)
        return FrozenContext(copied)
    raise TypeError(
        f"context{where} must be a JSON value (str, int, float, bool, None, or a "
        f"list or mapping of them), not {type(value).__name__}"
    )


def check_context(context: object) -> Mapping[str, Any]:
    """``workflow.run(..., context=...)`` checked and frozen: a mapping of string keys
    to JSON values (nested lists and mappings allowed: tuples and `FrozenContext`
    dicts in the copy).  Raises ``TypeError``/``ValueError`` naming the entry."""
    if not isinstance(context, Mapping):
        raise TypeError(f"context must be a mapping of str to JSON values, not {context!r}")
    entries = cast("Mapping[object, object]", context)
    if not entries:
        return EMPTY_CONTEXT
    copied: dict[str, object] = {}
    for name, value in entries.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"context keys must be non-empty strings, not {name!r}")
        copied[name] = _check_json(value, f"[{name!r}]")
    return FrozenContext(copied)


def with_context(emit: Emit, context: Mapping[str, Any]) -> Emit:
    """``emit`` that first sets ``context`` on each event (events are frozen, and each
    is fresh and not yet seen by anyone: set in place, not copied)."""
    set_field = object.__setattr__

    def emit_with_context(event: WorkflowEvent) -> None:
        set_field(event, "context", context)
        emit(event)

    return emit_with_context


# ---- input validation ----------------------------------------------------------------


class InputValidator:
    """``create_workflow(..., validate_input=spec)`` made ready: ``await
    validator(name, value)`` is ``Ok(validated)`` or ``Err(InputValidationError)``.

    ``spec`` is an attrs class or a dataclass (the input is structured with cattrs:
    a mapping becomes an instance, an instance is re-validated), a pydantic model
    (``model_validate``; pydantic is never imported here), or a callable that
    returns the validated value (an ``Ok`` of it, or an awaitable), returns ``Err``
    or raises ``ValueError``/``TypeError`` to reject.  Other exceptions from a
    callable are bugs, not verdicts: they propagate (the run maps them as it maps
    any foreign exception).
    """

    __slots__ = ("_check", "spec")

    _check: Callable[[Any], Any]

    def __init__(self, spec: object) -> None:
        if not callable(spec):
            raise TypeError(
                "validate_input must be an attrs class, a dataclass, a pydantic model or "
                f"a callable, not {spec!r}"
            )
        self.spec: object = spec
        if isinstance(spec, type) and (attrs.has(spec) or dataclasses.is_dataclass(spec)):
            self._check = functools.partial(_structure, spec)
        elif isinstance(spec, type) and callable(getattr(spec, "model_validate", None)):
            self._check = functools.partial(_pydantic, spec)
        else:
            self._check = cast("Callable[[Any], Any]", spec)

    async def __call__(self, workflow_name: str, value: Any) -> Result[Any, Any]:
        try:
            out = self._check(value)
            if isawaitable(out):
                out = await out
        except InputValidationError as exc:
            return Err(exc)
        except (ValueError, TypeError) as exc:
            return Err(_rejected(workflow_name, _problems(exc), exc))
        if isinstance(out, Err):
            error = cast("Err[object]", out).error
            if isinstance(error, InputValidationError):
                return Err(error)
            return Err(_rejected(workflow_name, (str(error),), error))
        if isinstance(out, Ok):
            return Ok(cast("Ok[object]", out).value)
        return Ok(out)

    def wrap(self, body: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
        """``body`` behind the check: the run's input validated before the body starts
        (so before its first step); ``ctx.input`` is then the validated value, and a
        rejection is the run's ``Err``."""
        check = self

        async def validated(ctx: Any) -> Any:
            verdict = await check(ctx.workflow_name, ctx.input)
            if verdict.ok is False:
                return verdict
            ctx.input = verdict.value
            return await body(ctx)

        return validated


def _rejected(workflow_name: str, problems: tuple[str, ...], cause: object) -> InputValidationError:
    error = InputValidationError(workflow_name, problems)
    if isinstance(cause, BaseException):
        error.__cause__ = cause
    return error


def _problems(exc: BaseException) -> tuple[str, ...]:
    """The problems a validator's exception reports, one line each, naming the field
    where it can; never the rejected value itself (it may be a secret)."""
    if isinstance(exc, _Rejection):
        return exc.problems
    errors = getattr(exc, "errors", None)
    if callable(errors) and type(exc).__module__.startswith("pydantic"):
        # pydantic's ValidationError: each error's location and message, not its input.
        found: list[str] = []
        try:
            for item in cast("list[Mapping[str, Any]]", errors(include_input=False)):
                where = ".".join(str(part) for part in item.get("loc", ()))
                found.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
        except Exception:  # not the pydantic we know: its text
            return (str(exc),)
        return tuple(found) or (str(exc),)
    return (str(exc) or type(exc).__name__,)


_converter: Any = None


def _structure(cls: type[Any], value: Any) -> Any:
    """``value`` as a ``cls`` (an attrs class or dataclass): an instance is validated
    again (attrs validators), a mapping structured by cattrs."""
    if isinstance(value, cls):
        if attrs.has(cls):
            attrs.validate(value)
        return value
    if value is None:
        raise _Rejection(("no input was given (workflow.run(..., input=...))",))
    if not isinstance(value, Mapping):
        raise _Rejection(
            (f"expected {cls.__name__} or a mapping of its fields, not {type(value).__name__}",)
        )
    global _converter
    import cattrs

    if _converter is None:
        _converter = cattrs.Converter(detailed_validation=True)
    try:
        return _converter.structure(value, cls)
    except cattrs.BaseValidationError as exc:
        raise _Rejection(
            tuple(_field_first(line) for line in cattrs.transform_error(exc, format_exception=_say))
        ) from exc


def _say(exc: BaseException, type: type[Any] | None) -> str:
    """cattrs' text for one failure, with the class's own message when the class (its
    validators) refused the value, which cattrs alone reports as "invalid value"."""
    from cattrs.v import format_exception

    said = format_exception(exc, type)
    if said == "invalid value" and str(exc):
        return f"invalid value ({exc})"
    return said


def _field_first(line: str) -> str:
    """``"invalid value ... @ $.quantity"`` as ``"quantity: invalid value ..."``."""
    said, at, path = line.rpartition(" @ $")
    if not at:
        return line
    path = path.lstrip(".")
    return f"{path}: {said}" if path else said


class _Rejection(ValueError):
    """A rejection with its problems listed (cattrs' transformed errors)."""

    def __init__(self, problems: tuple[str, ...]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _pydantic(model: Any, value: Any) -> Any:
    if isinstance(value, model):
        return value
    return model.model_validate(value)
