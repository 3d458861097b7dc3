"""No password reaches any text the library produces: URLs with a password in the
userinfo and in the query, through open_store, reprs, run errors, health, OTel, Sentry
and settings; and clear errors for malformed URLs and SQLite paths that are not databases."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from awaitly_anyio import Deps, Err, WorkflowContext, create_workflow, open_store
from awaitly_anyio._errors import StoreError
from awaitly_anyio._redact import redact_text, redact_url
from awaitly_anyio.config import Secret, Settings, SettingsError, setting
from awaitly_anyio.health import create_health_app, create_health_tracker
from awaitly_anyio.stores.postgres import PostgresStore
from awaitly_anyio.stores.redis import RedisStore
from awaitly_anyio.stores.sqlite import SQLiteStore

SECRET = "hunter2-S3KRET"

# Servers that are certainly not there (port 1 is closed on loopback), each with the
# password in the userinfo and in the query.
UNREACHABLE = {
    "postgres-userinfo": f"postgresql://postgres:{SECRET}@127.0.0.1:1/test",
    "postgres-query": f"postgresql://postgres@127.0.0.1:1/test?password={SECRET}",
    "redis-userinfo": f"redis://default:{SECRET}@127.0.0.1:1/0",
    "redis-query": f"redis://127.0.0.1:1/0?password={SECRET}",
}


# ---- the one redaction helper -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://app:s3cret@db:5432/orders", "postgresql://app:***@db:5432/orders"),
        ("postgresql://app@db/orders?password=s3cret", "postgresql://app@db/orders?password=***"),
        (
            "postgresql://app@db/orders?sslmode=require&sslpassword=x&application_name=y",
            "postgresql://app@db/orders?sslmode=require&sslpassword=***&application_name=y",
        ),
        ("redis://default:s3cret@cache:6379/0", "redis://default:***@cache:6379/0"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://s3cret@cache:6380", "rediss://***@cache:6380"),
        ("redis://cache:6379/0?password=s3cret&db=1", "redis://cache:6379/0?password=***&db=1"),
        ("unix://:s3cret@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
        ("host=db password='s 3cret' user=app", "host=db password=*** user=app"),
        # Sloppy URLs: characters a valid URL would percent-encode, in the password.
        ("postgresql://app:s3/cr?et@db/orders", "postgresql://app:***@db/orders"),
        ("postgresql://app:s3@cret@db/orders", "postgresql://app:***@db/orders"),
        ("postgresql:/app:s3cret@db/orders", "postgresql:/app:***@db/orders"),
        ("app:s3cret@db:5432", "app:***@db:5432"),
        ("{'password': 's3cret', 'user': 'app'}", "{'password': '***', 'user': 'app'}"),
        ('{"api_token": "s3cret"}', '{"api_token": "***"}'),
        # Nothing secret: left alone.
        ("postgresql://app@db:5432/orders", "postgresql://app@db:5432/orders"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("sqlite:///runs.db", "sqlite:///runs.db"),
        ("Connect call failed ('127.0.0.1', 1)", "Connect call failed ('127.0.0.1', 1)"),
        ("mail ops@example.com at 10:30", "mail ops@example.com at 10:30"),
    ],
)
def test_redact_text_masks_every_kind_of_secret(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert redact_text(expected) == expected  # masking twice changes nothing


def test_redact_url_takes_a_whole_url_as_one() -> None:
    # A space in a password: as one URL, everything up to the last '@' is userinfo.
    assert redact_url("postgresql://app:s3 cr et@db/orders") == "postgresql://app:***@db/orders"
    assert redact_url(b"redis://:s3cret@cache") == "<bytes>"


def test_redaction_takes_linear_time_on_hostile_text() -> None:
    # A long word with no end to its scheme, or many would-be parameter names:
    # quadratic regexes would take minutes here.
    for text in ("a" * 200_000 + "@", " " + "pass" * 50_000 + " =", "'" + "pwd" * 50_000 + ":"):
        assert redact_text(text) == text


# ---- open_store and the stores' own messages ----------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"mysql://app:{SECRET}@db/orders", "unknown store scheme 'mysql'"),
        (f"mysql://db/orders?password={SECRET}", "unknown store scheme 'mysql'"),
        (f"postgresql:/app:{SECRET}@db/orders", "starts with its scheme and '://'"),
        (f"app:{SECRET}@db", "starts with its scheme and '://'"),
        ("postgresql://u@127.0.0.1:99999/db", "port"),
        ("postgresql://u@127.0.0.1:abc/db", "port"),
        (f"postgresql://u:{SECRET}@127.0.0.1:99999/db", "port"),
        (f"postgresql://u@127.0.0.1:abc/db?password={SECRET}", "port"),
        (f"postgresql://u@db/orders?port=0&password={SECRET}", "port"),
        (f"postgresql://u:{SECRET}@db@other/orders", "more than one '@'"),
        (f"postgresql://u:pa/{SECRET}@db/orders", "'@' after its host"),
        (f"redis://default:{SECRET}@cache:abc/0", "port"),
        (f"redis://cache:70000/0?password={SECRET}", "port"),
        (f"redis://:{SECRET}@cache:6379/zero", "database"),
        (f"memory://u:{SECRET}@here", "memory:// takes no path"),
    ],
)
def test_open_store_names_what_is_wrong_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match="invalid store URL") as caught:
        open_store(url)
    assert message in str(caught.value)
    assert SECRET not in str(caught.value)


def test_store_constructors_check_their_url_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="port") as caught:
        PostgresStore(f"postgresql://u:{SECRET}@127.0.0.1:65536/db")
    assert SECRET not in str(caught.value)
    with pytest.raises(ValueError, match="starts with postgresql://") as caught:
        PostgresStore(f"mysql://u:{SECRET}@db/x")
    assert SECRET not in str(caught.value)
    with pytest.raises(ValueError, match="starts with redis://") as caught:
        RedisStore(f"REDIS-ish://u:{SECRET}@cache")
    assert SECRET not in str(caught.value)
    with pytest.raises(TypeError) as type_error:
        RedisStore(f"redis://:{SECRET}@cache".encode())  # type: ignore[arg-type]
    assert SECRET not in str(type_error.value)


@pytest.mark.parametrize("name", sorted(UNREACHABLE))
def test_a_store_repr_names_it_without_the_password(name: str) -> None:
    store = open_store(UNREACHABLE[name])
    shown = repr(store)
    assert SECRET not in shown
    assert "127.0.0.1:1" in shown  # still says which server
    assert "***" in shown


# ---- what a run against such a store produces -------------------------------------------


ENVELOPES: list[Any] = []  # what Sentry sent, kept by the transport below


@pytest.fixture
def sentry() -> Iterator[None]:
    """Sentry with a transport that keeps every envelope in ``ENVELOPES``."""
    sentry_sdk = pytest.importorskip("sentry_sdk")
    from sentry_sdk.transport import Transport

    class Keep(Transport):
        def capture_envelope(self, envelope: Any) -> None:
            ENVELOPES.append(envelope)

    ENVELOPES.clear()
    sentry_sdk.init(dsn="http://public@127.0.0.1:9/1", transport=Keep, traces_sample_rate=1.0)
    yield
    sentry_sdk.get_client().close()
    sentry_sdk.init()


def sentry_payloads() -> list[dict[str, Any]]:
    import sentry_sdk

    sentry_sdk.flush()
    return [
        item.payload.json
        for envelope in ENVELOPES
        for item in envelope.items
        if item.payload.json is not None
    ]


@pytest.fixture
def spans() -> Iterator[Any]:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


async def health_json(app: Any, path: str) -> str:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "http", "path": path, "method": "GET"}, receive, send)
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body").decode()


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(UNREACHABLE))
async def test_a_failing_store_leaks_no_password_into_results_health_spans_or_sentry(
    name: str, sentry: Any, spans: Any
) -> None:
    import sentry_sdk

    from awaitly_anyio.otel import create_otel_adapter
    from awaitly_anyio.sentry import create_sentry_handler, run_with_sentry

    provider, exporter = spans
    tracker = create_health_tracker()
    adapter = create_otel_adapter(service_name="secrets", tracer_provider=provider)
    handler = create_sentry_handler()

    def on_event(event: Any) -> None:
        tracker.handle_event(event)
        adapter.handle_event(event)
        handler.handle_event(event)

    workflow = create_workflow("checkout", on_event=on_event)

    async def body(ctx: WorkflowContext[Deps]) -> str:
        return await ctx.step("pay", lambda: "paid", key="pay")

    store = open_store(UNREACHABLE[name])
    errors: list[str] = []
    with sentry_sdk.start_transaction(name="POST /checkout"):
        # The server is not there ...
        result = await run_with_sentry(
            "checkout", lambda: workflow.run(body, workflow_id="o-1", store=store)
        )
        assert isinstance(result, Err)
        assert isinstance(result.error, StoreError)
        errors.append(str(result.error))
        # ... and a closed store names itself (its repr) in the error.
        await store.close()
        result = await run_with_sentry(
            "checkout", lambda: workflow.run(body, workflow_id="o-2", store=store)
        )
        assert isinstance(result, Err)
        assert isinstance(result.error, StoreError)
        assert "closed" in str(result.error)
        errors.append(str(result.error))

    async def fails(ctx: WorkflowContext[Deps]) -> None:
        def connect() -> None:
            url = UNREACHABLE[name]  # a local variable Sentry sends with the frame
            raise ConnectionError(f"cannot reach {url}")

        await ctx.step("connect", connect)

    assert isinstance(await workflow.run(fails, workflow_id="o-3"), Err)
    sentry_sdk.capture_message("something unrelated, later")

    for text in errors:
        assert SECRET not in text
        assert "127.0.0.1:1" in text or "Connect" in text or "closed" in text
    app = create_health_app(tracker=tracker)
    stats = await health_json(app, "/health/workflows")
    assert json.loads(stats)["failed"] == 3
    assert SECRET not in stats
    finished = exporter.get_finished_spans()
    assert finished
    for span in finished:
        assert SECRET not in span.to_json()
    payloads = sentry_payloads()
    assert SECRET not in json.dumps(payloads, default=str)
    [later] = [p for p in payloads if p.get("message") == "something unrelated, later"]
    assert "workflow" not in later.get("contexts", {})  # the runs' context ended with them
    [captured] = [p for p in payloads if p.get("exception")]
    [exception] = captured["exception"]["values"]
    assert "cannot reach" in exception["value"]
    frame_vars = [frame.get("vars", {}) for frame in exception["stacktrace"]["frames"]]
    assert any("url" in names for names in frame_vars)  # sent, but masked


# ---- settings ---------------------------------------------------------------------------


def test_secret_settings_are_masked_in_repr() -> None:
    @attrs.frozen(kw_only=True)
    class Checkout(Settings):
        api_token: str = setting(secret=True)
        upstream: str = setting(default="")

    settings = Checkout.from_env(
        {
            "API_TOKEN": SECRET,
            "UPSTREAM": f"https://svc:{SECRET}@upstream.example/x?token={SECRET}",
            "DATABASE_URL": f"postgresql://app@db/orders?password={SECRET}",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://collector:4318/v1/traces?api_key={SECRET}",
        }
    )
    assert settings.api_token == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert "api_token='***'" in repr(settings)
    assert "upstream.example" in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("DATABASE_URL", f"postgress://app:{SECRET}@db/orders", "unknown store scheme"),
        ("DATABASE_URL", f"postgresql://app:{SECRET}@db:54321x/orders", "port"),
        ("DATABASE_URL", f"postgresql://app@db:99999/orders?password={SECRET}", "port"),
        ("DATABASE_URL", f"app:{SECRET}@db/orders", "scheme"),
        ("REDIS_URL", f"redis://:{SECRET}@cache:abc/0", "port"),
        ("REDIS_URL", f"postgresql://app:{SECRET}@db/orders", "redis://"),
    ],
)
def test_store_urls_are_checked_at_load_without_their_password(
    variable: str, value: str, problem: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    [reported] = caught.value.problems
    assert reported.startswith(f"{variable}: ")
    assert problem in reported
    assert SECRET not in str(caught.value)


def test_a_bad_store_url_is_refused_when_settings_are_made_directly() -> None:
    with pytest.raises(ValueError, match="database_url: unknown store scheme") as caught:
        Settings(database_url=Secret(f"mysql://app:{SECRET}@db/orders"))
    assert SECRET not in str(caught.value)


def test_a_malformed_non_secret_value_is_quoted_redacted() -> None:
    @attrs.frozen(kw_only=True)
    class Service(Settings):
        retries_url_budget: int = setting(default=1)

    with pytest.raises(SettingsError) as caught:
        Service.from_env({"RETRIES_URL_BUDGET": f"redis://:{SECRET}@cache"})
    assert SECRET not in str(caught.value)
    assert "RETRIES_URL_BUDGET: 'redis://:***@cache' is invalid" in str(caught.value)


# ---- SQLite paths that are not databases ------------------------------------------------


@pytest.mark.anyio
async def test_a_folder_is_refused_naming_the_path(tmp_path: Path) -> None:
    folder = tmp_path / "runs.db"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder") as caught:
        async with SQLiteStore(folder):
            pass
    assert str(folder) in str(caught.value)


@pytest.mark.anyio
async def test_a_file_that_is_not_a_database_is_refused_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not the runs you are looking for\n" * 200)
    with pytest.raises(ValueError, match="not a database") as caught:
        async with open_store(f"sqlite:///{path}"):
            pass
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, sqlite3.DatabaseError)  # still what SQLite raises
    assert path.read_text().startswith("not the runs")
