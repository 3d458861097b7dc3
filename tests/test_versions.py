"""Workflow versions: recorded with each durable run; a run stored by another version
is refused (``Err(WorkflowVersionError)``), migrated (renames, removals, transforms,
chained) or restarted.  Bad definitions raise at ``create_workflow``.  Over every
store, on both backends."""

from __future__ import annotations

from typing import Any

import pytest

from awaitly_anyio import (
    Deps,
    Err,
    Migration,
    Ok,
    WorkflowContext,
    WorkflowVersionError,
    create_workflow,
)

pytestmark = pytest.mark.anyio


class Shop:
    """The services of an order; ``ship`` fails until ``up``.  ``done`` lists what ran."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.up = False

    def quote(self) -> dict[str, Any]:
        self.done.append("quote")
        return {"cents": 4200}

    def charge(self) -> str:
        self.done.append("charge")
        return "payment:1"

    def audit(self) -> str:
        self.done.append("audit")
        return "audited"

    def ship(self) -> Any:
        self.done.append("ship")
        return Ok("shipped") if self.up else Err("WAREHOUSE_DOWN")


async def version_1(store: Any, shop: Shop, run_id: str) -> None:
    """Version 1 records quote, charge and audit, then fails at ship."""

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        await ctx.step("quote", shop.quote)
        await ctx.step("charge", shop.charge)
        await ctx.step("audit", shop.audit)
        return await ctx.step("ship", shop.ship)

    workflow = create_workflow("order", version="1")
    assert await workflow.run(body, store=store, workflow_id=run_id) == Err("WAREHOUSE_DOWN")
    shop.done.clear()
    shop.up = True


def version_3_body(shop: Shop) -> Any:
    """Version 3 calls charge "charge_card", has no audit, and reads quote in euros."""

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        quote = await ctx.step("quote", shop.quote)
        payment = await ctx.step("charge_card", shop.charge)
        shipped = await ctx.step("ship", shop.ship)
        return [quote, payment, shipped]

    return body


async def test_a_run_of_another_version_is_refused_and_left_as_it_was(store: Any) -> None:
    shop = Shop()
    await version_1(store, shop, "v1")
    before = dict((await store.load("v1")).steps)
    workflow = create_workflow("order", version="3")
    result = await workflow.run(version_3_body(shop), store=store, workflow_id="v1")
    assert isinstance(result, Err)
    error = result.error
    assert isinstance(error, WorkflowVersionError)
    assert (error.run_id, error.stored, error.current) == ("v1", "1", "3")
    assert "no migration leads from version '1' to '3'" in str(error)
    assert shop.done == []
    after = await store.load("v1")
    assert dict(after.steps) == before
    assert after.status == "failed"


async def test_chained_migrations_bring_a_run_to_the_current_version(store: Any) -> None:
    shop = Shop()
    await version_1(store, shop, "chain")
    migrations = [
        Migration("1", "2").rename("charge", "charge_card"),
        Migration(2, 3)
        .remove("audit")
        .transform("quote", lambda quote: {**quote, "currency": "EUR"}),
    ]
    workflow = create_workflow("order", version=3, migrations=migrations)
    result = await workflow.run(version_3_body(shop), store=store, workflow_id="chain")
    assert result == Ok([{"cents": 4200, "currency": "EUR"}, "payment:1", "shipped"])
    assert shop.done == ["ship"]  # the charge was not made again
    # Resumed again (say it failed later): the run is of version 3 now, no migration.
    again = await workflow.run(version_3_body(shop), store=store, workflow_id="chain")
    assert again == result


async def test_a_migrated_run_resumes_again_after_a_later_failure(store: Any) -> None:
    shop = Shop()
    await version_1(store, shop, "later")
    shop.up = False
    workflow = create_workflow(
        "order",
        version="3",
        migrations=[
            Migration("1", "3").rename("charge", "charge_card").remove("audit"),
        ],
    )
    body = version_3_body(shop)
    assert await workflow.run(body, store=store, workflow_id="later") == Err("WAREHOUSE_DOWN")
    shop.up = True
    result = await workflow.run(body, store=store, workflow_id="later")
    assert result == Ok([{"cents": 4200}, "payment:1", "shipped"])
    assert shop.done == ["ship", "ship"]


async def test_a_removed_record_lets_its_step_run_again(store: Any) -> None:
    """Removing the records of the last recorded step (say its value changed meaning)
    makes it run again; a removed step in the middle of the records, still called
    where it was, would be drift (the steps recorded after it come first)."""
    shop = Shop()
    await version_1(store, shop, "removed")
    workflow = create_workflow(
        "order", version="2", migrations=[Migration("1", "2").remove("audit")]
    )

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        await ctx.step("quote", shop.quote)
        await ctx.step("charge", shop.charge)
        await ctx.step("audit", shop.audit)
        return await ctx.step("ship", shop.ship)

    assert await workflow.run(body, store=store, workflow_id="removed") == Ok("shipped")
    assert shop.done == ["audit", "ship"]


async def test_a_failing_transform_ends_the_run_with_a_version_error(store: Any) -> None:
    shop = Shop()
    await version_1(store, shop, "broken")

    def boom(_: object) -> object:
        raise KeyError("currency")

    workflow = create_workflow(
        "order", version="2", migrations=[Migration("1", "2").transform("quote", boom)]
    )
    result = await workflow.run(version_3_body(shop), store=store, workflow_id="broken")
    assert isinstance(result, Err)
    assert isinstance(result.error, WorkflowVersionError)
    assert "the migration '1' -> '2' failed: KeyError" in str(result.error)
    assert shop.done == []


async def test_restart_runs_a_run_of_another_version_from_the_start(store: Any) -> None:
    shop = Shop()
    await version_1(store, shop, "restart")
    workflow = create_workflow("order", version="3", on_version_mismatch="restart")
    result = await workflow.run(version_3_body(shop), store=store, workflow_id="restart")
    assert result == Ok([{"cents": 4200}, "payment:1", "shipped"])
    assert shop.done == ["quote", "charge", "ship"]
    snapshot = await store.load("restart")
    assert snapshot.steps["awaitly.step:audit#1"].result.ok is False  # discarded


async def test_a_run_stored_without_a_version_is_taken_as_the_current_one(store: Any) -> None:
    shop = Shop()

    async def body(ctx: WorkflowContext[Deps]) -> Any:
        await ctx.step("quote", shop.quote)
        return await ctx.step("ship", shop.ship)

    assert await create_workflow("order").run(body, store=store, workflow_id="old") == Err(
        "WAREHOUSE_DOWN"
    )
    shop.up = True
    versioned = create_workflow("order", version="7")
    assert await versioned.run(body, store=store, workflow_id="old") == Ok("shipped")
    assert shop.done == ["quote", "ship", "ship"]
    assert "awaitly.version" in (await store.load("old")).steps


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"version": 1.5}, TypeError, "version must be a string or an int, not 1.5"),
        ({"version": True}, TypeError, "version must be a string or an int, not True"),
        ({"version": ""}, ValueError, "version must not be empty"),
        (
            {"migrations": [Migration("1", "2")]},
            ValueError,
            "migrations need the workflow's version=",
        ),
        (
            {"version": "3", "migrations": [Migration("1", "2")]},
            ValueError,
            "leads to a version that does not exist",
        ),
        (
            {"version": "3", "migrations": [Migration("3", "4")]},
            ValueError,
            r"from version '3' \(the current version\) can never apply",
        ),
        (
            {"version": "3", "migrations": [Migration("1", "3"), Migration("1", "2")]},
            ValueError,
            "two migrations from version '1'",
        ),
        (
            {"version": "3", "migrations": [Migration("1", "2"), Migration("2", "1")]},
            ValueError,
            "go round in a circle",
        ),
        ({"version": "3", "migrations": ["1->3"]}, TypeError, "must be Migration objects"),
        ({"version": "3", "migrations": "1->3"}, TypeError, "must be a list of Migration"),
        ({"version": "3", "on_version_mismatch": "ignore"}, ValueError, "on_version_mismatch"),
    ],
)
def test_bad_version_definitions_are_refused_at_definition(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        create_workflow("order", **options)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: Migration("1", "1"), ValueError, "not '1' to itself"),
        (lambda: Migration(None, "2"), TypeError, "source must be a string or an int"),
        (lambda: Migration("1", "2").rename("", "x"), ValueError, "non-empty string"),
        (lambda: Migration("1", "2").transform("x", 3), TypeError, "fn must be callable"),
        (lambda: Migration("1", "2").rename("x", "awaitly.y"), ValueError, "library's own"),
    ],
)
def test_bad_migrations_are_refused(make: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        make()


def test_migrations_compose_in_order() -> None:
    migration = Migration("1", "2").rename("a", "b").transform("b", lambda v: v + 1).remove("gone")
    records = {
        "awaitly.step:a#1": 1,
        "awaitly.step:a#1/inner#1": "x",
        "awaitly.step:gone#1": 0,
        "awaitly.step:gone#1/inner#1": 0,
        "explicit": 5,
    }
    assert migration.apply(records) == {
        "awaitly.step:b#1": 2,
        "awaitly.step:b#1/inner#1": "x",
        "explicit": 5,
    }
    assert Migration("1", "2").rename("explicit", "renamed").apply(records)["renamed"] == 5
