"""``python -m awaitly_anyio``: the demo, and the ``runs`` commands over any store URL:
``list|show|delete`` the runs, ``send`` a value to a run, ``approve|reject`` an approval,
list the approvals ``pending``, ``resolve-hook`` a hook's token, ``cancel|resume`` a run
(or, in bulk, the runs ``--status``/``--name``/``--older-than`` select: ``--dry-run``
lists them, ``--yes`` is required to act) and ``fork`` one; and the ``schedules``
commands: ``list|pause|resume|remove`` (adding one needs the workflow: Python only);
and ``dashboard``, which serves the web dashboard of a store (`awaitly_anyio.dashboard`)
on 127.0.0.1 with Hypercorn.  ``runs show ID --mermaid`` (``--diagram``) prints the run
as a Mermaid flowchart (as text).
``runs list`` and ``runs show`` mark a ``running`` run whose lease expired (or that no
worker holds) as abandoned, and with ``--stale DURATION`` a ``pending`` run queued
longer ago than that as stale: the signs of a workflow no worker has registered.

The options that choose the store and the output (``--store``, ``--backend``,
``--json``, ``--import``, ``--create``, ``--schema``, ``--table-prefix``,
``--key-prefix``) may be given anywhere: before the command, between ``runs`` and
the action, or after the action.  Given twice, the last one counts (``--import``
adds up).

Every failure is one line on stderr (``error: ...``), never a traceback: a bad
argument or URL, a SQLite file that does not exist (unless ``--create``), or a
store that cannot be reached or fails, named by its URL with the password and
secret parameters masked.  A reader that stops early (``runs list | head``) ends
the command quietly.  Exit status: 0 on success (and when the reader stopped
early), 1 when the run (or schedule) asked for is not there (or cannot be decoded),
2 for every other error (a value that is not JSON, a run that already ended or is
in the wrong status for a cancel, resume or fork, a value too large, a hook token
refused, bulk filters without ``--yes``: nothing is stored or changed then).

``send``, ``resolve-hook`` take the value with ``--json VALUE`` (JSON text; ``-`` reads
it from stdin, ``@FILE`` from a file): there ``--json`` is the value, and JSON output is
asked for before the action (``runs --json send ...``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import os
import re
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar, cast

import anyio
import attrs

from . import _loops
from ._errors import (
    AlreadyDeliveredError,
    AwaitlyError,
    HookTokenError,
    RunFinishedError,
    RunStateError,
    SerializationError,
    SnapshotDecodeError,
    StoreError,
)
from ._ids import uuid4_text
from ._redact import redact_text, redact_url
from ._rows import check_list_args, decode_cursor
from ._snapshot import RUN_STATUSES, RunStatus, SnapshotInfo, WorkflowSnapshot
from ._store import QueueStore

if TYPE_CHECKING:
    from ._schedules import Schedule, ScheduleInfo
from .serialization import dumps, snapshot_to_doc
from .stores import open_store

DEFAULT_STORE = "sqlite:///awaitly.db"
DEMO_STORE = "sqlite:///awaitly-demo.db"
STORE_VARIABLE = "AWAITLY_STORE_URL"
PROG = "python -m awaitly_anyio"

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

T = TypeVar("T")

# The library's refusals of a delivery (worded on their own; nothing was stored).
_REFUSALS = (AlreadyDeliveredError, HookTokenError, SerializationError)

# Where an option may be written: before the command, after it, after the action.
_LEVELS = ("top", "command", "action")
# The options only the runs commands take (the demo takes --store and --backend).
_RUNS_ONLY = (
    ("json", "--json"),
    ("imports", "--import"),
    ("create", "--create"),
    ("schema", "--schema"),
    ("table_prefix", "--table-prefix"),
    ("key_prefix", "--key-prefix"),
)


class _Failure(Exception):
    """A failure already worded for the user (one line, secrets masked)."""


class _UsageError(Exception):
    """A command line argparse refused, worded on one line."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (raised, not printed with the usage)."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see: {self.prog} --help)")


def _add_options(
    parser: argparse.ArgumentParser, level: str, *, runs: bool = True, output: bool = True
) -> None:
    """The options that may be written anywhere, stored under ``name@level`` so that a
    later parser does not overwrite what an earlier one read (see `_option`).  Without
    ``output``, ``--json`` is left to the action (where it gives a value)."""
    options = parser.add_argument_group("options accepted anywhere on the line")
    options.add_argument(
        "--store",
        dest=f"store@{level}",
        metavar="URL",
        # Resolved later, so that argparse never shows the variable's value.
        help=f"store URL (runs: default ${STORE_VARIABLE} or {DEFAULT_STORE}; demo: {DEMO_STORE})",
    )
    options.add_argument(
        "--backend",
        dest=f"backend@{level}",
        choices=_loops.NAMES,
        help=f"event loop to run on (default {_loops.DEFAULT})",
    )
    if not runs:
        return
    if output:
        options.add_argument(
            "--json",
            dest=f"json@{level}",
            action="store_true",
            default=None,
            help="print JSON instead of a table",
        )
    options.add_argument(
        "--import",
        dest=f"imports@{level}",
        action="append",
        metavar="MODULE",
        help="import MODULE first, so the types it registers can be loaded (repeatable)",
    )
    options.add_argument(
        "--create",
        dest=f"create@{level}",
        action="store_true",
        default=None,
        help="create the SQLite database if its file does not exist (else an error)",
    )
    options.add_argument(
        "--schema",
        dest=f"schema@{level}",
        metavar="SCHEMA",
        help="PostgreSQL schema of the tables (default public)",
    )
    options.add_argument(
        "--table-prefix",
        dest=f"table_prefix@{level}",
        metavar="PREFIX",
        help="PostgreSQL prefix of the table names (default awaitly_)",
    )
    options.add_argument(
        "--key-prefix",
        dest=f"key_prefix@{level}",
        metavar="PREFIX",
        help="Redis prefix of every key (default awaitly:)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="The durable checkout demo, and the runs kept in a store.",
        epilog=f"Run '{PROG} COMMAND --help' for a command's options.",
    )
    _add_options(parser, "top")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="run the durable checkout demo and print what happens",
        description="Run the durable checkout demo (it creates its own SQLite database).",
    )
    _add_options(demo, "command", runs=False)

    runs = commands.add_parser(
        "runs",
        help="inspect the runs kept in a store",
        description=(
            "List, show or delete the runs kept in a store; deliver values, approvals"
            " and hook resolutions to the runs that wait for them."
        ),
        epilog=f"Run '{PROG} runs ACTION --help' for an action's options.",
    )
    _add_options(runs, "command")
    actions = runs.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        help="runs, newest first",
        description=(
            "List runs, newest first, a page at a time.  A NOTE column marks a running"
            " run whose lease expired (or that no worker holds) as abandoned: only a"
            " worker that registers its workflow recovers it.  With --stale, a pending"
            " run queued longer ago than that is marked stale."
        ),
    )
    listing.add_argument("--status", choices=RUN_STATUSES, help="only runs with this status")
    listing.add_argument("--prefix", help="only ids starting with this")
    listing.add_argument(
        "--limit", type=int, default=50, help="runs per page, 1 to 10000 (default 50)"
    )
    listing.add_argument("--cursor", help="continue after a previous page")
    listing.add_argument("--stale", metavar="DURATION", help=_STALE_HELP)
    _add_options(listing, "action")
    show = actions.add_parser(
        "show",
        help="one run with its steps and lease",
        description=(
            "Show one run: its status, times, lease (who holds it, until when, and"
            " whether that lease is live or expired) and its steps in execution order."
            "  A running run whose lease expired (or that no worker holds) is shown"
            " abandoned; with --stale, a pending run queued longer ago is shown stale."
        ),
    )
    show.add_argument("id", help="the run's id")
    show.add_argument("--stale", metavar="DURATION", help=_STALE_HELP)
    drawn = show.add_mutually_exclusive_group()
    drawn.add_argument(
        "--mermaid",
        action="store_true",
        help="print the run as a Mermaid flowchart (awaitly_anyio.run_to_mermaid)",
    )
    drawn.add_argument(
        "--diagram",
        action="store_true",
        help="print the run as a plain-text diagram (awaitly_anyio.run_to_text)",
    )
    _add_options(show, "action")
    delete = actions.add_parser(
        "delete", help="remove one run", description="Remove one run and its steps."
    )
    delete.add_argument("id", help="the run's id")
    _add_options(delete, "action")
    _waiting_actions(actions)
    _control_actions(actions)
    _schedules_command(commands)
    _dashboard_command(commands)
    return parser


