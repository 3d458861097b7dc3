"""The web dashboard: an ASGI application showing the runs of a store, one run's steps
as a timeline and a diagram, the waiting runs and their approvals, the queues, the
schedules, and the live state of circuit breakers, rate limiters and health checks;
with ``actions=True``, approve / reject / send / cancel / resume and pause / resume
a schedule.

Server-rendered HTML with a little JavaScript (the counts by status, a confirmation
before a cancel), no build step, no CDN: the app serves its own CSS and script.  It
needs no web framework: mount it under any prefix (Starlette and FastAPI
``app.mount("/ops/dashboard", dashboard)``, Litestar, Quart; the ASGI ``root_path`` is
honoured), or serve it alone: ``python -m awaitly_anyio dashboard --store URL``.  It
runs on asyncio and trio.

Safety:

- Read-only unless ``actions=True``.  Actions are POST forms with a CSRF token and
  need the configured credential: a bearer ``token`` (``Authorization: Bearer ...``,
  or typed into the form's token field) or ``basic_auth=(user, password)``; both are
  compared in constant time.  A POST from another site (``Sec-Fetch-Site`` other than
  ``same-origin``, or without it an ``Origin`` that is not the request's host) is
  refused.
- Every stored text (ids, names, step keys, values, errors) is HTML-escaped; values
  that look like secrets (keys named like passwords or tokens, API keys, JWTs,
  passwords in URLs) are shown as ``***``; the store's URL is shown masked.  Pages
  carry a Content-Security-Policy that allows no inline script.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Any, Protocol, cast, runtime_checkable
from urllib.parse import parse_qs, quote

import anyio
import attrs

from . import _dashboard_html as h
from ._clock import Clock, SystemClock
from ._diagram import _duration, diagram_steps, run_to_mermaid, run_to_text
from ._errors import AwaitlyError, SnapshotDecodeError
from ._input import ERROR_KEY, LAST_ATTEMPT_KEY, PREFIX, stored_input, stored_trace_context
from ._redact import redact_text, redact_url
from ._result import Err, Ok
from ._snapshot import RUN_STATUSES, RunStatus, SnapshotInfo, SnapshotPage, WorkflowSnapshot
from ._store import MailboxStore, QueueStore, SnapshotStore
from .health import (
    ASGIApp,
    Check,
    HealthTracker,
    Receive,
    Scope,
    Send,
    _count_runs,
    _lifespan,
    _refuse_websocket,
    _route_path,
    _run_checks,
)

__all__ = ["create_dashboard_app"]


class _Breaker(Protocol):
    """A circuit breaker as the dashboard shows it: a ``name`` and a ``state``
    (`CircuitBreaker` and `RedisCircuitBreaker` are)."""

    @property
    def state(self) -> Any: ...


@runtime_checkable
class _CountsByStatus(Protocol):
    """A store that counts its runs by status itself (every store of `open_store`:
    ``StoreFront.count_by_status``); another store's runs are counted by paging."""

    def count_by_status(self) -> Awaitable[Mapping[RunStatus, int]]: ...


class _Limiter(Protocol):
    """A rate limiter as the dashboard shows it: ``stats()`` (`RateLimiter` and
    `RedisRateLimiter` have it)."""

    def stats(self) -> dict[str, Any]: ...


_MAX_BODY = 2 * 1024 * 1024  # a POSTed form (a sent value is at most 1 MiB of JSON)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$", re.I)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_CSP = (
    "default-src 'none'; style-src 'self' 'unsafe-inline'; script-src 'self';"
    " connect-src 'self'; img-src 'self' data:; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'"
)
_DONE = {
    "approve": "Approved: the run receives the approval and continues.",
    "reject": "Rejected: the run receives the rejection.",
    "send": "Sent: the value is stored; the run receives it when it waits for it.",
    "cancel": "Cancel requested: the run ends cancelled.",
    "resume": "Resumed: the run is runnable again; a worker takes it.",
    "pause-schedule": "Schedule paused.",
    "resume-schedule": "Schedule resumed.",
}
_ACTIONS = tuple(_DONE)
_GET_PATHS = (
    "/",
    "/runs",
    "/run",
    "/run.mmd",
    "/run.txt",
    "/waiting",
    "/queues",
    "/schedules",
    "/health",
    "/api/counts",
    "/static/dashboard.css",
    "/static/dashboard.js",
)
_PATHS = dict.fromkeys([*_GET_PATHS, *(f"/actions/{name}" for name in _ACTIONS)])


def parse_age(text: str, option: str) -> float:
    """``"90s"``, ``"15m"``, ``"2h"``, ``"3d"``, ``"1w"`` (or plain seconds) as seconds;
    ``ValueError`` naming ``option`` otherwise."""
    found = _DURATION.match(text)
    if found is None:
        raise ValueError(f"{option} must be a duration like 90s, 15m, 2h or 3d, not {text!r}")
    return float(found[1]) * _UNITS[(found[2] or "s").lower()]


