"""The `runs` CLI as a user meets it (issue 17, "CLI"), run as a real process: options
anywhere on the line, a mistyped SQLite path, `| head`, `runs show` with the steps in
execution order and the lease, and `--help` on every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import attrs
import pytest

from awaitly_anyio import Err, Ok, WorkflowSnapshot
from awaitly_anyio._resume import StepRecord
from awaitly_anyio._store import EncodedStep
from awaitly_anyio.serialization import default_registry, encode_step_record
from awaitly_anyio.stores.sqlite import SQLiteStore
from awaitly_anyio.testing import FakeClock

from . import postgres_kit, redis_kit
from .store_kits import StoreKit
from .test_cli_errors import cli, one_error_line

BACKENDS = ["asyncio", "trio"]
T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
# Recorded in this order, which is neither sorted nor reversed.
ORDER = ["reserve", "charge", "address", "ship", "notify"]


def record(n: int, *, attempts: int = 1, ms: int = 250) -> StepRecord:
    return StepRecord(
        Ok(n), attempts=attempts, started_at=T0, finished_at=T0 + timedelta(milliseconds=ms)
    )


def step(key: str, rec: StepRecord) -> EncodedStep:
    return EncodedStep(key, rec, encode_step_record(key, rec, default_registry))


def sqlite_with(tmp_path: Path, snapshots: list[WorkflowSnapshot]) -> str:
    """A SQLite database in ``tmp_path`` holding ``snapshots``; its URL."""

    async def save() -> None:
        async with SQLiteStore(tmp_path / "runs.db", synchronous="OFF") as store:
            for snapshot in snapshots:
                await store.save(snapshot.workflow_id, snapshot)

    anyio.run(save)
    return f"sqlite:///{tmp_path / 'runs.db'}"


def snapshot(id: str, steps: int = 2) -> WorkflowSnapshot:
    records = {f"step-{n}": record(n) for n in range(steps)}
    return WorkflowSnapshot("orders", id, steps=records, created_at=T0, updated_at=T0)


# ---- options anywhere ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    [
        "runs list --json --store URL",
        "--json --store URL runs list",
        "runs --json list --store URL",
        "--store URL runs --backend trio list --json",
        "--backend trio runs --store URL list --json --backend asyncio",
        # Given twice, the last one counts.
        "--store sqlite:///elsewhere/none.db runs --json list --store URL",
    ],
)
def test_options_are_accepted_before_or_after_the_command(tmp_path: Path, where: str) -> None:
    url = sqlite_with(tmp_path, [snapshot("order-1")])
    args = [url if word == "URL" else word for word in where.split()]
    done = cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    doc = json.loads(done.stdout)
    assert [item["id"] for item in doc["items"]] == ["order-1"]


def test_imports_given_anywhere_all_count(tmp_path: Path) -> None:
    url = sqlite_with(tmp_path, [snapshot("order-1")])
    done = cli("--import", "json", "runs", "--store", url, "show", "order-1", "--import", "nope_g")
    assert one_error_line(done) == (
        "error: cannot import 'nope_g' (from --import): No module named 'nope_g'"
    )
    done = cli("--import", "nope_h", "runs", "--store", url, "show", "order-1", "--import", "json")
    assert "'nope_h'" in one_error_line(done)


def test_store_options_anywhere_still_belong_to_their_store(tmp_path: Path) -> None:
    line = one_error_line(cli("runs", "list", "--store", "redis://cache:6379/0", "--schema", "s"))
    assert line == "error: --schema is for PostgreSQL stores only"
    line = one_error_line(cli("--create", "runs", "--store", "redis://cache:6379/0", "list"))
    assert line == "error: --create is for SQLite stores only"
    line = one_error_line(cli("--json", "demo", cwd=tmp_path))
    assert line == "error: --json is for the runs commands, not demo"


# ---- a mistyped SQLite path ----------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_missing_sqlite_file_is_an_error_naming_it_unless_asked_to_create(
    tmp_path: Path, backend: str
) -> None:
    for action in (["list"], ["show", "order-1"], ["delete", "order-1"]):
        done = cli(
            "runs", "--backend", backend, "--store", "sqlite:///nope.db", *action, cwd=tmp_path
        )
        line = one_error_line(done)
        assert done.returncode == 2
        assert line.startswith(f"error: no SQLite database at 'nope.db' ({tmp_path / 'nope.db'})")
        assert "--create" in line
        assert done.stdout == ""
    assert not (tmp_path / "nope.db").exists()

    env = {"AWAITLY_STORE_URL": "sqlite:///typo.db"}
    line = one_error_line(cli("runs", "list", cwd=tmp_path, env=env))
    assert "'typo.db'" in line
    assert "(from $AWAITLY_STORE_URL)" in line
    assert not (tmp_path / "typo.db").exists()

    # Asked for: an empty database is made.
    done = cli("runs", "--store", "sqlite:///nope.db", "list", "--create", cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "no runs\n", "")
    assert (tmp_path / "nope.db").exists()


def test_the_demo_still_creates_its_own_database(tmp_path: Path) -> None:
    done = cli("demo", "--store", "sqlite:///fresh-demo.db", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "fresh-demo.db").exists()


# ---- | head --------------------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_reader_that_stops_early_ends_the_command_quietly(
    tmp_path: Path, backend: str, as_json: bool
) -> None:
    # Far more output than a pipe holds, so the command is still writing when the
    # reader goes away (as `runs show ... | head -3` does).
    url = sqlite_with(tmp_path, [snapshot("big", steps=5000)])
    environ = {k: v for k, v in os.environ.items() if k != "AWAITLY_STORE_URL"}
    command = [sys.executable, "-m", "awaitly_anyio", "runs", "--store", url, "show", "big"]
    command += ["--backend", backend] + (["--json"] if as_json else [])
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        first = process.stdout.readline()
        process.stdout.close()
        errors = process.stderr.read().decode()
        status = process.wait(timeout=120)
    assert first
    assert errors == ""
    assert status == 0


# ---- runs show: steps in execution order, and the lease ------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall=time.time())


def store_args(kit: StoreKit, store: Any, tmp_path: Path) -> list[str]:
    if kit.name == "sqlite":
        return ["--store", f"sqlite:///{tmp_path / 'runs.db'}"]
    if kit.name == "postgres":
        return ["--store", postgres_kit.DSN, "--schema", postgres_kit.schema_for(tmp_path)]
    return ["--store", redis_kit.URL, "--key-prefix", store.prefix]


def step_rows(shown: str) -> list[list[str]]:
    """The rows of `runs show`'s step table, split into columns."""
    lines = shown.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("#  STEP KEY"))
    return [line.split() for line in lines[start + 1 :]]