def _dashboard_command(commands: Any) -> None:
    """``dashboard``: serve the web dashboard of a store."""
    dashboard = commands.add_parser(
        "dashboard",
        help="serve the web dashboard of a store (needs hypercorn: the dashboard extra)",
        description=(
            "Serve the web dashboard of a store (awaitly_anyio.dashboard) with Hypercorn,"
            " on 127.0.0.1 unless --host says otherwise.  Read-only unless --actions;"
            " actions need a credential: a bearer token read from the environment"
            " variable --token-env names (typed into the forms, or sent as"
            " 'Authorization: Bearer ...').  Stop it with Ctrl-C or SIGTERM."
        ),
    )
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    dashboard.add_argument(
        "--port", type=int, default=8484, help="port to listen on (default 8484; 0: any free)"
    )
    dashboard.add_argument(
        "--actions",
        action="store_true",
        help="enable approve/reject/send/cancel/resume (needs --token-env)",
    )
    dashboard.add_argument(
        "--token-env",
        metavar="NAME",
        help="environment variable holding the token that actions need (8+ characters)",
    )
    dashboard.add_argument("--title", default="awaitly dashboard", help="the pages' title")
    _add_options(dashboard, "command")


_VALUE_HELP = (
    "the value, as JSON text (quote it for the shell: --json '{\"ok\": true}');"
    " '-' reads it from stdin, '@FILE' from a file"
)
_OUTPUT_NOTE = (
    "Here --json gives the value; for JSON output write --json before the action"
    f" ({PROG} runs --json ACTION ...)."
)


def _waiting_actions(actions: Any) -> None:
    """The actions for waiting runs: send, approve, reject, pending, resolve-hook."""
    send = actions.add_parser(
        "send",
        help="deliver a value to a run (stored at once, consumed once)",
        description=(
            "Deliver VALUE to run ID under KEY: it is stored before the command returns,"
            " kept when the run is not waiting yet, and consumed once by the step that"
            " waits for KEY.  A run that does not exist or already ended, or a value over"
            " 1 MiB, is an error and nothing is stored."
        ),
        epilog=_OUTPUT_NOTE,
    )
    send.add_argument("id", metavar="ID", help="the run's id")
    send.add_argument("key", metavar="KEY", help="the key the run waits (or will wait) for")
    send.add_argument("--json", dest="value", metavar="VALUE", required=True, help=_VALUE_HELP)
    _add_options(send, "action", output=False)
    for verb, does in (("approve", "approves"), ("reject", "rejects")):
        decide = actions.add_parser(
            verb,
            help=f"{verb} what a run waits for under KEY",
            description=(
                f"{does.capitalize()} what run ID waits for under KEY (its step gets"
                f" {'the approval' if verb == 'approve' else 'a rejection'}), saying who"
                " decided and why."
            ),
        )
        decide.add_argument("id", metavar="ID", help="the run's id")
        decide.add_argument("key", metavar="KEY", help="the key of the approval the run waits for")
        decide.add_argument("--by", required=True, metavar="WHO", help="who decided")
        decide.add_argument("--reason", metavar="WHY", help="why (optional)")
        _add_options(decide, "action")
    pending = actions.add_parser(
        "pending",
        aliases=["approvals"],
        help="runs waiting for an approval, across runs",
        description=(
            "List the runs waiting for an approval: each run's id, workflow, the key to"
            " approve or reject, since when it waits and its deadline."
        ),
    )
    pending.add_argument(
        "--limit", type=int, default=100, help="runs to list, 1 to 10000 (default 100)"
    )
    _add_options(pending, "action")
    hook = actions.add_parser(
        "resolve-hook",
        help="resolve a hook's token with a value",
        description=(
            "Resolve the hook TOKEN names with VALUE, as a webhook handler does: the run"
            " that handed the token out gets the value.  A token resolves once; a"
            " malformed, unknown or already resolved token is an error."
        ),
        epilog=_OUTPUT_NOTE,
    )
    hook.add_argument("token", metavar="TOKEN", help="the hook's token")
    hook.add_argument("--json", dest="value", metavar="VALUE", required=True, help=_VALUE_HELP)
    _add_options(hook, "action", output=False)


_BULK_NOTE = (
    "Without ID, every run the filters select (--status, --name, --older-than; at least"
    " one): --dry-run lists them and changes nothing, --yes is required to act on them."
    " A run that changes status meanwhile is skipped and reported; a damaged run is"
    " never touched."
)


def _control_actions(actions: Any) -> None:
    """The actions that control runs: cancel, resume (one run, or in bulk) and fork."""
    for verb, does, statuses, after in (
        (
            "cancel",
            "Cancel run ID: a pending run is cancelled at once and never starts; a running"
            " or waiting run gets a cancel request, and the worker running it stops it and"
            " records it cancelled (it is never recovered).",
            _CANCELLABLE,
            "a completed, failed or cancelled run cannot be cancelled",
        ),
        (
            "resume",
            "Resume run ID, failed or cancelled: it becomes runnable again (pending on its"
            " queue if it has one, else running with no lease, for any worker's recovery"
            " to take at once); its completed steps are kept, its failed steps run again.",
            _RESUMABLE,
            "only failed and cancelled runs can be resumed",
        ),
    ):
        control = actions.add_parser(
            verb,
            help=f"{verb} one run, or the runs filters select",
            description=f"{does}  {_BULK_NOTE}",
            epilog=f"Exit status 1 when run ID is not there; 2 when {after}.",
        )
        control.add_argument("id", metavar="ID", nargs="?", help="the run's id")
        control.add_argument(
            "--status",
            dest="statuses",
            action="append",
            metavar="STATUS",
            help=(
                "bulk: only runs with this status, repeatable (default: all of"
                f" {', '.join(statuses)})"
            ),
        )
        control.add_argument("--name", metavar="WORKFLOW", help="bulk: only runs of this workflow")
        control.add_argument(
            "--older-than",
            metavar="DURATION",
            help="bulk: only runs created longer ago than this: 30s, 15m, 2h, 7d, 1w, 1h30m",
        )
        control.add_argument(
            "--dry-run", action="store_true", help="list what would be done; change nothing"
        )
        control.add_argument(
            "--yes", action="store_true", help="bulk: do it (required without --dry-run)"
        )
        _add_options(control, "action")
    fork = actions.add_parser(
        "fork",
        help="copy a run into a new run that reuses its completed steps",
        description=(
            "Start NEW_ID as a copy of run ID: the same workflow, input and queue, with the"
            " steps ID recorded before --from-step KEY (without it: every completed step)."
            "  The new run is runnable at once (pending on its queue if it has one, else"
            " for any worker's recovery); run ID is left as it is.  Without NEW_ID a new"
            " id is made up and printed."
        ),
        epilog=(
            "Exit status 1 when run ID is not there; 2 when KEY is not one of its steps or"
            " NEW_ID is already taken."
        ),
    )
    fork.add_argument("id", metavar="ID", help="the run to copy")
    fork.add_argument("new_id", metavar="NEW_ID", nargs="?", help="the new run's id")
    fork.add_argument(
        "--from-step",
        metavar="KEY",
        help="the first step to run again: the steps recorded before it are kept",
    )
    _add_options(fork, "action")


