"""Take the screenshots of the dashboard kept in ``docs/images/`` (docs/dashboard.md).

    python scripts/dashboard_screenshots.py [--out docs/images]

Seeds a SQLite store in a temporary folder with a small shop's runs (completed,
failed after retries, one waiting for an approval, queued ones, a schedule), serves
the dashboard with Hypercorn on a free loopback port and photographs its main pages
with headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by
Selenium).  Run it again after changing the pages, and commit the PNGs.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from awaitly_anyio import (
    Approval,
    Deps,
    Err,
    Ok,
    Schedule,
    WorkflowContext,
    WorkflowSnapshot,
    add_schedule,
    create_circuit_breaker,
    create_dashboard_app,
    create_health_tracker,
    create_rate_limiter,
    create_workflow,
)
from awaitly_anyio._resume import StepRecord
from awaitly_anyio.stores.sqlite import SQLiteStore

PAGES = {
    "dashboard-runs.png": "/runs",
    "dashboard-run.png": "/run?id=order-1042",
    "dashboard-failed-run.png": "/run?id=order-1041",
    "dashboard-waiting.png": "/waiting",
    "dashboard-health.png": "/health",
}


def _steps(start: datetime, plan: list[tuple[str, float, Any, int]]) -> dict[str, StepRecord]:
    steps: dict[str, StepRecord] = {}
    at = start
    for key, seconds, result, attempts in plan:
        end = at + timedelta(seconds=seconds)
        steps[key] = StepRecord(result, attempts, at, end)
        at = end + timedelta(milliseconds=15)
    return steps


async def seed(store: SQLiteStore) -> None:
    now = datetime.now(timezone.utc)
    for n in range(1030, 1041):
        start = now - timedelta(minutes=(1042 - n) * 7)
        await store.save(
            f"order-{n}",
            WorkflowSnapshot(
                "checkout",
                f"order-{n}",
                status="completed",
                steps=_steps(
                    start,
                    [
                        ("reserve", 0.04, Ok("reserved"), 1),
                        ("charge", 0.8, Ok({"charge": f"ch_{n}"}), 1),
                        ("ship", 0.3, Ok("label-ok"), 1),
                    ],
                ),
                result=Ok({"order": n, "status": "shipped"}),
                created_at=start,
                updated_at=start + timedelta(seconds=2),
            ),
        )
    start = now - timedelta(minutes=9)
    await store.save(
        "order-1041",
        WorkflowSnapshot(
            "checkout",
            "order-1041",
            status="failed",
            steps=_steps(
                start,
                [("reserve", 0.05, Ok("reserved"), 1), ("charge", 4.2, Err("CARD_DECLINED"), 3)],
            ),
            result=Err("CARD_DECLINED"),
            metadata={
                "awaitly.input": {"cart": ["sku-7", "sku-9"], "card_token": "tok_visa_4242"},
                "awaitly.error": "CARD_DECLINED",
                "customer": "c-981",
            },
            created_at=start,
            updated_at=start + timedelta(seconds=5),
        ),
    )
    start = now - timedelta(minutes=3)
    await store.save(
        "order-1042",
        WorkflowSnapshot(
            "checkout",
            "order-1042",
            status="completed",
            steps=_steps(
                start,
                [
                    ("validate", 0.01, Ok(True), 1),
                    ("reserve", 0.12, Ok("reserved"), 1),
                    ("charge", 1.6, Ok({"charge": "ch_1042", "api_key": "sk_live_51Habcdefgh"}), 2),
                    ("email", 0.4, Ok("sent"), 1),
                    ("ship", 0.7, Ok({"carrier": "dhl", "label": "JD014600004DE"}), 1),
                ],
            ),
            result=Ok({"order": 1042, "status": "shipped"}),
            metadata={
                "awaitly.input": {"cart": ["sku-1"], "db": "postgresql://shop:s3cret@db/shop"},
                "awaitly.trace_context": {
                    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                },
                "channel": "web",
            },
            created_at=start,
            updated_at=start + timedelta(seconds=3),
        ),
    )
    for n in range(3):
        await store.enqueue(f"email-{n}", "newsletter", queue="emails", priority=n)
    await add_schedule(store, Schedule(name="nightly-report", workflow="reports", every=86_400))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def main(out: Path) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before serving
    with tempfile.TemporaryDirectory() as folder:
        async with SQLiteStore(Path(folder) / "shop.db") as store, anyio.create_task_group() as tg:
            await seed(store)
            refunds = create_workflow("refunds")

            async def refund(ctx: WorkflowContext[Deps]) -> str:
                await ctx.step("check", lambda: "eligible", key="check")
                decision: Approval = await ctx.step.wait_for_approval("manager", key="approve")
                return f"refunded, approved by {decision.by}"

            waiting = anyio.CancelScope()

            async def wait_for_the_manager() -> None:
                with waiting:  # cancelled at the end: the run stays stored waiting
                    await refunds.run(refund, workflow_id="refund-77", store=store)

            tg.start_soon(wait_for_the_manager)
            while (info := await store.info("refund-77")) is None or info.status != "waiting":  # noqa: ASYNC110
                await anyio.sleep(0.01)
            clock_breaker = create_circuit_breaker(
                "payments-api", failure_threshold=2, reset_timeout=30
            )
            for _ in range(2):
                await clock_breaker(lambda: Err("timeout"))
            mail_breaker = create_circuit_breaker("mail-api", failure_threshold=5, reset_timeout=30)
            await mail_breaker(lambda: "ok")
            limiter = create_rate_limiter("carrier-api", max_requests=10, window=1.0)
            for _ in range(4):
                await limiter(lambda: "ok")
            tracker = create_health_tracker()

            async def database() -> bool:
                return True

            app = create_dashboard_app(
                store,
                actions=True,
                token="screenshot-token",
                breakers=[clock_breaker, mail_breaker],
                limiters=[limiter],
                tracker=tracker,
                checks={"database": database},
                store_name="postgresql://shop:s3cret@db.internal/shop",
                title="shop workflows",
            )
            config = Config()
            port = free_port()
            config.bind = [f"127.0.0.1:{port}"]
            config.accesslog = config.errorlog = None
            stop = anyio.Event()
            tg.start_soon(lambda: serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
            while True:
                try:
                    await (await anyio.connect_tcp("127.0.0.1", port)).aclose()
                    break
                except OSError:
                    await anyio.sleep(0.02)

            def photograph() -> None:
                options = webdriver.ChromeOptions()
                options.binary_location = "/usr/bin/chromium"
                for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
                    options.add_argument(flag)
                options.add_argument("--window-size=1280,860")
                options.add_argument("--hide-scrollbars")
                driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
                try:
                    for name, path in PAGES.items():
                        driver.get(f"http://127.0.0.1:{port}{path}")
                        if path == "/runs":  # let the page's script fill in the counts
                            for _ in range(100):
                                loaded = driver.find_element("id", "counts").get_attribute(
                                    "data-loaded"
                                )
                                if loaded == "true":
                                    break
                                driver.implicitly_wait(0.05)
                        # The whole page (up to 1800 pixels), not only the first screen.
                        tall = driver.execute_script("return document.documentElement.scrollHeight")
                        driver.set_window_size(1280, min(max(int(tall) + 20, 600), 1800))
                        driver.save_screenshot(str(out / name))
                        print(f"wrote {out / name}")
                finally:
                    driver.quit()

            await anyio.to_thread.run_sync(photograph)
            waiting.cancel()
            stop.set()  # Hypercorn shuts down on its own (it does not like being cancelled)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    anyio.run(main, args.out, backend="asyncio")
    sys.exit(0)