def lease_line(shown: str) -> str:
    return next(line for line in shown.splitlines() if line.startswith("lease "))


@pytest.mark.anyio
@pytest.mark.needs_url_store
async def test_show_gives_steps_in_execution_order_and_tells_a_live_lease_from_a_dead_one(
    kit: StoreKit, store: Any, tmp_path: Path, clock: FakeClock, anyio_backend: str
) -> None:
    now = clock.wall
    # A live worker: its lease runs for another hour.
    await store.claim("live", "orders", owner="worker-a", lease=3600)
    for n, key in enumerate(ORDER):
        await store.checkpoint(
            "live", step(key, record(n, attempts=n + 1, ms=250)), owner="worker-a"
        )
    await store.checkpoint(
        "live", step("reserve", record(9, attempts=3, ms=1500)), owner="worker-a"
    )
    # A dead worker: it took its run two hours ago for 30 seconds and never renewed it.
    clock.wall = now - 7200
    await store.claim("dead", "orders", owner="worker-b", lease=30)
    await store.checkpoint("dead", step("charge", record(1)), owner="worker-b")
    # A finished run: no lease.
    clock.wall = now
    await store.claim("done", "orders", owner="worker-c", lease=60)
    await store.finish("done", "completed", Ok(1), None, owner="worker-c")
    await store.claim("failed", "orders", owner="worker-c", lease=60)
    await store.finish("failed", "failed", Err("declined"), None, owner="worker-c")

    where = store_args(kit, store, tmp_path)
    backend = ["--backend", "trio" if anyio_backend == "trio" else "asyncio"]

    async def run(*args: str) -> str:
        done = await anyio.to_thread.run_sync(lambda: cli("runs", *args, *where, *backend))
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        return done.stdout

    live = await run("show", "live")
    assert [row[:2] for row in step_rows(live)] == [[str(n), k] for n, k in enumerate(ORDER, 1)]
    # OUTCOME, ATTEMPTS, DURATION: a step recorded again keeps its place, with its new record.
    assert step_rows(live)[0][2:5] == ["Ok(9)", "3", "1.50s"]
    assert step_rows(live)[1][2:5] == ["Ok(1)", "2", "250.0ms"]
    line = lease_line(live)
    assert line.startswith("lease     held by 'worker-a' until ")
    assert "(live" in line
    assert "expired" not in line

    line = lease_line(await run("show", "dead"))
    assert line.startswith("lease     held by 'worker-b' until ")
    assert "(expired" in line
    assert "(live" not in line

    assert lease_line(await run("show", "done")) == "lease     none (no worker holds this run)"
    assert lease_line(await run("show", "failed")) == "lease     none (no worker holds this run)"

    doc = json.loads(await run("show", "live", "--json"))
    assert list(doc["steps"]) == ORDER
    assert doc["lease"]["owner"] == "worker-a"
    assert doc["lease"]["live"] is True
    dead = json.loads(await run("--json", "show", "dead"))["lease"]
    assert (dead["owner"], dead["live"]) == ("worker-b", False)
    assert json.loads(await run("show", "done", "--json"))["lease"] is None

    listed = json.loads(await run("list", "--json"))["items"]
    leases = {item["id"]: item["lease_owner"] for item in listed}
    assert leases == {"live": "worker-a", "dead": "worker-b", "done": None, "failed": None}


