"""Values a store cannot hold fail with SerializationError, the same on every store.

Issue 16, item 11: a cyclic list, a list nested 5,000 deep and a 10,000-digit int
used to give ``UnexpectedError`` (a RecursionError or ValueError from the encoder)
from a durable run's step, and crashed the run's final write.  Each must fail the
step that produced it (or the run, for its result) with the documented
``SerializationError(step, type_name, reason)``, on every store and both backends;
and data just inside the limits must come back whole.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from awaitly_anyio import (
    Deps,
    Err,
    Ok,
    SerializationError,
    WorkflowContext,
    create_workflow,
    register_type,
)
from awaitly_anyio.serialization import (
    MAX_DEPTH,
    MAX_INT_DIGITS,
    decode_value,
    encode_value,
    safe_repr,
)

pytestmark = pytest.mark.anyio


@register_type(name="test_unstorable.Node")
@attrs.define(eq=False)
class Node:
    """A registered class whose instances can be made to point at themselves."""

    label: str
    next: Any = None


@register_type(name="test_unstorable.Box")
@attrs.frozen
class Box:
    """A registered class holding plain data (lists of ints come back as they were)."""

    content: Any


def boxed(outer: int, inner: int) -> Any:
    """``outer`` lists around a Box holding ``inner`` lists: outer + 1 + inner containers."""
    return nested(outer, lambda value: [value] if value != 0 else [Box(nested(inner))])


@register_type(name="test_unstorable.Tag")
class Tag(enum.Enum):
    A = "a"


def nested(depth: int, wrap: Callable[[Any], Any] = lambda inner: [inner]) -> Any:
    """A value with ``depth`` containers around its innermost ``0``."""
    value: Any = 0
    for _ in range(depth):
        value = wrap(value)
    return value


def cyclic_list() -> list[Any]:
    items: list[Any] = [1]
    items.append(items)
    return items


def cyclic_dict() -> dict[str, Any]:
    doc: dict[str, Any] = {"a": 1}
    doc["self"] = [doc]
    return doc


def cyclic_node() -> Node:
    node = Node("loop")
    node.next = node
    return node


def cyclic_free_shared() -> list[Any]:
    """The same list twice: shared, not cyclic, so it is stored (as two copies)."""
    shared = [1, 2]
    return [shared, {"again": shared}]


# name -> (a value that cannot be stored, the type name and words its error must give)
UNSTORABLE: dict[str, tuple[Callable[[], Any], str, str]] = {
    "cyclic list": (cyclic_list, "builtins.list", "cyclic"),
    "cyclic dict": (cyclic_dict, "builtins.", "cyclic"),
    "cyclic registered class": (cyclic_node, "Node", "cyclic"),
    "list nested 5000 deep": (lambda: nested(5000), "builtins.list", "deeper than 100"),
    "dict nested 5000 deep": (
        lambda: nested(5000, lambda inner: {"k": inner}),
        "builtins.dict",
        "deeper than 100",
    ),
    "tuple one level too deep": (
        lambda: nested(MAX_DEPTH + 1, lambda inner: (inner,)),
        "builtins.tuple",
        "deeper than 100",
    ),
    "registered class one level too deep": (
        lambda: boxed(50, 50),
        "Box",
        "nested deeper than 100",
    ),
    "10,000-digit int": (lambda: 10**10_000, "builtins.int", "more than 4300 digits"),
    "negative 4301-digit int": (lambda: -(10**4300), "builtins.int", "more than 4300 digits"),
    "int deep in a list": (lambda: [1, {"x": (10**5000,)}], "builtins.int", "4300 digits"),
    "lone surrogate": (lambda: ["ok", {"text": "a\udc80b"}], "builtins.str", "surrogate"),
}


def check_error(error: object, step: str, case: str) -> None:
    _, type_name, words = UNSTORABLE[case]
    assert isinstance(error, SerializationError), error
    assert error.step == step
    assert type_name in error.type_name
    assert words in error.reason


@pytest.mark.parametrize("case", list(UNSTORABLE))
async def test_a_step_value_that_cannot_be_stored_fails_its_step(store: Any, case: str) -> None:
    make = UNSTORABLE[case][0]
    workflow = create_workflow("unstorable")
    after: list[str] = []

    async def body(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step("produce", make, key="produce")
        after.append("ran")
        return "done"

    result = await workflow.run(body, workflow_id="step-run", store=store)
    assert isinstance(result, Err), result
    check_error(result.error, "produce", case)
    assert after == []  # the run stopped at the step that produced the value
    snapshot = await store.load("step-run")
    assert snapshot is not None
    assert snapshot.status == "failed"
    assert "produce" not in snapshot.steps  # nothing half-written


@pytest.mark.parametrize("case", list(UNSTORABLE))
async def test_a_result_that_cannot_be_stored_fails_the_run(store: Any, case: str) -> None:
    make = UNSTORABLE[case][0]
    workflow = create_workflow("unstorable")

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return make()

    result = await workflow.run(body, workflow_id="result-run", store=store)
    assert isinstance(result, Err), result
    check_error(result.error, "<result>", case)
    snapshot = await store.load("result-run")
    assert snapshot is not None
    # The run is over (not left running with its lease), and says why.
    assert snapshot.status == "failed"
    assert snapshot.result is not None
    assert not snapshot.result.ok


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(nested(MAX_DEPTH), id="lists"),
        pytest.param(nested(MAX_DEPTH, lambda inner: {"k": inner}), id="dicts"),
        pytest.param(nested(MAX_DEPTH, lambda inner: (inner, b"x")), id="tuples"),
        # the tuple key is the 100th container
        pytest.param(nested(MAX_DEPTH - 1, lambda inner: {(1, 2): inner}), id="tagged-dicts"),
        pytest.param(boxed(50, 49), id="registered"),
        pytest.param(10**MAX_INT_DIGITS - 1, id="4300-digit-int"),
        pytest.param(-(10**MAX_INT_DIGITS - 1), id="negative-4300-digit-int"),
        pytest.param([Tag.A, cyclic_free_shared()], id="shared-not-cyclic"),
    ],
)
async def test_values_at_the_limits_come_back_whole(store: Any, value: Any) -> None:
    workflow = create_workflow("limits")

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step("produce", lambda: value, key="produce")

    result = await workflow.run(body, workflow_id="limits-run", store=store)
    assert result == Ok(value)
    snapshot = await store.load("limits-run")
    assert snapshot is not None
    assert snapshot.steps["produce"].result == Ok(value)
    assert snapshot.result == Ok(value)


def test_encode_value_gives_a_clear_type_error() -> None:
    with pytest.raises(TypeError, match="cyclic"):
        encode_value(cyclic_list())
    with pytest.raises(TypeError, match="nested deeper than 100"):
        encode_value(nested(5000))
    with pytest.raises(TypeError, match="more than 4300 digits"):
        encode_value(10**10_000)
    value = nested(MAX_DEPTH // 2, lambda inner: {"k": (inner,)})
    assert decode_value(encode_value(value)) == value


def test_safe_repr_never_raises() -> None:
    assert safe_repr(cyclic_list())
    assert safe_repr(nested(5000))
    assert safe_repr(10**10_000) == "<builtins.int of about 10001 digits>"
    assert len(safe_repr(list(range(10_000)))) < 200
    assert safe_repr(ValueError("card 4000-0000-0000-0002 declined")) == repr(
        ValueError("card 4000-0000-0000-0002 declined")
    )


def test_the_int_limit_is_pythons_default() -> None:
    assert sys.int_info.default_max_str_digits == MAX_INT_DIGITS


@pytest.mark.parametrize(
    "case",
    [
        "cyclic list",
        "list nested 5000 deep",
        "10,000-digit int",
    ],
)
async def test_an_error_value_that_cannot_be_stored_is_kept_as_text(store: Any, case: str) -> None:
    error = UNSTORABLE[case][0]()
    workflow = create_workflow("unstorable")

    async def body(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step("fail", lambda: Err(error), key="fail")
        return "never"

    result = await workflow.run(body, workflow_id="error-run", store=store)
    assert isinstance(result, Err)
    assert result.error is error  # the caller gets its own error back
    snapshot = await store.load("error-run")
    assert snapshot is not None
    assert snapshot.status == "failed"
    assert snapshot.result is not None
    assert not snapshot.result.ok


async def test_a_secret_is_never_stored_and_the_error_says_so(store: Any) -> None:
    from awaitly_anyio import register_type
    from awaitly_anyio.config import Secret

    secret = Secret("s3cr3t-token")
    result = await create_workflow("w").run(
        lambda ctx: ctx.step("token", lambda: secret, key="token"),
        workflow_id="with-secret",
        store=store,
    )
    assert isinstance(result, Err)
    assert "never stored" in str(result.error)
    assert "register_type" not in str(result.error)
    assert "s3cr3t" not in str(result.error)
    with pytest.raises(TypeError, match="never stored"):
        register_type(Secret)
