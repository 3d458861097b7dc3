"""Damaged runs in a durable run and in recovery: refused with SnapshotDecodeError, left
byte for byte as they were, and reported, never re-run or rewritten (issue 16, items
2, 3 and 10), on every store and both backends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from awaitly_anyio import (
    Deps,
    Err,
    Ok,
    RecoveredRun,
    SnapshotDecodeError,
    WorkflowContext,
    WorkflowRegistry,
    create_workflow,
    recover,
)
from awaitly_anyio.testing import FakeClock

from . import postgres_kit, redis_kit
from .kit_base import cli, encoded
from .store_kits import StoreKit

pytestmark = pytest.mark.anyio

# Damage a durable start must refuse, and a word of the reason it gives.
PARTS = {
    "step": "step",
    "deep": "deep",
    "newer": "newer release",
    "metadata": "metadata",
    "created_at": "created_at",
}


class Body:
    """A workflow body that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, ctx: WorkflowContext[Deps]) -> str:
        self.calls += 1
        await ctx.step("pay", lambda: "paid", key="pay")
        return "done"


async def _abandoned(store: Any, id: str, *, failed: bool) -> None:
    """A run whose worker paid and then died (``running``, its lease run out later), or
    that failed (``failed``, its error stored)."""
    await store.claim(id, "orders", owner="dead", lease=10, metadata={"input": 7})
    await store.checkpoint(id, encoded("pay", "paid"), owner="dead")
    if failed:
        await store.finish(
            id, "failed", Err("declined"), '{"ok":false,"error":"declined"}', owner="dead"
        )


@pytest.mark.parametrize("part", list(PARTS))
async def test_starting_a_damaged_run_is_refused_and_rewrites_nothing(
    kit: StoreKit, store: Any, clock: FakeClock, part: str
) -> None:
    await _abandoned(store, "order-7", failed=True)
    await kit.damage(store, "order-7", part)
    before = await kit.raw(store, "order-7")
    body = Body()
    orders = create_workflow("orders", clock=clock)

    for _ in range(2):  # and again: the first refusal changed nothing
        result = await orders.run(body, workflow_id="order-7", store=store)
        assert await kit.raw(store, "order-7") == before
        assert isinstance(result, Err)
        assert isinstance(result.error, SnapshotDecodeError)
        assert result.error.run_id == "order-7"
        assert PARTS[part] in result.error.reason
    assert body.calls == 0


@pytest.mark.parametrize("part", list(PARTS))
async def test_recovery_reports_a_damaged_run_and_never_claims_it(
    kit: StoreKit, store: Any, clock: FakeClock, part: str
) -> None:
    await _abandoned(store, "order-7", failed=False)
    clock.advance(1)
    await _abandoned(store, "order-8", failed=False)
    await kit.damage(store, "order-7", part)
    before = await kit.raw(store, "order-7")
    clock.advance(30)  # both leases ran out
    body = Body()
    registry = WorkflowRegistry()
    registry.register(create_workflow("orders", clock=clock), body)

    recovered = await recover(store, registry, owner="rescuer", limit=1)
    assert await kit.raw(store, "order-7") == before
    assert [run.id for run in recovered] == ["order-8", "order-7"]
    assert recovered[0] == RecoveredRun("order-8", "orders", Ok("done"))
    error = recovered[1].result
    assert isinstance(error, Err)
    assert isinstance(error.error, SnapshotDecodeError)
    assert error.error.run_id == "order-7"
    assert PARTS[part] in error.error.reason
    assert body.calls == 1
    assert await kit.raw(store, "order-7") == before

    # The next pass reports it again and still leaves it alone.
    again = await recover(store, registry, owner="rescuer")
    assert [run.id for run in again] == ["order-7"]
    assert not again[0].result.ok
    assert body.calls == 1
    assert await kit.raw(store, "order-7") == before


# ---- the CLI lists damaged runs, flagged, beside the others ---------------------------------

CLI_DAMAGE = {"sqlite": "created_at", "postgres": "created_at", "redis": "wrong_type"}


@pytest.mark.needs_url_store
async def test_the_cli_lists_a_damaged_run_flagged_beside_the_others(
    kit: StoreKit, store: Any, tmp_path: Path, anyio_backend: str
) -> None:
    for id in ("order-1", "order-7"):
        await _abandoned(store, id, failed=True)
    await kit.damage(store, "order-7", CLI_DAMAGE[kit.name])  # type: ignore[arg-type]
    before = await kit.raw(store, "order-7")
    if kit.name == "sqlite":
        where = ["--store", f"sqlite:///{tmp_path / 'runs.db'}"]
    elif kit.name == "postgres":
        where = ["--store", postgres_kit.DSN, "--schema", postgres_kit.schema_for(tmp_path)]
    else:
        where = ["--store", redis_kit.URL, "--key-prefix", store.prefix]
    backend = "trio" if anyio_backend == "trio" else "asyncio"

    table = await anyio.to_thread.run_sync(cli, "runs", *where, "--backend", backend, "list")
    as_json = await anyio.to_thread.run_sync(
        cli, "runs", *where, "--backend", backend, "--json", "list"
    )

    for done in (table, as_json):
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    assert "order-1" in table.stdout
    assert "DAMAGED" in table.stdout
    assert "damaged run 'order-7'" in table.stdout
    items = {item["id"]: item for item in json.loads(as_json.stdout)["items"]}
    assert sorted(items) == ["order-1", "order-7"]
    assert items["order-1"]["damaged"] is None
    assert items["order-7"]["damaged"]
    assert await kit.raw(store, "order-7") == before
