"""The `runs` CLI for waiting runs (issue 19), run as a real process on stores that
another process can open: `send`, `approve`, `reject`, `pending`, `resolve-hook`, and
what `list` and `show` say of a waiting run.  Each refusal is one line and stores
nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from awaitly_anyio import Deps, Ok, WorkflowContext, create_workflow
from awaitly_anyio.testing import FakeClock

from .kit_base import cli
from .store_kits import StoreKit
from .test_cli_errors import one_error_line
from .test_cli_runs import store_args

HOUR = 3600.0
ODD_KEY = "a key\nwith 'quotes'"


# ---- the value given to --json, refused before any store is opened ------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{'n': 1}", "the --json value is not valid JSON: Expecting property name"),
        ("[1, 2", "the --json value is not valid JSON: Expecting ',' delimiter (line 1"),
        ("yes", "the --json value is not valid JSON: Expecting value (line 1, column 1)"),
        ("NaN", "the --json value is not valid JSON: NaN is not a JSON value"),
        ("1e999", "the --json value is not valid JSON: 1e999 is too large for a number"),
        ("  ", "the --json value is empty"),
        ("@nowhere.json", "cannot read the JSON in 'nowhere.json': No such file or directory"),
    ],
)
@pytest.mark.parametrize("action", ["send", "resolve-hook"])
def test_a_value_that_is_not_json_is_one_line_naming_the_problem(
    tmp_path: Path, value: str, message: str, action: str
) -> None:
    target = ["order-1", "approve"] if action == "send" else ["tok_x"]
    # The store does not exist: the value is refused before the store is looked at.
    done = cli(
        "runs", "--store", "sqlite:///none.db", action, *target, "--json", value, cwd=tmp_path
    )
    assert done.returncode == 2
    assert one_error_line(done).startswith(f"error: {message}")
    assert done.stdout == ""
    assert not (tmp_path / "none.db").exists()


def test_a_value_read_from_stdin_or_a_file_is_refused_the_same_way(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_bytes(b'{"n": \xff}')
    done = cli(
        "runs",
        "--store",
        "sqlite:///none.db",
        "send",
        "o",
        "k",
        "--json",
        "@bad.json",
        cwd=tmp_path,
    )
    assert one_error_line(done).startswith("error: the JSON in 'bad.json' is not UTF-8 text")
    assert done.returncode == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["runs", "send", "order-1", "k"], "the following arguments are required: --json"),
        (["runs", "send", "order-1", "--json", "1"], "the following arguments are required: KEY"),
        (["runs", "approve", "order-1", "k"], "the following arguments are required: --by"),
        (["runs", "reject", "order-1", "k", "--reason"], "argument --reason: expected one"),
        (["runs", "resolve-hook", "tok"], "the following arguments are required: --json"),
        (["runs", "pending", "--limit", "lots"], "argument --limit: invalid int value"),
    ],
)
def test_a_command_line_mistake_is_one_line_pointing_to_help(args: list[str], message: str) -> None:
    line = one_error_line(cli(*args))
    assert message in line
    assert line.endswith("--help)")


@pytest.mark.parametrize(
    ("command", "mentions"),
    [
        (["runs"], ["send", "approve", "reject", "pending", "resolve-hook"]),
        (["runs", "send"], ["ID", "KEY", "--json VALUE", "stdin", "@FILE", "1 MiB"]),
        (["runs", "approve"], ["--by WHO", "--reason WHY", "--store URL"]),
        (["runs", "reject"], ["--by WHO", "--reason WHY"]),
        (["runs", "pending"], ["--limit", "--json", "approval"]),
        (["runs", "approvals"], ["--limit", "approval"]),
        (["runs", "resolve-hook"], ["TOKEN", "--json VALUE", "resolves once"]),
    ],
)
def test_every_waiting_command_has_help(command: list[str], mentions: list[str]) -> None:
    done = cli(*command, "--help")
    assert (done.returncode, done.stderr) == (0, "")
    for word in mentions:
        assert word in done.stdout


# ---- on a store, from another process ------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall=time.time())


class Runs:
    """``python -m awaitly_anyio runs ...`` on the test's store, on the test's loop."""

    def __init__(self, kit: StoreKit, store: Any, tmp_path: Path, backend: str) -> None:
        self.where = store_args(kit, store, tmp_path)
        self.backend = ["--backend", backend]

    async def __call__(self, *args: str, stdin: bytes | None = None) -> Any:
        if stdin is None:
            return await anyio.to_thread.run_sync(
                lambda: cli("runs", *args, *self.where, *self.backend)
            )
        command = [sys.executable, "-m", "awaitly_anyio", "runs", *args, *self.where]
        return await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                [*command, *self.backend], input=stdin, capture_output=True, timeout=120
            )
        )

    async def ok(self, *args: str) -> str:
        done = await self(*args)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        out: str = done.stdout
        return out


@pytest.fixture
def runs(kit: StoreKit, store: Any, tmp_path: Path, anyio_backend: str) -> Runs:
    return Runs(kit, store, tmp_path, "trio" if anyio_backend == "trio" else "asyncio")


async def waiting(
    store: Any, id: str, key: str | None, kind: str, wake_at: float | None
) -> tuple[bool, float | None]:
    await store.claim(id, "orders", owner="worker-a", lease=60)
    ready: tuple[bool, float | None] = await store.begin_wait(
        id, step=f"wait:{key}", key=key, kind=kind, wake_at=wake_at, owner="worker-a"
    )
    return ready


async def received(store: Any, id: str, key: str, step: str | None = None) -> Any:
    """What the step (default ``wait:KEY``) receives: ``None`` when nothing is pending."""
    step = step or f"wait:{key}"
    return await store.receive(id, key, step=step, name=step, owner="worker-a")


@pytest.mark.anyio
@pytest.mark.needs_url_store
async def test_send_delivers_a_json_value_once_and_refusals_store_nothing(
    store: Any, runs: Runs, clock: FakeClock
) -> None:
    await waiting(store, "order-1", "payment", "message", clock.wall + HOUR)

    out = await runs.ok("send", "order-1", "payment", "--json", '{"paid": 4200, "ok": true}')
    assert out == "sent 'payment' to run 'order-1'\n"
    assert await received(store, "order-1", "payment") == Ok({"paid": 4200, "ok": True})
    assert await received(store, "order-1", "payment", "again") is None  # consumed once

    # Sent before the run waits: kept, and there when the wait begins.
    await store.claim("order-2", "orders", owner="worker-a", lease=60)
    doc = json.loads(await runs.ok("--json", "send", "order-2", "answer", "--json", '"yes"'))
    assert doc == {"sent": {"run_id": "order-2", "key": "answer"}}
    ready = await store.begin_wait(
        "order-2",
        step="wait:answer",
        key="answer",
        kind="message",
        wake_at=None,
        owner="worker-a",
    )
    assert ready[0] is True
    assert await received(store, "order-2", "answer") == Ok("yes")

    # No such run: status 1, and nothing kept for a run of that id made later.
    done = await runs("send", "ghost", "payment", "--json", "1")
    assert done.returncode == 1
    line = one_error_line(done)
    assert line.startswith("error: no run 'ghost' in ")
    assert line.endswith("; nothing was sent")
    await waiting(store, "ghost", "payment", "message", None)
    assert await received(store, "ghost", "payment") is None

    # A run that ended.
    await store.claim("done", "orders", owner="worker-a", lease=60)
    await store.finish("done", "completed", Ok(1), None, owner="worker-a")
    done = await runs("send", "done", "payment", "--json", "1")
    assert done.returncode == 2
    assert one_error_line(done) == (
        "error: run 'done' has already completed; the message was not stored"
    )

    # Over 1 MiB encoded (read from stdin: a command-line word cannot hold that much).
    big = json.dumps("x" * (1024 * 1024 + 10)).encode()
    done = await runs("send", "order-1", "payment", "--json", "-", stdin=big)
    assert done.returncode == 2
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: nothing sent to run 'order-1': ")
    assert "MiB" in lines[0] or "bytes" in lines[0]
    assert await received(store, "order-1", "payment", "later") is None

    # A small value from stdin goes through.
    done = await runs("send", "order-1", "payment", "--json", "-", stdin=b"[1, 2, 3]\n")
    assert done.returncode == 0, done.stderr
    assert await received(store, "order-1", "payment", "later") == Ok([1, 2, 3])


@pytest.mark.anyio
@pytest.mark.needs_url_store
async def test_approve_and_reject_with_who_and_why_and_what_is_pending(
    store: Any, runs: Runs, clock: FakeClock
) -> None:
    deadline = clock.wall + 2 * 24 * HOUR + 30
    await waiting(store, "order-7", "approve:order-7", "approval", deadline)
    await waiting(store, "order-8", "approve:order-8", "approval", None)
    await waiting(store, "order-9", "reply", "message", None)

    pending = await runs.ok("pending")
    lines = pending.splitlines()
    assert lines[0].split() == ["ID", "WORKFLOW", "KEY", "WAITING", "SINCE", "DEADLINE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"order-7", "order-8"}
    assert rows["order-7"][2] == "approve:order-7"
    assert rows["order-8"][-1] == "-"
    doc = json.loads(await runs.ok("approvals", "--json"))
    items = {item["id"]: item for item in doc["items"]}
    assert set(items) == {"order-7", "order-8"}
    assert items["order-7"]["wait_kind"] == "approval"
    assert items["order-7"]["waiting_for"] == "approve:order-7"
    assert items["order-7"]["wake_at"] is not None
    assert items["order-8"]["wake_at"] is None

    out = await runs.ok("approve", "order-7", "approve:order-7", "--by", "ada", "--reason", "ok")
    assert out == "approved 'approve:order-7' of run 'order-7' (by 'ada': 'ok')\n"
    got = await received(store, "order-7", "approve:order-7")
    assert got is not None
    approval = got.value
    assert (approval.approved, approval.by, approval.reason) == (True, "ada", "ok")

    doc = json.loads(await runs.ok("reject", "order-8", "approve:order-8", "--by", "bob", "--json"))
    assert doc == {
        "rejected": {"run_id": "order-8", "key": "approve:order-8", "by": "bob", "reason": None}
    }
    got = await received(store, "order-8", "approve:order-8")
    assert got is not None
    assert (got.value.approved, got.value.by, got.value.reason) == (False, "bob", None)

    done = await runs("approve", "nobody", "approve:x", "--by", "ada")
    assert done.returncode == 1
    assert one_error_line(done).startswith("error: no run 'nobody' in ")


@pytest.mark.anyio
@pytest.mark.needs_url_store
async def test_list_and_show_say_what_a_waiting_run_waits_for_and_until_when(
    store: Any, runs: Runs, clock: FakeClock
) -> None:
    await waiting(store, "order-7", "approve:order-7", "approval", clock.wall + 2 * HOUR + 5)
    await waiting(store, "nap", None, "timer", clock.wall - 90)
    await waiting(store, "odd key", ODD_KEY, "message", None)
    await store.claim("busy", "orders", owner="worker-a", lease=60)

    listed = await runs.ok("list", "--status", "waiting")
    header, *rows = listed.splitlines()
    assert header.split() == [
        "ID",
        "WORKFLOW",
        "STATUS",
        "UPDATED",
        "EXPIRES",
        "WAITING",
        "FOR",
        "DEADLINE",
    ]
    assert len(rows) == 3
    by_id = {row.split()[0]: row for row in rows if not row.startswith("odd key")}
    assert "approval approve:order-7" in by_id["order-7"]
    assert "timer" in by_id["nap"]
    odd = next(row for row in rows if row.startswith("odd key"))
    assert f"message {ODD_KEY!r}" in odd

    everything = await runs.ok("list")
    assert "busy" in everything
    doc = json.loads(await runs.ok("list", "--json"))
    items = {item["id"]: item for item in doc["items"]}
    assert items["busy"]["waiting_for"] is None
    assert items["busy"]["wait_kind"] is None
    assert items["order-7"]["waiting_for"] == "approve:order-7"
    assert items["order-7"]["wait_kind"] == "approval"
    assert items["nap"]["wait_kind"] == "timer"
    assert items["nap"]["waiting_for"] is None
    assert items["nap"]["wake_at"] is not None

    shown = await runs.ok("show", "order-7")
    line = next(line for line in shown.splitlines() if line.startswith("waiting "))
    assert line.startswith("waiting   approval 'approve:order-7' until ")
    assert re.search(r" UTC \((2h00m|1h5\dm) left\)$", line), line
    line = next(
        line for line in (await runs.ok("show", "nap")).splitlines() if line.startswith("waiting ")
    )
    assert line.startswith("waiting   timer until ")
    assert re.search(r" UTC \(due \dm\d\ds ago: a worker wakes it when it next looks\)$", line)
    assert "waiting " not in await runs.ok("show", "busy")
    wait = json.loads(await runs.ok("show", "order-7", "--json"))["wait"]
    assert wait["wait_kind"] == "approval"
    assert wait["waiting_for"] == "approve:order-7"
    assert wait["wake_at"] is not None
    assert json.loads(await runs.ok("show", "busy", "--json"))["wait"] is None


@pytest.mark.anyio
@pytest.mark.needs_url_store
async def test_a_refused_hook_token_is_one_line(store: Any, runs: Runs) -> None:
    for token in ("not-a-token", "hk_" + "A" * 40):
        done = await runs("resolve-hook", token, "--json", '{"paid": true}')
        assert done.returncode == 2
        line = one_error_line(done)
        assert line.startswith("error: hook token refused: ")
        assert token not in line  # the token is never repeated


# ---- the health app ------------------------------------------------------------------------


async def get(app: Any, path: str) -> tuple[int, dict[str, Any]]:
    """Drive the ASGI app directly (the HTTP serving is tested in test_health.py)."""
    sent: list[Any] = []

    async def receive() -> dict[str, str]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "http", "method": "GET", "path": path}, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


@pytest.mark.anyio
async def test_the_health_app_counts_runs_by_status_and_lists_what_waiting_runs_wait_for(
    store: Any, clock: FakeClock
) -> None:
    from awaitly_anyio.health import create_health_app

    await waiting(store, "order-7", "approve:order-7", "approval", clock.wall + HOUR)
    await waiting(store, "nap", None, "timer", clock.wall + 60)
    await waiting(store, "order-9", "reply", "message", None)
    await store.claim("busy", "orders", owner="worker-a", lease=60)
    await store.claim("done", "orders", owner="worker-a", lease=60)
    await store.finish("done", "completed", Ok(1), None, owner="worker-a")

    status, body = await get(create_health_app(store=store), "/health/runs")
    assert status == 200
    assert body["counts"] == {
        "pending": 0,
        "running": 1,
        "waiting": 3,
        "completed": 1,
        "failed": 0,
        "cancelled": 0,
    }
    assert body["capped"] == []
    listed = {run["id"]: run for run in body["waiting"]}
    assert set(listed) == {"order-7", "nap", "order-9"}
    assert listed["order-7"]["wait_kind"] == "approval"
    assert listed["order-7"]["waiting_for"] == "approve:order-7"
    assert listed["order-7"]["wake_at"] == (
        datetime.fromtimestamp(clock.wall + HOUR, timezone.utc).isoformat()
    )
    assert (listed["nap"]["wait_kind"], listed["nap"]["waiting_for"]) == ("timer", None)
    assert listed["order-9"]["wake_at"] is None

    # A count stops at count_limit (named in "capped"); the listing at waiting_listed.
    app = create_health_app(store=store, count_limit=2, waiting_listed=1)
    status, body = await get(app, "/health/runs")
    assert status == 200
    assert body["counts"]["waiting"] == 2
    assert body["capped"] == ["waiting"]
    assert len(body["waiting"]) == 1

    assert (await get(create_health_app(), "/health/runs"))[0] == 404


@pytest.mark.anyio
async def test_a_failing_store_answers_503_without_its_password() -> None:
    from awaitly_anyio.health import create_health_app

    class Broken:
        async def list(self, **options: Any) -> Any:
            raise ConnectionError("cannot reach postgresql://app:hunter2-S3KRET@db:5432/orders")

    status, body = await get(create_health_app(store=Broken()), "/health/runs")
    assert status == 503
    assert "hunter2" not in json.dumps(body)
    assert body["error"].startswith("ConnectionError: cannot reach postgresql://app:***@db")


@pytest.mark.anyio
@pytest.mark.needs_url_store
async def test_a_waiting_workflow_is_resumed_by_the_cli_from_another_process(
    store: Any, runs: Runs
) -> None:
    """A real durable run hands out a hook token and waits for it, then for an
    approval; both come from `python -m awaitly_anyio runs` in other processes."""
    tokens: list[str] = []
    handed_out = anyio.Event()

    async def body(ctx: WorkflowContext[Deps]) -> tuple[Any, str, str | None]:
        hook = await ctx.step.create_hook("payment hook", key="payment-hook")
        tokens.append(hook.token)
        handed_out.set()
        paid = await ctx.step.wait_for_hook("paid", hook)
        decision = await ctx.step.wait_for_approval("ship it", key="approve:order-3")
        return paid, decision.by, decision.reason

    workflow = create_workflow("orders")
    outcome: list[Any] = []

    async def run() -> None:
        outcome.append(await workflow.run(body, workflow_id="order-3", store=store))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await handed_out.wait()
        [token] = tokens
        out = await runs.ok("resolve-hook", token, "--json", '{"amount": 4200}')
        assert out == "resolved the hook\n"
        out = await runs.ok("approve", "order-3", "approve:order-3", "--by", "ada")
        assert out == "approved 'approve:order-3' of run 'order-3' (by 'ada')\n"
    assert outcome == [Ok(({"amount": 4200}, "ada", None))]

    # A token resolves once; the run has ended anyway.
    done = await runs("resolve-hook", token, "--json", "1")
    assert done.returncode == 2
    line = one_error_line(done)
    assert line.startswith("error: hook token refused: ")
    assert token not in line
