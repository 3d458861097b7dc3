"""The web dashboard (issue 23), driven in process through httpx's ASGI transport on both
backends: the read paths over every store, the actions (approve a waiting run and see it
complete, cancel, resume) on memory, SQLite and PostgreSQL, escaping of hostile stored
values, masking of secrets, and the refusals (read-only, CSRF, credential, cross-site).
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from html import unescape
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from awaitly_anyio import (
    Approval,
    Deps,
    Err,
    Ok,
    WorkflowContext,
    WorkflowSnapshot,
    create_circuit_breaker,
    create_dashboard_app,
    create_health_tracker,
    create_rate_limiter,
    create_workflow,
)
from awaitly_anyio._resume import StepRecord
from awaitly_anyio.testing import FakeClock

from .kit_base import StoreKit
from .postgres_kit import POSTGRES
from .store_kits import MEMORY, SQLITE

pytestmark = pytest.mark.anyio

TOKEN = "t0ken-for-tests"
HOSTILE = "<script>alert(1)</script>"
ACTION_KITS = [MEMORY, SQLITE, *([POSTGRES] if POSTGRES is not None else [])]


@pytest.fixture(params=ACTION_KITS, ids=[k.name for k in ACTION_KITS])
def action_kit(request: pytest.FixtureRequest) -> StoreKit:
    found: StoreKit = request.param
    return found


@contextlib.asynccontextmanager
async def client(app: Any, root: str = "") -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, root_path=root)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as c:
        yield c


def at(clock: FakeClock, seconds_ago: float = 0.0) -> datetime:
    return datetime.fromtimestamp(clock.time() - seconds_ago, timezone.utc)


def ids_on(page: str) -> list[str]:
    """The run ids a runs page lists, in order."""
    return [unescape(m) for m in re.findall(r"class=run-link href=\"[^\"]*\">([^<]*)</a>", page)]


def csrf_of(page: str) -> str:
    found = re.search(r'name=csrf value="([0-9a-f]+)"', page)
    assert found is not None, "no form on the page"
    return found[1]


async def seed(store: Any, clock: FakeClock) -> None:
    """Runs of every kind: completed (a secret in its value), failed, an approval
    waiting, one queued, one with hostile names; updated an hour apart, newest last."""
    ok = StepRecord(
        Ok({"card": "4242", "api_key": "sk_live_abcdefgh12345678"}), 2, at(clock, 9), at(clock, 8)
    )
    await store.save(
        "order-1",
        WorkflowSnapshot(
            "orders",
            "order-1",
            status="completed",
            steps={
                "reserve": StepRecord(Ok("reserved"), 1, at(clock, 10), at(clock, 9)),
                "charge": ok,
            },
            result=Ok({"shipped": True, "db": "postgresql://app:hunter2@db/prod"}),
            metadata={"awaitly.input": {"sku": "A-1", "password": "hunter2"}, "team": "shop"},
        ),
    )
    clock.advance(3600)
    await store.save(
        "order-2",
        WorkflowSnapshot(
            "orders",
            "order-2",
            status="failed",
            steps={"charge": StepRecord(Err("DECLINED"), 3, at(clock, 5), at(clock, 4))},
            result=Err("DECLINED"),
            metadata={"awaitly.error": "DECLINED"},
        ),
    )
    clock.advance(3600)
    await store.save(
        "invoice-1",
        WorkflowSnapshot("invoices", "invoice-1", status="completed", result=Ok(1)),
    )
    clock.advance(3600)
    await store.mark_running("order-3", "orders")
    await store.begin_wait(
        "order-3", step="approval", key="approve:3", kind="approval", wake_at=None
    )
    clock.advance(3600)
    await store.save(
        HOSTILE,
        WorkflowSnapshot(
            f"wf{HOSTILE}",
            HOSTILE,
            status="completed",
            steps={HOSTILE: StepRecord(Ok(HOSTILE), 1, at(clock, 1), at(clock))},
            result=Ok(HOSTILE),
            metadata={HOSTILE: HOSTILE},
        ),
    )


# ---- read paths, every store -------------------------------------------------------------------


async def test_the_runs_page_lists_filters_and_pages_with_the_store_cursor(
    kit: StoreKit, tmp_path: Path
) -> None:
    clock = FakeClock()
    async with kit.open(tmp_path, clock) as store:
        await seed(store, clock)
        app = create_dashboard_app(store, clock=clock, page_size=2)
        async with client(app) as c:
            page = (await c.get("/runs")).text
            assert ids_on(page) == [HOSTILE, "order-3"]
            seen = ids_on(page)
            while (more := re.search(r'id=next-page href="([^"]+)"', page)) is not None:
                page = (await c.get(unescape(more[1]))).text
                seen += ids_on(page)
            # Every run exactly once, newest first, across the store's pages.
            assert seen == [HOSTILE, "order-3", "invoice-1", "order-2", "order-1"]
            got = await c.get("/runs", params={"status": "completed", "limit": "10"})
            assert ids_on(got.text) == [HOSTILE, "invoice-1", "order-1"]
            got = await c.get("/runs", params={"prefix": "order-", "limit": "10"})
            assert ids_on(got.text) == ["order-3", "order-2", "order-1"]
            # The workflow name and the age are filtered by the app, page by page.
            got = await c.get("/runs", params={"name": "orders"})
            assert ids_on(got.text) == ["order-3", "order-2"]
            more = re.search(r'id=next-page href="([^"]+)"', got.text)
            assert more is not None
            got = await c.get(unescape(more[1]))
            assert ids_on(got.text) == ["order-1"]
            got = await c.get("/runs", params={"newer_than": "2.5h", "limit": "10"})
            assert ids_on(got.text) == [HOSTILE, "order-3", "invoice-1"]
            got = await c.get("/runs", params={"older_than": "90m", "limit": "10"})
            assert ids_on(got.text) == ["invoice-1", "order-2", "order-1"]
            got = await c.get("/runs", params={"status": "failed", "name": "invoices"})
            assert ids_on(got.text) == []
            assert "No runs match." in got.text
            for bad in (
                {"status": "lost"},
                {"limit": "0"},
                {"newer_than": "soon"},
                {"cursor": "xx"},
            ):
                refused = await c.get("/runs", params=bad)
                assert refused.status_code == 400, bad
            counts = (await c.get("/api/counts")).json()
            assert counts["counts"] == {
                "pending": 0,
                "running": 0,
                "waiting": 1,
                "completed": 3,
                "failed": 1,
                "cancelled": 0,
            }
            assert counts["capped"] == []


async def test_a_run_page_shows_steps_in_order_masks_secrets_and_draws_the_run(
    kit: StoreKit, tmp_path: Path
) -> None:
    clock = FakeClock()
    async with kit.open(tmp_path, clock) as store:
        await seed(store, clock)
        app = create_dashboard_app(store, clock=clock)
        async with client(app) as c:
            got = await c.get("/run", params={"id": "order-1"})
            assert got.status_code == 200
            page = got.text
            steps = re.findall(r"<td class=key>([^<]*)</td>", page)
            assert steps == ["reserve", "charge"]  # execution order
            assert "hunter2" not in page
            assert "sk_live_abcdefgh12345678" not in page
            assert "postgresql://app:***@db/prod" in page
            assert "&quot;password&quot;: &quot;***&quot;" in page  # the input, masked
            assert "&quot;api_key&quot;: &quot;***&quot;" in page
            assert "team" in page  # user metadata
            assert "<td>2</td>" in page  # the charge took two attempts
            mermaid = (await c.get("/run.mmd", params={"id": "order-1"})).text
            assert mermaid.startswith("flowchart TD\n")
            assert "reserve" in mermaid
            assert "charge" in mermaid
            assert "hunter2" not in mermaid
            text = (await c.get("/run.txt", params={"id": "order-2"})).text
            assert "1. charge [error, 3 attempts" in text
            assert "failed: DECLINED" in text
            waiting = (await c.get("/run", params={"id": "order-3"})).text
            assert "approval approve:3 (no deadline)" in waiting
            missing = await c.get("/run", params={"id": "nope"})
            assert missing.status_code == 404
            assert "no run &#x27;nope&#x27;" in missing.text


async def test_stored_hostile_values_render_as_text(kit: StoreKit, tmp_path: Path) -> None:
    clock = FakeClock()
    async with kit.open(tmp_path, clock) as store:
        await seed(store, clock)
        app = create_dashboard_app(store, clock=clock, actions=True, token=TOKEN)
        async with client(app) as c:
            pages = [
                (await c.get(path, params=params)).text
                for path, params in (
                    ("/runs", {}),
                    ("/runs", {"name": f"wf{HOSTILE}", "prefix": HOSTILE}),
                    ("/run", {"id": HOSTILE}),
                    ("/run", {"id": f"missing{HOSTILE}"}),
                    ("/waiting", {}),
                )
            ]
            for page in pages:
                assert "<script>alert" not in page
            for page in pages[:4]:
                assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
            assert ids_on(pages[1]) == [HOSTILE]
            mermaid = (await c.get("/run.mmd", params={"id": HOSTILE})).text
            for line in mermaid.splitlines()[1:]:  # no label can be closed by a stored text
                assert "<" not in line
                assert ">" not in line.replace("-->", "")
                assert line.count('"') in (0, 2)


async def test_the_other_pages_and_the_live_state(kit: StoreKit, tmp_path: Path) -> None:
    clock = FakeClock()
    breaker = create_circuit_breaker("stripe", failure_threshold=1, reset_timeout=30, clock=clock)
    await breaker(lambda: Err("boom"))
    limiter = create_rate_limiter("emails", max_requests=5, window=60, clock=clock)
    await limiter(lambda: 1)
    tracker = create_health_tracker()

    async def db_ok() -> bool:
        return True

    async def db_down() -> None:
        raise ConnectionError("postgresql://u:hunter2@db down")

    async with kit.open(tmp_path, clock) as store:
        await seed(store, clock)
        await store.enqueue("mail-1", "emails", queue="outbox", priority=2)
        app = create_dashboard_app(
            store,
            clock=clock,
            breakers=[breaker],
            limiters=[limiter],
            tracker=tracker,
            checks={"db": db_ok, "cache": db_down},
            store_name="postgresql://u:hunter2@db/x",
        )
        async with client(app) as c:
            waiting = (await c.get("/waiting")).text
            assert "order-3" in waiting
            assert "approve:3" in waiting
            assert "<form" not in waiting  # read-only: no action forms
            queues = (await c.get("/queues")).text
            assert "outbox" in queues
            assert "mail-1" in queues
            assert (await c.get("/schedules")).status_code == 200
            health = (await c.get("/health")).text
            assert "stripe" in health
            assert "OPEN" in health
            assert "emails" in health
            assert "5 / 60" in health
            assert "cache" in health
            assert "ConnectionError" in health
            assert "hunter2" not in health
            runs = await c.get("/runs")
            assert "postgresql://u:***@db/x" in runs.text  # the store's name, masked
            # No inline script may run, whatever a page holds.
            assert "script-src 'self';" in runs.headers["content-security-policy"]
            css = await c.get("/static/dashboard.css")
            assert css.status_code == 200
            assert css.headers["content-type"] == "text/css"
            assert (await c.get("/nope")).status_code == 404
            assert (await c.post("/runs")).status_code == 405


# ---- actions -----------------------------------------------------------------------------------


async def waiting_run(
    store: Any, tg: Any, run_id: str, results: list[Any], finished: anyio.Event
) -> None:
    """Start a run that waits for approval ``approve:1`` and returns who approved."""
    workflow = create_workflow("orders")

    async def body(ctx: WorkflowContext[Deps]) -> str:
        decision: Approval = await ctx.step.wait_for_approval("approval", key="approve:1")
        return f"approved by {decision.by}"

    async def start() -> None:
        results.append(await workflow.run(body, workflow_id=run_id, store=store))
        finished.set()

    tg.start_soon(start)
    while True:  # until the run is stored waiting (the store tells: no timing assumed)
        info = await store.info(run_id)
        if info is not None and info.status == "waiting":
            return
        await anyio.sleep(0.01)


async def test_approving_a_waiting_run_completes_it(action_kit: StoreKit, tmp_path: Path) -> None:
    async with action_kit.open(tmp_path, FakeClock()) as store, anyio.create_task_group() as tg:
        results: list[Any] = []
        finished = anyio.Event()
        await waiting_run(store, tg, "order-9", results, finished)
        app = create_dashboard_app(store, actions=True, token=TOKEN)
        async with client(app) as c:
            page = (await c.get("/run", params={"id": "order-9"})).text
            assert 'data-action="approve"' in page
            done = await c.post(
                "/actions/approve",
                data={
                    "csrf": csrf_of(page),
                    "id": "order-9",
                    "key": "approve:1",
                    "by": "ann",
                    "credential": TOKEN,
                },
            )
            assert done.status_code == 303
            assert done.headers["location"] == "/run?id=order-9&done=approve"
            with anyio.fail_after(30):
                await finished.wait()
            assert results == [Ok("approved by ann")]
            page = (await c.get(done.headers["location"])).text
            assert "Approved" in page
            assert 'class="badge s-completed"' in page


async def test_cancel_and_resume_from_the_dashboard(action_kit: StoreKit, tmp_path: Path) -> None:
    clock = FakeClock()
    async with action_kit.open(tmp_path, clock) as store:
        await store.enqueue("mail-1", "emails", queue="outbox")
        app = create_dashboard_app(store, actions=True, basic_auth=("ops", "pa55word"), clock=clock)
        auth = "Basic " + base64.b64encode(b"ops:pa55word").decode()
        async with client(app) as c:
            csrf = csrf_of((await c.get("/queues")).text)
            done = await c.post(
                "/actions/cancel",
                data={"csrf": csrf, "id": "mail-1", "back": "queues"},
                headers={"authorization": auth},
            )
            assert done.status_code == 303
            assert done.headers["location"] == "/queues?done=cancel"
            info = await store.info("mail-1")
            assert info is not None
            assert info.status == "cancelled"
            again = await c.post(
                "/actions/cancel",
                data={"csrf": csrf, "id": "mail-1"},
                headers={"authorization": auth},
            )
            assert again.status_code == 409  # it already ended: nothing changed
            assert "cannot cancel run &#x27;mail-1&#x27;: it is cancelled" in again.text
            page = (await c.get("/run", params={"id": "mail-1"})).text
            assert 'data-action="resume"' in page
            done = await c.post(
                "/actions/resume",
                data={"csrf": csrf, "id": "mail-1"},
                headers={"authorization": auth},
            )
            assert done.status_code == 303
            info = await store.info("mail-1")
            assert info is not None
            assert info.status == "pending"


async def test_actions_are_refused_without_csrf_credential_or_when_read_only(
    action_kit: StoreKit, tmp_path: Path
) -> None:
    clock = FakeClock()
    async with action_kit.open(tmp_path, clock) as store:
        await store.mark_running("order-3", "orders")
        await store.begin_wait(
            "order-3", step="approval", key="approve:3", kind="approval", wake_at=None
        )
        app = create_dashboard_app(store, actions=True, token=TOKEN, clock=clock)
        form = {"id": "order-3", "key": "approve:3", "by": "mallory"}
        async with client(app) as c:
            csrf = csrf_of((await c.get("/run", params={"id": "order-3"})).text)
            refusals = [
                (403, {**form, "credential": TOKEN}, {}),  # no CSRF token
                (403, {**form, "csrf": "0" * 64, "credential": TOKEN}, {}),  # a wrong one
                (401, {**form, "csrf": csrf}, {}),  # no credential
                (401, {**form, "csrf": csrf, "credential": TOKEN + "x"}, {}),
                (401, {**form, "csrf": csrf}, {"authorization": "Bearer nope-nope"}),
                (401, {**form, "csrf": csrf}, {"authorization": "Basic " + "b3BzOng="}),
                (
                    403,
                    {**form, "csrf": csrf, "credential": TOKEN},
                    {"sec-fetch-site": "cross-site"},
                ),
                (
                    403,
                    {**form, "csrf": csrf, "credential": TOKEN},
                    {"origin": "http://evil.example"},
                ),
            ]
            for status, data, headers in refusals:
                got = await c.post("/actions/approve", data=data, headers=headers)
                assert got.status_code == status, (data, headers, got.text)
            assert (await c.get("/actions/approve")).status_code == 405
            bearer = await c.post(
                "/actions/approve",
                data={**form, "csrf": csrf},
                headers={"authorization": f"Bearer {TOKEN}", "origin": "http://dash"},
            )
            assert bearer.status_code == 303  # the same request with the credential
        read_only = create_dashboard_app(store, clock=clock)
        async with client(read_only) as c:
            page = (await c.get("/run", params={"id": "order-3"})).text
            assert "<form method=post" not in page
            got = await c.post("/actions/cancel", data={"id": "order-3", "credential": TOKEN})
            assert got.status_code == 403
        info = await store.info("order-3")
        assert info is not None
        assert info.status == "waiting"
        assert not info.cancel_requested


async def test_mounted_under_a_prefix_the_links_keep_it() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from awaitly_anyio.stores import MemoryStore

    async with MemoryStore() as store:
        await store.save("r1", WorkflowSnapshot("orders", "r1", status="completed"))
        outer = Starlette(routes=[Mount("/ops/dashboard", app=create_dashboard_app(store))])
        async with client(outer) as c:
            page = (await c.get("/ops/dashboard/runs")).text
            assert 'href="/ops/dashboard/run?id=r1"' in page
            assert 'href="/ops/dashboard/static/dashboard.css"' in page
            run = await c.get("/ops/dashboard/run", params={"id": "r1"})
            assert run.status_code == 200
            assert (await c.get("/ops/dashboard/static/dashboard.js")).status_code == 200


def test_bad_options_are_refused_by_name() -> None:
    from awaitly_anyio.stores import MemoryStore

    store = MemoryStore()
    for kwargs, message in (
        ({"actions": True}, "actions=True needs a credential"),
        ({"token": "short"}, "token must be a string of at least 8"),
        ({"basic_auth": ("a:b", "c")}, "basic_auth must be a (user, password)"),
        ({"page_size": 0}, "page_size must be an integer from 1 to 1000"),
        ({"counts_ttl": -1}, "counts_ttl must be a number of seconds"),
        ({"csrf_secret": b"x"}, "csrf_secret must be at least 16 bytes"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            create_dashboard_app(store, **kwargs)
    with pytest.raises(TypeError, match="store must be a SnapshotStore"):
        create_dashboard_app(object())  # type: ignore[arg-type]


# ---- the command line ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--actions"], {}, "error: --actions needs a credential: --token-env NAME"),
        (["--token-env", "NO_SUCH_VAR"], {}, "error: --token-env: the environment variable"),
        (["--token-env", "SHORT"], {"SHORT": "abc"}, "shorter than 8 characters"),
        (["--port", "70000"], {}, "error: --port must be from 0 to 65535"),
    ],
)
def test_the_dashboard_command_refuses_bad_options_before_serving(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    from .kit_base import cli

    done = cli(
        "dashboard", "--store", "sqlite:///runs.db", "--create", *args, cwd=tmp_path, env=env
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert "NO_SUCH_VAR" not in done.stdout


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_dashboard_command_serves_on_localhost_until_sigterm(
    tmp_path: Path, backend: str
) -> None:
    import os
    import signal
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if k != "AWAITLY_STORE_URL"}
    environ["DASH_TOKEN"] = TOKEN
    command = [
        sys.executable,
        "-m",
        "awaitly_anyio",
        "dashboard",
        "--store",
        "sqlite:///runs.db",
        "--create",
        "--port",
        "0",
        "--backend",
        backend,
        "--actions",
        "--token-env",
        "DASH_TOKEN",
    ]
    with subprocess.Popen(
        command,
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            found = re.search(r"on (http://127\.0\.0\.1:\d+)/ \(actions enabled\)", line)
            assert found is not None, line
            page = httpx.get(f"{found[1]}/runs", timeout=30)
            assert page.status_code == 200
            assert "sqlite:///runs.db" in page.text
            assert TOKEN not in page.text
        finally:
            server.send_signal(signal.SIGTERM)
            _, errors = server.communicate(timeout=60)
        assert server.returncode == 0, errors


async def test_a_damaged_run_is_listed_and_shown_as_damaged(kit: StoreKit, tmp_path: Path) -> None:
    clock = FakeClock()
    async with kit.open(tmp_path, clock) as store:
        await seed(store, clock)
        await kit.damage(store, "order-1", "created_at")
        app = create_dashboard_app(store, clock=clock, page_size=10)
        async with client(app) as c:
            runs = (await c.get("/runs")).text
            assert "order-1" in ids_on(runs)
            assert 'class="badge s-damaged"' in runs
            page = await c.get("/run", params={"id": "order-1"})
            assert page.status_code == 200
            assert "<dt>damaged</dt>" in page.text
            assert (await c.get("/run.mmd", params={"id": "order-1"})).status_code == 409
            info = await store.info("order-1")
            assert info is not None
            assert info.damaged  # left as it was: a read repairs nothing


async def test_send_and_reject_from_the_waiting_page(action_kit: StoreKit, tmp_path: Path) -> None:
    from awaitly_anyio import ApprovalRejectedError

    workflow = create_workflow("orders")
    results: dict[str, Any] = {}
    done = {"paid": anyio.Event(), "refund": anyio.Event()}

    async def paid(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.wait_for("payment", key="paid")

    async def refund(ctx: WorkflowContext[Deps]) -> Any:
        return await ctx.step.wait_for_approval("manager", key="approve")

    async with action_kit.open(tmp_path, FakeClock()) as store, anyio.create_task_group() as tg:
        for run_id, body in (("paid", paid), ("refund", refund)):

            async def start(run_id: str = run_id, body: Any = body) -> None:
                results[run_id] = await workflow.run(body, workflow_id=run_id, store=store)
                done[run_id].set()

            tg.start_soon(start)
        for run_id in done:
            while (info := await store.info(run_id)) is None or info.status != "waiting":  # noqa: ASYNC110
                await anyio.sleep(0.01)
        app = create_dashboard_app(store, actions=True, token=TOKEN)
        async with client(app) as c:
            page = (await c.get("/waiting")).text
            assert 'data-action="send"' in page
            assert 'data-action="reject"' in page
            csrf = csrf_of(page)
            common = {"csrf": csrf, "credential": TOKEN, "back": "waiting"}
            bad = await c.post(
                "/actions/send", data={**common, "id": "paid", "key": "paid", "value": "{x"}
            )
            assert bad.status_code == 400
            assert "must be JSON" in bad.text
            sent = await c.post(
                "/actions/send",
                data={**common, "id": "paid", "key": "paid", "value": '{"amount": 42}'},
            )
            assert sent.status_code == 303
            assert sent.headers["location"] == "/waiting?done=send"
            rejected = await c.post(
                "/actions/reject",
                data={**common, "id": "refund", "key": "approve", "by": "bob", "reason": "no"},
            )
            assert rejected.status_code == 303
            with anyio.fail_after(30):
                for event in done.values():
                    await event.wait()
        assert results["paid"] == Ok({"amount": 42})
        assert isinstance(results["refund"], Err)
        assert isinstance(results["refund"].error, ApprovalRejectedError)
        assert results["refund"].error.by == "bob"


async def test_counts_stop_at_the_limit_and_a_failing_store_answers_503() -> None:
    from awaitly_anyio.stores import MemoryStore

    clock = FakeClock()
    store = MemoryStore(clock=clock)
    async with store:
        await seed(store, clock)
        app = create_dashboard_app(store, clock=clock, count_limit=2, counts_ttl=0)
        async with client(app) as c:
            counts = (await c.get("/api/counts")).json()
            assert counts["counts"]["completed"] == 2
            assert counts["capped"] == ["completed"]
            head = await c.head("/runs")
            assert head.status_code == 200
            assert head.content == b""
    async with client(app) as c:  # the store is closed now
        for path in ("/runs", "/run?id=order-1", "/api/counts"):
            got = await c.get(path)
            assert got.status_code == 503, path
            assert "the store failed" in got.text
