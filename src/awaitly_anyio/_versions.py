"""A durable run's step bookkeeping: automatic keys, drift, versions and patches."""

from __future__ import annotations

__all__ = ["Tracker"]


class Tracker:
    """What a durable run's steps share beyond their records (see `RunState.track`)."""

    __slots__ = ()
