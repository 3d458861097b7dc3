"""The dashboard's runs page (issue 23) against the store's own ``list()`` for the same
page, on PostgreSQL and SQLite holding 100,000 runs, on asyncio and trio.

Per round, timed back to back in the same process: ``store.list(limit=50)`` and the
dashboard answering ``GET /runs`` (the same 50 runs, rendered to HTML: an in-process
ASGI call, no HTTP client, so what is timed is the app's own work); then the same for
the page after (the store's cursor) and for a status filter.  The figure is the median
of the rounds' own ratios (page / list; target <= 2.0).

The counts by status are not part of the page: its script loads them from
``/api/counts``, a separate request.  It is timed uncached (``counts_ttl=0``) against
the same ``list(limit=50)``, round by round (the store counts with one ``GROUP BY
status``; no target: it reads every row's status, where a page reads 51 rows), and
once the way it was counted before ``count_by_status`` (paging through
``list(status=...)``), for comparison.

The 100,000 rows are inserted with one SQL statement each (``generate_series`` on
PostgreSQL, ``executemany`` on SQLite) in the benchmark's own schema / file, dropped at
the end.  Without a reachable PostgreSQL (``AWAITLY_TEST_POSTGRES_DSN``) that store is
skipped with a note.

    python benchmarks/bench_dashboard.py [--quick] [--rounds N] [--runs N] [--json PATH]
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from _report import Summary, bench_parser, finish, median_ratio
from awaitly_anyio import create_dashboard_app
from awaitly_anyio.stores.postgres import PostgresStore
from awaitly_anyio.stores.sqlite import SQLiteStore

PG_DSN = os.environ.get("AWAITLY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
TARGET = 2.0
PAGE = 50
STATUSES = ("completed", "completed", "completed", "failed", "running", "cancelled")


async def call_app(app: Any, path: str, query: str = "") -> bytes:
    """``GET path?query`` straight through the ASGI app; the body it sent."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"bench")],
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 200, (path, query, sent[1]["body"][:300])
    return bytes(sent[1]["body"])


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await fn()
    return time.perf_counter() - started


# ---- seeding -------------------------------------------------------------------------


