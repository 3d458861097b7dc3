"""Per-run options of ``workflow.run``: ``deps=`` (merged over the workflow's),
``context=`` (``ctx.context``, on every event) and the workflow's ``validate_input``."""

from __future__ import annotations

import dataclasses
import json
import pickle
from typing import Any

import attrs
import pytest

from awaitly_anyio import (
    Deps,
    Err,
    InputValidationError,
    Ok,
    Result,
    UnexpectedError,
    WorkflowContext,
    create_workflow,
    events,
)

pytestmark = pytest.mark.anyio


# ---- deps ---------------------------------------------------------------------------------


async def test_run_deps_merge_over_the_workflows_for_that_run_only() -> None:
    workflow = create_workflow(
        "checkout", {"charge": lambda: "real charge", "email": lambda: "real email"}
    )

    async def body(ctx: WorkflowContext[Deps]) -> tuple[str, str]:
        return await ctx.steps.charge(), await ctx.steps.email()

    assert await workflow.run(body, deps={"charge": lambda: "fake charge"}) == Ok(
        ("fake charge", "real email")
    )
    assert await workflow.run(body) == Ok(("real charge", "real email"))
    assert set(workflow.deps) == {"charge", "email"}


async def test_run_deps_replace_a_deps_object() -> None:
    @dataclasses.dataclass
    class Services:
        greeting: str

    workflow = create_workflow("hello", Services("hello"))

    async def body(ctx: WorkflowContext[Services]) -> str:
        return ctx.deps.greeting

    assert await workflow.run(body, deps=Services("bonjour")) == Ok("bonjour")
    assert await workflow.run(body) == Ok("hello")
    with pytest.raises(TypeError, match="its deps are a Services, so run"):
        workflow.run(body, deps={"greeting": "hi"})


def test_bad_run_deps_are_refused_when_run_is_called() -> None:
    workflow = create_workflow("w", {"a": print})

    async def body(ctx: WorkflowContext[Deps]) -> None:
        return None

    with pytest.raises(TypeError, match=r"workflow 'w': run\(deps=...\) must be a mapping"):
        workflow.run(body, deps=[print])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dependency names must be strings"):
        workflow.run(body, deps={1: print})


async def test_each_tenant_gets_its_own_deps() -> None:
    workflow = create_workflow("greet")

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.steps.db("user-1")

    tenants = {
        "acme": {"db": lambda user: f"acme:{user}"},
        "globex": {"db": lambda user: f"globex:{user}"},
    }
    results = [await workflow.run(body, deps=deps) for deps in tenants.values()]
    assert results == [Ok("acme:user-1"), Ok("globex:user-1")]


# ---- context ------------------------------------------------------------------------------


async def test_context_is_on_ctx_and_on_every_event_of_the_run() -> None:
    seen: list[events.WorkflowEvent] = []
    workflow = create_workflow("checkout", {"charge": lambda: "ok"}, on_event=seen.append)

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        await ctx.steps.charge()
        await ctx.step("fails", lambda: Err("NO"))
        return dict(ctx.context)

    result = await workflow.run(body, context={"request_id": "r-1", "tenant": "acme"})
    assert result == Err("NO")
    assert [e.type for e in seen] == [
        "workflow_start",
        "step_start",
        "step_complete",
        "step_start",
        "step_error",
        "workflow_error",
    ]
    assert all(e.context == {"request_id": "r-1", "tenant": "acme"} for e in seen)


async def test_a_run_without_context_has_none_on_its_events_and_an_empty_ctx_context() -> None:
    seen: list[events.WorkflowEvent] = []
    workflow = create_workflow("w", on_event=seen.append)

    async def body(ctx: WorkflowContext[Deps]) -> dict[str, Any]:
        await ctx.step("one", lambda: 1)
        return dict(ctx.context)

    assert await workflow.run(body, context={"request_id": "r-1"}) == Ok({"request_id": "r-1"})
    seen.clear()
    assert await workflow.run(body) == Ok({})
    assert seen
    assert all(e.context is None for e in seen)


async def test_the_context_is_a_frozen_copy() -> None:
    given: dict[str, Any] = {"request_id": "r-1", "tags": ["a", "b"], "user": {"id": 7}}
    workflow = create_workflow("w")
    leaked: list[Any] = []

    async def body(ctx: WorkflowContext[Deps]) -> None:
        given["request_id"] = "changed"
        leaked.append(ctx.context)
        with pytest.raises(TypeError):
            ctx.context["request_id"] = "x"  # type: ignore[index]

    assert await workflow.run(body, context=given) == Ok(None)
    (context,) = leaked
    assert context["request_id"] == "r-1"
    # a read-only dict: JSON and pickle take it as they take a dict
    assert json.loads(json.dumps(context)) == {
        "request_id": "r-1",
        "tags": ["a", "b"],
        "user": {"id": 7},
    }
    assert pickle.loads(pickle.dumps(context)) == context
    with pytest.raises(TypeError, match="read-only"):
        context["user"]["id"] = 8
    with pytest.raises(TypeError, match="read-only"):
        context.update(request_id="x")
    assert context["tags"] == ("a", "b")
    assert context["user"] == {"id": 7}


