"""A run as a diagram (issue 23): `run_to_mermaid` and `run_to_text` from a stored
snapshot (and the run's events when kept), and ``runs show ID --mermaid`` /
``--diagram`` from the command line over a SQLite store."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from awaitly_anyio import (
    Deps,
    Err,
    Ok,
    WorkflowContext,
    WorkflowSnapshot,
    create_workflow,
    run_to_mermaid,
    run_to_text,
)
from awaitly_anyio._resume import StepRecord
from awaitly_anyio._snapshot import SnapshotInfo
from awaitly_anyio.events import WorkflowEvent
from awaitly_anyio.stores import MemoryStore

from .kit_base import cli

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def snapshot(**kwargs: object) -> WorkflowSnapshot:
    steps = {
        "reserve": StepRecord(Ok("reserved"), 1, T0, T0 + timedelta(milliseconds=40)),
        "charge": StepRecord(
            Err("DECLINED"), 3, T0 + timedelta(seconds=1), T0 + timedelta(seconds=3)
        ),
    }
    return WorkflowSnapshot("orders", "order-7", steps=steps, **kwargs)  # type: ignore[arg-type]


def test_the_text_diagram_has_the_steps_in_order_with_outcomes() -> None:
    text = run_to_text(snapshot(status="failed", metadata={"awaitly.error": "DECLINED"}))
    assert text.splitlines() == [
        "run order-7 of orders",
        "  |",
        "  +-- 1. reserve [ok, 40 ms] reserved",
        "  |",
        "  +-- 2. charge [error, 3 attempts, 2.0 s] DECLINED",
        "  |",
        "  +== failed: DECLINED",
    ]


def test_the_mermaid_diagram_is_a_flowchart_styled_by_outcome() -> None:
    source = run_to_mermaid(snapshot(status="completed", result=Ok({"id": 7})))
    lines = source.splitlines()
    assert lines[0] == "flowchart TD"
    assert '    start(["orders / order-7"])' in lines
    assert '    s1["1. reserve #91;ok, 40 ms#93; reserved"]' in lines
    assert "    start --> s1" in source
    assert "    s1 --> s2" in source
    assert "    s2 --> finish" in source
    assert "    class s1 ok" in source
    assert "    class s2 error" in source
    assert any(line.startswith("    classDef error ") for line in lines)
    assert "completed: #123;#34;id#34;: 7#125;" in source


def test_a_waiting_run_says_what_for() -> None:
    info = SnapshotInfo(
        "order-7",
        "orders",
        "waiting",
        T0,
        T0,
        wait_kind="approval",
        waiting_for="approve:7",
        wake_at=T0 + timedelta(days=3),
    )
    text = run_to_text(snapshot(status="waiting"), info=info)
    assert text.endswith("  +== waiting for approval 'approve:7' until 2026-01-05T03:04:05+00:00\n")


@pytest.mark.parametrize(
    "hostile",
    ['a"]; click s1 call alert()', "x\ny --> z", "<script>alert(1)</script>", "#quot;[[(", "end"],
)
def test_stored_text_cannot_break_out_of_a_mermaid_label(hostile: str) -> None:
    snap = WorkflowSnapshot(
        hostile,
        hostile,
        status="completed",
        steps={hostile: StepRecord(Ok(hostile))},
        result=Ok(hostile),
    )
    source = run_to_mermaid(snap)
    body = source.splitlines()[1:]
    labels = [line for line in body if "[" in line or "(" in line]
    assert len(body) == 9  # 3 nodes, 2 edges, 2 classes, 2 classDefs: nothing added
    for line in labels:
        # One label per node line, quoted once, holding no bracket, quote or '<' of its own.
        found = re.fullmatch(r'    (start|s1|finish)\(?\["([^"\[\]<>\n]*)"\]\)?', line)
        assert found is not None, line


def test_secrets_in_values_are_masked() -> None:
    snap = WorkflowSnapshot(
        "orders",
        "o1",
        status="completed",
        steps={"connect": StepRecord(Ok({"dsn": "postgresql://app:hunter2@db/x", "token": "abc"}))},
    )
    for drawn in (run_to_text(snap), run_to_mermaid(snap)):
        assert "hunter2" not in drawn
        assert "abc" not in drawn


@pytest.mark.anyio
async def test_events_add_retries_and_the_steps_without_a_key_in_order() -> None:
    events: list[WorkflowEvent] = []
    workflow = create_workflow("orders", on_event=events.append)
    attempts = iter([Err("busy"), Ok("sent")])

    async def body(ctx: WorkflowContext[Deps]) -> str:
        await ctx.step("reserve", lambda: "reserved", key="reserve")
        await ctx.step("log", lambda: "noted")  # no key: not in the snapshot
        return await ctx.step.retry("notify", lambda: next(attempts), attempts=2, key="notify")

    async with MemoryStore() as store:
        result = await workflow.run(body, workflow_id="o1", store=store)
        assert result == Ok("sent")
        snap = await store.load("o1")
        assert snap is not None
    text = run_to_text(snap, events=events)
    steps = [line for line in text.splitlines() if line.startswith("  +-- ")]
    assert [re.sub(r" \[.*", "", s) for s in steps] == [
        "  +-- 1. reserve",
        "  +-- 2. log",
        "  +-- 3. notify",
    ]
    assert "1 retries" in steps[2]


def test_runs_show_mermaid_and_diagram_from_the_command_line(tmp_path: Path) -> None:
    import anyio

    from awaitly_anyio.stores.sqlite import SQLiteStore

    async def seed() -> None:
        async with SQLiteStore(tmp_path / "runs.db") as store:
            await store.save("order-7", snapshot(status="failed"))

    anyio.run(seed)
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    done = cli("runs", "show", "order-7", "--mermaid", "--store", url, check=True)
    assert done.stdout.startswith("flowchart TD\n")
    assert "    class s2 error" in done.stdout
    done = cli("runs", "show", "order-7", "--diagram", "--store", url, check=True)
    assert "  +-- 2. charge [error, 3 attempts, 2.0 s] DECLINED" in done.stdout
    refused = cli("runs", "show", "order-7", "--diagram", "--mermaid", "--store", url)
    assert refused.returncode == 2
    assert "not allowed with argument" in refused.stderr


def test_steps_under_automatic_keys_are_shown_by_their_names() -> None:
    steps = {
        "awaitly.step:fan_out#1": StepRecord(Ok(2), 1, T0, T0),
        "awaitly.step:fan_out#1/fetch#2": StepRecord(Ok("b"), 1, T0, T0),
        "awaitly.step:send%2Fbatch#1": StepRecord(Ok(None), 1, T0, T0),
    }
    text = run_to_text(WorkflowSnapshot("orders", "order-8", steps=steps, status="completed"))
    assert "1. fan_out [ok" in text
    assert "2. fetch [ok" in text
    assert "3. send/batch [ok" in text
    assert "awaitly.step" not in text
