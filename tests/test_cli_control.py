"""The `runs` CLI's control of runs (issue 20), run as a real process on stores another
process can open: `cancel`, `resume`, `fork`, their bulk forms (by status, workflow and
age, with `--dry-run` and `--yes`), what `list` and `show` say of queued runs and cancel
requests, and `schedules list|pause|resume|remove`.  Every refusal is one line, changes
nothing, and bad input is refused before the store is opened."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from awaitly_anyio import Err, Ok
from awaitly_anyio._cli import parse_duration
from awaitly_anyio._resume import StepRecord
from awaitly_anyio._store import EncodedStep
from awaitly_anyio.serialization import default_registry, encode_step_record
from awaitly_anyio.testing import FakeClock

from .kit_base import cli
from .store_kits import StoreKit
from .test_cli_errors import SECRET, one_error_line
from .test_cli_waiting import Runs

HOUR = 3600.0
T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


# ---- bad input, refused before any store is opened ----------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("15m", 900.0),
        ("2h", 7200.0),
        ("7d", 7 * 86400.0),
        ("1w", 7 * 86400.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        (" 2H ", 7200.0),
        ("0s", 0.0),
    ],
)
def test_durations_are_a_number_and_a_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "s", "-5m", "5 m", "3x", "2h-", "1e3s", "h2", "1,5h"])
def test_a_bad_duration_is_a_value_error_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration: write a number and a unit") as caught:
        parse_duration(text)
    assert f"--older-than {text!r}" in str(caught.value)
    with pytest.raises(ValueError, match="too long: at most 100 years"):
        parse_duration("99999999999d")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cancel", "--older-than", "3x"], "error: --older-than '3x' is not a duration"),
        (["cancel", "--older-than=-2h", "--yes"], "error: --older-than '-2h' is not a duration"),
        (
            ["cancel", "--status", "runing", "--yes"],
            "error: --status 'runing' is not a run status: use one of pending, running, waiting",
        ),
        (
            ["cancel", "--status", "completed", "--yes"],
            "error: --status completed: a completed run cannot be cancelled; use one of"
            " pending, running, waiting",
        ),
        (
            ["resume", "--status", "running", "--dry-run"],
            "error: --status running: a running run cannot be resumed; use one of failed,"
            " cancelled",
        ),
        (
            ["cancel", "--status", "pending"],
            "error: runs cancel with filters changes every run they select: add --yes to do"
            " it, or --dry-run to list those runs first",
        ),
        (
            ["resume", "--name", "orders"],
            "error: runs resume with filters changes every run they select: add --yes",
        ),
        (
            ["cancel", "order-1", "--status", "pending"],
            "error: runs cancel: give a run ID or filters (--status, --name, --older-than),"
            " not both",
        ),
        (["cancel"], "error: runs cancel: give a run ID, or filters"),
        (["resume", "--yes"], "error: runs resume: give a run ID, or filters"),
        (["cancel", "--name", " ", "--yes"], "error: --name is empty: give a workflow name"),
    ],
)
def test_bad_control_input_is_one_line_and_the_store_is_not_opened(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = cli("runs", "--store", "sqlite:///none.db", *args, cwd=tmp_path)
    assert done.returncode == 2
    assert one_error_line(done).startswith(message)
    assert done.stdout == ""
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["runs", "fork"], "the following arguments are required: ID"),
        (["runs", "fork", "a", "b", "--from-step"], "argument --from-step: expected one"),
        (["runs", "cancel", "a", "b"], "unrecognized arguments: b"),
        (["schedules"], "the following arguments are required: ACTION"),
        (["schedules", "pause"], "the following arguments are required: NAME"),
        (["schedules", "add", "nightly"], "invalid choice: 'add'"),
    ],
)
def test_a_command_line_mistake_is_one_line_pointing_to_help(args: list[str], message: str) -> None:
    line = one_error_line(cli(*args))
    assert message in line
    assert line.endswith("--help)")


@pytest.mark.parametrize(
    ("command", "mentions"),
    [
        (["runs"], ["cancel", "resume", "fork"]),
        (
            ["runs", "cancel"],
            ["ID", "--status", "--name", "--older-than", "--dry-run", "--yes", "never starts"],
        ),
        (["runs", "resume"], ["--status", "failed", "completed steps are kept", "--yes"]),
        (["runs", "fork"], ["NEW_ID", "--from-step KEY", "made up and printed"]),
        ([], ["schedules"]),
        (["schedules"], ["list", "pause", "resume", "remove", "add_schedule", "from Python"]),
        (["schedules", "list"], ["--store URL", "--json"]),
        (["schedules", "pause"], ["NAME"]),
    ],
)
def test_every_control_command_has_help(command: list[str], mentions: list[str]) -> None:
    done = cli(*command, "--help")
    assert (done.returncode, done.stderr) == (0, "")
    flat = " ".join(done.stdout.split())
    for word in mentions:
        assert word in flat, word


# ---- on a store, from another process ------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall=time.time())


@pytest.fixture
def runs(kit: StoreKit, store: Any, tmp_path: Path, anyio_backend: str) -> Runs:
    return Runs(kit, store, tmp_path, "trio" if anyio_backend == "trio" else "asyncio")


def step(key: str, result: Any) -> EncodedStep:
    record = StepRecord(result, started_at=T0, finished_at=T0 + timedelta(milliseconds=5))
    return EncodedStep(key, record, encode_step_record(key, record, default_registry))


async def running(store: Any, id: str, workflow: str = "orders") -> None:
    await store.claim(id, workflow, owner="worker-a", lease=60)


async def waiting(store: Any, id: str) -> None:
    await running(store, id)
    await store.begin_wait(
        id, step="wait:reply", key="reply", kind="message", wake_at=None, owner="worker-a"
    )


async def ended(store: Any, id: str, status: str, workflow: str = "orders") -> None:
    """Run ``id`` ended with ``status``: steps ``a`` (Ok) and ``b`` (Err when failed)."""
    await running(store, id, workflow)
    await store.checkpoint(id, step("a", Ok(1)), owner="worker-a")
    failed = status == "failed"
    await store.checkpoint(id, step("b", Err("declined") if failed else Ok(2)), owner="worker-a")
    result = Err("declined") if failed else Ok(2)
    await store.finish(id, status, result, None, owner="worker-a")


async def status_of(store: Any, id: str) -> str:
    info = await store.info(id)
    assert info is not None
    status: str = info.status
    return status


@pytest.mark.anyio
@pytest.mark.needs_url_store
async def test_cancel_one_run_says_what_happened_and_refusals_change_nothing(
    store: Any, runs: Runs
) -> None:
    await store.enqueue("queued", "orders", queue="emails")
    await running(store, "busy")
    await waiting(store, "parked")
    await ended(store, "done", "completed")

    out = await runs.ok("cancel", "queued")
    assert out == "cancelled run 'queued' (it was pending: it never starts)\n"
    assert await status_of(store, "queued") == "cancelled"

    out = await runs.ok("cancel", "busy")
    assert out == (
        "cancel requested for run 'busy' (it is running: the worker that runs it stops it,"
        " and it ends cancelled)\n"
    )
    info = await store.info("busy")
    assert (info.status, info.cancel_requested, info.lease_owner) == ("running", True, "worker-a")
    assert await store.renew("busy", owner="worker-a", lease=60) is False

    doc = json.loads(await runs.ok("--json", "cancel", "parked"))
    assert doc == {
        "cancelled": {"run_id": "parked", "was": "waiting", "outcome": "cancel_requested"}
    }
    assert (await store.info("parked")).cancel_requested is True

    # A run that ended: status 2, nothing changed.
    done = await runs("cancel", "done")
    assert done.returncode == 2
    assert one_error_line(done) == (
        "error: cannot cancel run 'done': it is completed; nothing was changed"
    )
    assert await status_of(store, "done") == "completed"
    done = await runs("cancel", "queued")
    assert one_error_line(done) == (
        "error: cannot cancel run 'queued': it is cancelled; nothing was changed"
    )

    # No such run: status 1.
    done = await runs("cancel", "ghost")
    assert done.returncode == 1
    line = one_error_line(done)
    assert line.startswith("error: no run 'ghost' in ")
    assert line.endswith("; nothing was cancelled")

    # A dry run of one run says what would happen, and changes nothing.
    await store.enqueue("later", "orders", queue="emails")
    out = await runs.ok("cancel", "later", "--dry-run")
    assert out == "would cancel run 'later' (pending); dry run: nothing changed\n"
    assert await status_of(store, "later") == "pending"
    done = await runs("cancel", "done", "--dry-run")
    assert done.returncode == 2
    assert one_error_line(done) == (
        "error: cannot cancel run 'done': it is completed; nothing would change"
    )
    assert (await runs("cancel", "ghost", "--dry-run")).returncode == 1


@pytest.mark.anyio
@pytest.mark.needs_url_store
async def test_resume_and_fork_keep_the_completed_steps(store: Any, runs: Runs) -> None:
    await ended(store, "failed", "failed")
    await store.enqueue("queued", "orders", queue="emails", priority=4, partition="eu")
    await store.cancel("queued")
    await running(store, "busy")

    out = await runs.ok("resume", "failed")
    assert out == (
        "resumed run 'failed' (it was failed): running with no lease: a worker's recovery"
        " takes it\n"
    )
    info = await store.info("failed")
    assert (info.status, info.lease_owner) == ("running", None)
    snapshot = await store.load("failed")
    assert list(snapshot.steps) == ["a"]  # the failed step runs again

    doc = json.loads(await runs.ok("resume", "queued", "--json"))
    assert doc == {
        "resumed": {"run_id": "queued", "was": "cancelled", "outcome": "resumed", "queue": "emails"}
    }
    assert await status_of(store, "queued") == "pending"

    done = await runs("resume", "busy")
    assert done.returncode == 2
    assert (
        one_error_line(done)
        == "error: cannot resume run 'busy': it is running; nothing was changed"
    )
    done = await runs("resume", "ghost")
    assert done.returncode == 1
    assert one_error_line(done).endswith("; nothing was resumed")

    # fork: the steps before --from-step are kept; the original is left as it is.
    await ended(store, "paid", "completed")
    out = await runs.ok("fork", "paid", "paid-again", "--from-step", "b")
    assert out == (
        "forked run 'paid' into 'paid-again' (the steps before 'b' kept): running with no"
        " lease: a worker's recovery takes it\n"
    )
    assert list((await store.load("paid-again")).steps) == ["a"]
    assert await status_of(store, "paid") == "completed"

    # Without NEW_ID, an id is made up and printed.
    doc = json.loads(await runs.ok("--json", "fork", "paid"))["forked"]
    assert doc["run_id"] == "paid"
    assert doc["from_step"] is None
    assert doc["status"] == "running"
    new_id = doc["new_id"]
    assert len(new_id) == 36
    assert list((await store.load(new_id)).steps) == ["a", "b"]
    out = await runs.ok("fork", "queued")
    assert out.startswith("forked run 'queued' into '")
    assert out.endswith(
        "' (every completed step kept): pending on queue 'emails': a worker serving that"
        " queue starts it\n"
    )

    done = await runs("fork", "paid", "paid-again")
    assert done.returncode == 2
    assert one_error_line(done) == (
        "error: cannot fork run 'paid' into 'paid-again': a run with that id exists (it is"
        " running); nothing was changed"
    )
    done = await runs("fork", "paid", "third", "--from-step", "nope")
    assert done.returncode == 2
    line = one_error_line(done)
    assert line.startswith("error: nothing forked from run 'paid': ")
    assert "'nope'" in line
    assert await store.info("third") is None
    done = await runs("fork", "ghost", "x")
    assert done.returncode == 1
    assert one_error_line(done).endswith("; nothing was forked")


@pytest.mark.anyio
@pytest.mark.needs_url_store
async def test_list_and_show_tell_the_queue_and_a_cancel_request(store: Any, runs: Runs) -> None:
    await store.enqueue("queued", "orders", queue="emails", priority=7, partition="eu-1")
    await store.enqueue("plain", "orders", queue="emails")
    await running(store, "busy")
    await store.cancel("busy")

    header, *rows = (await runs.ok("list")).splitlines()
    assert header.split() == [
        "ID",
        "WORKFLOW",
        "STATUS",
        "UPDATED",
        "EXPIRES",
        "QUEUE",
        "PRIORITY",
        "PARTITION",
        "CANCEL",
    ]
    by_id = {row.split()[0]: row.split() for row in rows}
    assert by_id["queued"][2] == "pending"
    assert by_id["queued"][-3:] == ["emails", "7", "eu-1"]
    assert by_id["plain"][-3:] == ["emails", "0", "-"]
    assert by_id["busy"][2] == "running"
    assert by_id["busy"][-1] == "requested"

    header, *rows = (await runs.ok("list", "--status", "pending")).splitlines()
    assert sorted(row.split()[0] for row in rows) == ["plain", "queued"]
    assert "CANCEL" not in header

    items = {i["id"]: i for i in json.loads(await runs.ok("list", "--json"))["items"]}
    assert {k: items["queued"][k] for k in ("status", "queue", "priority", "partition")} == {
        "status": "pending",
        "queue": "emails",
        "priority": 7,
        "partition": "eu-1",
    }
    assert items["queued"]["cancel_requested"] is False
    assert items["queued"]["started_at"] is None
    assert items["busy"]["cancel_requested"] is True
    assert items["busy"]["queue"] is None

    shown = (await runs.ok("show", "queued")).splitlines()
    assert "status    pending" in shown
    assert "pending   queued: no worker has started it yet" in shown
    assert "queue     'emails' (priority 7, partition 'eu-1')" in shown
    assert not any(line.startswith("cancel ") for line in shown)
    shown = (await runs.ok("show", "busy")).splitlines()
    assert "cancel    requested: the worker that runs it stops it, and it ends cancelled" in shown
    doc = json.loads(await runs.ok("show", "queued", "--json"))
    assert doc["queue"] == {"name": "emails", "priority": 7, "partition": "eu-1"}
    assert doc["cancel_requested"] is False
    doc = json.loads(await runs.ok("show", "busy", "--json"))
    assert (doc["queue"], doc["cancel_requested"]) == (None, True)

    # Taken from the queue (after "plain": priority 0 starts first): started.
    taken = await store.claim_queued("emails", owner="worker-b", lease=60, limit=2)
    assert [i.id for i in taken] == ["plain", "queued"]
    shown = (await runs.ok("show", "queued")).splitlines()
    assert any(line.startswith("started   ") for line in shown)
    doc = json.loads(await runs.ok("show", "queued", "--json"))
    assert doc["started_at"] is not None


@pytest.mark.anyio
@pytest.mark.needs_url_store
async def test_list_and_show_mark_abandoned_and_stale_runs(
    store: Any, runs: Runs, clock: FakeClock
) -> None:
    """Issue 20: a running run no worker holds and a pending run no worker takes are
    marked, so runs of a workflow no worker registered do not look healthy."""
    clock.wall = time.time() - 3600  # the runs below were made an hour ago
    await store.claim("lost", "gone", owner="dead-worker", lease=60)
    await store.claim("busy", "orders", owner="live-worker", lease=7200)
    await store.enqueue("stray", "elsewhere", queue="emails")

    header, *rows = (await runs.ok("list")).splitlines()
    assert header.split()[-1] == "NOTE"
    by_id = {row.split()[0]: row for row in rows}
    assert by_id["lost"].split()[2] == "running"
    assert "abandoned (lease expired 59m" in by_id["lost"]
    assert "abandoned" not in by_id["busy"]
    assert "stale" not in by_id["stray"]

    header, *rows = (await runs.ok("list", "--status", "pending", "--stale", "10m")).splitlines()
    assert header.split()[-1] == "NOTE"
    assert "stale (queued 1h00m ago)" in rows[0]
    out = await runs.ok("list", "--status", "pending", "--stale", "2h")
    assert "NOTE" not in out
    assert "stale" not in out

    items = {
        i["id"]: i for i in json.loads(await runs.ok("list", "--json", "--stale", "10m"))["items"]
    }
    assert {id: (i["abandoned"], i["stale"]) for id, i in items.items()} == {
        "lost": (True, False),
        "busy": (False, False),
        "stray": (False, True),
    }

    shown = (await runs.ok("show", "lost")).splitlines()
    [line] = [line for line in shown if line.startswith("abandoned ")]
    assert "lease expired 59m" in line
    assert "registers workflow 'gone'" in line
    assert not any(
        line.startswith("abandoned ") for line in (await runs.ok("show", "busy")).splitlines()
    )
    shown = (await runs.ok("show", "stray", "--stale", "10m")).splitlines()
    [line] = [line for line in shown if line.startswith("stale ")]
    assert "queue 'emails'" in line
    assert "workflow 'elsewhere'" in line
    doc = json.loads(await runs.ok("show", "stray", "--json", "--stale", "10m"))
    assert (doc["abandoned"], doc["stale"]) == (False, True)
    doc = json.loads(await runs.ok("show", "lost", "--json"))
    assert (doc["abandoned"], doc["stale"]) == (True, False)

    done = await runs("list", "--stale", "soon")
    assert done.returncode == 2
    assert "--stale 'soon' is not a duration" in one_error_line(done)


@pytest.mark.anyio
@pytest.mark.needs_url_store
async def test_bulk_cancel_by_status_name_and_age_with_a_dry_run_first(
    store: Any, runs: Runs, clock: FakeClock
) -> None:
    now = clock.wall
    clock.wall = now - 3 * HOUR  # three hours old
    await store.enqueue("old-order", "orders", queue="q")
    await store.enqueue("old-mail", "emails", queue="q")
    await running(store, "old-busy")
    await ended(store, "old-done", "completed")
    clock.wall = now
    await store.enqueue("new-order", "orders", queue="q")
    await waiting(store, "new-parked")

    # A dry run lists what would be done and changes nothing.
    out = await runs.ok("cancel", "--older-than", "2h", "--dry-run")
    header, *rows, summary = out.splitlines()
    assert header.split() == ["ID", "WORKFLOW", "STATUS", "CREATED", "QUEUE", "WOULD"]
    assert sorted(row.split()[0] for row in rows) == ["old-busy", "old-mail", "old-order"]
    would = {row.split()[0]: " ".join(row.split()[6:]) for row in rows}
    assert would == {
        "old-busy": "cancel requested",
        "old-mail": "cancelled",
        "old-order": "cancelled",
    }
    assert summary == "would cancel 3 runs; dry run: nothing changed"
    assert await status_of(store, "old-order") == "pending"

    doc = json.loads(await runs.ok("--json", "cancel", "--name", "orders", "--dry-run"))
    assert doc["dry_run"] is True
    dry = sorted(item["run_id"] for item in doc["runs"])
    assert dry == ["new-order", "new-parked", "old-busy", "old-order"]

    # Without --yes: refused, nothing changed.
    done = await runs("cancel", "--status", "pending")
    assert done.returncode == 2
    assert "add --yes" in one_error_line(done)
    assert await status_of(store, "new-order") == "pending"

    # Only pending runs of "orders" older than 2h.
    out = await runs.ok(
        "cancel", "--status", "pending", "--name", "orders", "--older-than", "2h", "--yes"
    )
    assert out == (
        "cancelled run 'old-order' (it was pending: it never starts)\ncancel: 1 cancelled\n"
    )
    statuses = {i: await status_of(store, i) for i in ("old-order", "old-mail", "new-order")}
    assert statuses == {"old-order": "cancelled", "old-mail": "pending", "new-order": "pending"}

    # Everything that can be cancelled, as JSON.
    doc = json.loads(
        await runs.ok(
            "cancel",
            "--status",
            "pending",
            "--status",
            "waiting",
            "--status",
            "running",
            "--yes",
            "--json",
        )
    )
    assert doc["action"] == "cancel"
    assert doc["dry_run"] is False
    outcomes = {item["run_id"]: item["outcome"] for item in doc["runs"]}
    assert outcomes == {
        "old-mail": "cancelled",
        "new-order": "cancelled",
        "old-busy": "cancel_requested",
        "new-parked": "cancel_requested",
    }
    assert (doc["skipped"], doc["damaged"]) == ([], [])
    assert await status_of(store, "old-done") == "completed"

    out = await runs.ok("cancel", "--name", "nobody", "--yes")
    assert out == "no runs to cancel\n"


@pytest.mark.anyio
@pytest.mark.needs_url_store
async def test_bulk_resume_takes_failed_and_cancelled_runs(
    store: Any, runs: Runs, clock: FakeClock
) -> None:
    await ended(store, "f1", "failed")
    await ended(store, "f2", "failed", workflow="emails")
    await ended(store, "c1", "cancelled")
    await ended(store, "ok", "completed")

    out = await runs.ok("resume", "--status", "failed", "--dry-run")
    assert out.splitlines()[-1] == "would resume 2 runs; dry run: nothing changed"

    out = await runs.ok("resume", "--name", "orders", "--yes")
    lines = out.splitlines()
    assert lines[-1] == "resume: 2 resumed"
    assert sorted(lines[:-1]) == [
        "resumed run 'c1' (it was cancelled): running with no lease: a worker's recovery takes it",
        "resumed run 'f1' (it was failed): running with no lease: a worker's recovery takes it",
    ]
    assert [await status_of(store, i) for i in ("f1", "f2", "c1", "ok")] == [
        "running",
        "failed",
        "running",
        "completed",
    ]
    assert list((await store.load("f1")).steps) == ["a"]


# ---- schedules -----------------------------------------------------------------------------


class Schedules(Runs):
    """``python -m awaitly_anyio schedules ...`` on the test's store."""

    async def __call__(self, *args: str, stdin: bytes | None = None) -> Any:
        return await anyio.to_thread.run_sync(
            lambda: cli("schedules", *args, *self.where, *self.backend)
        )