@pytest.mark.parametrize(
    ("context", "kind", "words"),
    [
        ("r-1", TypeError, "context must be a mapping"),
        ({1: "x"}, TypeError, "context keys must be non-empty strings"),
        ({"": "x"}, TypeError, "context keys must be non-empty strings"),
        ({"when": object()}, TypeError, r"context\['when'\] must be a JSON value"),
        ({"ratio": float("nan")}, ValueError, r"context\['ratio'\] must be a finite number"),
        ({"user": {"ids": [1, {2}]}}, TypeError, r"context\['user'\]\['ids'\]\[1\]"),
        ({"user": {3: 1}}, TypeError, "keys must be strings"),
    ],
)
def test_bad_context_is_refused_when_run_is_called(
    context: Any, kind: type[Exception], words: str
) -> None:
    workflow = create_workflow("w")

    async def body(ctx: WorkflowContext[Deps]) -> None:
        return None

    with pytest.raises(kind, match=words):
        workflow.run(body, context=context)


# ---- input validation ---------------------------------------------------------------------


@attrs.frozen
class Order:
    sku: str
    quantity: int = attrs.field(validator=attrs.validators.ge(1))


@dataclasses.dataclass(frozen=True)
class Refund:
    order_id: str
    amount: float


def no_step_ran(seen: list[events.WorkflowEvent]) -> bool:
    return not any(e.type.startswith("step_") for e in seen)


async def test_an_attrs_class_structures_a_mapping_and_rejects_bad_fields() -> None:
    seen: list[events.WorkflowEvent] = []
    workflow = create_workflow("order", validate_input=Order, on_event=seen.append)

    async def body(ctx: WorkflowContext[Deps]) -> Order:
        order: Order = ctx.input
        await ctx.step("reserve", lambda: order.sku)
        return order

    assert await workflow.run(body, input={"sku": "book", "quantity": 2}) == Ok(Order("book", 2))
    assert await workflow.run(body, input=Order("lamp", 1)) == Ok(Order("lamp", 1))

    seen.clear()
    result = await workflow.run(body, input={"sku": "book", "quantity": "many"})
    assert isinstance(result, Err)
    error = result.error
    assert isinstance(error, InputValidationError)
    assert error.workflow_name == "order"
    assert any("quantity" in problem for problem in error.problems)
    assert no_step_ran(seen)
    assert [e.type for e in seen] == ["workflow_start", "workflow_error"]

    missing = await workflow.run(body, input={"quantity": 2})
    assert isinstance(missing, Err)
    assert any("sku" in problem for problem in missing.error.problems)

    too_few = await workflow.run(body, input={"sku": "book", "quantity": 0})
    assert isinstance(too_few, Err)
    assert isinstance(too_few.error, InputValidationError)
    assert "quantity" in str(too_few.error)

    not_a_mapping = await workflow.run(body, input="book")
    assert isinstance(not_a_mapping, Err)
    assert not_a_mapping.error.problems == ("expected Order or a mapping of its fields, not str",)

    nothing = await workflow.run(body)
    assert isinstance(nothing, Err)
    assert nothing.error.problems == ("no input was given (workflow.run(..., input=...))",)


async def test_a_dataclass_is_structured_too() -> None:
    workflow = create_workflow("refund", validate_input=Refund)

    async def body(ctx: WorkflowContext[Deps]) -> float:
        refund: Refund = ctx.input
        return refund.amount

    assert await workflow.run(body, input={"order_id": "o-1", "amount": 9.5}) == Ok(9.5)
    bad = await workflow.run(body, input={"order_id": "o-1"})
    assert isinstance(bad, Err)
    assert isinstance(bad.error, InputValidationError)
    assert any("amount" in problem for problem in bad.error.problems)