def _schedules_command(commands: Any) -> None:
    """``schedules list|pause|resume|remove``."""
    schedules = commands.add_parser(
        "schedules",
        help="list, pause, resume or remove the schedules kept in a store",
        description=(
            "List, pause, resume or remove the schedules kept in a store.  Adding a"
            " schedule needs the workflow it starts, which a command line does not have:"
            " it is done from Python (awaitly_anyio's add_schedule), in the"
            " application that registers the workflow."
        ),
        epilog=f"Run '{PROG} schedules ACTION --help' for an action's options.",
    )
    _add_options(schedules, "command")
    actions = schedules.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        help="every schedule, by name",
        description=(
            "List every schedule, by name: the workflow it starts, when (cron or"
            " interval), on which queue, whether it is paused, and its last tick."
        ),
    )
    _add_options(listing, "action")
    for verb, does in (
        ("pause", "Pause schedule NAME: no run is started for its ticks until it is resumed."),
        ("resume", "Resume schedule NAME, paused: its ticks start runs again."),
        ("remove", "Remove schedule NAME for good (the runs it started stay)."),
    ):
        action = actions.add_parser(verb, help=f"{verb} one schedule", description=does)
        action.add_argument("name", metavar="NAME", help="the schedule's name")
        _add_options(action, "action")


def _option(args: argparse.Namespace, name: str) -> Any:
    """The value of an option written anywhere: the last one given, or ``None``."""
    value = None
    for level in _LEVELS:
        found = getattr(args, f"{name}@{level}", None)
        if found is not None:
            value = found
    return value


def _imports(args: argparse.Namespace) -> list[str]:
    """Every ``--import``, wherever it was written, in order."""
    modules: list[str] = []
    for level in _LEVELS:
        modules += getattr(args, f"imports@{level}", None) or []
    return modules


_STALE_HELP = (
    "mark a pending run queued longer ago than this (30s, 10m, 2h, 1d) as stale: no"
    " worker serving its queue with its workflow registered has taken it"
)


def _abandoned(info: SnapshotInfo, now: datetime) -> str | None:
    """Why a ``running`` run is abandoned (no live lease: no worker runs it, and only
    a worker that registers its workflow recovers it), or ``None``."""
    if info.status != "running" or info.damaged:
        return None
    if info.lease_owner is None or info.lease_expires_at is None:
        return "abandoned (no lease)"
    ago = (now - info.lease_expires_at).total_seconds()
    if ago < 0:
        return None
    return f"abandoned (lease expired {_duration(ago)} ago)"


def _stale(info: SnapshotInfo, now: datetime, stale: float | None) -> str | None:
    """How long a ``pending`` run has been queued when that is more than ``stale``
    seconds, or ``None``."""
    if stale is None or info.status != "pending" or info.damaged:
        return None
    age = (now - info.created_at).total_seconds()
    return f"stale (queued {_duration(max(age, 0))} ago)" if age > stale else None


def _time(value: Any) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float) -> str:
    """A duration for people: ``850us``, ``12.5ms``, ``3.20s``, ``2m05s``, ``5h10m``,
    ``3d04h``."""
    if seconds < 0.001:
        return f"{seconds * 1_000_000:.0f}us"
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        out.write(line.rstrip() + "\n")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _info_doc(info: SnapshotInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "workflow_name": info.workflow_name,
        "status": info.status,
        "created_at": info.created_at.isoformat(),
        "updated_at": info.updated_at.isoformat(),
        "expires_at": _iso(info.expires_at),
        "lease_owner": info.lease_owner,
        "lease_expires_at": _iso(info.lease_expires_at),
        "damaged": info.damaged,
        "waiting_for": info.waiting_for,
        "wait_kind": info.wait_kind,
        "wake_at": _iso(info.wake_at),
        "queue": info.queue,
        "priority": info.priority,
        "partition": info.partition,
        "started_at": _iso(info.started_at),
        "cancel_requested": info.cancel_requested,
    }


def _shown(text: str, width: int = 48) -> str:
    """``text`` (a key) for a table cell: as it is when it is plain, else quoted (so
    spaces and control characters cannot break the line), cut short when long."""
    plain = text.isprintable() and not any(c.isspace() for c in text) and text != ""
    shown = text if plain else repr(text)
    return shown if len(shown) <= width else shown[: width - 3] + "..."


def _waits_for(info: SnapshotInfo, *, short: bool = False) -> str:
    """What a waiting run waits for: ``approval 'approve:order-7'``, ``timer``."""
    kind = info.wait_kind or "?"
    if info.waiting_for is None:
        return kind
    return f"{kind} {_shown(info.waiting_for) if short else repr(info.waiting_for)}"


def _wait_line(info: SnapshotInfo, now: datetime) -> str:
    """What a waiting run waits for, until when, and whether that time has come: a
    deadline past belongs to a run that a worker wakes when it next looks."""
    what = _waits_for(info)
    if info.wake_at is None:
        return f"{what} (no deadline)"
    until = f"{what} until {_time(info.wake_at)} UTC"
    left = (info.wake_at - now).total_seconds()
    if left > 0:
        return f"{until} ({_duration(left)} left)"
    return f"{until} (due {_duration(-left)} ago: a worker wakes it when it next looks)"


def _queue_columns(rows: list[list[str]], infos: Sequence[SnapshotInfo]) -> None:
    """Add to a listing's ``rows`` (a header, then one row per info) the queue columns
    when any run has a queue, and a CANCEL column when any has a cancel requested."""
    if any(i.queue is not None and not i.damaged for i in infos):
        rows[0] += ["QUEUE", "PRIORITY", "PARTITION"]
        for row, i in zip(rows[1:], infos, strict=True):
            if i.queue is None or i.damaged:
                row += ["", "", ""]
            else:
                partition = "-" if i.partition is None else _shown(i.partition)
                row += [_shown(i.queue), str(i.priority), partition]
    if any(i.cancel_requested and not i.damaged for i in infos):
        rows[0] += ["CANCEL"]
        for row, i in zip(rows[1:], infos, strict=True):
            row += ["requested" if i.cancel_requested and not i.damaged else ""]


def _queue_line(info: SnapshotInfo) -> str:
    """The queue a run is on, its priority and partition."""
    partition = "no partition" if info.partition is None else f"partition {info.partition!r}"
    return f"{info.queue!r} (priority {info.priority}, {partition})"


def _queue_doc(info: SnapshotInfo | None) -> dict[str, Any] | None:
    if info is None or info.queue is None:
        return None
    return {"name": info.queue, "priority": info.priority, "partition": info.partition}


def _wait_doc(info: SnapshotInfo | None) -> dict[str, Any] | None:
    if info is None or info.status != "waiting":
        return None
    return {
        "waiting_for": info.waiting_for,
        "wait_kind": info.wait_kind,
        "wake_at": _iso(info.wake_at),
    }


def _lease_line(info: SnapshotInfo | None, now: datetime) -> str:
    """Who holds the run's lease, until when, and whether that is still so: a lease
    past its time belongs to a worker that stopped renewing it (dead or stopped)."""
    if info is None:
        return "unknown (this store does not report leases)"
    if info.lease_owner is None or info.lease_expires_at is None:
        return "none (no worker holds this run)"
    until = info.lease_expires_at
    held = f"held by {info.lease_owner!r} until {_time(until)} UTC"
    left = (until - now).total_seconds()
    if left > 0:
        return f"{held} (live: {_duration(left)} left)"
    return (
        f"{held} (expired {_duration(-left)} ago: its worker stopped renewing it;"
        " recovery may take the run over)"
    )