@pytest.mark.anyio
@pytest.mark.needs_url_store
async def test_schedules_are_listed_paused_resumed_and_removed(
    kit: StoreKit, store: Any, tmp_path: Path, anyio_backend: str, clock: FakeClock
) -> None:
    from awaitly_anyio._schedules import Schedule, add_schedule, fire_schedules

    schedules = Schedules(kit, store, tmp_path, "trio" if anyio_backend == "trio" else "asyncio")
    assert await schedules.ok("list") == "no schedules\n"
    nightly = Schedule(
        name="nightly", workflow="report", cron="0 2 * * *", timezone="Europe/Paris", queue="q"
    )
    hourly = Schedule(name="hourly", workflow="sync", every=3600, input={"token": SECRET})
    await add_schedule(store, nightly, clock=clock)
    await add_schedule(store, hourly, clock=clock)
    clock.wall += 2 * HOUR
    await fire_schedules(store, clock=clock)

    out = await schedules.ok("list")
    assert SECRET not in out  # a schedule's input is never shown
    header, *rows = out.splitlines()
    assert header.split() == [
        "NAME",
        "WORKFLOW",
        "WHEN",
        "QUEUE",
        "STATE",
        "LAST",
        "TICK",
        "NEXT",
        "TICK",
    ]
    assert header.endswith("NEXT TICK")
    assert [row.split()[0] for row in rows] == ["hourly", "nightly"]
    assert "every 1h00m" in rows[0]
    assert rows[0].split()[1] == "sync"
    assert "cron '0 2 * * *' Europe/Paris" in rows[1]
    assert all(" active " in row for row in rows)

    doc = json.loads(await schedules.ok("list", "--json"))
    assert SECRET not in json.dumps(doc)
    items = {item["name"]: item for item in doc["items"]}
    assert items["hourly"]["every"] == 3600
    assert items["hourly"]["last_tick"] is not None  # fired
    assert items["hourly"]["next_tick"] is not None
    assert (items["nightly"]["cron"], items["nightly"]["timezone"]) == ("0 2 * * *", "Europe/Paris")
    assert (items["nightly"]["queue"], items["nightly"]["paused"]) == ("q", False)

    assert await schedules.ok("pause", "hourly") == "paused schedule 'hourly'\n"
    assert await schedules.ok("pause", "hourly") == "schedule 'hourly' was already paused\n"
    items = {i["name"]: i for i in json.loads(await schedules.ok("--json", "list"))["items"]}
    assert (items["hourly"]["paused"], items["hourly"]["next_tick"]) == (True, None)
    assert " paused " in (await schedules.ok("list")).splitlines()[1]
    doc = json.loads(await schedules.ok("resume", "hourly", "--json"))
    assert doc == {"resumed": "hourly", "changed": True}
    assert await schedules.ok("resume", "hourly") == "schedule 'hourly' was already active\n"

    assert await schedules.ok("remove", "nightly") == "removed schedule 'nightly'\n"
    for action in ("remove", "pause", "resume"):
        done = await schedules(action, "nightly")
        assert done.returncode == 1
        line = one_error_line(done)
        assert line.startswith("error: no schedule 'nightly' in ")
    assert [i["name"] for i in json.loads(await schedules.ok("list", "--json"))["items"]] == [
        "hourly"
    ]

    # A schedule this release cannot read is listed as such (and can be removed).
    await store.put_schedule("broken", {"version": 99})
    out = await schedules.ok("list")
    assert "UNREADABLE" in out
    assert "unreadable schedule 'broken' (it never fires; 'schedules remove' removes it): " in out
    assert await schedules.ok("remove", "broken") == "removed schedule 'broken'\n"