async def test_a_pydantic_model_validates_and_names_the_field_without_the_value() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Signup(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        email: str
        age: int = pydantic.Field(ge=18)

    workflow = create_workflow("signup", validate_input=Signup)

    async def body(ctx: WorkflowContext[Deps]) -> int:
        return int(ctx.input.age)

    assert await workflow.run(body, input={"email": "a@example.com", "age": 30}) == Ok(30)
    bad = await workflow.run(body, input={"email": "a@example.com", "age": 12345 % 10})
    assert isinstance(bad, Err)
    error = bad.error
    assert isinstance(error, InputValidationError)
    assert len(error.problems) == 1
    assert error.problems[0].startswith("age: ")
    secret = await workflow.run(body, input={"email": "hunter2-secret", "age": "x"})
    assert isinstance(secret, Err)
    assert "hunter2-secret" not in str(secret.error)
    assert "age" in str(secret.error)


async def test_a_callable_returns_the_value_or_rejects_by_err_or_by_raising() -> None:
    def positive(value: Any) -> Result[int, str]:
        if not isinstance(value, int):
            raise TypeError(f"expected an int, got {type(value).__name__}")
        return Ok(value) if value > 0 else Err("must be positive")

    workflow = create_workflow("count", validate_input=positive)

    async def body(ctx: WorkflowContext[Deps, int]) -> int:
        return ctx.input * 2

    assert await workflow.run(body, input=21) == Ok(42)
    assert await workflow.run(body, input=-1) == Err(
        InputValidationError("count", ("must be positive",))
    )
    raised = await workflow.run(body, input="x")  # type: ignore[arg-type]
    assert raised == Err(InputValidationError("count", ("expected an int, got str",)))
    assert isinstance(raised, Err)
    assert isinstance(raised.error.__cause__, TypeError)


async def test_an_async_callable_is_awaited() -> None:
    async def known_user(value: Any) -> str:
        if value not in {"ada", "grace"}:
            return Err(InputValidationError("users", ("user: unknown",)))  # type: ignore[return-value]
        return str(value).title()

    workflow = create_workflow("users", validate_input=known_user)

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return str(ctx.input)

    assert await workflow.run(body, input="ada") == Ok("Ada")
    assert await workflow.run(body, input="eve") == Err(
        InputValidationError("users", ("user: unknown",))
    )


async def test_a_validator_that_crashes_is_a_bug_not_a_rejection() -> None:
    def broken(value: Any) -> Any:
        return value.missing_attribute

    workflow = create_workflow("w", validate_input=broken)

    async def body(ctx: WorkflowContext[Deps]) -> None:
        return None

    result = await workflow.run(body, input=1)
    assert isinstance(result, Err)
    assert isinstance(result.error, UnexpectedError)
    assert isinstance(result.error.cause, AttributeError)


@pytest.mark.parametrize("spec", ["Order", 42, Order(sku="a", quantity=1)])
def test_validate_input_must_be_a_class_or_a_callable(spec: Any) -> None:
    with pytest.raises(TypeError, match="validate_input must be an attrs class"):
        create_workflow("w", validate_input=spec)


# ---- durable runs -------------------------------------------------------------------------


async def test_a_rejected_durable_run_is_recorded_failed_and_runs_nothing(store: Any) -> None:
    calls: list[str] = []
    workflow = create_workflow("order", {"reserve": calls.append}, validate_input=Order)

    async def body(ctx: WorkflowContext[Deps]) -> str:
        await ctx.steps.reserve(ctx.input.sku)
        return "done"

    result = await workflow.run(
        body, workflow_id="order-1", store=store, input={"sku": "book", "quantity": -3}
    )
    assert isinstance(result, Err)
    assert isinstance(result.error, InputValidationError)
    assert calls == []
    snapshot = await store.load("order-1")
    assert snapshot.status == "failed"
    assert snapshot.steps == {}
    assert "quantity" in snapshot.metadata["awaitly.error"]


async def test_a_resumed_durable_run_validates_its_stored_input(store: Any) -> None:
    fail = [True]
    workflow = create_workflow("order", validate_input=Order)

    async def body(ctx: WorkflowContext[Deps]) -> str:
        order: Order = ctx.input
        assert isinstance(order, Order)
        await ctx.step("reserve", lambda: f"reserved {order.sku}", key="reserve")
        if fail[0]:
            fail[0] = False
            await ctx.step("pay", lambda: Err("DECLINED"))
        return f"{order.quantity} x {order.sku}"

    first = await workflow.run(
        body, workflow_id="order-2", store=store, input={"sku": "lamp", "quantity": 2}
    )
    assert first == Err("DECLINED")
    # resumed without an input: the stored one (a mapping) is validated again
    assert await workflow.run(body, workflow_id="order-2", store=store) == Ok("2 x lamp")


async def test_a_durable_runs_events_carry_its_context(store: Any) -> None:
    seen: list[events.WorkflowEvent] = []
    workflow = create_workflow("w", on_event=seen.append)

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.step("one", lambda: str(ctx.context["request_id"]), key="one")

    result = await workflow.run(
        body, workflow_id="run-ctx", store=store, context={"request_id": "r-9"}
    )
    assert result == Ok("r-9")
    assert seen
    assert all(e.context == {"request_id": "r-9"} for e in seen)


async def test_a_host_passes_deps_and_context_through_to_the_run() -> None:
    from awaitly_anyio import WorkflowHost

    seen: list[events.WorkflowEvent] = []
    workflow = create_workflow("hosted", {"greet": lambda: "hello"}, on_event=seen.append)

    async def body(ctx: WorkflowContext[Deps]) -> str:
        greeting: str = await ctx.steps.greet()
        return f"{greeting} {ctx.context['user']}"

    async with WorkflowHost() as host:
        handle = host.start(
            workflow, body, deps={"greet": lambda: "bonjour"}, context={"user": "ada"}
        )
        assert await handle.result() == Ok("bonjour ada")
    assert seen
    assert all(e.context == {"user": "ada"} for e in seen)
