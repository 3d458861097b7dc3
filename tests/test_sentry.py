"""The Sentry handler and run_with_sentry, with the real sentry-sdk and a recording transport."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

sentry_sdk = pytest.importorskip("sentry_sdk")

from sentry_sdk.transport import Transport  # noqa: E402

from awaitly_anyio import Deps, Err, Ok, WorkflowContext, create_workflow  # noqa: E402
from awaitly_anyio.sentry import create_sentry_handler, run_with_sentry  # noqa: E402

pytestmark = pytest.mark.anyio


class Recording(Transport):
    """Keeps every envelope instead of sending it."""

    envelopes: ClassVar[list[Any]] = []

    def capture_envelope(self, envelope: Any) -> None:
        Recording.envelopes.append(envelope)


@pytest.fixture
def sentry() -> Iterator[list[Any]]:
    Recording.envelopes = []
    sentry_sdk.init(dsn="http://public@127.0.0.1:9/1", transport=Recording, traces_sample_rate=1.0)
    yield Recording.envelopes
    sentry_sdk.get_client().close()
    sentry_sdk.init()  # back to no client


def events_of(envelopes: list[Any], kind: str) -> list[dict[str, Any]]:
    found = []
    for envelope in envelopes:
        for item in envelope.items:
            if item.type == kind:
                found.append(item.payload.json)
    return found


async def test_unexpected_errors_are_captured_with_their_workflow(sentry: list[Any]) -> None:
    handler = create_sentry_handler()
    workflow = create_workflow("checkout", on_event=handler.handle_event)

    def reserve() -> None:
        raise KeyError("sku-9")

    async def body(ctx: WorkflowContext[Deps]) -> None:
        await ctx.step("fetch_user", lambda: Err("NOT_FOUND"), key="u")

    async def broken(ctx: WorkflowContext[Deps]) -> None:
        await ctx.step("reserve", reserve)

    assert await workflow.run(body) == Err("NOT_FOUND")  # expected: not an issue
    result = await workflow.run(broken, workflow_id="order-9")
    assert isinstance(result, Err)
    sentry_sdk.flush()
    [event] = events_of(sentry, "event")
    [exception] = event["exception"]["values"]
    assert exception["type"] == "KeyError"
    assert exception["stacktrace"]["frames"]  # the original traceback travelled
    assert event["tags"]["workflow.name"] == "checkout"
    assert event["extra"]["workflow_id"] == "order-9"
    crumbs = [c["message"] for c in event["breadcrumbs"]["values"]]
    assert "step fetch_user failed: 'NOT_FOUND'" in crumbs
    assert any(c.startswith("step reserve failed: UnexpectedError") for c in crumbs)


async def test_run_with_sentry_wraps_the_run_in_a_span(sentry: list[Any]) -> None:
    workflow = create_workflow("checkout")

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.step("pay", lambda: "paid")

    with sentry_sdk.start_transaction(name="POST /checkout"):
        assert await run_with_sentry("checkout", lambda: workflow.run(body)) == Ok("paid")
    sentry_sdk.flush()
    [transaction] = events_of(sentry, "transaction")
    [span] = transaction["spans"]
    assert (span["op"], span["description"], span["status"]) == ("workflow", "checkout", "ok")
