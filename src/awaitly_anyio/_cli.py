"""``python -m awaitly_anyio``: the demo, and the ``runs`` commands over any store URL:
``list|show|delete`` the runs, ``send`` a value to a run, ``approve|reject`` an approval,
list the approvals ``pending``, and ``resolve-hook`` a hook's token.

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
early), 1 when the run asked for is not there (or cannot be decoded), 2 for every
other error (a value that is not JSON, a run that already ended, a value too large,
a hook token refused: nothing is stored then).

``send``, ``resolve-hook`` take the value with ``--json VALUE`` (JSON text; ``-`` reads
it from stdin, ``@FILE`` from a file): there ``--json`` is the value, and JSON output is
asked for before the action (``runs --json send ...``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import Any, NoReturn, TextIO, TypeVar, cast

import anyio

from . import _loops
from ._errors import (
    AlreadyDeliveredError,
    AwaitlyError,
    HookTokenError,
    RunFinishedError,
    SerializationError,
    SnapshotDecodeError,
    StoreError,
)
from ._redact import redact_text, redact_url
from ._rows import check_list_args, decode_cursor
from ._snapshot import RUN_STATUSES, SnapshotInfo, WorkflowSnapshot
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
        description="List runs, newest first, a page at a time.",
    )
    listing.add_argument("--status", choices=RUN_STATUSES, help="only runs with this status")
    listing.add_argument("--prefix", help="only ids starting with this")
    listing.add_argument(
        "--limit", type=int, default=50, help="runs per page, 1 to 10000 (default 50)"
    )
    listing.add_argument("--cursor", help="continue after a previous page")
    _add_options(listing, "action")
    show = actions.add_parser(
        "show",
        help="one run with its steps and lease",
        description=(
            "Show one run: its status, times, lease (who holds it, until when, and"
            " whether that lease is live or expired) and its steps in execution order."
        ),
    )
    show.add_argument("id", help="the run's id")
    _add_options(show, "action")
    delete = actions.add_parser(
        "delete", help="remove one run", description="Remove one run and its steps."
    )
    delete.add_argument("id", help="the run's id")
    _add_options(delete, "action")
    _waiting_actions(actions)
    return parser


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
    snapshot: WorkflowSnapshot, info: SnapshotInfo | None, now: datetime, out: TextIO
) -> None:
    out.write(f"run       {snapshot.workflow_id}\n")
    out.write(f"workflow  {snapshot.workflow_name}\n")
    out.write(f"status    {snapshot.status}\n")
    if info is not None and info.status == "waiting":
        out.write(f"waiting   {_wait_line(info, now)}\n")
    out.write(f"created   {_time(snapshot.created_at)}\n")
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
    if args.action == "list":  # bad arguments are reported before the store is opened
        check_list_args(args.prefix, args.status, args.limit)
        if args.cursor is not None:
            decode_cursor(args.cursor)
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
            if as_json:
                doc = {"items": [_info_doc(i) for i in page], "next_cursor": page.next_cursor}
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
            if as_json:
                doc = snapshot_to_doc(snapshot)
                doc["lease"] = _lease_doc(info, now)
                doc["wait"] = _wait_doc(info)
                out.write(dumps(doc) + "\n")
            else:
                _print_snapshot(snapshot, info, now, out)
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
