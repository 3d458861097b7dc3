"""What a step that waits asks of a durable run (the core's side of durable waiting).

A durable run's checkpoint hook (``_durable``) also implements `DurableWaits`; the
step API (``ctx.step.wait_for`` and friends) finds it on the run's state and knows
nothing of stores.  A run without a store has no such hook, and waiting steps
refuse to run in it.  `RunParked` lives here, below the durable layer that raises
it, so that the core (steps, the workflow's events) can tell a parked run from a
cancelled one.
"""

from __future__ import annotations

import base64
import secrets
import sys
from datetime import datetime
from typing import Any, Protocol, cast, runtime_checkable

import attrs

from ._errors import HookTokenError
from ._result import Result
from ._run import carries

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "Approval",
    "DurableWaits",
    "Hook",
    "RunParked",
    "hook_key",
    "new_hook_token",
    "parked_in",
    "parking",
    "parse_hook_token",
]


class RunParked(BaseException):
    """Raised out of a waiting step when its host parks the run: it unwinds the body
    (like a cancellation, so ``except Exception`` cannot stop it) up to the durable
    session, which releases the run's lease and leaves it ``waiting`` in the store,
    and on to the host, which forgets the run.  ``waiting_for`` is the key the run
    waits for (``None``: a timer).  Nothing was cancelled: the run emits
    ``workflow_parked``, not ``step_cancelled`` / ``workflow_cancelled``."""

    def __init__(self, run_id: str, waiting_for: str | None = None) -> None:
        super().__init__(run_id)
        self.run_id = run_id
        self.waiting_for = waiting_for


def _is_parked(exc: BaseException) -> bool:
    return isinstance(exc, RunParked)


def parking(exc: BaseException | None) -> RunParked | None:
    """The `RunParked` that ``exc`` is, or that a group (a task group's) holds, else
    ``None``."""
    while exc is not None and not isinstance(exc, RunParked):
        if not isinstance(exc, BaseExceptionGroup):
            return None
        # isinstance leaves the group's type argument unknown; any group holds BaseExceptions.
        group = cast("BaseExceptionGroup[BaseException]", exc)
        exc = next((inner for inner in group.exceptions if carries(inner, _is_parked)), None)
    return exc


def parked_in(exc: BaseException | None) -> bool:
    """Whether ``exc`` is `RunParked`, or a group (a task group's) that holds one."""
    return exc is not None and carries(exc, _is_parked)


@runtime_checkable
class DurableWaits(Protocol):
    """Durable waits of one run."""

    @property
    def workflow_id(self) -> str:
        """The run's id (hook tokens name it)."""
        ...

    async def wait(
        self, name: str, step: str, key: str | None, kind: str, seconds: float | None
    ) -> Result[Any, Any]:
        """Wait, as step ``step`` (named ``name``), for the value sent under ``key``
        (``None``: a timer) for at most ``seconds`` from the first time this step began
        waiting, and give ``Ok(value)``, ``Ok(None)`` for a timer that rang, or
        ``Err(WaitTimeoutError)``.  The deadline is stored; the outcome is the step's
        record.  A cancellation point; cancellation propagates."""
        ...


@attrs.frozen
class Approval:
    """A decision on an approval step (`awaitly_anyio.approve` / `reject`): whether it
    was ``approved``, ``by`` whom, for what ``reason``, and ``at`` what time (UTC)."""

    approved: bool
    by: str
    reason: str | None = None
    at: datetime | None = None


@attrs.frozen
class Hook:
    """What ``ctx.step.create_hook`` hands out: ``token``, to give a third party (its
    webhook resolves it with `awaitly_anyio.resolve_hook`), and ``key``, the message
    key the run waits on (``ctx.step.wait_for_hook``)."""

    token: str = attrs.field(repr=lambda token: token[:8] + "...")
    key: str


# Resolved now, while the annotations' names are this module's: the package re-exports
# the classes under its own name, where `datetime` means nothing to cattrs.
attrs.resolve_types(Approval)
attrs.resolve_types(Hook)

_HOOK_PREFIX = "hook:"
_TOKEN_PARTS = 3
_SECRET_BYTES = 32


def hook_key(key: str) -> str:
    """The message key a hook made under step key ``key`` is resolved to."""
    return _HOOK_PREFIX + key


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def _unb64(part: str) -> str:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode("utf-8")


def new_hook_token(run_id: str, key: str) -> str:
    """A new token for the hook made under step key ``key`` of run ``run_id``: the run
    and key (so a handler needs nothing else) and 256 random bits (so nobody can
    guess one), URL-safe."""
    return f"{_b64(run_id)}.{_b64(key)}.{secrets.token_urlsafe(_SECRET_BYTES)}"


def parse_hook_token(token: object) -> tuple[str, str]:
    """The run id and step key a token names; `HookTokenError` for a token that is not
    one (never quoting it: it may be a secret)."""
    if not isinstance(token, str):
        raise HookTokenError(f"a token is a string, not {type(token).__name__}")
    if len(token) > 64 * 1024:
        raise HookTokenError(f"malformed token ({len(token)} characters)")
    parts = token.split(".")
    if len(parts) != _TOKEN_PARTS or not all(parts):
        raise HookTokenError("malformed token (expected three dot-separated parts)")
    try:
        run_id, key = _unb64(parts[0]), _unb64(parts[1])
    except (ValueError, UnicodeDecodeError):
        raise HookTokenError("malformed token (not URL-safe base64)") from None
    if not run_id or not key:
        raise HookTokenError("malformed token (an empty part)")
    return run_id, key
