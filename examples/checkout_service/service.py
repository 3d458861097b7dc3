"""A checkout service: every piece of a production deployment of awaitly-anyio, in one file.

``POST /checkout`` starts a durable checkout (fetch the user, charge through a
rate limiter and a circuit breaker, send a notification) keyed by its order id
and answers 202 at once; ``GET /checkout/{order_id}`` shows how it stands; the
health endpoints serve the load balancer and the orchestrator.  Runs live in a
:class:`~awaitly_anyio.WorkflowHost`; a run whose process died is resumed by any
other process's recovery loop, without repeating a completed step.

The payment provider and the mailer are stand-ins that append a line per call
to ``CHECKOUT_LEDGER``, so a test (or you) can count what really happened.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs

from awaitly_anyio import (
    HostAtCapacityError,
    HostClosedError,
    Secret,
    Settings,
    SnapshotStore,
    WorkflowContext,
    WorkflowHost,
    WorkflowRegistry,
    create_circuit_breaker,
    create_health_app,
    create_health_tracker,
    create_rate_limiter,
    create_workflow,
    open_store,
)
from awaitly_anyio.config import setting
from awaitly_anyio.health import postgres_check

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@attrs.frozen(kw_only=True)
class CheckoutSettings(Settings):
    """The deployment guide's variables plus this service's own."""

    stripe_secret_key: Secret = setting(default=Secret("sk_test_local"))
    db_schema: str = setting(default="checkout", env="CHECKOUT_DB_SCHEMA")
    lease_seconds: float = setting(default=30.0, env="CHECKOUT_LEASE_SECONDS")
    recovery_interval: float = setting(default=10.0, env="CHECKOUT_RECOVERY_INTERVAL")
    max_active: int = setting(default=500, env="CHECKOUT_MAX_ACTIVE")
    grace_seconds: float = setting(default=30.0, env="CHECKOUT_GRACE_SECONDS")
    ledger: str = setting(default="checkout-ledger.txt", env="CHECKOUT_LEDGER")
    # A knob for demos and the kill-and-restart test: the mailer takes this long.
    notify_delay: float = setting(default=0.0, env="CHECKOUT_NOTIFY_DELAY")


class Ledger:
    """The outside world: one durable line per charge or e-mail."""

    def __init__(self, path: str) -> None:
        self.path = path

    def append(self, line: str) -> None:
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())


@attrs.define
class Services:
    """The external dependencies, with what protects them."""

    ledger: Ledger
    notify_delay: float
    stripe_limit: Any = attrs.field(
        factory=lambda: create_rate_limiter("stripe", max_requests=100, window=1.0)
    )
    email_limit: Any = attrs.field(
        factory=lambda: create_rate_limiter("email", max_requests=10, window=1.0)
    )
    payment_breaker: Any = attrs.field(
        factory=lambda: create_circuit_breaker(
            "payment-service", failure_threshold=5, reset_timeout=30, half_open_requests=3
        )
    )

    async def fetch_user(self, user_id: str) -> dict[str, str]:
        await anyio.lowlevel.checkpoint()  # a database or an HTTP call in a real service
        return {"id": user_id, "email": f"{user_id}@example.com"}

    async def charge(self, order_id: str, amount: int) -> str:
        # A real provider takes the order id as its idempotency key.
        self.ledger.append(f"charge {order_id} {amount}")
        return f"ch_{order_id}"

    async def send_notification(self, order_id: str, email: str, payment: str) -> None:
        await anyio.sleep(self.notify_delay)
        self.ledger.append(f"notify {order_id} {email} {payment}")


async def checkout_body(ctx: WorkflowContext[Services]) -> dict[str, str]:
    """Fetch the user, charge the card, send the receipt: each step checkpointed."""
    order: dict[str, Any] = ctx.input
    services = ctx.deps
    user = await ctx.step("fetch_user", lambda: services.fetch_user(order["user_id"]), key="user")
    payment: str = await ctx.step(
        "charge",
        lambda: services.stripe_limit(
            lambda: services.payment_breaker(
                lambda: services.charge(order["order_id"], order["amount"])
            )
        ),
        key="charge",
    )
    await ctx.step(
        "send_notification",
        lambda: services.email_limit(
            lambda: services.send_notification(order["order_id"], user["email"], payment)
        ),
        key="notify",
    )
    return {"order_id": order["order_id"], "payment": payment}


def parse_order(body: bytes) -> dict[str, Any]:
    """The request body as an order, or ValueError naming what is wrong with it."""
    try:
        order = json.loads(body or b"null")
    except ValueError as exc:
        raise ValueError(f"the body is not JSON: {exc}") from None
    if not isinstance(order, dict):
        raise ValueError("the body must be a JSON object")  # noqa: TRY004 (a bad request)
    problems = [
        f"{name} must be a non-empty string"
        for name in ("order_id", "user_id")
        if not isinstance(order.get(name), str) or not order[name]
    ]
    amount = order.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        problems.append("amount must be a positive whole number of cents")
    if problems:
        raise ValueError("; ".join(problems))
    return {"order_id": order["order_id"], "user_id": order["user_id"], "amount": amount}


class CheckoutService:
    """The ASGI application and everything it owns; use as ``async with``."""

    def __init__(self, settings: CheckoutSettings) -> None:
        self.settings = settings
        self.tracker = create_health_tracker()
        self.services = Services(Ledger(settings.ledger), settings.notify_delay)
        self.store: SnapshotStore | None = None
        self.host: WorkflowHost | None = None
        self.registry = WorkflowRegistry()
        self._exit = AsyncExitStack()
        self._health: Any = None

    async def __aenter__(self) -> CheckoutService:
        settings = self.settings
        options = {"schema": settings.db_schema} if settings.database_url else {}
        self.store = await self._exit.enter_async_context(open_store(settings.store_url, **options))
        handlers: list[Callable[[Any], None]] = [self.tracker.handle_event]
        flush: list[Callable[[], Awaitable[None]]] = []
        handlers += _telemetry(settings, flush)
        # Every run, started here or recovered from a dead process, reports to them.
        self.workflow = create_workflow("checkout", self.services, on_event=handlers)
        self.registry.register(self.workflow, checkout_body)
        self.host = await self._exit.enter_async_context(
            WorkflowHost(
                max_active=settings.max_active,
                store=None,  # the service closes the store itself, after the host
                grace=settings.grace_seconds,
                on_shutdown=flush,
            )
        )
        checks: dict[str, Any] = {}
        if settings.database_url is not None:
            checks["database"] = postgres_check(settings.database_url.reveal())
        self._health = create_health_app(
            checks=checks,
            tracker=self.tracker,
            breakers={"payment-service": self.services.payment_breaker},
            host=self.host,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._exit.aclose()

    # ---- HTTP ------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path == "/checkout" and method == "POST":
            status, answer = await self._start(await _body(receive))
        elif path.startswith("/checkout/") and method == "GET":
            status, answer = await self._show(path.removeprefix("/checkout/"))
        else:
            await self._health(scope, receive, send)
            return
        await _json(send, status, answer)

    async def _start(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            order = parse_order(body)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        assert self.host is not None
        try:
            self.host.start(
                self.workflow,
                checkout_body,
                workflow_id=order["order_id"],
                store=self.store,
                input=order,
                lease=self.settings.lease_seconds,
                ttl=self.settings.workflow_state_ttl,
            )
        except HostClosedError:
            return 503, {"error": "shutting down, try another instance"}
        except HostAtCapacityError:
            return 429, {"error": "too many checkouts in progress, retry shortly"}
        return 202, {"order_id": order["order_id"], "status": "accepted"}

    async def _show(self, order_id: str) -> tuple[int, dict[str, Any]]:
        assert self.store is not None
        try:
            snapshot = await self.store.load(order_id)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        if snapshot is None:
            return 404, {"error": f"no checkout {order_id!r}"}
        answer: dict[str, Any] = {
            "order_id": order_id,
            "status": snapshot.status,
            "steps": sorted(snapshot.steps),
        }
        if snapshot.result is not None:
            answer["ok"] = snapshot.result.ok
            if snapshot.result.ok:
                answer["value"] = snapshot.result.value
            else:
                answer["error"] = snapshot.result.error
        return 200, answer


def _telemetry(
    settings: CheckoutSettings, flush: list[Callable[[], Awaitable[None]]]
) -> list[Callable[[Any], None]]:
    """OpenTelemetry when an OTLP endpoint is configured, Sentry when a DSN is."""
    handlers: list[Callable[[Any], None]] = []
    if settings.otel_exporter_otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from awaitly_anyio.otel import create_otel_adapter

        endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/")
        provider = TracerProvider(resource=Resource.create({"service.name": "checkout-service"}))
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"))
        )
        handlers.append(
            create_otel_adapter("checkout-service", tracer_provider=provider).handle_event
        )

        async def flush_spans() -> None:
            await anyio.to_thread.run_sync(provider.shutdown)

        flush.append(flush_spans)
    if settings.sentry_dsn is not None:
        import sentry_sdk

        from awaitly_anyio.sentry import create_sentry_handler

        sentry_sdk.init(dsn=settings.sentry_dsn.reveal(), environment=settings.environment)
        handlers.append(create_sentry_handler().handle_event)

        async def flush_sentry() -> None:
            await anyio.to_thread.run_sync(sentry_sdk.flush)

        flush.append(flush_sentry)
    return handlers


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _json(send: Send, status: int, answer: dict[str, Any]) -> None:
    body = json.dumps(answer, default=repr).encode()  # errors may be any value
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
