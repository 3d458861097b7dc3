"""Helpers for testing code that uses awaitly-anyio: clocks that do not wait for real
time, and the store contract suite for store authors (`check_store`)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import attrs

if TYPE_CHECKING:
    from ._store import SnapshotStore

__all__ = ["DAMAGE", "FakeClock", "ManualClock", "check_store"]

DAMAGE = (
    "step",
    "metadata",
    "format",
    "newer",
    "deep",
    "created_at",
    "workflow_name",
    "wrong_type",
)
"""The kinds of damage `check_store`'s ``damage`` function may be asked to do to a
stored run, by name:

- ``"step"``: a step record's JSON cut short (``{"ok": tru``);
- ``"deep"``: a step record that is valid JSON nested 100,000 deep (or as deep as
  the database allows);
- ``"metadata"``: the metadata JSON cut short (``[1, 2``);
- ``"format"``: the snapshot format version set to 99 (no release wrote it);
- ``"newer"``: the format version set to 2 (the next release's);
- ``"created_at"``: the creation time replaced by something that is not a time;
- ``"workflow_name"``: the workflow name missing (or empty);
- ``"wrong_type"``: the run stored as something else altogether (a Redis key of
  another type).
"""


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


def check_store(
    open: Callable[[Path, FakeClock], contextlib.AbstractAsyncContextManager[SnapshotStore]],
    *,
    damage: Callable[[Any, str, str], Awaitable[None]] | None = None,
    raw: Callable[[Any, str], Awaitable[Any]] | None = None,
    damages: Iterable[str] | None = None,
    backends: Iterable[str] | None = None,
    store_type: type | None = None,
) -> type:
    """The store contract suite as a pytest test class, for one kind of store.

    Assign the result to a name starting with ``Test`` in a test module and pytest
    runs every contract test against your store, on each of ``backends``:

    ```python
    TestMyStore = check_store(open_my_store)
    ```

    - ``open(folder, clock)`` is an async context manager yielding an open store.
      Each test gets an empty ``folder`` (pytest's ``tmp_path``) and a
      `FakeClock`, which the store must use for its wall time (TTLs,
      ``updated_at``, leases).  Opening twice with the same folder within one test
      must give two stores over the same data (as two processes would see it);
      a new folder must give an empty store.
    - ``damage(store, run_id, part)`` corrupts stored run ``run_id`` behind the
      store's back (see `DAMAGE` for the parts) and ``raw(store, run_id)``
      returns everything stored for the run as the database holds it (so the
      suite can check that reading or claiming a damaged run changes nothing).
      Give both or neither; ``damages`` names the parts ``damage`` can do (all but
      ``"wrong_type"`` by default).  Without them, the damaged-row tests are
      skipped.
    - ``backends``: the anyio backends to run on; every event loop this library
      supports (asyncio and trio) by default.
    - ``store_type``: the store's class, if you know it.  Then the tests of a
      protocol or method the class does not have are left out when pytest collects
      (instead of reported as skipped), and so are the damaged-row tests when
      there is no ``damage``.

    Every store must pass the `SnapshotStore` tests (save, load, delete, list,
    close, ``async with``; TTLs; hostile ids; invalid arguments refused with a
    ``ValueError`` naming them, such as "run id", "ttl", "limit", "step key";
    a closed store raising ``RuntimeError`` mentioning "closed").  The tests
    of `CheckpointStore`, `LeaseStore` and ``info`` run when the store is
    one (or has it) and are skipped otherwise.

    Needs pytest and anyio's pytest plugin (installed with anyio).  Raises
    ``TypeError`` for ``damage`` without ``raw`` or the reverse, ``ValueError``
    for an unknown damage part or backend.
    """
    from . import _loops
    from ._contract import StoreKit, make_contract

    if (damage is None) != (raw is None):
        raise TypeError("check_store needs both damage= and raw=, or neither")
    parts = frozenset(DAMAGE[:-1] if damages is None else damages)
    unknown = parts - set(DAMAGE)
    if unknown:
        raise ValueError(f"unknown kinds of damage {sorted(unknown)}; known: {', '.join(DAMAGE)}")
    chosen = list(_loops.NAMES if backends is None else backends)
    if not chosen or not set(chosen) <= set(_loops.NAMES):
        raise ValueError(f"backends must be some of {', '.join(_loops.NAMES)}, not {chosen!r}")
    if damage is None or raw is None:
        return make_contract(StoreKit(open, FakeClock), chosen, store_type)
    return make_contract(StoreKit(open, FakeClock, damage, raw, parts), chosen, store_type)
