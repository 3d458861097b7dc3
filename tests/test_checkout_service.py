"""The example service as users would run it: a real process on PostgreSQL, driven over
HTTP, SIGKILLed mid-checkout, restarted, and stopped with SIGTERM.

The stand-in payment provider and mailer append to a ledger file, so the test
counts what really happened outside the service: the checkout must end with one
charge and one e-mail although the first process died between them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

pytest.importorskip("asyncpg")
pytest.importorskip("hypercorn")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")

from .kit_base import server_or_skip
from .otlp_receiver import otlp_receiver, spans_received
from .postgres_kit import DSN, admin

ROOT = Path(__file__).resolve().parent.parent
GRACE = 10.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy (a real process: no clock to inject)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except httpx.TransportError:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Service:
    """One process of the example service."""

    def __init__(self, backend: str, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "examples.checkout_service", "--backend", backend],
                env={**env, "PORT": str(self.port)},
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.http = httpx.Client(base_url=self.url, timeout=10)
        wait_for(f"the service on {self.url}", self._ready)

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the service exited: {self.log.read_text()}")
        return self.http.get("/ready").status_code == 200

    def order(self, order_id: str) -> dict[str, Any]:
        response = self.http.get(f"/checkout/{order_id}")
        return dict(response.json()) if response.status_code == 200 else {}

    def close(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"checkout_{uuid.uuid4().hex[:10]}"
    try:
        anyio.run(admin, "SELECT 1")
    except OSError as exc:
        server_or_skip("PostgreSQL", DSN, exc)
    yield name
    anyio.run(admin, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_checkout_killed_mid_run_completes_once_after_a_restart(
    backend: str, schema: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    with otlp_receiver() as (collector, received):
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": DSN,
            "CHECKOUT_DB_SCHEMA": schema,
            "CHECKOUT_LEDGER": str(ledger),
            "CHECKOUT_LEASE_SECONDS": "1",
            "CHECKOUT_RECOVERY_INTERVAL": "0.2",
            "CHECKOUT_GRACE_SECONDS": str(GRACE),
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector,
            "CHECKOUT_NOTIFY_DELAY": "600",  # the first process hangs in the mailer
        }
        first = Service(backend, env, tmp_path / "first.log")
        try:
            bad = first.http.post("/checkout", json={"order_id": "", "amount": 0})
            assert bad.status_code == 400
            assert "order_id must be a non-empty string" in bad.json()["error"]

            order = {"order_id": "order-1", "user_id": "ada", "amount": 4200}
            assert first.http.post("/checkout", json=order).status_code == 202
            wait_for("the charge", lambda: "charge" in first.order("order-1").get("steps", []))
            assert ledger.read_text().splitlines() == ["charge order-1 4200"]
            first.process.send_signal(signal.SIGKILL)  # mid-run: no clean-up at all
            first.process.wait()
        finally:
            first.close()

        second = Service(backend, {**env, "CHECKOUT_NOTIFY_DELAY": "0"}, tmp_path / "second.log")
        try:

            def completed() -> dict[str, Any]:
                found = second.order("order-1")
                return found if found.get("status") == "completed" else {}

            done = wait_for("the recovered checkout", completed)
            assert done["ok"] is True
            assert done["value"] == {"order_id": "order-1", "payment": "ch_order-1"}
            # Asking again for the same order does not charge again.
            assert second.http.post("/checkout", json=order).status_code == 202
            wait_for("the repeat", lambda: second.http.get("/health/workflows").json()["total"])
            assert second.order("order-1")["status"] == "completed"

            started = time.monotonic()
            second.process.send_signal(signal.SIGTERM)
            assert second.process.wait(timeout=GRACE + 10) == 0, second.log.read_text()
            assert time.monotonic() - started < GRACE + 10
        finally:
            second.close()

        assert ledger.read_text().splitlines() == [
            "charge order-1 4200",
            "notify order-1 ada@example.com ch_order-1",
        ]
        # The recovered run was traced, and the traces were flushed at shutdown.
        names = {span.name for span in spans_received(received)}
        assert {"workflow checkout", "step charge", "step send_notification"} <= names
