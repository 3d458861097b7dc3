"""The README demo: a durable checkout on SQLite, interrupted and resumed, printed step by step."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import attrs

from . import events
from ._context import Deps, WorkflowContext
from ._result import Err, Ok, Result
from ._snapshot import WorkflowSnapshot
from ._store import SnapshotStore
from ._workflow import create_workflow
from .serialization import register_type
from .stores import open_store


@register_type(name="demo.User")
@attrs.frozen
class User:
    id: str
    email: str
    card: str


@register_type(name="demo.CardDeclined")
@attrs.frozen
class CardDeclined:
    card: str


class FakeServices:
    """In-memory stand-ins for a user service, a payment gateway and a mailer.

    ``interrupt`` is called when the receipt is about to be sent, to simulate the
    process being stopped at that point.
    """

    def __init__(self, interrupt: Callable[[], None] | None = None) -> None:
        self._gateway_calls = itertools.count(1)
        self.interrupt = interrupt
        self.charges: list[str] = []
        self.sent: list[str] = []

    async def fetch_user(self, user_id: str) -> Result[User, str]:
        await anyio.sleep(0.005)
        if user_id == "missing":
            return Err("USER_NOT_FOUND")
        card = "4000-0000-0000-0002" if user_id == "broke" else "4242-4242-4242-4242"
        return Ok(User(user_id, f"{user_id}@example.com", card))

    async def load_cart(self, user_id: str) -> list[str]:
        await anyio.sleep(0.005)
        return ["book", "lamp"]

    async def reserve(self, sku: str) -> str:
        await anyio.sleep(0.005)
        return f"reservation:{sku}"

    async def charge(self, user: User, cents: int) -> Result[str, CardDeclined]:
        await anyio.sleep(0.005)
        if next(self._gateway_calls) == 1:
            raise ConnectionError("payment gateway reset the connection")
        if user.card.endswith("0002"):
            return Err(CardDeclined(user.card))
        self.charges.append(f"{user.id}:{cents}")
        return Ok(f"payment:{user.id}:{cents}")

    async def send_receipt(self, email: str, payment: str) -> None:
        if self.interrupt is not None:
            interrupt, self.interrupt = self.interrupt, None
            interrupt()
            await anyio.sleep_forever()
        await anyio.sleep(0.005)
        self.sent.append(f"{email} <- {payment}")


def describe(event: events.WorkflowEvent) -> str | None:
    """One line per event worth showing; ``None`` for the rest."""
    match event:
        case events.WorkflowStart():
            return f"workflow {event.workflow_name!r} started (run {event.workflow_id})"
        case events.StepComplete(cached=True):
            return f"  step {event.name}: skipped, already done -> {event.value!r}"
        case events.StepComplete():
            return f"  step {event.name}: ok {event.value!r} ({event.duration_ms:.1f} ms)"
        case events.StepRetry():
            return (
                f"  step {event.name}: attempt {event.attempt} failed ({event.error!r}), "
                f"retrying in {event.delay:.2f}s"
            )
        case events.StepFailed():
            return f"  step {event.name}: failed with {event.error!r}"
        case events.StepCancelled():
            return f"  step {event.name}: interrupted"
        case events.WorkflowComplete():
            return f"workflow completed in {event.duration_ms:.1f} ms -> {event.value!r}"
        case events.WorkflowFailed():
            return f"workflow failed in {event.duration_ms:.1f} ms -> {event.error!r}"
        case events.WorkflowCancelled():
            return "workflow interrupted; its completed steps are saved"
        case events.WorkflowParked():
            return f"workflow parked: it waits in the store for {event.waiting_for!r}"
        case _:
            return None


async def checkout(ctx: WorkflowContext[Deps]) -> dict[str, Any]:
    """Fetch the user, reserve the cart's items at once, charge (with retries), send a receipt.

    Every step of a durable run is checkpointed and never repeated once done:
    ``load_cart``, given no key, under an automatic one.  ``total`` opts out
    (``checkpoint=False``: a cheap, pure computation), so it runs again on resume.
    """
    user: User = await ctx.step(
        "fetch_user", partial(ctx.deps.fetch_user, ctx.deps.user_id), key="user"
    )
    cart: list[str] = await ctx.step("load_cart", partial(ctx.deps.load_cart, user.id))
    cents: int = await ctx.step("total", lambda: 2_100 * len(cart), checkpoint=False)
    reservations = await ctx.step.all(
        "reserve", {sku: partial(ctx.deps.reserve, sku) for sku in cart}, key="reserve"
    )
    payment: str = await ctx.step.retry(
        "charge",
        lambda: ctx.deps.charge(user, cents),
        attempts=3,
        delay=0.05,
        retry_on=lambda failure: isinstance(failure, ConnectionError),
        key="charge",
    )
    await ctx.step(
        "send_receipt", lambda: ctx.deps.send_receipt(user.email, payment), key="receipt"
    )
    return {"payment": payment, "reservations": sorted(reservations.values())}


def _print_snapshot(snapshot: WorkflowSnapshot | None, out: Callable[[str], object]) -> None:
    if snapshot is None:
        out("  (nothing stored)")
        return
    out(f"  status {snapshot.status}, result {snapshot.result!r}")
    for key, record in snapshot.steps.items():
        out(f"  {key}: {record.result!r}")
    for key, value in snapshot.metadata.items():
        out(f"  metadata {key} = {value!r}")


async def _run(
    store: SnapshotStore,
    user_id: str,
    services: FakeServices,
    run_id: str,
    out: Callable[[str], object],
) -> Any:
    deps = {
        "user_id": user_id,
        "fetch_user": services.fetch_user,
        "load_cart": services.load_cart,
        "reserve": services.reserve,
        "charge": services.charge,
        "send_receipt": services.send_receipt,
    }

    def show(event: events.WorkflowEvent) -> None:
        line = describe(event)
        if line is not None:
            out(line)

    workflow = create_workflow("checkout", deps, on_event=show)
    return await workflow.run(checkout, workflow_id=run_id, store=store, failure_ttl=86_400)


async def main(store_url: str = "memory://", out: Callable[[str], object] = print) -> None:
    """Run the demo against the store at ``store_url``."""
    suffix = uuid.uuid4().hex[:8]
    async with open_store(store_url) as store:
        out(f"store: {store_url}")
        out("")
        out("== 1. checkout for ada; the process is stopped while sending the receipt ==")
        run_id = f"order-ada-{suffix}"
        scope = anyio.CancelScope()
        services = FakeServices(interrupt=scope.cancel)
        with scope:
            await _run(store, "ada", services, run_id, out)
        out(f"charges made so far: {services.charges}")
        out("saved:")
        _print_snapshot(await store.load(run_id), out)
        out("")
        out("== 2. the same run again, as another process would after a restart ==")
        services.interrupt = None
        result = await _run(store, "ada", services, run_id, out)
        out(f"result: {result!r}")
        out(f"charges made in all: {services.charges} (the card was charged once)")
        out(f"receipts sent: {services.sent}")
        out("saved:")
        _print_snapshot(await store.load(run_id), out)
        out("")
        out("== 3. a declined card: the failure is saved with its error, for a later retry ==")
        declined_id = f"order-broke-{suffix}"
        result = await _run(store, "broke", FakeServices(), declined_id, out)
        out(f"result: {result!r}")
        out("saved:")
        _print_snapshot(await store.load(declined_id), out)
        out("")
        out(f"inspect the runs: python -m awaitly_anyio runs --store {store_url} list")
