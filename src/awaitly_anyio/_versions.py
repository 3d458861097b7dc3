"""A durable run's step bookkeeping: automatic keys, drift, versions and patches.

Every step of a durable run is checkpointed unless it opts out (``checkpoint=False``):
a step given no key gets an *automatic key* from where it runs: its name, how many
steps of that name ran before it at the same place, and the step it runs inside:

    awaitly.step:charge#1                 the first unkeyed step "charge" of the body
    awaitly.step:charge#2                 the second
    awaitly.step:fan_out#1/fetch#1        a step "fetch" inside the step fan_out#1
    awaitly.step:=order:42/fetch#1        inside a step whose key is "order:42"

The prefix ``awaitly.`` is the library's (a step refuses a user key that starts with
it), so an automatic key never collides with a key given explicitly.  A name's ``/``
and ``%`` (and a leading ``=``) are escaped, so that the path reads back unambiguously.

The order of a run's records is the order the store keeps them in (the order they
were first written, `WorkflowSnapshot.steps`).  On resume, the `Tracker` compares the
order in which the code reaches recorded steps with that order, level by level (the
steps inside one step form one level), and reports *drift*: a recorded step the code
no longer reaches where it was (renamed, removed, moved).  Steps that run in
concurrent children of a group (``all``, ``race``, a ``for_each`` with concurrency)
have no order among themselves: their level is checked for membership only.

A workflow's *version* is recorded with the run (a record under `VERSION_KEY`); a run
stored by another version is migrated (`Migration`), restarted, or refused.
`WorkflowContext.patched` records a marker under `PATCH_PREFIX`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Literal, TypeAlias, cast

import attrs

from ._errors import WorkflowDriftError, WorkflowVersionError
from ._loops import current_task
from ._result import Err, Ok

__all__ = [
    "AUTO_PREFIX",
    "PATCH_PREFIX",
    "RESERVED_PREFIX",
    "VERSION_KEY",
    "Migration",
    "OnDrift",
    "OnVersionMismatch",
    "Scope",
    "Tracker",
    "Versions",
    "check_on_drift",
    "check_user_key",
    "check_version",
    "check_versions",
    "enter_scope",
    "step_label",
]

RESERVED_PREFIX = "awaitly."
"""The prefix of every record key the library writes itself; a user's key may not
start with it."""

AUTO_PREFIX = RESERVED_PREFIX + "step:"
"""The prefix of an automatic key."""

PATCH_PREFIX = RESERVED_PREFIX + "patch:"
"""The prefix of the marker `WorkflowContext.patched` records."""

VERSION_KEY = RESERVED_PREFIX + "version"
"""The record of the workflow version a run was stored by."""

OnDrift: TypeAlias = Literal["error", "accept"]
"""What a resumed run does when its code no longer reaches its recorded steps in the
same place: ``"error"`` ends it with ``Err(WorkflowDriftError)``, ``"accept"`` goes on
(a recorded step that is reached is replayed wherever it is; one that is not is left)."""

OnVersionMismatch: TypeAlias = Literal["error", "restart"]
"""What a run stored by another version does when no migration leads to the current
one: ``"error"`` ends it with ``Err(WorkflowVersionError)``, ``"restart"`` runs it
again from the start (its records are discarded)."""


def check_user_key(key: str) -> None:
    """``ValueError`` for a key given to a step that starts with `RESERVED_PREFIX`."""
    if key.startswith(RESERVED_PREFIX):
        raise ValueError(
            f"step key {key!r} is reserved: keys starting with {RESERVED_PREFIX!r} are "
            "the library's own (automatic keys, patches, versions); use another key"
        )


def check_version(version: object) -> str | None:
    """A workflow version as text (a string or an int; ``None``: not versioned);
    ``TypeError`` for anything else, ``ValueError`` for an empty string."""
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, (str, int)):
        raise TypeError(f"version must be a string or an int, not {version!r}")
    text = str(version)
    if not text:
        raise ValueError("version must not be empty")
    return text


def check_on_drift(on_drift: object) -> OnDrift:
    if on_drift not in ("error", "accept"):
        raise ValueError(f"on_drift must be 'error' or 'accept', not {on_drift!r}")
    return on_drift


# ---- names and paths ------------------------------------------------------------------


def _escape(name: str) -> str:
    if "/" in name or "%" in name or name.startswith("="):
        name = name.replace("%", "%25").replace("/", "%2F")
        if name.startswith("="):
            name = "%3D" + name[1:]
    return name


def _unescape(text: str) -> str:
    if "%" not in text:
        return text
    return text.replace("%2F", "/").replace("%3D", "=").replace("%25", "%")


def _level_of(key: str) -> str:
    """The level (the path of the step it ran inside; ``""`` for the body) of the
    automatic key ``key``."""
    path = key[len(AUTO_PREFIX) :]
    cut = path.rfind("/")
    return "" if cut < 0 else path[:cut]


def _name_of(key: str) -> str:
    """The step name an automatic key was made from."""
    path = key[len(AUTO_PREFIX) :]
    segment = path[path.rfind("/") + 1 :]
    cut = segment.rfind("#")
    return _unescape(segment if cut < 0 else segment[:cut])


def _segments(key: str) -> list[str]:
    """The step names along an automatic key's path (an explicit parent as ``=key``)."""
    names: list[str] = []
    for segment in key[len(AUTO_PREFIX) :].split("/"):
        if segment.startswith("="):
            names.append(segment)
            continue
        cut = segment.rfind("#")
        names.append(_unescape(segment if cut < 0 else segment[:cut]))
    return names


