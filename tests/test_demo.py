"""The README demo and the `runs` CLI, run as real processes."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest

from .kit_base import cli as run_cli

# Every command here must succeed unless a test says otherwise.
cli = functools.partial(run_cli, check=True)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_demo_interrupts_resumes_and_keeps_its_runs_on_sqlite(tmp_path: Path, backend: str) -> None:
    done = cli("demo", "--backend", backend, cwd=tmp_path)
    out = done.stdout
    assert done.stderr == ""
    assert "store: sqlite:///awaitly-demo.db" in out
    assert (tmp_path / "awaitly-demo.db").exists()
    first, second, third = out.split("== ")[1:]
    assert "step charge: ok 'payment:ada:4200'" in first
    assert "step send_receipt: interrupted" in first
    assert "status cancelled" in first
    assert "charges made so far: ['ada:4200']" in first
    assert "step fetch_user: skipped, already done" in second
    assert "step charge: skipped, already done -> 'payment:ada:4200'" in second
    # Every step is checkpointed, the unkeyed load_cart too; only the step that opted
    # out runs again.
    assert "step load_cart: skipped, already done -> ['book', 'lamp']" in second
    assert "step total: ok 4200" in second
    assert "charges made in all: ['ada:4200'] (the card was charged once)" in second
    assert "status completed" in second
    assert "receipt: Ok(None)" in second
    assert "result: Err(CardDeclined(card='4000-0000-0000-0002'))" in third
    assert "status failed" in third
    assert "metadata awaitly.error = \"CardDeclined(card='4000-0000-0000-0002')\"" in third

    listing = cli("runs", "--store", "sqlite:///awaitly-demo.db", "list", cwd=tmp_path).stdout
    assert re.search(r"order-ada-\w+\s+checkout\s+completed", listing)
    assert re.search(r"order-broke-\w+\s+checkout\s+failed", listing)


def test_runs_cli_lists_shows_and_deletes(tmp_path: Path) -> None:
    cli("demo", cwd=tmp_path)
    store = ["runs", "--store", "sqlite:///awaitly-demo.db"]
    listed = json.loads(cli(*store, "--json", "list", cwd=tmp_path).stdout)
    ids = {item["id"]: item for item in listed["items"]}
    assert len(ids) == 2
    assert listed["next_cursor"] is None
    ada = next(i for i in ids if i.startswith("order-ada-"))
    assert ids[ada]["status"] == "completed"

    failed = json.loads(cli(*store, "--json", "list", "--status", "failed", cwd=tmp_path).stdout)
    assert [item["status"] for item in failed["items"]] == ["failed"]

    first_page = json.loads(cli(*store, "--json", "list", "--limit", "1", cwd=tmp_path).stdout)
    assert len(first_page["items"]) == 1
    cursor = first_page["next_cursor"]
    second_page = json.loads(
        cli(*store, "--json", "list", "--limit", "1", "--cursor", cursor, cwd=tmp_path).stdout
    )
    assert {first_page["items"][0]["id"], second_page["items"][0]["id"]} == set(ids)

    shown = cli(*store, "show", ada, cwd=tmp_path).stdout
    assert f"run       {ada}" in shown
    assert "status    completed" in shown
    assert re.search(r"charge\s+Ok\('payment:ada:4200'\)\s+2", shown)
    doc = json.loads(cli(*store, "--json", "show", ada, cwd=tmp_path).stdout)
    assert doc["status"] == "completed"
    assert doc["steps"]["charge"] == {
        "ok": True,
        "value": "payment:ada:4200",
        "attempts": 2,
        "started_at": doc["steps"]["charge"]["started_at"],
        "finished_at": doc["steps"]["charge"]["finished_at"],
    }

    assert cli(*store, "delete", ada, cwd=tmp_path).stdout == f"deleted {ada}\n"
    missing = cli(*store, "show", ada, cwd=tmp_path, check=False)
    assert missing.returncode == 1
    assert f"no run '{ada}'" in missing.stderr
    again = cli(*store, "delete", ada, cwd=tmp_path, check=False)
    assert again.returncode == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dmeo"], "invalid choice: 'dmeo'"),
        (["runs", "--store", "mysql://x", "list"], "unknown store scheme 'mysql'"),
        (["runs", "--store", "sqlite:///", "list"], "a SQLite URL is"),
        (["runs", "--store", "sqlite:///x.db", "list", "--cursor", "zzz"], "invalid list cursor"),
    ],
)
def test_cli_rejects_bad_input_with_a_clear_message(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = cli(*args, cwd=tmp_path, check=False)
    assert done.returncode == 2
    assert message in done.stderr
