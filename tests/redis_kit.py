"""Opening RedisStore for the shared store tests, each test under its own key prefix."""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from awaitly_anyio.testing import FakeClock

from .kit_base import Damage, StoreKit, deep_json, server_or_skip

URL = os.environ.get("AWAITLY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

_open_counts: dict[str, int] = {}


def prefix_for(tmp_path: Path) -> str:
    """One prefix per test folder, so a second store of the same test shares the data."""
    return "awaitly-test:" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16] + ":"


def raw() -> Any:
    """A plain synchronous client for set-up, damage and clean-up."""
    import redis

    return redis.Redis.from_url(URL, decode_responses=True, socket_timeout=5)


def wipe(prefix: str) -> None:
    with contextlib.closing(raw()) as client:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)


@contextlib.asynccontextmanager
async def _open_redis(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Any]:
    from awaitly_anyio.stores.redis import RedisStore

    prefix = prefix_for(tmp_path)
    if _open_counts.get(prefix, 0) == 0:
        try:
            wipe(prefix)
        except OSError as exc:
            server_or_skip("Redis", URL, exc)
        except Exception as exc:  # redis.ConnectionError is not an OSError
            server_or_skip("Redis", URL, exc)
    _open_counts[prefix] = _open_counts.get(prefix, 0) + 1
    try:
        async with RedisStore(URL, prefix=prefix, clock=clock) as store:
            yield store
    finally:
        _open_counts[prefix] -= 1
        if _open_counts[prefix] == 0:
            del _open_counts[prefix]
            wipe(prefix)


async def _damage_redis(store: Any, run_id: str, part: Damage) -> None:
    run_key, steps_key = store.keys_of(run_id)
    with contextlib.closing(raw()) as client:
        if part in ("step", "deep"):
            # A step record's field (fields starting with NUL keep the steps' order).
            key = next(k for k in client.hkeys(steps_key) if not k.startswith("\x00"))
            client.hset(steps_key, key, '{"ok": tru' if part == "step" else deep_json())
        elif part == "metadata":
            client.hset(run_key, "metadata_json", "[1, 2")
        elif part == "created_at":
            client.hset(run_key, "created_at", "garbage")
        elif part == "workflow_name":
            client.hdel(run_key, "workflow_name")
        elif part == "wrong_type":
            client.delete(run_key)
            client.set(run_key, "not a hash")
        else:
            client.hset(run_key, "format_version", "2" if part == "newer" else "99")


async def _raw_redis(store: Any, run_id: str) -> Any:
    run_key, steps_key = store.keys_of(run_id)
    with contextlib.closing(raw()) as client:
        found = []
        for key in (run_key, steps_key):
            kind = client.type(key)
            value = client.hgetall(key) if kind == "hash" else client.get(key)
            found.append((key, kind, value, client.pttl(key)))
        found.append(client.zscore(store.prefix + "index", run_id))
        found.append(client.zscore(store.prefix + "active", run_id))
    return found


REDIS = StoreKit("redis", _open_redis, _damage_redis, _raw_redis, cannot_damage=frozenset())


def fresh_prefix(label: str) -> Iterator[str]:
    """A key prefix of its own for one test (``label`` names the suite), wiped before
    and after; an unreachable server skips the test, or fails it under CI."""
    name = f"awaitly-test-{label}:{uuid.uuid4().hex}:"
    try:
        wipe(name)
    except Exception as exc:  # redis.ConnectionError is not an OSError
        server_or_skip("Redis", URL, exc)
    yield name
    wipe(name)