class _BadRequest(Exception):
    """A request the app refuses, worded for the page (status, message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _check_int(value: object, option: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{option} must be an integer from {low} to {high}, not {value!r}")
    return value


def _breaker_list(breakers: Iterable[_Breaker] | Mapping[str, _Breaker]) -> list[tuple[str, Any]]:
    if isinstance(breakers, Mapping):
        return list(cast("Mapping[str, _Breaker]", breakers).items())
    return [(str(getattr(b, "name", f"breaker {n}")), b) for n, b in enumerate(breakers, 1)]


def create_dashboard_app(
    store: SnapshotStore,
    *,
    actions: bool = False,
    token: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    breakers: Iterable[_Breaker] | Mapping[str, _Breaker] = (),
    limiters: Iterable[_Limiter] = (),
    checks: Mapping[str, Check] | None = None,
    tracker: HealthTracker | None = None,
    store_name: str | None = None,
    title: str = "awaitly dashboard",
    page_size: int = 50,
    scan_limit: int = 5000,
    count_limit: int = 100_000,
    counts_ttl: float = 5.0,
    timeout: float = 10.0,
    csrf_secret: bytes | None = None,
    clock: Clock | None = None,
) -> ASGIApp:
    """The dashboard of ``store`` (any store from `open_store`: memory, SQLite,
    PostgreSQL, Redis, or your own `SnapshotStore`; the waiting, queue and schedule
    pages and the actions need a `QueueStore`) as an ASGI application.

    Pages (relative to where it is mounted): ``/runs`` (filters ``status``, ``name``
    (the workflow), ``prefix`` (of the id), ``newer_than`` / ``older_than`` (last
    update, ``15m``, ``2h``, ``3d``); a page at a time with the store's cursor),
    ``/run?id=ID`` (facts, lease, trace id, input, result, metadata, the steps as a
    timeline, the diagram; ``/run.mmd`` and ``/run.txt`` serve the diagram alone),
    ``/waiting``, ``/queues``, ``/schedules``, ``/health`` (the ``checks`` run within
    ``timeout`` seconds each, ``tracker``'s counts, ``breakers``' and ``limiters``'
    live state) and ``/api/counts`` (JSON: the runs counted by status, cached
    ``counts_ttl`` seconds; the runs page loads them apart, never waiting for them).
    Each count stops at ``count_limit`` (and says so: ``capped``).  A store of
    `open_store` counts them itself (``count_by_status``: one ``GROUP BY`` on SQLite
    and PostgreSQL); another `SnapshotStore`'s runs are counted by paging through
    ``list``.

    A filter the store cannot apply itself (``name``, ``newer_than``,
    ``older_than``) reads at most ``scan_limit`` runs for a page; the page then
    offers to go on from where it stopped.

    ``actions=True`` enables the POST actions; it requires ``token`` or
    ``basic_auth`` (``ValueError`` otherwise).  ``csrf_secret`` signs the forms'
    CSRF token (default: random per app, so a restart invalidates open forms; pass
    the same secret to every replica behind a load balancer).  ``store_name`` is
    shown in the header, masked (``redact_url``).  ``clock`` gives the time the age
    filters and leases are judged by (default: the system clock; give the store's).

    Raises ``TypeError`` / ``ValueError`` for bad options, naming them.  Each request
    reads the store within ``timeout`` seconds; a store that fails or is slower
    answers 503 with the error (secrets masked).  Cancellation of a request (the
    client went away, the server stops) propagates.
    """
    if not isinstance(store, SnapshotStore):
        raise TypeError(f"store must be a SnapshotStore (from open_store), not {store!r}")
    if not isinstance(actions, bool):
        raise TypeError(f"actions must be True or False, not {actions!r}")
    if token is not None and (not isinstance(token, str) or len(token) < 8):
        raise ValueError("token must be a string of at least 8 characters")
    if basic_auth is not None and (
        not isinstance(basic_auth, tuple)
        or len(basic_auth) != 2
        or not all(isinstance(part, str) and part for part in basic_auth)
        or ":" in basic_auth[0]
    ):
        raise ValueError("basic_auth must be a (user, password) pair of non-empty strings")
    if actions and token is None and basic_auth is None:
        raise ValueError("actions=True needs a credential: pass token= or basic_auth=")
    _check_int(page_size, "page_size", 1, 1000)
    _check_int(scan_limit, "scan_limit", 1, 1_000_000)
    _check_int(count_limit, "count_limit", 1, 100_000_000)
    for option, seconds in (("counts_ttl", counts_ttl), ("timeout", timeout)):
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError(f"{option} must be a number of seconds >= 0, not {seconds!r}")
    if csrf_secret is not None and (not isinstance(csrf_secret, bytes) or len(csrf_secret) < 16):
        raise ValueError("csrf_secret must be at least 16 bytes")
    checks = dict(checks or {})
    breaker_list = _breaker_list(breakers)
    limiter_list = list(limiters)
    queue_store = store if isinstance(store, QueueStore) else None
    mailbox = store if isinstance(store, MailboxStore) else None
    shown_store = redact_url(store_name) if store_name is not None else type(store).__name__
    secret = csrf_secret if csrf_secret is not None else secrets.token_bytes(32)
    csrf = hmac.new(secret, b"awaitly dashboard csrf", hashlib.sha256).hexdigest()
    static = {
        name: (resources.files("awaitly_anyio") / "_dashboard_static" / name).read_bytes()
        for name in ("dashboard.css", "dashboard.js")
    }
    counts_cache: list[tuple[float, dict[str, Any]]] = []
    wants_credential_field = token is not None
    the_clock: Clock = clock if clock is not None else SystemClock()

    def now() -> datetime:
        return datetime.fromtimestamp(the_clock.time(), timezone.utc)

    def frame(
        base: str, title_: str, heading: str, active: str, body: Iterable[str], **kw: Any
    ) -> bytes:
        return h.page(
            base=base,
            title=title_,
            heading=heading,
            active=active,
            body=body,
            app_title=title,
            store_name=shown_store,
            actions=actions,
            **kw,
        )

    async def read(call: Awaitable[Any]) -> Any:
        """``await call`` on the store within ``timeout``; a failure becomes a 503."""
        try:
            with anyio.fail_after(timeout):
                return await call
        except TimeoutError:
            raise _BadRequest(503, f"the store did not answer within {timeout:g}s") from None
        except (ValueError, TypeError) as exc:
            raise _BadRequest(400, redact_text(str(exc))) from None
        except SnapshotDecodeError:
            raise
        except Exception as exc:
            raise _BadRequest(503, f"the store failed: {_one_line(exc)}") from exc

    def list_page(*, status: RunStatus, limit: int, cursor: str | None) -> Awaitable[SnapshotPage]:
        return read(store.list(status=status, limit=limit, cursor=cursor))

    # ---- pages -----------------------------------------------------------------------

    async def runs_page(base: str, q: Mapping[str, str]) -> bytes:
        status = _status_arg(q.get("status") or None)
        prefix = q.get("prefix") or None
        name = q.get("name") or None
        newer = _age(q, "newer_than")
        older = _age(q, "older_than")
        cursor = q.get("cursor") or None
        limit = _query_int(q, "limit", page_size, 1, 1000)
        found, next_cursor, scanned = await list_runs(
            status, prefix, name, newer, older, cursor, limit
        )
        filters = {
            "status": status,
            "name": name,
            "prefix": prefix,
            "newer_than": q.get("newer_than") or None,
            "older_than": q.get("older_than") or None,
            "limit": limit if limit != page_size else None,
        }
        body = [_filter_form(base, filters), _counts_bar(base, filters)]
        if not found:
            body.append("<p class=empty id=no-runs>No runs match.</p>")
        else:
            body.append(_runs_table(base, found, now()))
        note = ""
        if scanned is not None:
            note = f" (read {scanned} runs for this page)"
        if next_cursor is not None:
            body.append(
                "<p class=more><a id=next-page"
                f' href="{h.href(base, "/runs", **filters, cursor=next_cursor)}">'
                f"Next page →</a>{h.esc(note)}</p>"
            )
        return frame(base, "Runs", "Runs", "runs", body)

    async def list_runs(
        status: RunStatus | None,
        prefix: str | None,
        name: str | None,
        newer: float | None,
        older: float | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[SnapshotInfo], str | None, int | None]:
        """A page of runs; with filters the store cannot apply, read pages (each no
        longer than what is still wanted, so that the store's cursor continues
        exactly) until the page is full, the runs are older than ``newer`` or
        ``scan_limit`` runs were read."""
        if name is None and newer is None and older is None:
            page = await read(store.list(prefix=prefix, status=status, limit=limit, cursor=cursor))
            return page.items, page.next_cursor, None
        at = now()
        newest = None if older is None else at - timedelta(seconds=older)
        oldest = None if newer is None else at - timedelta(seconds=newer)
        found: list[SnapshotInfo] = []
        scanned = 0
        while len(found) < limit and scanned < scan_limit:
            want = min(limit - len(found), scan_limit - scanned)
            page = await read(store.list(prefix=prefix, status=status, limit=want, cursor=cursor))
            scanned += len(page.items)
            cursor = page.next_cursor
            for info in page.items:
                if oldest is not None and info.updated_at < oldest:
                    return found, None, scanned  # newest first: no more can match
                if name is not None and info.workflow_name != name:
                    continue
                if newest is not None and info.updated_at > newest:
                    continue
                found.append(info)
            if cursor is None:
                break
        return found, cursor, scanned

    async def counts_doc() -> dict[str, Any]:
        now = time.monotonic()
        if counts_cache and now - counts_cache[0][0] < counts_ttl:
            return counts_cache[0][1]
        counts: dict[str, int] = {}
        capped: list[str] = []
        if isinstance(store, _CountsByStatus):
            # The store counts in the database (one GROUP BY), so reading is no longer
            # what the limit bounds; it is kept as a cap on what is shown, as before.
            for status, count in (await read(store.count_by_status())).items():
                counts[status] = min(count, count_limit)
                if count > count_limit:
                    capped.append(status)
            doc = {"counts": counts, "capped": capped, "limit": count_limit}
            counts_cache[:] = [(time.monotonic(), doc)]
            return doc
        for status in RUN_STATUSES:
            count, reached, _ = await _count_runs(list_page, status, cap=count_limit, size=10_000)
            if reached:
                capped.append(status)
            counts[status] = count
        doc = {"counts": counts, "capped": capped, "limit": count_limit}
        counts_cache[:] = [(time.monotonic(), doc)]
        return doc

    async def run_page(base: str, q: Mapping[str, str], kind: str) -> tuple[bytes, str]:
        run_id = q.get("id")
        if not run_id:
            raise _BadRequest(400, "which run? (/run?id=ID)")
        info: SnapshotInfo | None = None
        reader = getattr(store, "info", None)
        if reader is not None:
            info = await read(reader(run_id))
        try:
            snapshot: WorkflowSnapshot | None = await read(store.load(run_id))
            problem = None
        except SnapshotDecodeError as exc:
            snapshot, problem = None, redact_text(str(exc))
        if snapshot is None and problem is None:
            raise _BadRequest(404, f"no run {run_id!r} in this store")
        if kind == "mmd":
            if snapshot is None:
                raise _BadRequest(409, problem or "unreadable")
            return run_to_mermaid(snapshot, info=info).encode(), "text/plain; charset=utf-8"
        if kind == "txt":
            if snapshot is None:
                raise _BadRequest(409, problem or "unreadable")
            return run_to_text(snapshot, info=info).encode(), "text/plain; charset=utf-8"
        body = _run_body(base, run_id, snapshot, info, problem, now())
        if actions and info is not None and queue_store is not None:
            body.insert(1, _run_actions(base, run_id, info))
        notice = _DONE.get(q.get("done", ""))
        return frame(
            base, f"Run {run_id}", f"Run {run_id}", "runs", body, notice=notice
        ), "text/html"

    def _run_actions(base: str, run_id: str, info: SnapshotInfo) -> str:
        forms: list[str] = []
        cred = wants_credential_field
        if info.status == "waiting" and info.wait_kind == "approval" and info.waiting_for:
            fields = {"id": run_id, "key": info.waiting_for}
            who = [("by", "by", "your name"), ("reason", "reason", "why (optional)")]
            forms.append(
                h.form(base, "approve", csrf, fields, "Approve", inputs=who, credential=cred)
            )
            forms.append(
                h.form(
                    base, "reject", csrf, fields, "Reject", inputs=who, credential=cred, danger=True
                )
            )
        if info.status == "waiting" and info.wait_kind == "message" and info.waiting_for:
            forms.append(
                h.form(
                    base,
                    "send",
                    csrf,
                    {"id": run_id, "key": info.waiting_for},
                    f"Send to {info.waiting_for}",
                    inputs=[("value", "value (JSON)", '{"ok": true}')],
                    credential=cred,
                )
            )
        if info.status in ("pending", "running", "waiting") and not info.cancel_requested:
            forms.append(
                h.form(
                    base, "cancel", csrf, {"id": run_id}, "Cancel run", credential=cred, danger=True
                )
            )
        if info.status in ("failed", "cancelled"):
            forms.append(
                h.form(base, "resume", csrf, {"id": run_id}, "Resume run", credential=cred)
            )
        if not forms:
            return ""
        return "<section class=actions><h2>Actions</h2>" + "".join(forms) + "</section>"

    async def waiting_page(base: str, q: Mapping[str, str]) -> bytes:
        if mailbox is None:
            return frame(
                base,
                "Waiting",
                "Waiting runs",
                "waiting",
                ["<p>This store keeps no waiting runs.</p>"],
            )
        cursor = q.get("cursor") or None
        page = await read(store.list(status="waiting", limit=page_size, cursor=cursor))
        rows: list[list[str]] = []
        for info in page.items:
            act = ""
            if actions and info.waiting_for:
                fields = {"id": info.id, "key": info.waiting_for, "back": "waiting"}
                cred = wants_credential_field
                if info.wait_kind == "approval":
                    act = h.form(
                        base,
                        "approve",
                        csrf,
                        fields,
                        "Approve",
                        inputs=[("by", "by", "your name")],
                        credential=cred,
                    )
                    act += h.form(
                        base,
                        "reject",
                        csrf,
                        fields,
                        "Reject",
                        inputs=[("by", "by", "your name")],
                        credential=cred,
                        danger=True,
                    )
                elif info.wait_kind == "message":
                    act = h.form(
                        base,
                        "send",
                        csrf,
                        fields,
                        "Send",
                        inputs=[("value", "value (JSON)", "true")],
                        credential=cred,
                    )
            rows.append(
                [
                    _run_link(base, info.id),
                    h.esc(info.workflow_name),
                    h.esc(info.wait_kind or "-"),
                    h.esc(info.waiting_for or "-"),
                    h.esc(h.when(info.wake_at) if info.wake_at else "no deadline"),
                    h.esc(h.when(info.updated_at)),
                    act,
                ]
            )
        body = [
            "<p>Runs stored waiting for a message, an approval, a hook or a timer; newest first."
            " Approvals are pending until approved or rejected.</p>"
        ]
        if rows:
            body.append(
                h.table(
                    ["run", "workflow", "kind", "waiting for", "deadline", "since", ""],
                    rows,
                    cls="waiting",
                )
            )
        else:
            body.append("<p class=empty>No run is waiting.</p>")
        if page.next_cursor:
            body.append(
                f'<p class=more><a href="{h.href(base, "/waiting", cursor=page.next_cursor)}">'
                "Next page →</a></p>"
            )
        notice = _DONE.get(q.get("done", ""))
        return frame(base, "Waiting", "Waiting runs", "waiting", body, notice=notice)

    async def queues_page(base: str, q: Mapping[str, str]) -> bytes:
        if queue_store is None:
            return frame(base, "Queues", "Queues", "queues", ["<p>This store keeps no queues.</p>"])
        queues: dict[str, list[SnapshotInfo]] = {}
        scanned = 0
        cursor: str | None = None
        while scanned < scan_limit:
            page = await read(
                store.list(status="pending", limit=min(1000, scan_limit - scanned), cursor=cursor)
            )
            scanned += len(page.items)
            for info in page.items:
                queues.setdefault(info.queue or "-", []).append(info)
            cursor = page.next_cursor
            if cursor is None:
                break
        more = "+" if cursor is not None else ""
        summary = [
            [
                h.esc(name),
                h.esc(f"{len(found)}{more}"),
                h.esc(h.when(min(i.created_at for i in found))),
                h.esc(", ".join(sorted({i.workflow_name for i in found})[:5])),
            ]
            for name, found in sorted(queues.items())
        ]
        body = ["<p>Runs queued (status pending) that no worker has started yet, by queue.</p>"]
        if summary:
            body.append(h.table(["queue", "pending", "oldest", "workflows"], summary, cls="queues"))
            pending = [i for found in queues.values() for i in found]
            pending.sort(key=lambda i: (i.queue or "", i.priority, i.created_at))
            rows = [
                [
                    _run_link(base, i.id),
                    h.esc(i.workflow_name),
                    h.esc(i.queue or "-"),
                    h.esc(str(i.priority)),
                    h.esc(i.partition or "-"),
                    h.esc(h.when(i.created_at)),
                    h.form(
                        base,
                        "cancel",
                        csrf,
                        {"id": i.id, "back": "queues"},
                        "Cancel",
                        credential=wants_credential_field,
                        danger=True,
                    )
                    if actions
                    else "",
                ]
                for i in pending[:page_size]
            ]
            body.append("<h2>Next to start</h2>")
            body.append(
                h.table(["run", "workflow", "queue", "priority", "partition", "queued", ""], rows)
            )
        else:
            body.append("<p class=empty>No run is queued.</p>")
        notice = _DONE.get(q.get("done", ""))
        return frame(base, "Queues", "Queues", "queues", body, notice=notice)

    async def schedules_page(base: str, q: Mapping[str, str]) -> bytes:
        if queue_store is None:
            return frame(
                base,
                "Schedules",
                "Schedules",
                "schedules",
                ["<p>This store keeps no schedules.</p>"],
            )
        from ._schedules import list_schedules

        found = await read(list_schedules(queue_store))
        rows: list[list[str]] = []
        for info in found:
            schedule = info.schedule
            if schedule is None:
                timing, workflow, state = "-", "-", f"unreadable: {redact_text(info.problem or '')}"
            else:
                timing = schedule.cron or f"every {schedule.every}s"
                workflow = schedule.workflow
                state = "paused" if schedule.paused else "active"
            act = ""
            if actions and schedule is not None:
                which = "resume-schedule" if schedule.paused else "pause-schedule"
                label = "Resume" if schedule.paused else "Pause"
                act = h.form(
                    base, which, csrf, {"name": info.name}, label, credential=wants_credential_field
                )
            rows.append(
                [
                    h.esc(info.name),
                    h.esc(workflow),
                    h.esc(timing),
                    h.esc(state),
                    h.esc(h.when(info.last_tick)),
                    h.esc(h.when(info.next_tick)),
                    act,
                ]
            )
        body = (
            [
                h.table(
                    ["schedule", "workflow", "when", "state", "last tick", "next tick", ""],
                    rows,
                    cls="schedules",
                )
            ]
            if rows
            else ["<p class=empty>No schedule is stored.</p>"]
        )
        notice = _DONE.get(q.get("done", ""))
        return frame(base, "Schedules", "Schedules", "schedules", body, notice=notice)

    async def health_page(base: str, q: Mapping[str, str]) -> bytes:
        body: list[str] = []
        if checks:
            results = await _run_checks(checks, timeout)
            rows = [
                [
                    h.esc(name),
                    h.badge("completed" if results[name].status == "ok" else "failed")
                    .replace(">completed<", ">ok<")
                    .replace(">failed<", ">error<"),
                    h.esc(
                        "-"
                        if results[name].latency_ms is None
                        else f"{results[name].latency_ms:.1f} ms"
                    ),
                    h.esc(results[name].error or ""),
                ]
                for name in checks
            ]
            body.append(
                "<h2>Checks</h2>"
                + h.table(["check", "status", "latency", "error"], rows, cls="checks")
            )
        if tracker is not None:
            stats = tracker.get_stats()
            body.append("<h2>Workflows (this process)</h2>")
            body.append(
                h.facts(
                    [
                        ("total", h.esc(stats["total"])),
                        ("successful", h.esc(stats["successful"])),
                        ("failed", h.esc(stats["failed"])),
                        ("success rate", h.esc(f"{stats['success_rate']:.1%}")),
                        ("average duration", h.esc(f"{stats['avg_duration_ms']:.1f} ms")),
                        (
                            "last error",
                            h.esc(h.shown_value(stats["last_error"]))
                            if stats["last_error"]
                            else "-",
                        ),
                    ]
                )
            )
        if breaker_list:
            rows = list[list[str]]()
            for name, breaker in breaker_list:
                stats = _stats(breaker)
                state = str(getattr(breaker.state, "value", breaker.state))
                rows.append(
                    [
                        h.esc(name),
                        f'<span class="badge c-{h.esc(state.lower())}">{h.esc(state)}</span>',
                        h.esc(stats.get("consecutive_failures", "-")),
                        h.esc(stats.get("calls", "-")),
                        h.esc(stats.get("failures", "-")),
                        h.esc(stats.get("rejected", "-")),
                        h.esc(_seconds(stats.get("retry_after"))),
                    ]
                )
            body.append(
                "<h2>Circuit breakers</h2>"
                + h.table(
                    [
                        "breaker",
                        "state",
                        "consecutive failures",
                        "calls",
                        "failures",
                        "rejected",
                        "retry after",
                    ],
                    rows,
                    cls="breakers",
                )
            )
        if limiter_list:
            rows = list[list[str]]()
            for limiter in limiter_list:
                stats = _stats(limiter)
                free = stats.get("next_free_in")
                rows.append(
                    [
                        h.esc(stats.get("name", getattr(limiter, "name", "?"))),
                        h.esc(f"{stats.get('max_requests', '?')} / {stats.get('window', '?')}s"),
                        h.esc(stats.get("admitted", "-")),
                        h.esc(stats.get("rejected", "-")),
                        h.esc(stats.get("waiting", "-")),
                        h.esc("-" if not isinstance(free, int | float) else f"{max(free, 0):.2f}s"),
                    ]
                )
            body.append(
                "<h2>Rate limiters</h2>"
                + h.table(
                    ["limiter", "limit", "admitted", "rejected", "waiting", "next free in"],
                    rows,
                    cls="limiters",
                )
            )
        if not body:
            body.append(
                "<p class=empty>No checks, tracker, breakers or limiters were given to the"
                " dashboard.</p>"
            )
        return frame(base, "Health", "Health", "health", body)

    # ---- actions -----------------------------------------------------------------------

    def authorized(headers: Mapping[bytes, bytes], form: Mapping[str, str]) -> str | None:
        """Who the request's credential names (``"token"`` for the bearer token), or
        ``None`` when it has none that matches."""
        given = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, value = given.partition(" ")
        ok = False
        who = None
        if token is not None:
            typed = form.get("credential", "")
            candidate = value.strip() if scheme.lower() == "bearer" else typed
            # Both compared whatever happens, in constant time.
            ok = hmac.compare_digest(candidate.encode(), token.encode()) and bool(candidate)
            who = "token" if ok else None
        if basic_auth is not None and not ok and scheme.lower() == "basic":
            try:
                user, _, password = (
                    base64.b64decode(value.strip(), validate=True).decode().partition(":")
                )
            except (ValueError, UnicodeError):
                user, password = "", ""
            same_user = hmac.compare_digest(user.encode(), basic_auth[0].encode())
            same_password = hmac.compare_digest(password.encode(), basic_auth[1].encode())
            if same_user and same_password:
                ok, who = True, user
        return who if ok else None

    async def act(
        base: str, action: str, scope: Scope, receive: Receive
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        headers = _headers(scope)
        if not actions:
            raise _BadRequest(403, "this dashboard is read-only (actions are not enabled)")
        if _cross_site(headers):
            raise _BadRequest(403, "refused: a cross-site request")
        form = await _read_form(receive, headers)
        if not hmac.compare_digest(form.get("csrf", "").encode(), csrf.encode()):
            raise _BadRequest(403, "refused: missing or wrong CSRF token (reload the page)")
        who = authorized(headers, form)
        if who is None:
            raise _BadRequest(401, "refused: this action needs the dashboard's credential")
        target = cast("QueueStore", queue_store)
        if queue_store is None:
            raise _BadRequest(409, "this store keeps no runs that can be acted on")
        run_id = form.get("id", "")
        try:
            with anyio.fail_after(timeout):
                if action in ("approve", "reject"):
                    from ._waiting import approve, reject

                    by = form.get("by", "").strip() or (who if who != "token" else "dashboard")
                    reason = form.get("reason", "").strip() or None
                    decide = approve if action == "approve" else reject
                    await decide(target, run_id, form.get("key", ""), by=by, reason=reason)
                elif action == "send":
                    from ._waiting import send as send_value

                    try:
                        value = json.loads(form.get("value", ""))
                    except ValueError:
                        raise _BadRequest(
                            400, 'the value must be JSON text (quote a string: "yes")'
                        ) from None
                    await send_value(target, run_id, form.get("key", ""), value)
                elif action == "cancel":
                    await target.cancel(run_id)
                elif action == "resume":
                    await target.resume(run_id)
                else:
                    from ._schedules import pause_schedule, resume_schedule

                    name = form.get("name", "")
                    toggle = pause_schedule if action == "pause-schedule" else resume_schedule
                    if not await toggle(target, name):
                        raise _BadRequest(404, f"no schedule {name!r}")
                    return _redirect(base, "/schedules", done=action)
        except _BadRequest:
            raise
        except TimeoutError:
            raise _BadRequest(503, f"the store did not answer within {timeout:g}s") from None
        except LookupError as exc:
            raise _BadRequest(404, redact_text(str(exc))) from None
        except (AwaitlyError, ValueError, TypeError) as exc:
            raise _BadRequest(409, redact_text(str(exc))) from None
        except Exception as exc:
            raise _BadRequest(503, f"the store failed: {_one_line(exc)}") from exc
        back = form.get("back")
        if back in ("waiting", "queues"):
            return _redirect(base, f"/{back}", done=action)
        return _redirect(base, "/run", id=run_id, done=action)

    # ---- the ASGI application ------------------------------------------------------------

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind == "websocket":
            await _refuse_websocket(receive, send, "HTTP only")
            return
        if kind != "http":
            return
        base = (scope.get("root_path") or "").rstrip("/")
        path = _route_path(scope, _PATHS)
        method = scope["method"]
        head = method == "HEAD"
        extra: list[tuple[bytes, bytes]] = []
        content_type = "text/html; charset=utf-8"
        try:
            if path.startswith("/actions/") and path in _PATHS:
                if method != "POST":
                    raise _BadRequest(405, "actions are POST only")
                status, extra, body = await act(base, path[len("/actions/") :], scope, receive)
                content_type = "text/plain; charset=utf-8"
            elif path not in _PATHS:
                raise _BadRequest(404, "no such page")
            elif method not in ("GET", "HEAD"):
                raise _BadRequest(405, "only GET here")
            else:
                status = 200
                q = _query(scope)
                if path in ("/", "/runs"):
                    body = await runs_page(base, q)
                elif path == "/run":
                    body, content_type = await run_page(base, q, "html")
                elif path == "/run.mmd":
                    body, content_type = await run_page(base, q, "mmd")
                elif path == "/run.txt":
                    body, content_type = await run_page(base, q, "txt")
                elif path == "/waiting":
                    body = await waiting_page(base, q)
                elif path == "/queues":
                    body = await queues_page(base, q)
                elif path == "/schedules":
                    body = await schedules_page(base, q)
                elif path == "/health":
                    body = await health_page(base, q)
                elif path == "/api/counts":
                    body = json.dumps(await counts_doc()).encode()
                    content_type = "application/json"
                else:
                    name = path.rsplit("/", 1)[1]
                    body = static[name]
                    content_type = "text/css" if name.endswith(".css") else "text/javascript"
        except _BadRequest as exc:
            status = exc.status
            said = str(exc)
            if status == 401 and basic_auth is not None:
                extra = [(b"www-authenticate", b'Basic realm="awaitly dashboard", charset="UTF-8"')]
            body = frame(
                base,
                "Refused" if status in (401, 403) else "Error",
                f"{status}: {_REASONS.get(status, 'error')}",
                "",
                [
                    f"<p class=error id=error>{h.esc(said)}</p>",
                    f'<p><a href="{h.href(base, "/runs")}">Back to the runs</a></p>',
                ],
            )
            content_type = "text/html; charset=utf-8"
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            (b"content-security-policy", _CSP.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null".
            (b"referrer-policy", b"same-origin"),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else body})

    return app


_REASONS = {
    400: "bad request",
    401: "credential needed",
    403: "refused",
    404: "not found",
    405: "method not allowed",
    409: "not possible now",
    413: "too large",
    503: "the store is unavailable",
}


def _one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split()) or type(exc).__name__
    if type(exc).__module__ not in ("builtins",) and not type(exc).__module__.startswith(
        "awaitly_anyio"
    ):
        message = f"{type(exc).__name__}: {message}"
    return redact_text(message)


def _stats(thing: object) -> dict[str, Any]:
    stats = getattr(thing, "stats", None)
    if not callable(stats):
        return {}
    try:
        found: object = stats()
        # A dict, or a value object (an attrs class such as BreakerStats).
        if attrs.has(type(found)):
            found = attrs.asdict(cast("attrs.AttrsInstance", found), recurse=False)
    except Exception:
        return {}
    return cast("dict[str, Any]", found) if isinstance(found, dict) else {}


def _seconds(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return "-"
    return f"{value:.1f}s"


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {bytes(k).lower(): bytes(v) for k, v in scope.get("headers") or ()}


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string") or b""
    parsed = parse_qs(bytes(raw).decode("latin-1"), keep_blank_values=True)
    return {key: values[-1].strip() for key, values in parsed.items()}


def _age(q: Mapping[str, str], name: str) -> float | None:
    text = q.get(name)
    if not text:
        return None
    try:
        return parse_age(text, name)
    except ValueError as exc:
        raise _BadRequest(400, str(exc)) from None


def _status_arg(text: str | None) -> RunStatus | None:
    if text is None:
        return None
    for status in RUN_STATUSES:
        if status == text:
            return status
    raise _BadRequest(400, f"status must be one of {', '.join(RUN_STATUSES)}")


def _query_int(q: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = q.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise _BadRequest(400, f"{name} must be an integer from {low} to {high}") from None
    if not low <= value <= high:
        raise _BadRequest(400, f"{name} must be an integer from {low} to {high}")
    return value


def _cross_site(headers: Mapping[bytes, bytes]) -> bool:
    """Whether a POST comes from another site (what a CSRF attack looks like)."""
    site = headers.get(b"sec-fetch-site")
    if site is not None:  # a browser says where the request comes from
        return site not in (b"same-origin", b"none")
    origin = headers.get(b"origin")
    if origin is None or origin == b"null":
        return origin == b"null"
    host = headers.get(b"host", b"")
    return origin.split(b"://", 1)[-1] != host


async def _read_form(receive: Receive, headers: Mapping[bytes, bytes]) -> dict[str, str]:
    kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if kind not in (b"application/x-www-form-urlencoded", b""):
        raise _BadRequest(400, "actions take a form (application/x-www-form-urlencoded)")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _BadRequest(400, "the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            raise _BadRequest(413, "the form is too large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    try:
        text = b"".join(chunks).decode()
    except UnicodeDecodeError:
        raise _BadRequest(400, "the form is not UTF-8") from None
    parsed = parse_qs(text, keep_blank_values=True)
    return {key: values[-1] for key, values in parsed.items()}


def _redirect(
    base: str, path: str, **query: object
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    location = h.href(base, path, **query).replace("&amp;", "&")
    return 303, [(b"location", location.encode())], b"see " + location.encode()


def _run_link(base: str, run_id: str) -> str:
    target = h.esc(f"{base}/run?id={quote(run_id, safe='')}")
    return f'<a class=run-link href="{target}">{h.esc(run_id)}</a>'


def _filter_form(base: str, filters: Mapping[str, object]) -> str:
    options = "".join(
        f'<option value="{s}"{" selected" if filters.get("status") == s else ""}>{s}</option>'
        for s in ("", *RUN_STATUSES)
    )

    def value(name: str) -> str:
        found = filters.get(name)
        return h.esc(found) if found is not None else ""

    return (
        f'<form method=get class=filters id=filters action="{h.href(base, "/runs")}">'
        f"<label>status <select name=status>{options}</select></label>"
        f'<label>workflow <input name=name value="{value("name")}" placeholder="name"></label>'
        f'<label>id prefix <input name=prefix value="{value("prefix")}"'
        ' placeholder="order-"></label>'
        f'<label>newer than <input name=newer_than size=5 value="{value("newer_than")}"'
        ' placeholder="2h"></label>'
        f'<label>older than <input name=older_than size=5 value="{value("older_than")}"'
        ' placeholder="3d"></label>'
        "<button type=submit>Filter</button>"
        f'<a class=reset href="{h.href(base, "/runs")}">reset</a></form>'
    )


def _counts_bar(base: str, filters: Mapping[str, object]) -> str:
    """The counts by status: filled in by the page's script from ``/api/counts`` (a
    separate request, so a large store never slows the page down)."""
    items = "".join(
        f'<a class="count s-{s}" href="{h.href(base, "/runs", status=s)}">'
        f'{s} <b data-count="{s}">…</b></a>'
        for s in RUN_STATUSES
    )
    return (
        f'<div class=counts id=counts data-src="{h.href(base, "/api/counts")}">{items}'
        f'<noscript><a href="{h.href(base, "/api/counts")}">counts</a></noscript></div>'
    )


def _runs_table(base: str, found: Sequence[SnapshotInfo], now: datetime) -> str:
    rows: list[str] = []
    for i in found:
        note = ""
        if i.damaged:
            note = f"damaged: {i.damaged}"
        elif i.status == "running" and (i.lease_expires_at is None or i.lease_expires_at <= now):
            note = "abandoned (no live lease)"
        elif i.status == "waiting":
            note = f"{i.wait_kind or 'waiting'} {i.waiting_for or ''}".strip()
        elif i.status == "pending":
            note = f"queue {i.queue}" if i.queue else "queued"
        if i.cancel_requested and i.status != "cancelled":
            note = (note + "; cancel requested").lstrip("; ")
        status = "damaged" if i.damaged else i.status
        rows.append(
            f"<tr><td>{_run_link(base, i.id)}</td><td>{h.esc(i.workflow_name)}</td>"
            f"<td>{h.badge(status)}</td><td>{h.when(i.updated_at)}</td>"
            f"<td>{h.when(i.created_at)}</td><td>{h.esc(note)}</td></tr>"
        )
    return (
        "<table class=runs id=runs><thead><tr><th>run</th><th>workflow</th><th>status</th>"
        "<th>updated</th><th>created</th><th>note</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _trace_id(context: object) -> str | None:
    """The trace id of a stored trace context (a W3C ``traceparent``), if any."""
    parent: object = context
    if isinstance(context, Mapping):
        parent = cast("Mapping[str, object]", context).get("traceparent")
    if isinstance(parent, str):
        parts = parent.split("-")
        if len(parts) >= 3 and re.fullmatch(r"[0-9a-f]{32}", parts[1]):
            return parts[1]
    return None


def _run_body(
    base: str,
    run_id: str,
    snapshot: WorkflowSnapshot | None,
    info: SnapshotInfo | None,
    problem: str | None,
    now: datetime,
) -> list[str]:
    status = (info.status if info is not None and not info.damaged else None) or (
        snapshot.status if snapshot is not None else "failed"
    )
    items: list[tuple[str, str]] = [
        ("run", f"<code id=run-id>{h.esc(run_id)}</code>"),
        (
            "workflow",
            h.esc(snapshot.workflow_name if snapshot else (info.workflow_name if info else "?")),
        ),
        ("status", f"<span id=run-status>{h.badge('damaged' if problem else status)}</span>"),
    ]
    if problem:
        items.append(("damaged", h.esc(problem)))
    if info is not None:
        if info.status == "waiting":
            what = f"{info.wait_kind or '?'} {info.waiting_for or ''}".strip()
            until = "no deadline" if info.wake_at is None else f"until {h.when(info.wake_at)}"
            items.append(("waiting for", h.esc(f"{what} ({until})")))
        if info.queue is not None:
            items.append(
                (
                    "queue",
                    h.esc(
                        f"{info.queue} (priority {info.priority},"
                        f" partition {info.partition or '-'})"
                    ),
                )
            )
        if info.cancel_requested:
            items.append(("cancel", "requested"))
    if snapshot is not None:
        items.append(("created", h.esc(h.when(snapshot.created_at))))
    if info is not None and info.started_at is not None:
        items.append(("started", h.esc(h.when(info.started_at))))
    if snapshot is not None:
        items.append(("updated", h.esc(h.when(snapshot.updated_at))))
        items.append(
            ("expires", h.esc(h.when(snapshot.expires_at) if snapshot.expires_at else "never"))
        )
    if info is not None and info.lease_owner is not None and info.lease_expires_at is not None:
        live = "live" if info.lease_expires_at > now else "expired"
        items.append(
            (
                "lease",
                h.esc(f"held by {info.lease_owner} until {h.when(info.lease_expires_at)} ({live})"),
            )
        )
    else:
        items.append(("lease", "none"))
    body = [h.facts(items)]
    if snapshot is None:
        return body
    meta = snapshot.metadata
    trace = _trace_id(stored_trace_context(meta))
    if trace is not None:
        body[0] = body[0].replace(
            "</dl>", f"<dt>trace id</dt><dd><code id=trace-id>{h.esc(trace)}</code></dd></dl>"
        )
    # The steps first: what a stuck run is doing is what one opens it for.
    body.append(_timeline(snapshot))
    error = meta.get(ERROR_KEY)
    if error is not None:
        body.append(f"<h2>Error</h2><pre class=error>{h.esc(h.shown_value(error))}</pre>")
        if meta.get(LAST_ATTEMPT_KEY):
            body.append(f"<p>last attempt {h.esc(meta[LAST_ATTEMPT_KEY])}</p>")
    body.append(f"<h2>Input</h2><pre id=input>{h.esc(h.shown_value(stored_input(meta)))}</pre>")
    result = snapshot.result
    if isinstance(result, Ok):
        body.append(
            f"<h2>Result</h2><pre id=result class=ok>Ok {h.esc(h.shown_value(result.value))}</pre>"
        )
    elif isinstance(result, Err):
        body.append(
            "<h2>Result</h2><pre id=result class=err>"
            f"Err {h.esc(h.shown_value(result.error))}</pre>"
        )
    user_meta = {
        k: v
        for k, v in meta.items()
        if not k.startswith(PREFIX) and k not in ("input", "trace_context")
    }
    if user_meta:
        body.append(f"<h2>Metadata</h2><pre id=metadata>{h.esc(h.shown_value(user_meta))}</pre>")
    text = run_to_text(snapshot, info=info)
    mermaid = run_to_mermaid(snapshot, info=info)
    body.append(
        "<h2>Diagram</h2>"
        f"<pre class=diagram id=diagram>{h.esc(text)}</pre>"
        "<details><summary>Mermaid source</summary>"
        f"<pre class=mermaid-source id=mermaid>{h.esc(mermaid)}</pre>"
        f'<p><a href="{h.href(base, "/run.mmd", id=run_id)}">run.mmd</a> · '
        f'<a href="{h.href(base, "/run.txt", id=run_id)}">run.txt</a></p></details>'
    )
    return body


def _timeline(snapshot: WorkflowSnapshot) -> str:
    steps = diagram_steps(snapshot)
    if not steps:
        return "<h2>Steps</h2><p class=empty>No step recorded.</p>"
    starts = [s.started_at for s in steps if s.started_at is not None]
    ends = [s.finished_at for s in steps if s.finished_at is not None]
    t0 = min(starts) if starts else None
    span = (max(ends) - t0).total_seconds() if t0 is not None and ends else 0.0
    rows: list[str] = []
    for n, step in enumerate(steps, 1):
        bar = ""
        if t0 is not None and step.started_at is not None and span > 0:
            left = (step.started_at - t0).total_seconds() / span * 100
            width = 0.0 if step.duration_ms is None else step.duration_ms / 1000 / span * 100
            bar = (
                f'<div class=track><div class="bar o-{h.esc(step.outcome)}" '
                f'style="margin-left:{min(left, 100):.2f}%;'
                f'width:{max(min(width, 100 - left), 0.4):.2f}%"></div></div>'
            )
        elif step.started_at is not None:
            bar = (
                f'<div class=track><div class="bar o-{h.esc(step.outcome)}"'
                ' style="width:100%"></div></div>'
            )
        offset = (
            "-"
            if t0 is None or step.started_at is None
            else f"+{(step.started_at - t0).total_seconds() * 1000:.0f} ms"
        )
        took = _duration(step.duration_ms) or "-"
        rows.append(
            f"<tr class=step><td>{n}</td><td class=key>{h.esc(step.name)}</td>"
            f"<td>{h.esc(h.when(step.started_at))}<br><small>{h.esc(offset)}</small></td>"
            f"<td>{h.esc(took)}</td><td>{step.attempts}</td>"
            f'<td><span class="badge o-{h.esc(step.outcome)}">{h.esc(step.outcome)}</span></td>'
            f"<td class=detail>{h.esc(step.detail)}</td><td class=timeline>{bar}</td></tr>"
        )
    return (
        "<h2>Steps</h2><table class=steps id=steps><thead><tr><th>#</th><th>step</th><th>start</th>"
        "<th>duration</th><th>attempts</th><th>outcome</th><th>value / error</th><th>timeline</th>"
        "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )
