"""``python -m awaitly_anyio``: the demo, and ``runs list|show|delete`` over any store URL.

Every failure is one line on stderr (``error: ...``), never a traceback: a bad
argument or URL, or a store that cannot be reached or fails, named by its URL
with the password and secret parameters masked.  Exit status: 0 on success, 1
when the run asked for is not there (or cannot be decoded), 2 for every other
error.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TextIO, TypeVar

import anyio

from ._redact import redact_text, redact_url
from .errors import SnapshotDecodeError
from .serialization import dumps, snapshot_to_doc
from .snapshot import RUN_STATUSES, SnapshotInfo, WorkflowSnapshot
from .store import open_store

DEFAULT_STORE = "sqlite:///awaitly.db"
DEMO_STORE = "sqlite:///awaitly-demo.db"
STORE_VARIABLE = "AWAITLY_STORE_URL"

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

T = TypeVar("T")


class _Failure(Exception):
    """A failure already worded for the user (one line, secrets masked)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m awaitly_anyio")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the durable checkout demo and print what happens")
    demo.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    demo.add_argument("--store", default=DEMO_STORE, help=f"store URL (default {DEMO_STORE})")

    runs = commands.add_parser("runs", help="inspect the runs kept in a store")
    runs.add_argument(
        "--store",
        default=None,  # resolved later, so that argparse never shows the variable's value
        help=f"store URL (default ${STORE_VARIABLE} or {DEFAULT_STORE})",
    )
    runs.add_argument("--schema", help="PostgreSQL schema of the tables (default public)")
    runs.add_argument(
        "--table-prefix", help="PostgreSQL prefix of the table names (default awaitly_)"
    )
    runs.add_argument("--key-prefix", help="Redis prefix of every key (default awaitly:)")
    runs.add_argument("--json", action="store_true", help="print JSON instead of a table")
    runs.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    runs.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first, so the types it registers can be loaded (repeatable)",
    )
    actions = runs.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="runs, newest first")
    listing.add_argument("--status", choices=RUN_STATUSES)
    listing.add_argument("--prefix", help="only ids starting with this")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--cursor", help="continue after a previous page")
    show = actions.add_parser("show", help="one run with its steps")
    show.add_argument("id")
    delete = actions.add_parser("delete", help="remove one run")
    delete.add_argument("id")
    return parser


def _time(value: Any) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        out.write("\n")


def _info_doc(info: SnapshotInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "workflow_name": info.workflow_name,
        "status": info.status,
        "created_at": info.created_at.isoformat(),
        "updated_at": info.updated_at.isoformat(),
        "expires_at": None if info.expires_at is None else info.expires_at.isoformat(),
        "damaged": info.damaged,
    }


def _print_snapshot(snapshot: WorkflowSnapshot, out: TextIO) -> None:
    out.write(f"run       {snapshot.workflow_id}\n")
    out.write(f"workflow  {snapshot.workflow_name}\n")
    out.write(f"status    {snapshot.status}\n")
    out.write(f"created   {_time(snapshot.created_at)}\n")
    out.write(f"updated   {_time(snapshot.updated_at)}\n")
    out.write(f"expires   {_time(snapshot.expires_at)}\n")
    if snapshot.result is not None:
        out.write(f"result    {snapshot.result!r}\n")
    for key, value in snapshot.metadata.items():
        out.write(f"meta      {key} = {value!r}\n")
    if snapshot.steps:
        out.write("\n")
        rows = [["STEP KEY", "OUTCOME", "ATTEMPTS", "FINISHED"]]
        # In the order the steps finished (stores keep records by key, not by time).
        ordered = sorted(
            snapshot.steps.items(),
            key=lambda item: (item[1].finished_at is None, item[1].finished_at or 0, item[0]),
        )
        for key, record in ordered:
            rows.append([key, repr(record.result), str(record.attempts), _time(record.finished_at)])
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
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    message = " ".join(str(exc).split())
    kind = type(exc)
    if not message:
        message = kind.__name__
    elif kind.__module__ != "builtins" and not kind.__module__.startswith("awaitly_anyio"):
        message = f"{kind.__name__}: {message}"
    return redact_text(message)


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
    if args.store is not None:
        return args.store, ""
    url = os.environ.get(STORE_VARIABLE)
    if url:
        return url, f" (from ${STORE_VARIABLE})"
    return DEFAULT_STORE, ""


def _store_options(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """The store constructor's options the command line gave, for the store ``url`` names."""
    scheme = url.partition("://")[0].lower()
    options: dict[str, Any] = {}
    for flag, name, value, schemes, kind in (
        ("--schema", "schema", args.schema, ("postgresql", "postgres"), "PostgreSQL"),
        (
            "--table-prefix",
            "table_prefix",
            args.table_prefix,
            ("postgresql", "postgres"),
            "PostgreSQL",
        ),
        ("--key-prefix", "prefix", args.key_prefix, ("redis", "rediss", "unix"), "Redis"),
    ):
        if value is None:
            continue
        if scheme not in schemes:
            raise ValueError(f"{flag} is for {kind} stores only")
        options[name] = value
    return options


@contextlib.asynccontextmanager
async def _opened(url: str, source: str, where: str, options: dict[str, Any]) -> AsyncIterator[Any]:
    """The store ``url`` names, open; any failure to open it is one worded line."""
    try:
        store = open_store(url, **options)
    except ValueError as exc:
        raise _Failure(redact_text(" ".join(str(exc).split())) + source) from None
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
    async with _opened(url, source, where, options) as store:
        if args.action == "list":
            page = await _ask(
                where,
                store.list(
                    status=args.status, prefix=args.prefix, limit=args.limit, cursor=args.cursor
                ),
            )
            if args.json:
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
            if args.json:
                out.write(dumps(snapshot_to_doc(snapshot)) + "\n")
            else:
                _print_snapshot(snapshot, out)
            return 0
        deleted = await _ask(where, store.delete(args.id))
        if not deleted:
            err.write(f"error: no run {args.id!r} in {where}\n")
            return 1
        out.write(json.dumps({"deleted": args.id}) + "\n" if args.json else f"deleted {args.id}\n")
        return 0


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Parse ``argv`` and run the command; return the exit status (see the module's
    docstring).  Errors are written to ``err`` as one line each, secrets masked."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from ._demo import main as demo

            try:
                anyio.run(demo, args.store, backend=args.backend)
            except (ValueError, OSError):
                raise
            except Exception as exc:
                raise _Failure(f"the demo failed: {_one_line(exc)}") from exc
            return 0
        _import_types(args.imports)
        status: int = anyio.run(_runs, args, out, err, backend=args.backend)
    except _Failure as exc:
        err.write(f"error: {exc}\n")
        return 2
    except (ValueError, OSError) as exc:
        err.write(f"error: {_one_line(exc)}\n")
        return 2
    return status