def step_label(key: str) -> str:
    """What a record key names for a person: an automatic key's step name, or the key."""
    return _name_of(key) if key.startswith(AUTO_PREFIX) else key


def _child_level(key: str) -> str:
    """The level of the steps that run inside the step recorded under ``key``."""
    if key.startswith(AUTO_PREFIX):
        return key[len(AUTO_PREFIX) :]
    return "=" + _escape(key)


# ---- where a step runs --------------------------------------------------------------


@attrs.define(slots=True, eq=False)
class Scope:
    """Where the steps being called now run: ``level`` (inside which step), the task
    that step's work began in, and ``branch``: one token per concurrent child of a
    group between the body and here (two steps in different branches of one level
    have no order between them)."""

    level: str
    task: object
    branch: tuple[object, ...] = ()
    concurrent: bool = False
    settling: int = 0


_SCOPE: ContextVar[Scope | None] = ContextVar("awaitly_anyio_step_scope", default=None)

# (the loops layer's: it names no loop here, and is cheaper than anyio's TaskInfo)
_current_task = current_task


def enter_scope(key: str) -> object:
    """Make the step recorded under ``key`` the scope of the steps its work calls;
    returns the token to `leave_scope` with."""
    outer = _SCOPE.get()
    return _SCOPE.set(
        Scope(_child_level(key), _current_task(), () if outer is None else outer.branch)
    )


def leave_scope(token: object) -> None:
    _SCOPE.reset(token)  # type: ignore[arg-type]


def enter_child() -> object | None:
    """Called by a child of a group as it starts: in a task of its own, it becomes a
    branch of its own (its steps and its siblings' have no order among themselves).
    Returns the token to `leave_child` with (``None``: nothing to undo)."""
    scope = _SCOPE.get()
    if scope is None or _current_task() is scope.task:
        return None
    scope.concurrent = True
    return _SCOPE.set(
        Scope(scope.level, _current_task(), (*scope.branch, object()), concurrent=True)
    )


def leave_child(token: object | None) -> None:
    if token is not None:
        _SCOPE.reset(token)  # type: ignore[arg-type]


# ---- the tracker ---------------------------------------------------------------------


