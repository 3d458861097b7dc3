"""The library's own keys in a run's stored metadata, and the run's input.

A durable run's metadata holds the user's ``metadata=`` entries and the library's
own: the run's input, the error and last attempt time of a failed run, the trace
context it was created under.  The library's keys all start with `PREFIX`
(``"awaitly."``), and user metadata may not use it (`check_user_metadata`), so a
user key ``input`` is the user's and never the input.

Runs stored by releases before the prefix kept their input under ``"input"``
(`LEGACY_INPUT_KEY`): it is read only when `INPUT_KEY` is absent (`stored_input`),
so such a run still resumes with its input.  A run created now whose user
metadata has an ``"input"`` entry and no input records `INPUT_KEY` as ``None``
(`metadata_with_input`), so that entry is never taken for its input.

`input_conflict` is the check the store front runs inside its claim (the stored
row is decoded there anyway): a run started again with another input than the one
it was stored with is a conflict (`InputConflictError`), not a resume.  This module
is pure (no I/O) and sits in the persistence layer: the store front, the durable
session and the queues use it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

from .events import TRACE_CONTEXT_KEY
from .serialization import TypeRegistry, _encode, _Unstorable, decode_value

__all__ = [
    "ERROR_KEY",
    "INPUT_KEY",
    "LAST_ATTEMPT_KEY",
    "LEGACY_INPUT_KEY",
    "LEGACY_TRACE_KEY",
    "PREFIX",
    "TRACE_KEY",
    "check_user_metadata",
    "input_conflict",
    "metadata_with_input",
    "same_input",
    "stored_input",
    "stored_trace_context",
]

PREFIX = "awaitly."
"""The prefix of every key the library writes into a run's metadata; user metadata
may not use it."""

INPUT_KEY = PREFIX + "input"
"""The run's input, for whoever resumes it."""

LEGACY_INPUT_KEY = "input"
"""Where releases before `PREFIX` kept the input: read only when `INPUT_KEY` is absent."""

ERROR_KEY = PREFIX + "error"
"""A failed run's error, as text."""

LAST_ATTEMPT_KEY = PREFIX + "last_attempt"
"""When a failed run last ran (ISO 8601, UTC)."""

TRACE_KEY = TRACE_CONTEXT_KEY
"""The trace context a run was created under (`awaitly_anyio.events.TRACE_CONTEXT_KEY`)."""

LEGACY_TRACE_KEY = "trace_context"
"""Where releases before `PREFIX` kept the trace context: read only when `TRACE_KEY`
is absent (and differs from it)."""

_RESERVED_EXACT = frozenset({TRACE_KEY})


def check_user_metadata(metadata: object) -> Mapping[str, Any] | None:
    """``metadata`` (a mapping with string keys, or ``None``) if no key is the library's.

    Raises ``TypeError`` for something that is not a mapping or a key that is not a
    string, ``ValueError`` naming a key that starts with `PREFIX` (or is `TRACE_KEY`):
    those are the library's own."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping, not {metadata!r}")
    items = cast("Mapping[object, object]", metadata)  # isinstance: unknown types
    for key in items:
        if not isinstance(key, str):
            raise TypeError(f"metadata keys must be strings, not {key!r}")
        if key.startswith(PREFIX) or key in _RESERVED_EXACT:
            raise ValueError(
                f"metadata key {key!r} is reserved: keys starting with {PREFIX!r} "
                "are the library's own (use another name)"
            )
    return cast("Mapping[str, Any]", items)  # every key checked: a string


def metadata_with_input(metadata: Mapping[str, Any] | None, input: Any) -> dict[str, Any] | None:
    """The metadata to store for a run started with ``metadata`` (already checked by
    `check_user_metadata`) and ``input`` (``None``: none given): the input under
    `INPUT_KEY`; ``None`` when there is nothing to store.  A user entry named like
    the old input key, without an input, gets `INPUT_KEY` ``None`` beside it, so it
    is never read back as the input (`stored_input`)."""
    if input is not None:
        merged = dict(metadata) if metadata else {}
        merged[INPUT_KEY] = input
        return merged
    if not metadata:
        return None
    merged = dict(metadata)
    if LEGACY_INPUT_KEY in merged:
        merged[INPUT_KEY] = None
    return merged


def stored_input(metadata: Mapping[str, Any]) -> Any:
    """The input a stored run's (decoded) metadata keeps: `INPUT_KEY`, or for a run
    stored by an earlier release, `LEGACY_INPUT_KEY`; ``None`` if neither."""
    if INPUT_KEY in metadata:
        return metadata[INPUT_KEY]
    return metadata.get(LEGACY_INPUT_KEY)


def stored_trace_context(metadata: Mapping[str, Any]) -> Any:
    """The trace context a stored run's metadata keeps (`TRACE_KEY`, else the key of
    earlier releases); ``None`` if none."""
    if TRACE_KEY in metadata:
        return metadata[TRACE_KEY]
    return metadata.get(LEGACY_TRACE_KEY)


def _values_equal(left: Any, right: Any) -> bool:
    try:
        return bool(left == right)
    except Exception:  # a user type whose __eq__ fails: not shown equal
        return False


def same_input(stored: Any, given: Any, registry: TypeRegistry) -> bool:
    """Whether ``given`` (an input given now) is the input ``stored`` (as decoded from
    the store): their stored forms are equal, or the values compare equal (sets,
    whose stored form has no fixed order, and types with their own ``__eq__``)."""
    if _values_equal(stored, given):
        return True
    try:
        return bool(_encode(stored, registry) == _encode(given, registry))
    except (_Unstorable, RecursionError):
        return False


def input_conflict(
    stored_metadata_json: str, given: Mapping[str, Any] | None, registry: TypeRegistry
) -> bool:
    """Whether starting a stored run whose metadata is ``stored_metadata_json`` (the
    row's JSON) with metadata ``given`` (what the start would merge, the input under
    `INPUT_KEY`) conflicts: an input is given (not ``None``) and it is not the stored
    one (`same_input`; a run stored without an input has input ``None``, so any
    given input conflicts with it).  No input given: ``False`` (the run resumes with
    its own).

    Pure and cheap when no input is given (no parsing).  Stored JSON that cannot be
    parsed or decoded is not judged here (``False``): the claim's own decoding
    reports it as `SnapshotDecodeError`.  Never raises for a stored value."""
    if not given:
        return False
    wanted = given.get(INPUT_KEY)
    if wanted is None:
        return False
    try:
        doc: object = json.loads(stored_metadata_json)
    except (ValueError, TypeError, RecursionError):
        return False
    if not isinstance(doc, dict):
        return False
    fields: dict[str, Any] = doc  # pyright: ignore[reportUnknownVariableType]
    encoded = stored_input(fields)  # (still in its stored form)
    try:
        if encoded == _encode(wanted, registry):
            return False  # the same stored form: the usual case, no decoding
    except (_Unstorable, RecursionError):
        pass  # the given input cannot be stored: the claim's encoding reports it
    try:
        stored = decode_value(encoded, registry)
    except (ValueError, RecursionError):
        return False  # damaged: the claim's decoding reports it
    return not same_input(stored, wanted, registry)
