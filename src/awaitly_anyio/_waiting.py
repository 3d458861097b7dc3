"""Durable waiting: runs that wait for messages, approvals, hooks and timers, and the
functions that deliver to them from anywhere.

A durable run's step waits with ``ctx.step.wait_for`` (and ``wait_for_approval``,
``wait_for_hook``, a keyed ``sleep``); `send`, `approve`, `reject` and `resolve_hook`
deliver, from any process, whether or not a worker is running.  Delivery is stored
before it returns; each value is consumed once, into the step that waited, in one
write.  See docs/waiting.md.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any, Protocol

import anyio

from ._clock import Clock, sleep_until_woken
from ._errors import (
    AlreadyDeliveredError,
    HookTokenError,
    LeaseLostError,
    RunFinishedError,
    SnapshotDecodeError,
    StoreError,
    WaitTimeoutError,
    describe,
)
from ._result import Err, Ok, Result
from ._snapshot import SnapshotInfo
from ._store import MailboxStore, SendWatch
from ._waits import Approval, RunParked, hook_key, parked_in, parse_hook_token

__all__ = [
    "HOSTING",
    "HostSlot",
    "RunParked",
    "approve",
    "parked_in",
    "pending_approvals",
    "reject",
    "resolve_hook",
    "send",
    "wait_in_store",
]


class HostSlot(Protocol):
    """What a waiting run tells the host that runs it (`HOSTING`): a waiting run holds
    no capacity, and after ``park_after`` seconds of waiting (``None``: never) it is
    parked."""

    @property
    def park_after(self) -> float | None: ...

    def waiting(self) -> None:
        """The run began waiting: it stops counting against the host's capacity."""

    def resumed(self) -> None:
        """The run stopped waiting (a value, the deadline, an error, cancellation)."""


HOSTING: ContextVar[HostSlot | None] = ContextVar("awaitly_hosting", default=None)
"""The host slot of the run executing in this context, set by `WorkflowHost`."""


def _mailbox(store: object) -> MailboxStore:
    if not isinstance(store, MailboxStore):
        raise TypeError(
            f"{type(store).__name__} keeps no messages; use a store from open_store() "
            f"(memory, SQLite, PostgreSQL, Redis)"
        )
    return store


async def send(store: MailboxStore, run_id: str, key: str, value: Any) -> None:
    """Deliver ``value`` to run ``run_id`` under ``key``; stored (durably) before this
    returns, so it is never lost: when no worker is running, or before the run waits
    for it, it is kept and received when the run does (``ctx.step.wait_for(key=...)``).
    Each value sent is received once, oldest first per key.

    Raises, with nothing stored: ``ValueError`` for an invalid id or key or a value
    over 1 MiB of JSON; `SerializationError` for a value that cannot be stored;
    ``LookupError`` for a run the store does not have; `RunFinishedError` for a run
    that already completed or failed.  A cancellation point: a cancelled send stored
    the value or did not."""
    await _mailbox(store).send(run_id, key, value)


def _check_who(by: object, reason: object) -> None:
    if not isinstance(by, str) or not by.strip():
        raise ValueError(f"by must name who decided (a non-empty string), not {by!r}")
    if reason is not None and not isinstance(reason, str):
        raise TypeError(f"reason must be a string or None, not {reason!r}")


async def approve(
    store: MailboxStore, run_id: str, key: str, *, by: str, reason: str | None = None
) -> None:
    """Approve the approval step ``key`` of run ``run_id`` (``ctx.step.wait_for_approval``)
    as ``by``, for ``reason``: `send` of an `Approval`, with its errors."""
    _check_who(by, reason)
    await send(store, run_id, key, Approval(True, by, reason, datetime.now(timezone.utc)))


async def reject(
    store: MailboxStore, run_id: str, key: str, *, by: str, reason: str | None = None
) -> None:
    """Reject the approval step ``key`` of run ``run_id``: the step ends the workflow with
    ``Err(ApprovalRejectedError)``.  `send` of an `Approval`, with its errors."""
    _check_who(by, reason)
    await send(store, run_id, key, Approval(False, by, reason, datetime.now(timezone.utc)))


async def resolve_hook(store: MailboxStore, token: str, value: Any) -> None:
    """Resolve the hook ``token`` names (``ctx.step.create_hook``) with ``value``, which
    its run receives in ``ctx.step.wait_for_hook``; the handler needs no run id.

    A token resolves once.  `HookTokenError` (never quoting the token) for a token
    that is malformed, unknown (no such run, or it made no such hook), already
    resolved, or whose run has ended; nothing is stored then.  Otherwise the errors
    of `send`."""
    mailbox = _mailbox(store)
    run_id, key = parse_hook_token(token)
    try:
        snapshot = await mailbox.load(run_id)
    except ValueError:  # not a valid run id at all
        raise HookTokenError("unknown token") from None
    record = None if snapshot is None else snapshot.steps.get(key)
    made = record.result.value if record is not None and isinstance(record.result, Ok) else None
    if not isinstance(made, str) or not hmac.compare_digest(made, token):
        raise HookTokenError("unknown token")
    wait_key = hook_key(key)
    try:
        await mailbox.send(run_id, wait_key, value, once=wait_key)
    except AlreadyDeliveredError:
        raise HookTokenError("this token was already resolved") from None
    except RunFinishedError as exc:
        raise HookTokenError(f"its run has already {exc.status}") from None
    except LookupError:
        raise HookTokenError("unknown token (its run is gone)") from None


