"""Helpers for testing code that uses awaitly-anyio without waiting for real time."""

from __future__ import annotations

import anyio.lowlevel
import attrs

__all__ = ["FakeClock"]


@attrs.define
class FakeClock:
    """A clock whose ``sleep`` returns at once, advancing time by the amount asked.

    Every sleep is recorded in ``sleeps`` so tests can assert backoff
    schedules exactly.  ``sleep`` still checkpoints, so cancellation works as
    with a real clock.
    """

    now: float = 0.0
    wall: float = 1_700_000_000.0
    sleeps: list[float] = attrs.field(factory=list)

    def monotonic(self) -> float:
        """The fake monotonic time."""
        return self.now

    def time(self) -> float:
        """The fake wall-clock time; it advances with ``monotonic``."""
        return self.wall + self.now

    def advance(self, seconds: float) -> None:
        """Move time forward without sleeping."""
        if seconds < 0:
            raise ValueError(f"cannot move a clock backwards (advance({seconds!r}))")
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """Record the sleep, advance time by ``seconds`` and checkpoint."""
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))
        await anyio.lowlevel.checkpoint()