def _lease_doc(info: SnapshotInfo | None, now: datetime) -> dict[str, Any] | None:
    if info is None or info.lease_owner is None or info.lease_expires_at is None:
        return None
    return {
        "owner": info.lease_owner,
        "expires_at": info.lease_expires_at.isoformat(),
        "live": info.lease_expires_at > now,
    }


def _print_snapshot(
    snapshot: WorkflowSnapshot,
    info: SnapshotInfo | None,
    now: datetime,
    stale: float | None,
    out: TextIO,
) -> None:
    out.write(f"run       {snapshot.workflow_id}\n")
    out.write(f"workflow  {snapshot.workflow_name}\n")
    out.write(f"status    {snapshot.status}\n")
    if info is not None and info.status == "pending":
        out.write("pending   queued: no worker has started it yet\n")
        stale_note = _stale(info, now, stale)
        if stale_note is not None:
            out.write(
                f"stale     {stale_note}: is a worker serving queue {info.queue!r} with"
                f" workflow {snapshot.workflow_name!r} registered?\n"
            )
    abandoned = None if info is None else _abandoned(info, now)
    if abandoned is not None:
        out.write(
            f"abandoned {abandoned}: no worker runs it; a worker that registers workflow"
            f" {snapshot.workflow_name!r} recovers it\n"
        )
    if info is not None and info.cancel_requested:
        out.write("cancel    requested: the worker that runs it stops it, and it ends cancelled\n")
    if info is not None and info.status == "waiting":
        out.write(f"waiting   {_wait_line(info, now)}\n")
    if info is not None and info.queue is not None:
        out.write(f"queue     {_queue_line(info)}\n")
    out.write(f"created   {_time(snapshot.created_at)}\n")
    if info is not None and info.started_at is not None:
        out.write(f"started   {_time(info.started_at)}\n")
    out.write(f"updated   {_time(snapshot.updated_at)}\n")
    out.write(f"expires   {_time(snapshot.expires_at)}\n")
    out.write(f"lease     {_lease_line(info, now)}\n")
    if snapshot.result is not None:
        out.write(f"result    {snapshot.result!r}\n")
    for key, value in snapshot.metadata.items():
        out.write(f"meta      {key} = {value!r}\n")
    if snapshot.steps:
        out.write("\n")
        # In execution order: the order the store recorded the steps in.
        rows = [["#", "STEP KEY", "OUTCOME", "ATTEMPTS", "DURATION", "FINISHED"]]
        for n, (key, record) in enumerate(snapshot.steps.items(), 1):
            took = "-"
            if record.started_at is not None and record.finished_at is not None:
                took = _duration(max((record.finished_at - record.started_at).total_seconds(), 0))
            rows.append(
                [
                    str(n),
                    key,
                    repr(record.result),
                    str(record.attempts),
                    took,
                    _time(record.finished_at),
                ]
            )
        _table(rows, out)


def _import_types(modules: Sequence[str]) -> None:
    """Import the modules that register step value types (the demo's are always known)."""
    importlib.import_module("awaitly_anyio._demo")
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(f"cannot import {module!r} (from --import): {exc}") from None


def _one_line(exc: BaseException) -> str:
    """What went wrong, on one line with secrets masked: the innermost single cause of an
    exception group, its message, and its type if it comes from a driver (the
    library's own and built-in errors say enough without it)."""
    exc = _lone(exc)
    message = " ".join(str(exc).split())
    kind = type(exc)
    if not message:
        message = kind.__name__
    elif kind.__module__ != "builtins" and not kind.__module__.startswith("awaitly_anyio"):
        message = f"{kind.__name__}: {message}"
    return redact_text(message)


def _broken_pipe(exc: BaseException) -> bool:
    """Whether ``exc`` (or the single exception an exception group holds) says that the
    reader of our output went away."""
    return isinstance(_lone(exc), BrokenPipeError)


def _lone(exc: BaseException) -> BaseException:
    """The exception inside ``exc`` when ``exc`` is an exception group (nested or not)
    holding just one; else ``exc``."""
    while isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)  # (isinstance: unknown)
        if len(group.exceptions) != 1:
            return group
        exc = group.exceptions[0]
    return exc


def _reader_gone(out: TextIO) -> None:
    """The reader of ``out`` stopped reading (``| head``): send whatever is still
    buffered, and the interpreter's last flush, nowhere, so that nothing is printed."""
    with contextlib.suppress(Exception):  # not a file (a StringIO): nothing to do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)


async def _ask(where: str, call: Awaitable[T]) -> T:
    """``await call`` on the store; a failure of the store becomes one worded line.

    ``ValueError`` (a bad argument, such as a cursor) and ``SnapshotDecodeError`` pass
    as they are; cancellation is never caught."""
    try:
        return await call
    except (ValueError, SnapshotDecodeError):
        raise
    except Exception as exc:
        raise _Failure(f"store {where} failed: {_one_line(exc)}") from exc


def _store_url(args: argparse.Namespace) -> tuple[str, str]:
    """The store URL to use, and where it came from (for messages)."""
    url = _option(args, "store")
    if url is not None:
        return url, ""
    url = os.environ.get(STORE_VARIABLE)
    if url:
        return url, f" (from ${STORE_VARIABLE})"
    return DEFAULT_STORE, ""


