"""The dashboard in a real browser (issue 23): headless Chromium from the distribution
(``chromium``, ``chromium-driver``), driven by Selenium, against the app served by
Hypercorn on a free loopback port, on trio and on asyncio (the backend under test runs
the server and the workflow).  Open the runs list, filter, open a run, approve a
waiting run and see it complete; a hostile-value run renders as text (no script runs);
an action without the credential is refused.

Skipped with a reason when Chromium, its driver or Selenium is missing, except under
``CI=true`` (``.ci/run`` installs them), where that fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import pytest

from awaitly_anyio import (
    Approval,
    Deps,
    Ok,
    WorkflowContext,
    WorkflowSnapshot,
    create_dashboard_app,
    create_workflow,
)
from awaitly_anyio._resume import StepRecord
from awaitly_anyio.stores.sqlite import SQLiteStore

from .test_health import served

pytestmark = pytest.mark.anyio

T = TypeVar("T")
TOKEN = "browser-t0ken"
HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path, package in ((CHROMIUM, "chromium"), (DRIVER, "chromium-driver")):
        if not os.path.exists(path):
            return f"{path} is missing (apt-get install {package})"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _missing()
    if missing is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{missing}; CI needs it", pytrace=False)
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,900")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


async def in_thread(fn: Callable[[], T]) -> T:
    """Selenium blocks: each browser step runs in a worker thread, so the server and the
    workflow keep running on the event loop meanwhile."""
    return await anyio.to_thread.run_sync(fn)


@contextlib.asynccontextmanager
async def dashboard(tmp_path: Path, anyio_backend: str) -> AsyncIterator[tuple[Any, str, Any]]:
    async with SQLiteStore(tmp_path / "runs.db") as store, anyio.create_task_group() as tg:
        for n in range(1, 4):
            status = "failed" if n == 2 else "completed"
            steps = {"reserve": StepRecord(Ok("reserved")), "charge": StepRecord(Ok(n))}
            await store.save(
                f"order-{n}", WorkflowSnapshot("orders", f"order-{n}", status=status, steps=steps)
            )
        await store.save(
            HOSTILE,
            WorkflowSnapshot(
                HOSTILE,
                HOSTILE,
                status="completed",
                steps={HOSTILE: StepRecord(Ok(HOSTILE))},
                result=Ok(HOSTILE),
            ),
        )
        workflow = create_workflow("approvals")

        async def body(ctx: WorkflowContext[Deps]) -> str:
            decision: Approval = await ctx.step.wait_for_approval("approval", key="approve:1")
            return f"approved by {decision.by}"

        for run_id in ("refund-1", "refund-2"):
            tg.start_soon(lambda run_id=run_id: workflow.run(body, workflow_id=run_id, store=store))
        for run_id in ("refund-1", "refund-2"):
            while (info := await store.info(run_id)) is None or info.status != "waiting":  # noqa: ASYNC110
                await anyio.sleep(0.01)
        app = create_dashboard_app(store, actions=True, token=TOKEN, store_name="sqlite:///runs.db")
        async with served(app, anyio_backend) as url:
            yield store, url, tg
        tg.cancel_scope.cancel()


async def wait_for(check: Callable[[], bool], what: str) -> None:
    """Until ``check()`` (a browser-side condition) holds; at most 30 s."""
    try:
        with anyio.fail_after(30):
            while not await in_thread(check):  # noqa: ASYNC110 - a condition in the browser
                await anyio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def text_of(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def ids_listed(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [str(a.text) for a in driver.find_elements(By.CSS_SELECTOR, "#runs a.run-link")]


async def test_browse_filter_open_and_approve_a_waiting_run(
    browser: Any, tmp_path: Path, anyio_backend: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    async with dashboard(tmp_path, anyio_backend) as (store, url, _):
        await in_thread(lambda: browser.get(f"{url}/runs"))
        listed = await in_thread(lambda: ids_listed(browser))
        assert set(listed) == {"order-1", "order-2", "order-3", HOSTILE, "refund-1", "refund-2"}
        # The counts arrive by a second request the page's script makes.
        await wait_for(
            lambda: browser.find_element(By.ID, "counts").get_attribute("data-loaded") == "true",
            "the counts",
        )
        assert await in_thread(lambda: text_of(browser, '[data-count="waiting"]')) == "2"
        assert await in_thread(lambda: text_of(browser, '[data-count="completed"]')) == "3"

        def filter_failed() -> None:
            Select(browser.find_element(By.NAME, "status")).select_by_value("failed")
            browser.find_element(By.CSS_SELECTOR, "#filters button").click()

        await in_thread(filter_failed)
        await wait_for(lambda: "status=failed" in browser.current_url, "the filter")
        assert await in_thread(lambda: ids_listed(browser)) == ["order-2"]

        await in_thread(lambda: browser.find_element(By.LINK_TEXT, "order-2").click())
        await wait_for(lambda: "/run?id=order-2" in browser.current_url, "the run page")
        steps = await in_thread(
            lambda: [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#steps td.key")]
        )
        assert steps == ["reserve", "charge"]
        assert "flowchart" not in await in_thread(lambda: text_of(browser, "#diagram"))
        assert "1. reserve" in await in_thread(lambda: text_of(browser, "#diagram"))

        await in_thread(lambda: browser.get(f"{url}/run?id=refund-1"))

        def approve() -> None:
            form = browser.find_element(By.CSS_SELECTOR, 'form[data-action="approve"]')
            form.find_element(By.NAME, "by").send_keys("ann")
            form.find_element(By.NAME, "credential").send_keys(TOKEN)
            form.find_element(By.CSS_SELECTOR, "button").click()

        await in_thread(approve)
        await wait_for(lambda: "done=approve" in browser.current_url, "the approval")
        assert "Approved" in await in_thread(lambda: text_of(browser, "#notice"))

        def completed() -> bool:
            browser.refresh()
            return text_of(browser, "#run-status") == "completed"

        await wait_for(completed, "the run to complete")
        assert "approved by ann" in await in_thread(lambda: text_of(browser, "#result"))
        snapshot = await store.load("refund-1")
        assert snapshot is not None
        assert snapshot.result == Ok("approved by ann")


async def test_hostile_values_render_as_text_and_actions_need_the_credential(
    browser: Any, tmp_path: Path, anyio_backend: str
) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    async with dashboard(tmp_path, anyio_backend) as (store, url, _):
        await in_thread(lambda: browser.get(f"{url}/runs?prefix=%3Cscript"))
        assert await in_thread(lambda: ids_listed(browser)) == [HOSTILE]
        await in_thread(lambda: browser.find_element(By.CSS_SELECTOR, "#runs a.run-link").click())
        await wait_for(lambda: "/run?id=" in browser.current_url, "the run page")
        assert await in_thread(lambda: text_of(browser, "#run-id")) == HOSTILE
        assert await in_thread(lambda: browser.title) != "pwned"
        keys = await in_thread(
            lambda: [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#steps td.key")]
        )
        assert keys == [HOSTILE]
        assert await in_thread(lambda: browser.find_elements(By.CSS_SELECTOR, "main img")) == []
        with pytest.raises(NoAlertPresentException):
            await in_thread(lambda: browser.switch_to.alert.text)

        await in_thread(lambda: browser.get(f"{url}/run?id=refund-2"))

        def approve_without_token() -> None:
            form = browser.find_element(By.CSS_SELECTOR, 'form[data-action="approve"]')
            form.find_element(By.NAME, "by").send_keys("mallory")
            form.find_element(By.CSS_SELECTOR, "button").click()

        await in_thread(approve_without_token)
        await wait_for(lambda: "/actions/approve" in browser.current_url, "the refusal")
        assert "401" in await in_thread(lambda: text_of(browser, "h1"))
        assert "needs the dashboard" in await in_thread(lambda: text_of(browser, "#error"))
        info = await store.info("refund-2")
        assert info is not None
        assert info.status == "waiting"  # nothing was delivered