def seed_sqlite(path: Path, runs: int) -> None:
    now = time.time()
    rows = [
        (
            f"run-{n:06d}",
            "orders" if n % 3 else "invoices",
            STATUSES[n % len(STATUSES)],
            "{}",
            now - runs + n,
            now - runs + n,
            1,
        )
        for n in range(runs)
    ]
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO awaitly_runs (id, workflow_name, status, metadata_json, created_at,"
            " updated_at, format_version) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


async def seed_postgres(schema: str, runs: int) -> None:
    import asyncpg  # type: ignore[import-untyped]

    db = await asyncpg.connect(PG_DSN)
    try:
        await db.execute(
            f"""
            INSERT INTO "{schema}".awaitly_runs
                (id, id_digest, workflow_name, status, metadata, created_at, updated_at,
                 format_version)
            SELECT 'run-' || lpad(g::text, 6, '0'),
                   sha256(convert_to('run-' || lpad(g::text, 6, '0'), 'UTF8')),
                   CASE WHEN g % 3 = 0 THEN 'invoices' ELSE 'orders' END,
                   (ARRAY['completed','completed','completed','failed','running','cancelled'])
                       [g % 6 + 1],
                   '{{}}'::jsonb, $1 - $2 + g, $1 - $2 + g, 1
            FROM generate_series(0, $2 - 1) AS g
            """,
            time.time(),
            runs,
        )
        await db.execute(f'ANALYZE "{schema}".awaitly_runs')
    finally:
        await db.close()


async def drop_schema(schema: str) -> None:
    import asyncpg

    db = await asyncpg.connect(PG_DSN)
    try:
        await db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await db.close()


# ---- measuring -----------------------------------------------------------------------


async def measure(open_store: Callable[[], Any], rounds: int, runs: int) -> dict[str, Any]:
    async with open_store() as store:
        app = create_dashboard_app(store, page_size=PAGE)
        first = await store.list(limit=PAGE)
        assert len(first.items) == PAGE
        assert first.next_cursor is not None
        page = await call_app(app, "/runs")
        assert page.count(b"class=run-link") == PAGE
        cursor = first.next_cursor
        cases: dict[
            str, tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[object]]]
        ] = {
            "first page": (
                lambda: store.list(limit=PAGE),
                lambda: call_app(app, "/runs"),
            ),
            "next page": (
                lambda: store.list(limit=PAGE, cursor=cursor),
                lambda: call_app(app, "/runs", f"cursor={cursor}"),
            ),
            "status=failed": (
                lambda: store.list(limit=PAGE, status="failed"),
                lambda: call_app(app, "/runs", "status=failed"),
            ),
        }
        for ours, theirs in cases.values():  # warm up both sides
            for _ in range(3):
                await ours()
                await theirs()
        figures: dict[str, Any] = {}
        for name, (listing, page_call) in cases.items():
            lists: list[float] = []
            pages: list[float] = []
            for n in range(rounds):
                # Alternate which goes first, so neither always meets a warm cache.
                if n % 2:
                    lists.append(await timed(listing))
                    pages.append(await timed(page_call))
                else:
                    pages.append(await timed(page_call))
                    lists.append(await timed(listing))
            figures[name] = {
                "list_ms": statistics.median(lists) * 1000,
                "page_ms": statistics.median(pages) * 1000,
                "ratio": median_ratio(pages, lists),
            }
        # /api/counts, uncached (counts_ttl=0): the store counts by status in one query.
        counts_app = create_dashboard_app(store, page_size=PAGE, counts_ttl=0)
        counts = json.loads(await call_app(counts_app, "/api/counts"))
        assert sum(counts["counts"].values()) == runs, counts
        seeded = Counter(STATUSES[n % len(STATUSES)] for n in range(runs))
        assert {k: v for k, v in counts["counts"].items() if v} == seeded, counts
        lists, counted = [], []
        for n in range(max(10, rounds // 4)):
            pair = [
                (lists, lambda: store.list(limit=PAGE)),
                (counted, lambda: call_app(counts_app, "/api/counts")),
            ]
            for into, fn in pair if n % 2 else pair[::-1]:
                into.append(await timed(fn))
        figures["counts"] = {
            "list_ms": statistics.median(lists) * 1000,
            "counts_ms": statistics.median(counted) * 1000,
            "ratio": median_ratio(counted, lists),
        }
        # The way it counted before count_by_status, for comparison: paging through
        # list(status=...) for every status (a store without count_by_status still does).
        paging_app = create_dashboard_app(PagingOnly(store), page_size=PAGE, counts_ttl=0)
        started = time.perf_counter()
        paged = json.loads(await call_app(paging_app, "/api/counts"))
        figures["paged_counts_ms"] = (time.perf_counter() - started) * 1000
        assert paged["counts"] == counts["counts"], (paged, counts)
        return figures


class PagingOnly:
    """The store seen as a plain `SnapshotStore` (no ``count_by_status``)."""

    def __init__(self, inner: Any) -> None:
        self.save, self.load, self.delete = inner.save, inner.load, inner.delete
        self.list, self.close = inner.list, inner.close

    async def __aenter__(self) -> PagingOnly:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None


def main() -> int:
    parser = bench_parser(__doc__, "fewer rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--runs", type=int, default=100_000)
    args = parser.parse_args()
    rounds = args.rounds or (30 if args.quick else 200)
    summary = Summary()
    report: dict[str, Any] = {"runs": args.runs, "rounds": rounds, "page": PAGE, "results": {}}
    print(f"dashboard runs page vs store.list(limit={PAGE}), {args.runs:,} runs, {rounds} rounds")

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"

        async def create_sqlite() -> None:
            async with SQLiteStore(path):
                pass

        anyio.run(create_sqlite)
        seed_sqlite(path, args.runs)
        stores: list[tuple[str, Callable[[], Any]]] = [("sqlite", lambda: SQLiteStore(path))]
        schema = f"bench_dash_{uuid.uuid4().hex[:8]}"
        postgres = True
        try:

            async def create_postgres() -> None:
                async with PostgresStore(PG_DSN, schema=schema):
                    pass

            anyio.run(create_postgres)
            asyncio.run(seed_postgres(schema, args.runs))
            stores.append(("postgres", lambda: PostgresStore(PG_DSN, schema=schema)))
        except OSError as exc:
            postgres = False
            print(f"PostgreSQL skipped ({type(exc).__name__}: {exc})")
        try:
            for store_name, opener in stores:
                for backend in ("asyncio", "trio"):
                    figures = anyio.run(measure, opener, rounds, args.runs, backend=backend)
                    report["results"][f"{store_name}/{backend}"] = figures
                    for case in ("first page", "next page", "status=failed"):
                        f = figures[case]
                        mark = summary.add(
                            f"dashboard {case} / list() [{store_name}]",
                            backend,
                            f["ratio"],
                            target=TARGET,
                        )
                        print(
                            f"  {store_name:8} {backend:7} {case:14} list {f['list_ms']:7.3f} ms"
                            f"  page {f['page_ms']:7.3f} ms  ratio {f['ratio']:5.2f}x  {mark}"
                        )
                    f = figures["counts"]
                    summary.add(
                        f"dashboard /api/counts / list() [{store_name}]", backend, f["ratio"]
                    )
                    print(
                        f"  {store_name:8} {backend:7} /api/counts    list {f['list_ms']:7.3f} ms"
                        f"  counts {f['counts_ms']:7.3f} ms  ratio {f['ratio']:5.1f}x"
                        f"  (by paging, as before: {figures['paged_counts_ms']:.0f} ms)"
                    )
        finally:
            if postgres:
                asyncio.run(drop_schema(schema))
    return finish(report, summary, args.json, failed=summary.missed)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