def _store_options(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """The store constructor's options the command line gave, for the store ``url`` names."""
    scheme = url.partition("://")[0].lower()
    options: dict[str, Any] = {}
    for flag, name, value, schemes, kind in (
        ("--schema", "schema", _option(args, "schema"), ("postgresql", "postgres"), "PostgreSQL"),
        (
            "--table-prefix",
            "table_prefix",
            _option(args, "table_prefix"),
            ("postgresql", "postgres"),
            "PostgreSQL",
        ),
        (
            "--key-prefix",
            "prefix",
            _option(args, "key_prefix"),
            ("redis", "rediss", "unix"),
            "Redis",
        ),
    ):
        if value is None:
            continue
        if scheme not in schemes:
            raise ValueError(f"{flag} is for {kind} stores only")
        options[name] = value
    if _option(args, "create") and scheme != "sqlite":
        raise ValueError("--create is for SQLite stores only")
    return options


def _check_sqlite_file(store: Any, source: str) -> None:
    """Refuse to open a SQLite store whose file does not exist: opening would create an
    empty database, and a mistyped path would look like a store without runs."""
    from .stores.sqlite import SQLiteStore

    if not isinstance(store, SQLiteStore):
        return
    path = store.path
    if path == ":memory:" or path.startswith("file:") or os.path.lexists(path):
        return
    where = repr(path)
    absolute = os.path.abspath(path)
    if absolute != path:
        where += f" ({absolute})"
    raise _Failure(
        f"no SQLite database at {where}{source}: check the path, or pass --create to"
        " create an empty one"
    )


@contextlib.asynccontextmanager
async def _opened(
    url: str, source: str, where: str, options: dict[str, Any], *, create: bool
) -> AsyncGenerator[Any, None]:
    """The store ``url`` names, open; any failure to open it is one worded line."""
    try:
        store = open_store(url, **options)
    except ValueError as exc:
        raise _Failure(redact_text(" ".join(str(exc).split())) + source) from None
    if not create:
        _check_sqlite_file(store, source)
    try:
        await store.__aenter__()
    except Exception as exc:
        raise _Failure(f"cannot open store {where}: {_one_line(exc)}") from exc
    try:
        yield store
    except BaseException:
        with contextlib.suppress(Exception):  # the first failure is the one to report
            await store.__aexit__(None, None, None)
        raise
    await _ask(where, store.__aexit__(None, None, None))


async def _runs(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    url, source = _store_url(args)
    where = redact_url(url) + source
    options = _store_options(url, args)
    as_json = bool(_option(args, "json"))
    create = bool(_option(args, "create"))
    if args.command == "schedules":
        async with _opened(url, source, where, options, create=create) as store:
            return await _schedules(args, store, where, as_json, out, err)
    if args.command == "dashboard":
        token = _dashboard_token(args)
        async with _opened(url, source, where, options, create=create) as store:
            return await _serve_dashboard(args, store, where, token, out, err)
    stale = None
    if args.action in ("list", "show") and args.stale is not None:
        stale = parse_duration(args.stale, "--stale")
    if args.action == "list":  # bad arguments are reported before the store is opened
        check_list_args(args.prefix, args.status, args.limit)
        if args.cursor is not None:
            decode_cursor(args.cursor)
    if args.action in _CONTROL_ACTIONS:
        selection = None if args.action == "fork" else _selection(args)
        async with _opened(url, source, where, options, create=create) as store:
            return await _control(args, selection, store, where, as_json, out, err)
    if args.action in _WAITING_ACTIONS:
        value = _json_value(args.value) if args.action in ("send", "resolve-hook") else None
        if args.action in ("pending", "approvals"):
            check_list_args(None, None, args.limit)
        async with _opened(url, source, where, options, create=create) as store:
            return await _waiting(args, store, where, value, as_json, out, err)
    async with _opened(url, source, where, options, create=create) as store:
        if args.action == "list":
            page = await _ask(
                where,
                store.list(
                    status=args.status, prefix=args.prefix, limit=args.limit, cursor=args.cursor
                ),
            )
            now = datetime.now(timezone.utc)
            if as_json:
                items = [
                    {
                        **_info_doc(i),
                        "abandoned": _abandoned(i, now) is not None,
                        "stale": _stale(i, now, stale) is not None,
                    }
                    for i in page
                ]
                doc = {"items": items, "next_cursor": page.next_cursor}
                out.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
                return 0
            if not page.items:
                out.write("no runs\n")
                return 0
            rows = [["ID", "WORKFLOW", "STATUS", "UPDATED", "EXPIRES"]]
            rows += [
                [
                    i.id,
                    i.workflow_name,
                    "DAMAGED" if i.damaged else i.status,
                    _time(i.updated_at),
                    _time(i.expires_at),
                ]
                for i in page
            ]
            if any(i.status == "waiting" for i in page):  # what they wait for, until when
                rows[0] += ["WAITING FOR", "DEADLINE"]
                for row, i in zip(rows[1:], page, strict=True):
                    waiting = i.status == "waiting" and not i.damaged
                    row += [_waits_for(i, short=True), _time(i.wake_at)] if waiting else ["", ""]
            _queue_columns(rows, page.items)
            notes = [_abandoned(i, now) or _stale(i, now, stale) or "" for i in page]
            if any(notes):  # runs that no worker takes: say so
                rows[0] += ["NOTE"]
                for row, note in zip(rows[1:], notes, strict=True):
                    row += [note]
            _table(rows, out)
            for i in page:
                if i.damaged:
                    out.write(f"\ndamaged run {i.id!r} (left as it is): {i.damaged}\n")
            if page.next_cursor:
                out.write(f"\nmore: --cursor {page.next_cursor}\n")
            return 0
        if args.action == "show":
            try:
                snapshot = await _ask(where, store.load(args.id))
            except SnapshotDecodeError as exc:
                err.write(f"error: {redact_text(str(exc))}\n")
                return 1
            if snapshot is None:
                err.write(f"error: no run {args.id!r} in {where}\n")
                return 1
            # The lease is not part of a snapshot: stores that report it do so by info().
            reader: Callable[[str], Awaitable[SnapshotInfo | None]] | None
            reader = getattr(store, "info", None)
            info = None if reader is None else await _ask(where, reader(args.id))
            now = datetime.now(timezone.utc)
            if args.mermaid or args.diagram:
                from ._diagram import run_to_mermaid, run_to_text

                draw = run_to_mermaid if args.mermaid else run_to_text
                out.write(draw(snapshot, info=info))
            elif as_json:
                doc = snapshot_to_doc(snapshot)
                doc["lease"] = _lease_doc(info, now)
                doc["wait"] = _wait_doc(info)
                doc["queue"] = _queue_doc(info)
                doc["started_at"] = None if info is None else _iso(info.started_at)
                doc["cancel_requested"] = info is not None and info.cancel_requested
                doc["abandoned"] = info is not None and _abandoned(info, now) is not None
                doc["stale"] = info is not None and _stale(info, now, stale) is not None
                out.write(dumps(doc) + "\n")
            else:
                _print_snapshot(snapshot, info, now, stale, out)
            return 0
        deleted = await _ask(where, store.delete(args.id))
        if not deleted:
            err.write(f"error: no run {args.id!r} in {where}\n")
            return 1
        out.write(json.dumps({"deleted": args.id}) + "\n" if as_json else f"deleted {args.id}\n")
        return 0


_WAITING_ACTIONS = ("send", "approve", "reject", "pending", "approvals", "resolve-hook")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is too large for a number")
    return number


def _json_value(given: str) -> Any:
    """The value ``--json`` gives: JSON text, ``-`` (read stdin) or ``@FILE``; a
    `ValueError` naming what is wrong when it is not JSON (or cannot be read)."""
    source = "the --json value"
    text = given
    try:
        if given == "-":
            source = "the JSON read from stdin"
            text = sys.stdin.buffer.read().decode("utf-8")
        elif given.startswith("@"):
            source = f"the JSON in {given[1:]!r}"
            with open(given[1:], "rb") as file:
                text = file.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{source} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {source}: {exc.strerror or exc}") from None
    if not text.strip():
        raise ValueError(f"{source} is empty: give a JSON value (for example '\"yes\"' or 42)")
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{source} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise ValueError(f"{source} is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"{source} is not valid JSON: {exc}") from None


async def _deliver(where: str, run_id: str | None, call: Awaitable[T]) -> T:
    """``await call``, a delivery to run ``run_id`` (``None``: a hook's, by token).

    The refusals (no such run, a run that ended, a bad key or value, a token refused)
    become one worded line; a failure of the store becomes `_ask`'s line.  Nothing
    was stored when any of them is raised.  Cancellation is never caught."""
    try:
        return await call
    except RunFinishedError as exc:
        raise _Failure(str(exc)) from exc
    except LookupError as exc:
        raise _Missing(f"no run {run_id!r} in {where}; nothing was sent") from exc
    except (ValueError, AwaitlyError) as exc:
        if isinstance(exc, StoreError) or not isinstance(exc, (ValueError, *_REFUSALS)):
            raise _Failure(f"store {where} failed: {_one_line(exc)}") from exc
        if run_id is None:
            raise _Failure(_one_line(exc)) from exc
        raise _Failure(f"nothing sent to run {run_id!r}: {_one_line(exc)}") from exc
    except Exception as exc:
        raise _Failure(f"store {where} failed: {_one_line(exc)}") from exc


class _Missing(Exception):
    """The run asked for is not there (exit status 1), worded for the user."""


async def _waiting(
    args: argparse.Namespace,
    store: Any,
    where: str,
    value: Any,
    as_json: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    """The actions for waiting runs, on the open ``store``."""
    from ._waiting import approve, pending_approvals, reject, resolve_hook, send

    try:
        if args.action == "send":
            await _deliver(where, args.id, send(store, args.id, args.key, value))
            done: dict[str, Any] = {"run_id": args.id, "key": args.key}
            text = f"sent {args.key!r} to run {args.id!r}"
            _said(out, as_json, {"sent": done}, text)
        elif args.action in ("approve", "reject"):
            decide = approve if args.action == "approve" else reject
            call = decide(store, args.id, args.key, by=args.by, reason=args.reason)
            await _deliver(where, args.id, call)
            done = {"run_id": args.id, "key": args.key, "by": args.by, "reason": args.reason}
            verb = "approved" if args.action == "approve" else "rejected"
            why = "" if args.reason is None else f": {args.reason!r}"
            text = f"{verb} {args.key!r} of run {args.id!r} (by {args.by!r}{why})"
            _said(out, as_json, {verb: done}, text)
        elif args.action == "resolve-hook":
            await _deliver(where, None, resolve_hook(store, args.token, value))
            _said(out, as_json, {"resolved": True}, "resolved the hook")
        else:
            found = await _ask(where, pending_approvals(store, limit=args.limit))
            _print_pending(found, as_json, out)
    except _Missing as exc:
        err.write(f"error: {exc}\n")
        return 1
    return 0


def _said(out: TextIO, as_json: bool, doc: dict[str, Any], text: str) -> None:
    out.write(json.dumps(doc, ensure_ascii=False) + "\n" if as_json else text + "\n")


def _print_pending(found: Sequence[SnapshotInfo], as_json: bool, out: TextIO) -> None:
    """The runs waiting for an approval, newest first (as `pending_approvals` gives them)."""
    if as_json:
        out.write(json.dumps({"items": [_info_doc(i) for i in found]}, indent=2) + "\n")
        return
    if not found:
        out.write("no approvals pending\n")
        return
    rows = [["ID", "WORKFLOW", "KEY", "WAITING SINCE", "DEADLINE"]]
    rows += [
        [
            i.id,
            i.workflow_name,
            "-" if i.waiting_for is None else _shown(i.waiting_for),
            _time(i.updated_at),
            _time(i.wake_at),
        ]
        for i in found
    ]
    _table(rows, out)


# ---- run control: cancel, resume, fork -----------------------------------------------------

_CONTROL_ACTIONS = ("cancel", "resume", "fork")
# The statuses each action takes a run from.
_CANCELLABLE: tuple[RunStatus, ...] = ("pending", "running", "waiting")
_RESUMABLE: tuple[RunStatus, ...] = ("failed", "cancelled")
_FROM: dict[str, tuple[RunStatus, ...]] = {"cancel": _CANCELLABLE, "resume": _RESUMABLE}

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_LONGEST = 100 * 365 * 86400.0  # a longer age selects nothing a store can hold
_PAGE = 1000  # runs read per list() call when selecting in bulk


def parse_duration(text: str, flag: str = "--older-than") -> float:
    """The seconds ``text`` names: a number and a unit (``s``, ``m``, ``h``, ``d``, ``w``),
    or several in a row (``1h30m``).  ``ValueError`` naming ``flag`` and ``text`` for
    anything else (no unit, a negative or unknown one, more than 100 years)."""
    given = text.strip().lower()
    parts = list(_DURATION_PART.finditer(given))
    if not given or "".join(part.group(0) for part in parts) != given:
        raise ValueError(
            f"{flag} {text!r} is not a duration: write a number and a unit (s, m, h, d"
            " or w), such as 30s, 15m, 2h, 7d or 1h30m"
        )
    seconds = sum(float(part.group(1)) * _UNITS[part.group(2)] for part in parts)
    if seconds > _LONGEST:
        raise ValueError(f"{flag} {text!r} is too long: at most 100 years")
    return seconds


@attrs.frozen
class _Selection:
    """The runs a bulk cancel or resume acts on."""

    statuses: tuple[RunStatus, ...]
    name: str | None
    older_than: float | None  # seconds since the run was created


def _selection(args: argparse.Namespace) -> _Selection | None:
    """What ``runs cancel|resume`` acts on: ``None`` for run ``args.id``, else the
    filters.  Every mistake is a `ValueError` naming it, raised before the store is
    opened: filters with an id, neither, a status that is not one (or not one the
    action takes a run from), an empty name, a bad duration, bulk without ``--yes``
    (unless ``--dry-run``)."""
    action = args.action
    given = args.statuses is not None or args.name is not None or args.older_than is not None
    if args.id is not None:
        if given:
            raise ValueError(
                f"runs {action}: give a run ID or filters (--status, --name, --older-than),"
                " not both"
            )
        return None
    if not given:
        raise ValueError(
            f"runs {action}: give a run ID, or filters (--status, --name, --older-than)"
            f" to {action} runs in bulk"
        )
    allowed = _FROM[action]
    statuses: list[RunStatus] = []
    for status in args.statuses or allowed:
        if status not in RUN_STATUSES:
            raise ValueError(
                f"--status {status!r} is not a run status: use one of {', '.join(allowed)}"
            )
        if status not in allowed:
            raise ValueError(
                f"--status {status}: a {status} run cannot be {_done(action)}; use one of"
                f" {', '.join(allowed)}"
            )
        if status not in statuses:
            statuses.append(status)
    if args.name is not None and not args.name.strip():
        raise ValueError("--name is empty: give a workflow name")
    older = None if args.older_than is None else parse_duration(args.older_than)
    if not args.dry_run and not args.yes:
        raise ValueError(
            f"runs {action} with filters changes every run they select: add --yes to do"
            " it, or --dry-run to list those runs first"
        )
    return _Selection(tuple(statuses), args.name, older)


def _done(action: str) -> str:
    return {"cancel": "cancelled", "resume": "resumed"}[action]


def _check_queue_store(store: Any, where: str, what: str) -> None:
    """A worded failure unless ``store`` is a `QueueStore` (it can do ``what``)."""
    if not isinstance(store, QueueStore):
        raise _Failure(f"store {where} cannot {what} (it is not a QueueStore)")


async def _command(where: str, call: Awaitable[T]) -> T:
    """``await call``, a control of runs: the refusals the caller words pass as they are
    (`LookupError`: no such run; `RunStateError`: a run in the wrong status;
    `ValueError`: a bad argument; `SnapshotDecodeError`: a run that cannot be decoded);
    any other failure is the store's, one worded line.  Cancellation is never caught."""
    try:
        return await call
    except (LookupError, RunStateError, ValueError, SnapshotDecodeError):
        raise
    except Exception as exc:
        raise _Failure(f"store {where} failed: {_one_line(exc)}") from exc


async def _control(
    args: argparse.Namespace,
    selection: _Selection | None,
    store: Any,
    where: str,
    as_json: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    """``runs cancel|resume|fork`` on the open ``store``."""
    _check_queue_store(store, where, f"{args.action} runs")
    try:
        if args.action == "fork":
            await _fork(args, store, where, as_json, out)
        elif selection is None:
            await _control_one(args, store, where, as_json, out)
        else:
            await _control_bulk(args.action, selection, args.dry_run, store, where, as_json, out)
    except _Missing as exc:
        err.write(f"error: {exc}\n")
        return 1
    except SnapshotDecodeError as exc:
        err.write(f"error: {redact_text(str(exc))}; nothing was changed\n")
        return 1
    return 0


def _now_runnable(queue: str | None) -> str:
    """What a resumed or forked run does next."""
    if queue is not None:
        return f"pending on queue {queue!r}: a worker serving that queue starts it"
    return "running with no lease: a worker's recovery takes it"


def _outcome_text(action: str, run_id: str, was: str, queue: str | None) -> str:
    """One line saying what ``action`` did to run ``run_id``, which was ``was``."""
    if action == "resume":
        return f"resumed run {run_id!r} (it was {was}): {_now_runnable(queue)}"
    if was == "pending":
        return f"cancelled run {run_id!r} (it was pending: it never starts)"
    return (
        f"cancel requested for run {run_id!r} (it is {was}: the worker that runs it stops"
        " it, and it ends cancelled)"
    )


def _outcome(action: str, was: str) -> str:
    if action == "resume":
        return "resumed"
    return "cancelled" if was == "pending" else "cancel_requested"


def _check_state(info: SnapshotInfo, action: str) -> None:
    """For ``--dry-run`` of one run: the refusal the real ``action`` would meet, raised."""
    if info.damaged:
        raise _Failure(f"run {info.id!r} is damaged ({info.damaged}); it is left as it is")
    if info.status not in _FROM[action]:
        raise _Failure(f"{RunStateError(info.id, info.status, action)}; nothing would change")


async def _control_one(
    args: argparse.Namespace, store: Any, where: str, as_json: bool, out: TextIO
) -> None:
    """Cancel or resume run ``args.id`` (or, with ``--dry-run``, say what that would do)."""
    action, run_id = args.action, args.id
    if args.dry_run:
        info = await _ask(where, store.info(run_id))
        if info is None:
            raise _Missing(f"no run {run_id!r} in {where}")
        _check_state(info, action)
        doc = _bulk_item(info, action)
        text = f"would {action} run {run_id!r} ({info.status}); dry run: nothing changed"
        _said(out, as_json, {"dry_run": True, "runs": [doc]}, text)
        return
    try:
        was = await _command(where, getattr(store, action)(run_id))
    except LookupError as exc:
        raise _Missing(f"no run {run_id!r} in {where}; nothing was {_done(action)}") from exc
    except RunStateError as exc:
        raise _Failure(f"{exc}; nothing was changed") from exc
    queue = None
    if action == "resume":
        info = await _ask(where, store.info(run_id))
        queue = None if info is None else info.queue
    done = {"run_id": run_id, "was": was, "outcome": _outcome(action, was)}
    if action == "resume":
        done["queue"] = queue
    _said(out, as_json, {_done(action): done}, _outcome_text(action, run_id, was, queue))


def _bulk_item(info: SnapshotInfo, action: str) -> dict[str, Any]:
    return {
        "run_id": info.id,
        "workflow_name": info.workflow_name,
        "was": info.status,
        "created_at": info.created_at.isoformat(),
        "queue": info.queue,
        "outcome": _outcome(action, info.status),
    }


async def _select(
    store: Any, where: str, selection: _Selection
) -> tuple[list[SnapshotInfo], list[str]]:
    """The runs ``selection`` picks, newest first per status, and the ids of the damaged
    runs met on the way (never acted on: their status and name are not known)."""
    now = datetime.now(timezone.utc)
    found: list[SnapshotInfo] = []
    damaged: list[str] = []
    for status in selection.statuses:
        cursor: str | None = None
        while True:
            page = await _ask(where, store.list(status=status, limit=_PAGE, cursor=cursor))
            for info in page:
                if info.damaged:
                    damaged.append(info.id)
                elif _selected(info, status, selection, now):
                    found.append(info)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    return found, damaged


def _selected(info: SnapshotInfo, status: str, selection: _Selection, now: datetime) -> bool:
    if info.status != status:  # (a store may list more than it was asked for)
        return False
    if selection.name is not None and info.workflow_name != selection.name:
        return False
    age = (now - info.created_at).total_seconds()
    return selection.older_than is None or age >= selection.older_than


async def _control_bulk(
    action: str,
    selection: _Selection,
    dry_run: bool,
    store: Any,
    where: str,
    as_json: bool,
    out: TextIO,
) -> None:
    """Cancel or resume every run ``selection`` picks (``dry_run``: list them).  A run
    that changed status (or went) between the listing and its turn is skipped and
    reported; a failure of the store stops the command, with what was done so far
    printed (one line per run, as it is done)."""
    found, damaged = await _select(store, where, selection)
    done: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    if dry_run:
        done = [_bulk_item(info, action) for info in found]
        if not as_json:
            _dry_table(action, found, out)
    else:
        for info in found:
            try:
                was = await _command(where, getattr(store, action)(info.id))
            except LookupError:
                skipped.append({"run_id": info.id, "reason": "it is no longer there"})
            except RunStateError as exc:
                skipped.append({"run_id": info.id, "reason": f"it is {exc.status} now"})
            except SnapshotDecodeError as exc:
                reason = f"it cannot be decoded: {_one_line(exc)}"
                skipped.append({"run_id": info.id, "reason": reason})
            else:
                item = _bulk_item(info, action) | {"was": was, "outcome": _outcome(action, was)}
                done.append(item)
                if not as_json:
                    out.write(_outcome_text(action, info.id, was, info.queue) + "\n")
    if as_json:
        doc = {
            "action": action,
            "dry_run": dry_run,
            "runs": done,
            "skipped": skipped,
            "damaged": damaged,
        }
        out.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return
    for item in skipped:
        out.write(f"skipped run {item['run_id']!r}: {item['reason']}\n")
    if damaged:
        shown = ", ".join(repr(i) for i in damaged[:10]) + (", ..." if len(damaged) > 10 else "")
        out.write(f"left {len(damaged)} damaged run{_s(damaged)} alone (status unknown): {shown}\n")
    out.write(_summary(action, dry_run, done, skipped) + "\n")


def _s(items: Sequence[Any]) -> str:
    return "" if len(items) == 1 else "s"


def _summary(
    action: str, dry_run: bool, done: list[dict[str, Any]], skipped: list[dict[str, Any]]
) -> str:
    if not done and not skipped:
        return f"no runs to {action}" + (" (dry run)" if dry_run else "")
    if dry_run:
        return f"would {action} {len(done)} run{_s(done)}; dry run: nothing changed"
    counts: dict[str, int] = {}
    for item in done:
        counts[item["outcome"]] = counts.get(item["outcome"], 0) + 1
    said = [f"{n} {outcome.replace('_', ' ')}" for outcome, n in counts.items()]
    if skipped:
        said.append(f"{len(skipped)} skipped")
    return f"{action}: " + ", ".join(said)


def _dry_table(action: str, found: Sequence[SnapshotInfo], out: TextIO) -> None:
    """The runs a bulk ``action`` would act on, as a table."""
    if not found:
        return
    rows = [["ID", "WORKFLOW", "STATUS", "CREATED", "QUEUE", "WOULD"]]
    rows += [
        [
            _shown(info.id),
            _shown(info.workflow_name),
            info.status,
            _time(info.created_at),
            "-" if info.queue is None else _shown(info.queue),
            _outcome(action, info.status).replace("_", " "),
        ]
        for info in found
    ]
    _table(rows, out)


async def _fork(
    args: argparse.Namespace, store: Any, where: str, as_json: bool, out: TextIO
) -> None:
    """Fork run ``args.id`` into ``args.new_id`` (made up when not given)."""
    new_id = args.new_id if args.new_id is not None else uuid4_text()
    try:
        await _command(where, store.fork(args.id, new_id, from_step=args.from_step))
    except LookupError as exc:
        raise _Missing(f"no run {args.id!r} in {where}; nothing was forked") from exc
    except RunStateError as exc:
        raise _Failure(
            f"cannot fork run {args.id!r} into {new_id!r}: a run with that id exists (it is"
            f" {exc.status}); nothing was changed"
        ) from exc
    except ValueError as exc:
        raise _Failure(f"nothing forked from run {args.id!r}: {_one_line(exc)}") from exc
    info = await _ask(where, store.info(new_id))
    queue = None if info is None else info.queue
    kept = (
        "every completed step kept"
        if args.from_step is None
        else f"the steps before {args.from_step!r} kept"
    )
    text = f"forked run {args.id!r} into {new_id!r} ({kept}): {_now_runnable(queue)}"
    doc = {
        "run_id": args.id,
        "new_id": new_id,
        "from_step": args.from_step,
        "status": None if info is None else info.status,
        "queue": queue,
    }
    _said(out, as_json, {"forked": doc}, text)


# ---- schedules -----------------------------------------------------------------------------


async def _schedules(
    args: argparse.Namespace, store: Any, where: str, as_json: bool, out: TextIO, err: TextIO
) -> int:
    """``schedules list|pause|resume|remove`` on the open ``store``."""
    from ._schedules import list_schedules, pause_schedule, remove_schedule, resume_schedule

    _check_queue_store(store, where, "keep schedules")
    name = args.name if args.action != "list" else None
    try:
        if args.action == "list":
            _print_schedules(await _command(where, list_schedules(store)), as_json, out)
        elif args.action == "remove":
            await _command(where, remove_schedule(store, args.name))
            _said(out, as_json, {"removed": name}, f"removed schedule {name!r}")
        else:
            change = pause_schedule if args.action == "pause" else resume_schedule
            changed = await _command(where, change(store, args.name))
            verb = "paused" if args.action == "pause" else "resumed"
            text = f"{verb} schedule {name!r}"
            if not changed:
                text = f"schedule {name!r} was already {'paused' if verb == 'paused' else 'active'}"
            _said(out, as_json, {verb: name, "changed": changed}, text)
    except LookupError:
        err.write(f"error: no schedule {name!r} in {where}\n")
        return 1
    except (ValueError, SnapshotDecodeError, RunStateError) as exc:
        raise _Failure(f"schedule {name!r}: {_one_line(exc)}") from exc
    return 0


def _when(schedule: Schedule) -> str:
    """When a schedule fires: ``cron '0 2 * * *' Europe/Paris``, ``every 5m00s``."""
    if schedule.cron is not None:
        return f"cron {schedule.cron!r} {schedule.timezone or 'UTC'}"
    return f"every {_duration(float(schedule.every or 0))}"


def _schedule_doc(info: ScheduleInfo) -> dict[str, Any]:
    """A schedule for ``--json``: everything but its input (which may hold secrets)."""
    doc: dict[str, Any] = {"name": info.name}
    found = info.schedule
    if found is not None:
        doc |= {
            "workflow": found.workflow,
            "cron": found.cron,
            "timezone": found.timezone,
            "every": found.every,
            "queue": found.queue,
            "priority": found.priority,
            "catch_up": found.catch_up,
            "paused": found.paused,
        }
    doc |= {
        "last_tick": _iso(info.last_tick),
        "next_tick": _iso(info.next_tick),
        "problem": None if info.problem is None else redact_text(info.problem),
    }
    return doc


def _print_schedules(found: Sequence[ScheduleInfo], as_json: bool, out: TextIO) -> None:
    """The schedules, by name (as `list_schedules` gives them)."""
    if as_json:
        doc = {"items": [_schedule_doc(i) for i in found]}
        out.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return
    if not found:
        out.write("no schedules\n")
        return
    rows = [["NAME", "WORKFLOW", "WHEN", "QUEUE", "STATE", "LAST TICK", "NEXT TICK"]]
    for info in found:
        schedule = info.schedule
        if schedule is None:
            rows.append(
                [_shown(info.name), "?", "?", "?", "UNREADABLE", _time(info.last_tick), "-"]
            )
            continue
        rows.append(
            [
                _shown(info.name),
                _shown(schedule.workflow),
                _when(schedule),
                _shown(schedule.queue),
                "paused" if schedule.paused else "active",
                _time(info.last_tick),
                _time(info.next_tick),
            ]
        )
    _table(rows, out)
    for info in found:
        if info.problem is not None:
            out.write(
                f"\nunreadable schedule {info.name!r} (it never fires; 'schedules remove'"
                f" removes it): {redact_text(info.problem)}\n"
            )


def _dashboard_token(args: argparse.Namespace) -> str | None:
    """The token actions need, from the variable ``--token-env`` names; checked before
    the store is opened."""
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be from 0 to 65535, not {args.port}")
    if args.token_env is None:
        if args.actions:
            raise ValueError("--actions needs a credential: --token-env NAME")
        return None
    token = os.environ.get(args.token_env)
    if not token:
        raise ValueError(f"--token-env: the environment variable {args.token_env} is not set")
    if len(token) < 8:
        raise ValueError(f"--token-env: the token in {args.token_env} is shorter than 8 characters")
    return token


async def _serve_dashboard(
    args: argparse.Namespace, store: Any, where: str, token: str | None, out: TextIO, err: TextIO
) -> int:
    """Serve the dashboard of ``store`` until SIGINT or SIGTERM."""
    import signal

    try:
        from hypercorn.config import Config
    except ImportError:
        raise _Failure(
            "the dashboard needs Hypercorn: pip install 'awaitly-anyio[dashboard]'"
        ) from None
    from .dashboard import create_dashboard_app

    app = create_dashboard_app(
        store, actions=args.actions, token=token, store_name=where, title=args.title
    )
    config = Config()
    host = f"[{args.host}]" if ":" in args.host else args.host
    config.bind = [f"{host}:{args.port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 2.0
    stop = anyio.Event()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        err.write(
            f"warning: the dashboard listens on {args.host}, not only this machine:"
            " anyone who reaches the port reads the runs\n"
        )

    async def on_signals() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                stop.set()
                return

    async def serve(task_status: anyio.abc.TaskStatus[Any]) -> None:
        # Hypercorn has one module per loop, named as the loops are (hypercorn.trio,
        # hypercorn.asyncio); imported by name, its types being partly unknown to the
        # type checkers.  A serve() that reports its start takes task_status.
        hyper: Any = importlib.import_module(f"hypercorn.{_loops.current_name()}")
        if "task_status" in inspect.signature(hyper.serve).parameters:
            await hyper.serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)
            return

        # asyncio's serve reports no start: the socket is bound once it accepts.
        async def started() -> None:
            for _ in range(500):
                try:
                    await (await anyio.connect_tcp(args.host, port_of(config))).aclose()
                    break
                except OSError:
                    await anyio.sleep(0.01)
            task_status.started()

        async with anyio.create_task_group() as inner:
            inner.start_soon(started)
            await hyper.serve(app, config, shutdown_trigger=stop.wait)

    def port_of(config: Any) -> int:
        return int(str(config.bind[0]).rsplit(":", 1)[1])

    if args.port == 0:
        import socket

        with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
            probe.bind((args.host, 0))
            port = probe.getsockname()[1]
        config.bind = [f"{host}:{port}"]
    async with anyio.create_task_group() as tg:
        tg.start_soon(on_signals)
        await tg.start(serve)
        mode = "actions enabled" if args.actions else "read-only"
        out.write(f"dashboard of {where} on http://{host}:{port_of(config)}/ ({mode})\n")
        out.flush()
        # A signal sets ``stop``: Hypercorn's serve then shuts down on its own (not
        # cancelled: its asyncio server does not survive being cancelled cleanly).
    return 0


def _demo(args: argparse.Namespace) -> int:
    for name, flag in _RUNS_ONLY:
        if _option(args, name):
            raise ValueError(f"{flag} is for the runs commands, not demo")
    from ._demo import main as demo

    store = _option(args, "store") or DEMO_STORE
    try:
        anyio.run(demo, store, backend=_option(args, "backend") or _loops.DEFAULT)
    except (ValueError, OSError):
        raise
    except Exception as exc:
        if _broken_pipe(exc):
            raise BrokenPipeError from None
        raise _Failure(f"the demo failed: {_one_line(exc)}") from exc
    return 0


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Parse ``argv`` and run the command; return the exit status (see the module's
    docstring).  Errors are written to ``err`` as one line each, secrets masked;
    ``--help`` prints the help and raises ``SystemExit(0)``, as argparse does."""
    try:
        args = _parser().parse_args(argv)
    except _UsageError as exc:
        err.write(f"error: {exc}\n")
        return 2
    try:
        if args.command == "demo":
            status = _demo(args)
        else:
            _import_types(_imports(args))
            backend = _option(args, "backend") or _loops.DEFAULT
            status = anyio.run(_runs, args, out, err, backend=backend)
        out.flush()  # here, so that a reader gone away is noticed here
    except BrokenPipeError:
        _reader_gone(out)
        return 0
    except _Failure as exc:
        err.write(f"error: {exc}\n")
        return 2
    except (ValueError, OSError) as exc:
        err.write(f"error: {_one_line(exc)}\n")
        return 2
    return status