async def pending_approvals(store: MailboxStore, *, limit: int = 100) -> list[SnapshotInfo]:
    """Runs waiting for an approval, across runs, newest first (at most ``limit``): each
    entry's ``waiting_for`` is the key to `approve` or `reject`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an integer >= 1, not {limit!r}")
    mailbox = _mailbox(store)
    found: list[SnapshotInfo] = []
    cursor: str | None = None
    while len(found) < limit:
        page = await mailbox.list(status="waiting", limit=100, cursor=cursor)
        found.extend(info for info in page if info.wait_kind == "approval")
        cursor = page.next_cursor
        if cursor is None:
            break
    return found[:limit]


async def wait_in_store(
    store: object,
    run_id: str,
    owner: str | None,
    clock: Clock,
    name: str,
    step: str,
    key: str | None,
    kind: str,
    seconds: float | None,
    waiting: Callable[[float | None], object] | None = None,
) -> Result[Any, Any]:
    """The wait of one step of a durable run (see `DurableWaits.wait`): record it, then
    receive, or sleep until a send, the poll interval or the deadline, and again.

    ``waiting(deadline)`` is called once the run is recorded waiting (for the event).
    Store failures give ``Err(StoreError)``; a lost lease ``Err(LeaseLostError)``.
    Cancellation propagates; the run stays recorded as waiting."""
    mailbox = _mailbox(store)
    try:
        now = clock.time()
        ready, deadline = await mailbox.begin_wait(
            run_id,
            step=step,
            key=key,
            kind=kind,
            wake_at=None if seconds is None else now + seconds,
            owner=owner,
        )
        if not ready and waiting is not None:
            waiting(deadline)
        slot = None if ready else HOSTING.get()
        if slot is None:
            return await _receive_until(mailbox, run_id, owner, clock, name, step, key, deadline)
        slot.waiting()
        try:
            return await _receive_until(
                mailbox, run_id, owner, clock, name, step, key, deadline, slot.park_after
            )
        finally:
            slot.resumed()
    except (LeaseLostError, SnapshotDecodeError) as exc:
        return Err(exc)
    except Exception as exc:
        return Err(StoreError("wait", run_id, describe(exc)))


async def _receive_until(
    mailbox: MailboxStore,
    run_id: str,
    owner: str | None,
    clock: Clock,
    name: str,
    step: str,
    key: str | None,
    deadline: float | None,
    park_after: float | None = None,
) -> Result[Any, Any]:
    """Receive, or wait to be woken, until a value, the deadline, or (with ``park_after``)
    parking, which raises `RunParked`.

    Only a value sent by the deadline (``sent_by``) is received, on every look: a
    value sent after it, found when the run resumes late (no worker ran at the
    deadline), stays in the mailbox and the run takes the timeout path, whatever
    order the look and the deadline check come in."""
    park_at = None if park_after is None else clock.monotonic() + park_after
    # Watching before each look: a send that lands between the look and the wait
    # still wakes the wait (`MailboxStore.sends`).
    with mailbox.sends(run_id) as sends:
        while True:
            if key is not None:
                got = await mailbox.receive(
                    run_id, key, step=step, name=name, owner=owner, sent_by=deadline
                )
                if got is not None:
                    return got
            now = clock.time()
            if deadline is not None and now >= deadline:
                if key is None:
                    return Ok(None)
                return Err(WaitTimeoutError(name, key, deadline))
            remaining = None if deadline is None else deadline - now
            if park_at is not None:
                parking = park_at - clock.monotonic()
                if parking <= 0:
                    raise RunParked(run_id, key)
                remaining = parking if remaining is None else min(remaining, parking)
            await _until_woken(sends, mailbox.poll_interval, clock, remaining, key)


async def _until_woken(
    sends: SendWatch, poll: float, clock: Clock, remaining: float | None, key: str | None
) -> None:
    """Return at the deadline (``remaining`` on the workflow's clock), or, when waiting
    for a message, at a send to the run or after the store's poll interval (real
    time: a missed push is caught then)."""
    # The usual cases need no task group (a task and a scope teardown per wake-up, on
    # the delivery path): a message without a deadline, or a timer alone.
    if remaining is None:
        if key is not None:
            with anyio.move_on_after(poll):
                await sends.wait()
        return
    if key is None:
        await clock.sleep(remaining)
        return

    async def woken() -> None:
        with anyio.move_on_after(poll):
            await sends.wait()

    await sleep_until_woken(clock, remaining, woken)
