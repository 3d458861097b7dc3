"""``python -m awaitly_anyio``: the demo, and ``runs list|show|delete`` over any store URL.

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
other error.
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
from ._errors import SnapshotDecodeError
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


def _add_options(parser: argparse.ArgumentParser, level: str, *, runs: bool = True) -> None:
    """The options that may be written anywhere, stored under ``name@level`` so that a
    later parser does not overwrite what an earlier one read (see `_option`)."""
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
        description="List, show or delete the runs kept in a store.",
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
    return parser


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
    """A step's duration for people: ``850us``, ``12.5ms``, ``3.20s``, ``2m05s``."""
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
    return f"{hours}h{minutes:02d}m"


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
