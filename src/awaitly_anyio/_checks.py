"""Checks of what callers hand a store (run ids, step keys, leases, TTLs), shared by
the store front, the steps and the durable run, so that every store refuses the same
things with the same messages."""

from __future__ import annotations

import math
from datetime import timedelta

__all__ = ["check_id", "check_key", "check_lease", "check_seconds", "ttl_seconds"]


def check_id(id: object) -> str:
    """Validate a run id: a non-empty string of valid Unicode without NUL characters
    (every store must be able to keep it as text).  Every durable run calls it twice
    (its session and its store's claim), so the usual id (plain ASCII) is checked
    first, cheaply."""
    if type(id) is str and id.isascii() and id and "\x00" not in id:
        return id
    if not isinstance(id, str) or not id:
        raise ValueError(f"a run id must be a non-empty string, not {id!r}")
    if "\x00" in id:
        raise ValueError("a run id must not contain NUL characters")
    try:
        id.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"a run id must be valid Unicode text, not {id!r}") from None
    return id


def check_key(key: object, what: str = "step key") -> str:
    """Validate a step key with the rules of `check_id`: a non-empty string of
    valid Unicode without NUL characters (every store must be able to keep it as
    text).  Raises ``ValueError`` naming ``what`` ("a step key must ...";
    ``what="message key"`` for a message's key, and so on).  Every checkpoint calls
    it, so the usual key (plain ASCII) is checked first, cheaply."""
    if type(key) is str and key.isascii() and key and "\x00" not in key:
        return key
    if type(key) is not str or not key:
        raise ValueError(f"a {what} must be a non-empty string, not {key!r}")
    if "\x00" in key:
        raise ValueError(f"a {what} must not contain NUL characters, not {key!r}")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"a {what} must be valid Unicode text, not {key!r}") from None
    return key


def check_lease(owner: object, lease: object) -> float:
    """Validate a lease owner and duration; the duration in seconds.  The usual pair
    (a non-empty string, a float in range) is checked first, cheaply: every durable
    run checks it twice."""
    if type(lease) is float and type(owner) is str and owner and 0 < lease < 1e9:
        return lease
    if not isinstance(owner, str) or not owner:
        raise ValueError(f"a lease owner must be a non-empty string, not {owner!r}")
    if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not 0 < lease < 1e9:
        raise ValueError(f"a lease must be a positive number of seconds, not {lease!r}")
    return float(lease)


def check_seconds(value: object, what: str, *, zero: bool = False) -> float:
    """``value``, a number of seconds or a ``timedelta``, as finite seconds > 0 (>= 0
    with ``zero``).  ``TypeError`` for anything else and ``ValueError`` out of range,
    both naming ``what``."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{what} must be seconds or a timedelta, not {value!r}")
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise ValueError(f"{what} must be finite seconds {bound} (or a timedelta), not {value!r}")
    return float(seconds)


def ttl_seconds(ttl: object) -> float | None:
    """Normalize a TTL to seconds (``None`` means no expiry)."""
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        ttl = ttl.total_seconds()
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise ValueError(f"ttl must be a positive number of seconds or a timedelta, not {ttl!r}")
    if not math.isfinite(ttl):
        return None
    return float(ttl)