class Tracker:
    """One durable run's automatic keys, drift checks and patch markers.

    Made with the run's completed records (in their stored order); ``check`` is
    ``False`` when the workflow accepts drift.  The steps call `auto_key` (an unkeyed
    step), `replayed` (a step answered from its record) and `fresh` (a step about to
    execute); the run calls `finished` when the body returns a value.
    """

    __slots__ = (
        "_counts",
        "_cursors",
        "_levels",
        "_owners",
        "_positions",
        "check",
        "consumed",
        "drifted",
        "explicit_left",
        "running",
        "unsaved",
        "visited",
        "workflow_id",
    )

    def __init__(self, workflow_id: str, completed: Iterable[str], *, check: bool = True) -> None:
        self.workflow_id = workflow_id
        self._counts: dict[tuple[str, str], int] = {}
        self._owners: dict[tuple[str, str], tuple[object, ...]] = {}
        self.running: dict[tuple[str, str], int] = {}
        self._positions: dict[str, int] = {}
        self._levels: dict[str, list[str]] = {}
        self._cursors: dict[str, int] = {}
        self.consumed: set[str] = set()
        self.visited: set[str] = set()
        self.explicit_left = 0
        self.drifted = False
        self.unsaved: list[tuple[str, bool]] = []
        position = 0
        for key in completed:
            if key.startswith(RESERVED_PREFIX) and not key.startswith(AUTO_PREFIX):
                continue  # the library's own records: not steps
            position += 1
            self._positions[key] = position
            if key.startswith(AUTO_PREFIX):
                self._levels.setdefault(_level_of(key), []).append(key)
            else:
                self.explicit_left += 1
        # Nothing recorded: nothing to drift from (a run's first execution).
        self.check = check and position > 0

    # -- keys --

    def auto_key(self, name: str) -> str:
        """The automatic key of the next unkeyed step ``name`` where the caller runs.
        ``ValueError`` when steps of that name run concurrently at the same level:
        their keys would depend on scheduling."""
        scope = _SCOPE.get()
        if scope is None:
            level = ""
            branch: tuple[object, ...] = ()
        else:
            level = scope.level
            branch = scope.branch
        ident = (level, name)
        count = self._counts.get(ident, 0) + 1
        self._counts[ident] = count
        owner = self._owners.setdefault(ident, branch)
        if owner != branch or self.running.get(ident):
            raise ValueError(
                f"step {name!r}: steps named {name!r} without a key run concurrently, so "
                "their automatic keys (and the record each is answered from on resume) "
                "would depend on scheduling; give each its own key= (for example "
                f"key=f'{name}:{{item}}'), or give them different names"
            )
        path = _escape(name) + "#" + str(count)
        return AUTO_PREFIX + (f"{level}/{path}" if level else path)

    def start(self, name: str, key: str) -> tuple[str, str] | None:
        """Step ``name`` starts executing under ``key``: an automatic key counts as
        running at the caller's level until the step ends (the caller then takes one
        off ``running[ident]``); returns that ident (``None`` for an explicit key)."""
        if not key.startswith(AUTO_PREFIX):
            return None
        scope = _SCOPE.get()
        ident = ("" if scope is None else scope.level, name)
        self.running[ident] = self.running.get(ident, 0) + 1
        return ident

    # -- drift --

    def _sequential(self) -> tuple[str, bool]:
        scope = _SCOPE.get()
        if scope is None:
            return "", True
        return scope.level, not scope.concurrent

    def _missing_here(self) -> str | None:
        """At the caller's level, if its steps run one after the other (not inside a
        concurrent group): the first recorded step not reached yet.  Marks the level
        visited."""
        level, sequential = self._sequential()
        if not sequential:
            return None
        self.visited.add(level)
        return self._first_unconsumed(level)

    def _first_unconsumed(self, level: str) -> str | None:
        keys = self._levels.get(level)
        if keys is None:
            return None
        cursor = self._cursors.get(level, 0)
        consumed = self.consumed
        while cursor < len(keys) and keys[cursor] in consumed:
            cursor += 1
        self._cursors[level] = cursor
        return keys[cursor] if cursor < len(keys) else None

    def _drift(self, missing: str, instead: str) -> Err[WorkflowDriftError]:
        self.drifted = True
        return Err(
            WorkflowDriftError(
                self.workflow_id,
                step_label(missing),
                missing,
                self._positions[missing],
                instead,
            )
        )

    def replayed(self, name: str, key: str) -> Err[WorkflowDriftError] | None:
        """Step ``name`` is answered from its record ``key``: the ``Err`` that ends the
        run if a step recorded before it at this level was not reached first."""
        consumed = self.consumed
        if key in consumed:
            return None
        consumed.add(key)
        if not key.startswith(AUTO_PREFIX) and key in self._positions:
            self.explicit_left -= 1
        if not self.check:
            return None
        missing = self._missing_here()
        if missing is not None:
            position = self._positions.get(key, 0)
            if self._positions[missing] < position:
                return self._drift(
                    missing, f"reached step {name!r} (recorded #{position}) before it"
                )
        return None

    def fresh(self, name: str) -> Err[WorkflowDriftError] | None:
        """Step ``name`` has no record and is about to execute: the ``Err`` that ends the
        run if a recorded step at this level was not reached first."""
        if not self.check:
            return None
        missing = self._missing_here()
        if missing is None:
            return None
        return self._drift(missing, f"ran step {name!r}, which has no record, instead")

    def finished(self) -> Err[WorkflowDriftError] | None:
        """The body returned: the ``Err`` it ends with instead if a recorded step of a
        level it went through was never reached."""
        if not self.check:
            return None
        self.visited.add("")
        for level in sorted(self.visited):
            missing = self._first_unconsumed(level)
            if missing is not None:
                return self._drift(missing, "returned without reaching it")
        return None

    # -- patches --

    def passed(self) -> bool:
        """Whether the run had gone past the caller's point before (recorded steps the
        code has not reached yet remain): a patch there is not applied to it."""
        if self.explicit_left > 0:
            return True
        level, _ = self._sequential()
        return self._first_unconsumed(level) is not None