@pytest.mark.anyio
@pytest.mark.needs_url_store
async def test_damaged_runs_are_never_touched_and_are_named(
    kit: StoreKit, store: Any, runs: Runs
) -> None:
    await ended(store, "broken-row", "failed")
    await kit.damage(store, "broken-row", "created_at")
    await ended(store, "broken-step", "failed")
    await kit.damage(store, "broken-step", "step")
    before = await kit.raw(store, "broken-row")

    out = await runs.ok("resume", "--status", "failed", "--dry-run")
    lines = out.splitlines()
    assert "left 1 damaged run alone (status unknown): 'broken-row'" in lines
    out = await runs.ok("resume", "--status", "failed", "--yes")
    lines = out.splitlines()
    assert "left 1 damaged run alone (status unknown): 'broken-row'" in lines
    # Its row reads, its steps do not: skipped when its turn comes.
    skipped = [line for line in lines if line.startswith("skipped run 'broken-step': ")]
    assert len(skipped) == 1
    assert "it cannot be decoded" in skipped[0]
    assert lines[-1] == "resume: 1 skipped"
    assert await kit.raw(store, "broken-row") == before
    doc = json.loads(await runs.ok("resume", "--status", "failed", "--yes", "--json"))
    assert doc["damaged"] == ["broken-row"]

    # A run whose steps cannot be decoded is not resumed: status 1, nothing changed.
    step_damaged = await kit.raw(store, "broken-step")
    done = await runs("resume", "broken-step")
    assert done.returncode == 1
    line = one_error_line(done)
    assert "broken-step" in line
    assert line.endswith("; nothing was changed")
    assert await kit.raw(store, "broken-step") == step_damaged
