"""The shape of a store kit, shared by ``store_kits`` and each server store's kit module."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import pytest

from awaitly_anyio import Ok, _loops
from awaitly_anyio._contract import Damage
from awaitly_anyio._resume import StepRecord
from awaitly_anyio._store import EncodedStep
from awaitly_anyio.serialization import default_registry, encode_step_record
from awaitly_anyio.testing import FakeClock


def encoded(key: str, value: Any, at: datetime | None = None) -> EncodedStep:
    """Step ``key``'s successful record, encoded as a durable run hands it to a store."""
    record = StepRecord(Ok(value), attempts=1, started_at=at, finished_at=at)
    return EncodedStep(key, record, encode_step_record(key, record, default_registry))


@attrs.frozen
class StoreKit:
    """Opens fresh stores of one kind in a test's temporary folder.

    ``open(tmp_path, clock)`` yields a store; calling it twice in one test gives
    two stores over the same data (two processes would see the same), which the
    concurrency tests rely on.  ``damage(store, run_id, part)`` corrupts a run
    behind the store's back; ``raw(store, run_id)`` reads everything stored for a
    run, as the database holds it (to check that nothing changed).
    """

    name: str
    open: Callable[[Path, FakeClock], contextlib.AbstractAsyncContextManager[Any]]
    damage: Callable[[Any, str, Damage], Awaitable[None]]
    raw: Callable[[Any, str], Awaitable[Any]]
    cannot_damage: frozenset[str] = frozenset({"wrong_type"})
    """The kinds of damage this store cannot suffer: a test parametrized over
    ``part`` is not generated for them (see ``tests/conftest.py``)."""
    by_url: bool = True
    """Whether another process can open the same store by URL (the CLI tests)."""


def deep_json(depth: int = 100_000) -> str:
    """Valid JSON nested ``depth`` deep."""
    return "[" * depth + "]" * depth


def server_or_skip(kind: str, url: str, error: BaseException) -> None:
    """Skip a test whose server is unreachable, or fail it under CI (``CI=true``)."""
    message = f"{kind} at {url} is unreachable ({type(error).__name__}: {error})"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message}; CI needs it running", pytrace=False)
    pytest.skip(message)


def bridge_threads() -> list[threading.Thread]:
    """The asyncio bridge's threads still alive."""
    return [t for t in threading.enumerate() if t.name.startswith("awaitly-asyncio-bridge")]


def leftover_driver_work() -> list[object]:
    """What closed stores could have left running: bridge threads and, under trio, tasks
    still pending on the run's hosted asyncio loop."""
    left: list[object] = list(bridge_threads())
    left.extend(_loops.current().driver_tasks())
    return left


def cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """``python -m awaitly_anyio ARGS`` in a child process, as a user runs it (without
    an inherited ``AWAITLY_STORE_URL``, unless ``env`` gives one)."""
    environ = {k: v for k, v in os.environ.items() if k != "AWAITLY_STORE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "awaitly_anyio", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=check,
        cwd=cwd,
        env={**environ, **(env or {})},
    )