# ---- versions and migrations ----------------------------------------------------------


Operation: TypeAlias = tuple[str, str, Any]


def _required_version(what: str, version: object) -> str:
    text = check_version(version)
    if text is None:
        raise TypeError(f"Migration {what} must be a string or an int, not None")
    return text


def _source_version(version: object) -> str:
    return _required_version("source", version)


def _target_version(version: object) -> str:
    return _required_version("target", version)


def _check_step_name(what: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"Migration.{what}: a step name must be a non-empty string, not {name!r}")
    return name


@attrs.frozen
class Migration:
    """How the records of a run stored by version ``source`` become those of version
    ``target``: ``Migration("1", "2").rename("charge", "charge_card").remove("audit")
    .transform("quote", lambda quote: {**quote, "currency": "EUR"})``.

    Each operation names a step by its name (every unkeyed step of that name, at any
    place: an automatic key's path) or by its explicit key.  `rename` moves a step's
    records (and those of the steps inside it) to another name; `remove` drops them,
    so the step runs again; `transform` replaces a recorded value with ``fn(value)``.
    Operations apply in order; each call returns a new `Migration`.  Migrations chain:
    a run stored by version 1 of a workflow at version 3 goes through ``1 -> 2`` and
    ``2 -> 3``.  ``TypeError`` / ``ValueError`` for a bad version, name or function.
    """

    source: str = attrs.field(converter=_source_version)
    target: str = attrs.field(converter=_target_version)
    operations: tuple[Operation, ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.source == self.target:
            raise ValueError(
                f"a Migration goes from one version to another, not {self.source!r} to itself"
            )

    def rename(self, old: str, new: str) -> Migration:
        """Records of step (or key) ``old`` become those of ``new``."""
        _check_step_name("rename", old)
        _check_step_name("rename", new)
        if new.startswith(RESERVED_PREFIX) or old.startswith(RESERVED_PREFIX):
            raise ValueError(f"Migration.rename: {RESERVED_PREFIX!r} names are the library's own")
        return attrs.evolve(self, operations=(*self.operations, ("rename", old, new)))

    def remove(self, name: str) -> Migration:
        """Drop the records of step (or key) ``name``: the step runs again."""
        _check_step_name("remove", name)
        return attrs.evolve(self, operations=(*self.operations, ("remove", name, None)))

    def transform(self, name: str, fn: Callable[[Any], Any]) -> Migration:
        """Replace the recorded value of step (or key) ``name`` with ``fn(value)``."""
        _check_step_name("transform", name)
        if not callable(fn):
            raise TypeError(f"Migration.transform({name!r}): fn must be callable, not {fn!r}")
        return attrs.evolve(self, operations=(*self.operations, ("transform", name, fn)))

    def apply(self, records: Mapping[str, Any]) -> dict[str, Any]:
        """The records (key -> value, in order) as this migration leaves them."""
        current = dict(records)
        for op, name, arg in self.operations:
            updated: dict[str, Any] = {}
            for key, value in current.items():
                if op == "rename":
                    key = _renamed(key, name, arg)
                elif _names(key, name, whole=op == "remove"):
                    if op == "remove":
                        continue
                    value = arg(value)
                updated[key] = value
            current = updated
        return current


def _names(key: str, name: str, *, whole: bool) -> bool:
    """Whether record ``key`` is (``whole``: or is inside) step or key ``name``."""
    if key == name:
        return True
    if not key.startswith(AUTO_PREFIX):
        return False
    segments = _segments(key)
    if whole:
        return name in segments or ("=" + _escape(name)) in segments
    return segments[-1] == name


def _renamed(key: str, old: str, new: str) -> str:
    if key == old:
        return new
    if not key.startswith(AUTO_PREFIX):
        return key
    parts = key[len(AUTO_PREFIX) :].split("/")
    changed = False
    for index, segment in enumerate(parts):
        if segment == "=" + _escape(old):
            parts[index] = "=" + _escape(new)
            changed = True
            continue
        cut = segment.rfind("#")
        if cut >= 0 and _unescape(segment[:cut]) == old:
            parts[index] = _escape(new) + segment[cut:]
            changed = True
    return AUTO_PREFIX + "/".join(parts) if changed else key


@attrs.frozen
class Versions:
    """A workflow's version, its migrations by source version, and what to do when no
    migration leads from a stored run's version to it."""

    current: str | None
    migrations: Mapping[str, Migration]
    on_mismatch: OnVersionMismatch

    def path(self, stored: str) -> list[Migration] | None:
        """The migrations from ``stored`` to the current version (``None``: no path)."""
        chain: list[Migration] = []
        at = stored
        while at != self.current:
            step = self.migrations.get(at)
            if step is None:
                return None
            chain.append(step)
            at = step.target
        return chain


def check_versions(version: object, migrations: object, on_version_mismatch: object) -> Versions:
    """A workflow's `Versions`, checked at definition: ``TypeError`` for a version that
    is not a string or an int or migrations that are not `Migration` objects,
    ``ValueError`` for migrations without a version, two from one version, one from
    the current version, or one whose chain does not lead to the current version."""
    current = check_version(version)
    if on_version_mismatch not in ("error", "restart"):
        raise ValueError(
            f"on_version_mismatch must be 'error' or 'restart', not {on_version_mismatch!r}"
        )
    if isinstance(migrations, (str, bytes)) or not isinstance(migrations, (Sequence, type(None))):
        raise TypeError(f"migrations must be a list of Migration, not {migrations!r}")
    by_source: dict[str, Migration] = {}
    for migration in cast("Sequence[object]", migrations or ()):
        if not isinstance(migration, Migration):
            raise TypeError(f"migrations must be Migration objects, not {migration!r}")
        if current is None:
            raise ValueError("migrations need the workflow's version= (the version they lead to)")
        if migration.source == current:
            raise ValueError(
                f"a migration from version {current!r} (the current version) can never apply"
            )
        if migration.source in by_source:
            raise ValueError(f"two migrations from version {migration.source!r}")
        by_source[migration.source] = migration
    known = {current, *by_source}
    for migration in by_source.values():
        if migration.target not in known:
            raise ValueError(
                f"the migration {migration.source!r} -> {migration.target!r} leads to a "
                f"version that does not exist (the current version is {current!r}, and no "
                f"migration starts from {migration.target!r})"
            )
    versions = Versions(current, by_source, on_version_mismatch)
    for source in by_source:
        seen = {source}
        at = by_source[source].target
        while at != current:
            if at in seen:
                raise ValueError(f"the migrations from version {source!r} go round in a circle")
            seen.add(at)
            at = by_source[at].target
    return versions


Prepared: TypeAlias = "tuple[dict[str, Ok[Any]], dict[str, Any] | None, list[str]] | Err[Any]"
"""What `prepare` decides for a resumed run: the records to run with, the version
record to write first (``None``: none), and the keys whose records to discard; or
the ``Err`` that ends the run."""


def version_record(current: str) -> dict[str, Any]:
    return {"version": current}


def prepare(
    versions: Versions, run_id: str, workflow_name: str, completed: Mapping[str, Ok[Any]]
) -> Prepared:
    """Bring a stored run's records to the current version (see `Prepared`).

    A run with no version record (stored before its workflow had a version) is taken
    to be of the current version: adding ``version=`` breaks no run in flight.  A
    version record holding ``steps`` is a migration written earlier: its records stand
    in for the stored ones it lists as ``dropped``."""
    current = versions.current
    if current is None:
        return dict(completed), None, []
    found = completed.get(VERSION_KEY)
    if found is None:
        return dict(completed), version_record(current), []
    value: object = found.value
    record: Mapping[str, Any] = (
        cast("Mapping[str, Any]", value) if isinstance(value, Mapping) else {}
    )
    stored: object = record.get("version")
    stored_text = None if stored is None else str(stored)
    view = _view(completed, record)
    if stored_text == current:
        return view, None, []
    chain = None if stored_text is None else versions.path(stored_text)
    if chain is None:
        if versions.on_mismatch == "restart":
            return {}, version_record(current), [k for k in completed if k != VERSION_KEY]
        reason = (
            "the run's version record is damaged"
            if stored_text is None
            else f"no migration leads from version {stored_text!r} to {current!r} "
            "(add one with create_workflow(..., migrations=[Migration(...)]), "
            "or on_version_mismatch='restart')"
        )
        return Err(WorkflowVersionError(run_id, workflow_name, stored_text, current, reason))
    values: dict[str, Any] = {k: v.value for k, v in view.items() if k != VERSION_KEY}
    for migration in chain:
        try:
            values = migration.apply(values)
        except Exception as exc:
            reason = (
                f"the migration {migration.source!r} -> {migration.target!r} failed: "
                f"{type(exc).__name__}: {exc}"
            )
            return Err(WorkflowVersionError(run_id, workflow_name, stored_text, current, reason))
    # Every stored record the migrated ones replace (earlier migrations' included).
    dropped = [k for k in completed if k != VERSION_KEY and k not in values]
    migrated = {k: Ok(v) for k, v in values.items()}
    return migrated, {"version": current, "steps": values, "dropped": dropped}, dropped


def _view(completed: Mapping[str, Ok[Any]], record: Mapping[str, Any]) -> dict[str, Ok[Any]]:
    steps = record.get("steps")
    if not isinstance(steps, Mapping):
        return {k: v for k, v in completed.items() if k != VERSION_KEY}
    dropped = set(cast("Iterable[str]", record.get("dropped") or ()))
    view = {str(k): Ok(v) for k, v in cast("Mapping[object, Any]", steps).items()}
    for key, value in completed.items():
        if key != VERSION_KEY and key not in view and key not in dropped:
            view[key] = value
    return view
