"""Messages sent from another process reach the runs waiting for them (issue 19).

A hundred runs wait, each for its own key; a child process sends the hundred values
in random order, some of them before the waits begin.  Every run gets its own value,
once, through the receive loop every waiter runs (receive; if nothing is pending, wait
for the next send bounded by a poll interval; receive again): on SQLite by polling, on
PostgreSQL and Redis woken by the database's push.  Nothing here measures time.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from awaitly_anyio import Ok
from awaitly_anyio._clock import SystemClock
from awaitly_anyio._contract import receive_when_sent

from .postgres_kit import DSN, POSTGRES, schema_for
from .redis_kit import REDIS, prefix_for
from .redis_kit import URL as REDIS_URL
from .store_kits import SQLITE

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).parent.parent
RUNS = 100
EARLY = 30  # values sent before any run begins to wait
POLL = 0.25  # seconds a waiter waits for a push before it looks again

# The sender: opens the store by URL, sends EARLY values, says so, waits for "go" on
# stdin, sends the rest.  argv: URL OPTIONS_JSON SEED BACKEND.
SENDER = f"""
import json, random, sys
import anyio
from awaitly_anyio import open_store

RUNS, EARLY = {RUNS}, {EARLY}

async def main(url, options, seed):
    order = list(range(RUNS))
    random.Random(seed).shuffle(order)
    async with open_store(url, **options) as store:
        for n in order[:EARLY]:
            await store.send(f"run-{{n}}", f"key-{{n}}", {{"n": n, "value": f"value-{{n}}"}})
        print("early", *order[:EARLY], flush=True)
        line = await anyio.to_thread.run_sync(sys.stdin.readline)
        assert line.strip() == "go", line
        for n in order[EARLY:]:
            await store.send(f"run-{{n}}", f"key-{{n}}", {{"n": n, "value": f"value-{{n}}"}})
    print("done", flush=True)

anyio.run(main, sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), backend=sys.argv[4])
"""

KITS = {"sqlite": SQLITE, "postgres": POSTGRES, "redis": REDIS}


def target(kind: str, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """The URL and options another process opens the kit's store of ``tmp_path`` with."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.db'}", {"synchronous": "NORMAL"}
    if kind == "postgres":
        return DSN, {"schema": schema_for(tmp_path)}
    return REDIS_URL, {"prefix": prefix_for(tmp_path)}


async def read_line(stream: BufferedByteReceiveStream) -> str:
    return (await stream.receive_until(b"\n", 1 << 16)).decode()


async def finish(process: Process) -> str:
    """The child's exit, asserted clean; its stderr."""
    assert process.stderr is not None
    errors = b""
    async for chunk in process.stderr:
        errors += chunk
    code = await process.wait()
    assert code == 0, errors.decode(errors="replace")
    return errors.decode(errors="replace")


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "redis"])
async def test_values_sent_from_another_process_reach_their_waiting_runs_once(
    tmp_path: Path, kind: str, anyio_backend: str
) -> None:
    seed = random.randrange(1 << 32)
    child_backend = "trio" if anyio_backend == "asyncio" else "asyncio"
    url, options = target(kind, tmp_path)
    async with KITS[kind].open(tmp_path, SystemClock()) as store:  # type: ignore[arg-type]
        for n in range(RUNS):
            await store.claim(f"run-{n}", "orders", owner="parent", lease=600)

        command = [sys.executable, "-c", SENDER, url, json.dumps(options), str(seed)]
        async with await anyio.open_process(
            [*command, child_backend],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as child:
            assert child.stdin is not None
            assert child.stdout is not None
            out = BufferedByteReceiveStream(child.stdout)
            with anyio.fail_after(120):
                try:
                    said, *early_runs = (await read_line(out)).split()
                except anyio.IncompleteRead:
                    await finish(child)
                    raise
                assert said == "early", f"seed {seed}"
                early = {int(n) for n in early_runs}
                assert len(early) == EARLY

                # The waits begin: exactly the runs whose value already came are ready.
                ready = set()
                for n in range(RUNS):
                    is_ready, wake_at = await store.begin_wait(
                        f"run-{n}",
                        step="wait",
                        key=f"key-{n}",
                        kind="message",
                        wake_at=None,
                        owner="parent",
                    )
                    assert wake_at is None
                    if is_ready:
                        ready.add(n)
                assert ready == early, f"seed {seed}"
                waiting = {info.id for info in (await store.list(status="waiting", limit=1000))}
                assert waiting == {f"run-{n}" for n in range(RUNS) if n not in early}

                await child.stdin.send(b"go\n")
                got: dict[int, list[Any]] = {n: [] for n in range(RUNS)}

                async def waiter(n: int) -> None:
                    found = await receive_when_sent(
                        store, f"run-{n}", f"key-{n}", step="wait", poll=POLL
                    )
                    got[n].append(found)

                async with anyio.create_task_group() as tg:
                    for n in range(RUNS):
                        tg.start_soon(waiter, n)
                assert (await read_line(out)).strip() == "done"
                await finish(child)

        # Every run got its own value, once, recorded as its wait's step; nothing is left.
        assert got == {n: [Ok({"n": n, "value": f"value-{n}"})] for n in range(RUNS)}, seed
        for n in range(RUNS):
            loaded = await store.load(f"run-{n}")
            assert loaded is not None
            assert loaded.status == "running"
            assert loaded.steps["wait"].result == Ok({"n": n, "value": f"value-{n}"})
            assert await store.receive(f"run-{n}", f"key-{n}", step="again", name="again") is None
        assert (await store.list(status="waiting")).items == []
