"""Helpers for testing code that uses awaitly-anyio without waiting for real time."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import attrs

__all__ = ["FakeClock", "ManualClock"]


@attrs.define
class FakeClock:
    """A clock whose ``sleep`` returns at once, advancing time by the amount asked.

    Every sleep is recorded in ``sleeps`` so tests can assert backoff
    schedules exactly.  ``sleep`` still checkpoints, so cancellation works as
    with a real clock.
    """

    now: float = 0.0
    wall: float = 1_700_000_000.0
    sleeps: list[float] = attrs.field(factory=list[float])

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


@attrs.define
class ManualClock:
    """A clock that stands still until the test moves it: ``sleep`` waits until
    `advance` has brought time to its deadline.

    Use it where several tasks wait at once and the test decides what happens in
    between (a FakeClock's sleeps return at once instead).
    """

    now: float = 0.0
    wall: float = 1_700_000_000.0
    _sleepers: list[tuple[float, anyio.Event]] = attrs.field(
        factory=list[tuple[float, anyio.Event]], init=False
    )

    def monotonic(self) -> float:
        """The current time."""
        return self.now

    def time(self) -> float:
        """The wall-clock time; it advances with ``monotonic``."""
        return self.wall + self.now

    @property
    def sleeping(self) -> int:
        """How many tasks are asleep on this clock."""
        return len(self._sleepers)

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has come."""
        if seconds < 0:
            raise ValueError(f"cannot move a clock backwards (advance({seconds!r}))")
        self.now += seconds
        due = [entry for entry in self._sleepers if entry[0] <= self.now]
        self._sleepers = [entry for entry in self._sleepers if entry[0] > self.now]
        for _, event in due:
            event.set()

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been advanced by ``seconds``; a cancellation point."""
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        entry = (self.now + seconds, anyio.Event())
        self._sleepers.append(entry)
        try:
            await entry[1].wait()
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)
