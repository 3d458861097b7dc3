"""One-step durable runs against their physical floor: the same three writes, raw.

A durable run of one keyed step writes three times: the claim (the run created,
running, leased), the step's checkpoint and the run's end (completed, the lease
released).  Its floor is those same three writes issued directly through the
store's row driver (the layer under the store front, which speaks only rows and
step JSON), with their arguments made before the clock starts.  The store, the
driver and the connection are the same ones, in the same process; the rounds
alternate the raw writes and the runs, and each round's ratio is ours against the
raw writes timed just before it, on asyncio and trio (drivers run as the store
runs them: directly on asyncio, on the hosted asyncio loop under trio).  The
ratio is the median of the rounds' ratios, as in the other benchmarks.

Target: a one-step durable run takes <= 1.2x the time of its three raw writes, on
PostgreSQL and on Redis, both backends.

    python benchmarks/bench_durable_floor.py [--quick] [--json PATH] [--only postgres|redis]
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any

import anyio

from _report import Summary, bench_parser, finish, median_ratio
from awaitly_anyio import Deps, Ok, WorkflowContext, create_workflow, open_store
from awaitly_anyio.serialization import default_registry, dumps, encode_step, result_to_doc
from awaitly_anyio.stores._front import _Claiming, _End
from bench_servers import PG_DSN, REDIS_URL

TARGET = 1.2
LEASE = 30.0
OWNER = "bench-floor:1"


def _store(kind: str, tag: str) -> Any:
    """A store of its own: its own PostgreSQL schema or Redis key prefix."""
    if kind == "postgres":
        return open_store(PG_DSN, schema=f"awaitly_floor_{tag}")
    return open_store(REDIS_URL, prefix=f"awaitly-floor-{tag}:")


def _raw_triples(ids: list[str]) -> list[tuple[str, Any, str, Any]]:
    """For each run id, what the driver is handed: the claim's terms, the step's JSON
    and the end's terms, made before timing (the floor is the writes alone)."""
    now = time.time()
    step_json = encode_step("s", Ok(1), 1, now, now, default_registry)
    result_json = dumps(result_to_doc(Ok(1), default_registry))
    return [
        (
            id,
            _Claiming(id, "floor", OWNER, now, now + LEASE, None, default_registry),
            step_json,
            _End("completed", result_json, None, OWNER),
        )
        for id in ids
    ]


async def one_round(kind: str, flows: int) -> dict[str, float]:
    """One round on the current backend: a fresh store, both sides warmed up, then the
    raw writes and right after them the same number of one-step durable runs."""
    tag = uuid.uuid4().hex[:8]
    workflow = create_workflow("floor")

    async def one_step(ctx: WorkflowContext[Deps]) -> int:
        return await ctx.step("s", lambda: 1, key="k")

    async with _store(kind, tag) as store:
        driver = store._driver

        async def raw(triples: list[tuple[str, Any, str, Any]]) -> None:
            for id, claiming, step_json, end in triples:
                claimed = await driver.claim(id, time.time(), claiming)
                assert claimed.outcome == "claimed", claimed
                await driver.write_step(id, "k", step_json, time.time(), OWNER)
                await driver.end_run(id, time.time(), end)

        async def ours(ids: list[str]) -> None:
            for id in ids:
                result = await workflow.run(one_step, workflow_id=id, store=store)
                assert result.ok, result

        # Warm-up: connections (the pool's too), prepared statements, scripts.
        await raw(_raw_triples([f"warm-raw-{n}" for n in range(20)]))
        await ours([f"warm-run-{n}" for n in range(20)])

        triples = _raw_triples([f"raw-{n}" for n in range(flows)])
        started = time.perf_counter()
        await raw(triples)
        raw_s = time.perf_counter() - started

        ids = [f"run-{n}" for n in range(flows)]
        started = time.perf_counter()
        await ours(ids)
        ours_s = time.perf_counter() - started

        await _drop(kind, store, tag)
    return {"raw us": raw_s / flows * 1e6, "run us": ours_s / flows * 1e6}


async def _drop(kind: str, store: Any, tag: str) -> None:
    """Remove what the round wrote."""
    if kind == "postgres":

        async def drop(connection: Any) -> None:
            await connection.execute(f'DROP SCHEMA IF EXISTS "awaitly_floor_{tag}" CASCADE')

        await store._call(drop)
        return
    cursor: str | None = None
    while True:
        page = await store.list(limit=1000, cursor=cursor)
        for info in page:
            await store.delete(info.id)
        cursor = page.next_cursor
        if cursor is None:
            return


def measure(kind: str, rounds: int, flows: int) -> dict[str, dict[str, Any]]:
    """Both backends, in rounds that alternate them, so drift in the machine's speed
    reaches both alike; the ratio is the median of the rounds' own ratios."""
    samples: dict[str, list[dict[str, float]]] = {"asyncio": [], "trio": []}
    for _ in range(rounds):
        for backend, runs in samples.items():
            runs.append(anyio.run(one_round, kind, flows, backend=backend))
    report: dict[str, dict[str, Any]] = {}
    for backend, runs in samples.items():
        raw = [r["raw us"] for r in runs]
        ours = [r["run us"] for r in runs]
        report[backend] = {
            "raw three writes us": sorted(raw)[len(raw) // 2],
            "one-step run us": sorted(ours)[len(ours) // 2],
            "ratio": median_ratio(ours, raw),
            "rounds": runs,
        }
    return report


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--only", choices=("postgres", "redis"))
    parser.add_argument("--flows", type=int)
    parser.add_argument("--rounds", type=int)
    args = parser.parse_args()
    rounds, flows = (3, 100) if args.quick else (9, 300)
    rounds = args.rounds or rounds
    flows = args.flows or flows
    kinds = [args.only] if args.only else ["postgres", "redis"]
    report: dict[str, Any] = {}
    summary = Summary()
    for kind in kinds:
        per_backend = measure(kind, rounds, flows)
        report[kind] = per_backend
        print(f"\n{kind}: one-step durable run vs claim + checkpoint + finish through the driver")
        print(f"  ({flows} runs a round, {rounds} rounds, median of the rounds' ratios)")
        for backend in ("asyncio", "trio"):
            f = per_backend[backend]
            verdict = summary.add(
                f"{kind} one-step run / three raw driver writes",
                backend,
                f["ratio"],
                target=TARGET,
            )
            print(
                f"  {backend:8s} raw writes {f['raw three writes us']:7.1f} us | run"
                f" {f['one-step run us']:7.1f} us = {f['ratio']:.2f}x (<= {TARGET})"
                f" {'PASS' if verdict == 'PASS' else 'FAIL'}"
            )
    return finish(report, summary, args.json, failed=summary.missed)


if __name__ == "__main__":
    sys.exit(main())