# ---- help and usage ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "mentions"),
    [
        ([], ["demo", "runs", "schedules", "--store URL", "--json"]),
        (["demo"], ["--store URL", "--backend"]),
        (["runs"], ["list", "show", "delete", "cancel", "resume", "fork", "--store URL"]),
        (["schedules"], ["list", "pause", "resume", "remove", "--store URL", "--key-prefix"]),
        (["runs", "list"], ["--status", "--prefix", "--limit", "--cursor", "--json", "--create"]),
        (["runs", "show"], ["id", "lease", "execution order", "--import MODULE"]),
        (["runs", "delete"], ["id", "--store URL", "--schema"]),
    ],
)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help(command: list[str], mentions: list[str], flag: str) -> None:
    done = cli(*command, flag)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith(" ".join(["usage: python -m awaitly_anyio", *command]))
    for word in mentions:
        assert word in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["runs"], "the following arguments are required: ACTION"),
        (["runs", "lst"], "invalid choice: 'lst'"),
        (["runs", "list", "--limit", "many"], "argument --limit: invalid int value: 'many'"),
        (["runs", "show"], "the following arguments are required: id"),
        (["runs", "list", "--colour"], "unrecognized arguments: --colour"),
    ],
)
def test_a_command_line_mistake_is_one_line_pointing_to_help(args: list[str], message: str) -> None:
    line = one_error_line(cli(*args))
    assert message in line
    assert line.endswith("--help)")


def test_the_result_and_times_of_a_step_without_times_show_as_dashes(tmp_path: Path) -> None:
    bare = attrs.evolve(snapshot("bare", steps=0), steps={"only": StepRecord(Ok("x"))})
    url = sqlite_with(tmp_path, [bare])
    done = cli("runs", "show", "bare", "--store", url)
    assert done.returncode == 0, done.stderr
    assert step_rows(done.stdout) == [["1", "only", "Ok('x')", "1", "-", "-"]]
