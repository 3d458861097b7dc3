"""A step option of the wrong type or a misspelt choice fails where it is written.

At ``RetryPolicy(...)`` or at the ``ctx.step...(...)`` call, with a message naming
the option, the value given and what is allowed (never attrs' ``Attribute(...)``
repr); a wrong type is a ``TypeError``, a value out of range a ``ValueError``.
Inside a run the error ends the run as ``Err(UnexpectedError(cause=...))`` before
the step's function is called.  Issue #17.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from awaitly_anyio import (
    Deps,
    Err,
    RetryPolicy,
    UnexpectedError,
    WorkflowContext,
    create_workflow,
)
from awaitly_anyio.testing import FakeClock


def _never_called() -> int:
    raise AssertionError("the step function ran despite a bad option")


@pytest.mark.parametrize(
    ("kwargs", "error", "expected"),
    [
        (
            {"attempts": 3, "backoff": "expo"},
            ValueError,
            "backoff must be one of 'exponential', 'linear', 'constant', not 'expo'",
        ),
        (
            {"attempts": 3, "backoff": 2},
            TypeError,
            "backoff must be one of 'exponential', 'linear', 'constant', not 2",
        ),
        ({"attempts": "3"}, TypeError, "attempts must be an integer >= 1, not '3'"),
        ({"attempts": True}, TypeError, "attempts must be an integer >= 1, not True"),
        ({"attempts": 0}, ValueError, "attempts must be an integer >= 1, not 0"),
        ({"attempts": 2, "delay": "1s"}, TypeError, "delay must be a finite number >= 0, not '1s'"),
        ({"attempts": 2, "delay": -1}, ValueError, "delay must be a finite number >= 0, not -1"),
        (
            {"attempts": 2, "max_delay": "x"},
            TypeError,
            "max_delay must be a finite number >= 0, not 'x'",
        ),
        (
            {"attempts": 2, "jitter": None},
            TypeError,
            "jitter must be a finite number >= 0, not None",
        ),
        (
            {"attempts": 2, "retry_on": 5},
            TypeError,
            "retry_on must be a function taking the failure and returning a bool (or None), not 5",
        ),
        (
            {"attempts": 2, "timeout": "1"},
            TypeError,
            "timeout must be a number of seconds > 0, not '1'",
        ),
        (
            {"attempts": 2, "timeout": 0},
            ValueError,
            "timeout must be a number of seconds > 0, not 0",
        ),
    ],
)
def test_retry_policy_names_the_option_the_value_and_what_is_allowed(
    kwargs: dict[str, Any], error: type[Exception], expected: str
) -> None:
    with pytest.raises(error) as raised:
        RetryPolicy(**kwargs)
    message = str(raised.value)
    assert message == expected
    assert "Attribute(" not in message


Call = Callable[[WorkflowContext[Deps]], Awaitable[object]]

STEP_CASES: list[tuple[str, Call, type[Exception], str]] = [
    (
        "retry not a policy",
        lambda ctx: ctx.step("charge", _never_called, retry=3),  # type: ignore[call-overload]
        TypeError,
        "step 'charge': retry must be a RetryPolicy, not 3",
    ),
    (
        "timeout of the wrong type",
        lambda ctx: ctx.step("charge", _never_called, timeout="5"),  # type: ignore[call-overload]
        TypeError,
        "step 'charge': timeout must be a number of seconds > 0, not '5'",
    ),
    (
        "timeout out of range",
        lambda ctx: ctx.step("charge", _never_called, timeout=-1),
        ValueError,
        "step 'charge': timeout must be a number of seconds > 0, not -1",
    ),
    (
        "type not a class",
        lambda ctx: ctx.step("charge", _never_called, type="Receipt"),  # type: ignore[call-overload]
        TypeError,
        "step 'charge': type must be a class (the class of the step's value), not 'Receipt'",
    ),
    (
        "misspelt backoff",
        lambda ctx: ctx.step.retry(
            "charge",
            _never_called,
            attempts=3,
            backoff="expo",  # type: ignore[arg-type]
        ),
        ValueError,
        "step 'charge': backoff must be one of 'exponential', 'linear', 'constant', not 'expo'",
    ),
    (
        "misspelt retry option",
        lambda ctx: ctx.step.retry("charge", _never_called, attempts=3, delays=1.0),  # type: ignore[call-overload]
        TypeError,
        "step 'charge': RetryPolicy.__init__() got an unexpected keyword argument 'delays'",
    ),
    (
        "attempts of the wrong type",
        lambda ctx: ctx.step.retry("charge", _never_called, attempts="3"),  # type: ignore[call-overload]
        TypeError,
        "step 'charge': attempts must be an integer >= 1, not '3'",
    ),
    (
        "with_timeout seconds",
        lambda ctx: ctx.step.with_timeout("charge", _never_called, seconds="2"),  # type: ignore[call-overload]
        TypeError,
        "step 'charge': seconds must be a number of seconds > 0, not '2'",
    ),
    (
        "try_ type not a class",
        lambda ctx: ctx.step.try_("charge", _never_called, error="E", type=5),  # type: ignore[call-overload]
        TypeError,
        "step 'charge': type must be a class (the class of the step's value), not 5",
    ),
    (
        "sleep seconds of the wrong type",
        lambda ctx: ctx.step.sleep("nap", "2"),  # type: ignore[arg-type]
        TypeError,
        "step 'nap': seconds must be a number >= 0, not '2'",
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("call", "error", "expected"),
    [case[1:] for case in STEP_CASES],
    ids=[case[0] for case in STEP_CASES],
)
async def test_a_bad_step_option_fails_at_the_call(
    call: Call, error: type[Exception], expected: str
) -> None:
    raised: list[BaseException] = []

    async def body(ctx: WorkflowContext[Deps]) -> object:
        try:
            return await call(ctx)
        except Exception as exc:  # the error comes out of the call that was written
            raised.append(exc)
            raise

    # A listener and a fake clock: the checks hold on the evented path too.
    workflow = create_workflow("options", on_event=lambda event: None, clock=FakeClock())
    result = await workflow.run(body)
    assert len(raised) == 1
    assert type(raised[0]) is error
    assert str(raised[0]) == expected
    assert "Attribute(" not in str(raised[0])
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    assert result.error.cause is raised[0]


@pytest.mark.anyio
async def test_a_bad_step_option_fails_without_listeners_too() -> None:
    """The fast path (no listeners, no store) checks ``type=`` as well."""

    async def body(ctx: WorkflowContext[Deps]) -> object:
        return await ctx.step("charge", _never_called, type=5)  # type: ignore[call-overload]

    result = await create_workflow("options").run(body)
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    assert str(result.error.cause) == (
        "step 'charge': type must be a class (the class of the step's value), not 5"
    )


@pytest.mark.anyio
async def test_try_error_mapper_gets_the_exception() -> None:
    seen: list[Exception] = []

    def boom() -> int:
        raise ConnectionError("card network down")

    def declined(exc: Exception) -> str:
        seen.append(exc)
        return f"DECLINED: {exc}"

    async def body(ctx: WorkflowContext[Deps]) -> int:
        return await ctx.step.try_("charge", boom, error=declined)

    result = await create_workflow("try").run(body)
    assert result == Err("DECLINED: card network down")
    assert len(seen) == 1
    assert isinstance(seen[0], ConnectionError)
