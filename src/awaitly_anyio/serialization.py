"""Turning snapshots and step values into JSON and back, without pickle or eval.

Step values keep their types across a save: JSON natives pass through;
tuples, sets, bytes, datetimes, dates, timedeltas, UUIDs, Decimals and
non-finite floats are tagged; enums, attrs classes and dataclasses are stored
under the name they were registered with (`register_type`) and rebuilt
through the one cattrs `converter`.  Exceptions are stored as text
(type name, message, traceback) and come back as
`StoredException`.

Class names read from storage are only ever looked up in the registry, never
imported, so a snapshot cannot make the process load code.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import math
import re
import traceback
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar, cast, overload
from uuid import UUID

import attrs
from cattrs.preconf.json import make_converter

from ._errors import (
    AllFailedError,
    ApprovalRejectedError,
    CircuitOpenError,
    InputValidationError,
    LimiterQueueFullError,
    RateLimitExceededError,
    SerializationError,
    SharedStateUnavailableError,
    SnapshotDecodeError,
    StepTimeoutError,
    StoredException,
    UnexpectedError,
    WaitTimeoutError,
)
from ._redact import redact_text
from ._result import Err, Ok, Result
from ._resume import StepRecord
from ._snapshot import FORMAT_VERSION, RUN_STATUSES, WorkflowSnapshot
from ._times import iso_from_epoch
from ._waits import Approval

__all__ = [
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "TypeRegistry",
    "converter",
    "decode_value",
    "default_registry",
    "encode_value",
    "register_type",
    "result_from_json",
    "result_to_json",
    "snapshot_from_json",
    "snapshot_to_json",
]

C = TypeVar("C", bound=type)

_TAG = "$t"

MAX_DEPTH = 100
"""The deepest a stored value may nest containers (lists, dicts, tuples, sets, enums,
registered classes): a value inside more than this many is refused with
`SerializationError`, as is a value that contains itself.
Deeper data could be written but not read back (JSON readers stop at a depth)."""

MAX_INT_DIGITS = 4300
"""The most decimal digits a stored ``int`` may have: Python's own default limit for
turning text into an ``int`` (``sys.int_info.default_max_str_digits``), so every
process can read back what was stored.  Store larger numbers as strings."""

_INT_BOUND = 10**MAX_INT_DIGITS
_SURROGATE = re.compile("[\ud800-\udfff]")

converter = make_converter()
"""The cattrs converter for everything that crosses a process boundary."""
converter.register_unstructure_hook(UUID, str)
converter.register_structure_hook(UUID, lambda value, _: UUID(value))
converter.register_unstructure_hook(Decimal, str)
converter.register_structure_hook(Decimal, lambda value, _: Decimal(value))


class TypeRegistry:
    """Names for the enums, attrs classes and dataclasses that step values may hold.

    A name is stored with each value of a registered type; loading looks the
    name up here.  One name means one class, in every process that loads the snapshot.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, type[Any]] = {}
        self._by_type: dict[type, str] = {}

    def register(self, cls: C, *, name: str | None = None) -> C:
        """Register ``cls`` under ``name`` (default: ``module.QualName``); returns ``cls``."""
        if not isinstance(cls, type) or not (
            attrs.has(cls) or dataclasses.is_dataclass(cls) or issubclass(cls, enum.Enum)
        ):
            raise TypeError(
                f"only attrs classes, dataclasses and enums can be registered, not {cls!r}"
            )
        if getattr(cls, "__awaitly_never_stored__", False):
            raise TypeError(
                f"{cls.__qualname__} is a secret and is never stored (it would be kept in "
                f"plain text): store a reference to it instead"
            )
        if name is None:
            name = f"{cls.__module__}.{cls.__qualname__}"
        if not isinstance(name, str) or not name:
            raise ValueError(f"a registered type needs a non-empty string name, not {name!r}")
        known = self._by_name.get(name)
        if known is not None and known is not cls:
            raise ValueError(f"the name {name!r} is already registered for {known!r}")
        previous = self._by_type.get(cls)
        if previous is not None and previous != name:
            raise ValueError(f"{cls!r} is already registered as {previous!r}")
        self._by_name[name] = cls
        self._by_type[cls] = name
        return cls  # pyright: ignore[reportReturnType]  (the C given, narrowed by the checks)

    def name_of(self, cls: type) -> str | None:
        """The name ``cls`` is registered under, if any."""
        return self._by_type.get(cls)

    def lookup(self, name: str) -> type[Any] | None:
        """The class registered under ``name``, if any."""
        return self._by_name.get(name)


default_registry = TypeRegistry()
"""The registry used unless a store is given another."""

for _builtin in (
    Approval,
    ApprovalRejectedError,
    WaitTimeoutError,
    StepTimeoutError,
    CircuitOpenError,
    RateLimitExceededError,
    LimiterQueueFullError,
    SharedStateUnavailableError,
    StoredException,
    InputValidationError,
):
    default_registry.register(_builtin, name=f"awaitly.{_builtin.__name__}")


@overload
def register_type(cls: C, *, name: str | None = None) -> C: ...
@overload
def register_type(cls: None = None, *, name: str | None = None) -> Callable[[C], C]: ...
def register_type(cls: C | None = None, *, name: str | None = None) -> C | Callable[[C], C]:
    """Register a class so step values of that type can be saved and loaded.

    Use it as a call (``register_type(User)``) or a decorator (``@register_type``
    or ``@register_type(name="user.v1")``).  A stable explicit name lets you
    move or rename the class without breaking stored snapshots.
    """
    if cls is None:
        return lambda c: default_registry.register(c, name=name)
    return default_registry.register(cls, name=name)


class _Unstorable(Exception):
    """A value cannot be encoded; ``type_name`` and the reason travel to SerializationError."""

    def __init__(self, type_name: str, reason: str) -> None:
        super().__init__(reason)
        self.type_name = type_name
        self.reason = reason


class _Undecodable(Exception):
    """Stored data cannot be decoded; the message becomes SnapshotDecodeError.reason."""


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _type_qualname(value: object) -> str:
    return _qualname(type(value))


def _exception_doc(tag: str, exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, StoredException):
        type_name, message, text = exc.type_name, exc.message, exc.traceback
    else:
        type_name, message = _qualname(type(exc)), _text_of(exc)
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {_TAG: tag, "type": type_name, "message": message, "traceback": text}


def _text_of(exc: BaseException) -> str:
    """``str(exc)``, or a stand-in when that raises (an argument with no text form)."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__} whose message cannot be shown>"


def safe_repr(value: object) -> str:
    """``repr(value)`` up to 1,000 characters; a longer one, or where ``repr`` raises
    (containers too deep for the stack, integers too long to print), an abridged
    form.  Never raises (for errors stored as text)."""
    import reprlib

    try:
        text = repr(value)
    except Exception:
        pass
    else:
        if len(text) <= 1000:
            return text
    try:
        return reprlib.repr(value)
    except Exception:
        if isinstance(value, int):
            digits = int(abs(value).bit_length() * math.log10(2)) + 1
            return f"<{_qualname(type(value))} of about {digits} digits>"
        return f"<{_qualname(type(value))} that cannot be shown>"


def _too_deep(value: object) -> _Unstorable:
    """The refusal of ``value``, found nested `MAX_DEPTH` containers deep: it is
    either part of a cycle or really that deep."""
    if _is_cyclic(value):
        return _Unstorable(
            _qualname(type(value)),
            "it is cyclic (it contains itself), and JSON has no references",
        )
    return _Unstorable(
        _qualname(type(value)),
        f"it is nested deeper than {MAX_DEPTH} levels (the most that can be stored)",
    )


def _children(node: object) -> list[Any] | None:
    """What a container holds (``None`` for a value that holds nothing to follow)."""
    if isinstance(node, dict):
        return [*node.keys(), *node.values()]
    if isinstance(node, (list, tuple, set, frozenset)):
        return list(cast("Iterable[Any]", node))  # isinstance leaves the item type unknown
    if isinstance(node, enum.Enum):
        return [node.value]
    kind = type(node)
    if attrs.has(kind):
        return [getattr(node, field.name, None) for field in attrs.fields(kind)]
    if dataclasses.is_dataclass(node):
        return [getattr(node, field.name, None) for field in dataclasses.fields(node)]
    return None


def _is_cyclic(root: object) -> bool:
    """Whether some container reachable from ``root`` contains itself (no recursion)."""
    on_path: set[int] = {id(root)}
    finished: set[int] = set()
    stack: list[tuple[object, Any]] = [(root, iter(_children(root) or ()))]
    while stack:
        node, children = stack[-1]
        for child in children:
            grandchildren = _children(child)
            if grandchildren is None:
                continue
            if id(child) in on_path:
                return True
            if id(child) not in finished:
                on_path.add(id(child))
                stack.append((child, iter(grandchildren)))
                break
        else:
            stack.pop()
            on_path.discard(id(node))
            finished.add(id(node))
    return False


def _plain(value: Any, owner: type, depth: int = 0) -> Any:
    """Check that cattrs' output for ``owner`` is plain JSON, and return it."""
    if value is None or type(value) in (str, bool):
        return value
    if type(value) is int:
        if -_INT_BOUND < value < _INT_BOUND:
            return value
        raise _Unstorable(_qualname(owner), f"a field holds {_BIG_INT}")
    if type(value) is float:
        if not math.isfinite(value):
            raise _Unstorable(_qualname(owner), f"a field holds the non-finite float {value!r}")
        return value
    if depth >= MAX_DEPTH and type(value) in (list, dict):
        raise _Unstorable(
            _qualname(owner), f"a field holds data nested deeper than {MAX_DEPTH} levels"
        )
    # (the casts: a type() test leaves the item types unknown to pyright)
    if type(value) is list:
        return [_plain(item, owner, depth + 1) for item in cast("list[object]", value)]
    if type(value) is dict:
        fields = cast("dict[object, object]", value)
        for key in fields:
            if type(key) is not str:
                raise _Unstorable(
                    _qualname(owner), f"a field holds a dict with key {safe_repr(key)}"
                )
        return {key: _plain(item, owner, depth + 1) for key, item in fields.items()}
    raise _Unstorable(
        _qualname(owner),
        f"a field holds a {type(value).__name__}, which has no JSON form; "
        f"give the field a precise type or register {type(value).__name__}",
    )


def encode_value(value: Any, registry: TypeRegistry = default_registry) -> Any:
    """Encode ``value`` as JSON-ready data that `decode_value` turns back into it.

    Raises ``TypeError`` naming the type when the value cannot be stored (no JSON
    form, an unregistered class, nested deeper than `MAX_DEPTH`, cyclic, an
    ``int`` longer than `MAX_INT_DIGITS` digits).
    """
    try:
        return _encode(value, registry)
    except _Unstorable as exc:
        raise TypeError(f"cannot store a value of type {exc.type_name}: {exc.reason}") from None
    except RecursionError:
        raise TypeError(
            f"cannot store a value of type {_type_qualname(value)}: {_NO_STACK}"
        ) from None


_BIG_INT = f"an integer with more than {MAX_INT_DIGITS} digits (store it as a string)"
_NO_STACK = "it is nested too deeply to encode at this call depth"
_CONTAINERS = frozenset({list, dict, tuple, set, frozenset})


def _encode(value: Any, registry: TypeRegistry, depth: int = 0) -> Any:
    """``value`` as JSON-ready data; ``depth`` counts the containers around it.

    Raises `_Unstorable` for what cannot be stored.
    """
    obj: object = value  # (type() of an Any is partly unknown to pyright)
    kind = type(obj)
    if kind is str:
        # PostgreSQL's jsonb cannot hold NUL; such strings travel in pieces.
        return value if "\x00" not in value else {_TAG: "nul", "v": value.split("\x00")}
    if value is None or kind is bool:
        return value
    if kind is int:
        # Longer integers cannot be read back as numbers (Python refuses the text).
        if -_INT_BOUND < value < _INT_BOUND:
            return value
        raise _Unstorable("builtins.int", f"it is {_BIG_INT}")
    if kind is float:
        # Beyond 1e16 a float's JSON has an exponent, which jsonb turns into an integer.
        if -1e16 < value < 1e16:
            return value
        return {_TAG: "float", "v": repr(value)}
    if depth >= MAX_DEPTH and kind in _CONTAINERS:
        raise _too_deep(value)
    depth += 1
    if kind is list:
        return [_encode(item, registry, depth) for item in value]
    if kind is dict:
        if _TAG not in value and all(type(key) is str and "\x00" not in key for key in value):
            return {key: _encode(item, registry, depth) for key, item in value.items()}
        return {
            _TAG: "dict",
            "v": [
                [_encode(k, registry, depth), _encode(v, registry, depth)] for k, v in value.items()
            ],
        }
    if kind is tuple:
        return {_TAG: "tuple", "v": [_encode(item, registry, depth) for item in value]}
    if kind is set or kind is frozenset:
        return {_TAG: kind.__name__, "v": [_encode(item, registry, depth) for item in value]}
    if kind is bytes:
        return {_TAG: "bytes", "v": base64.b64encode(value).decode("ascii")}
    if kind is datetime:
        return {_TAG: "datetime", "v": value.isoformat()}
    if kind is date:
        return {_TAG: "date", "v": value.isoformat()}
    if kind is timedelta:
        return {_TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if kind is UUID:
        return {_TAG: "uuid", "v": str(value)}
    if kind is Decimal:
        return {_TAG: "decimal", "v": str(value)}
    if kind is UnexpectedError:
        return _exception_doc("unexpected", value.cause)
    # Results nested in a value (``ctx.step.all_settled`` returns a list of them) and the
    # error that lists its children's errors: their contents are any storable value, which
    # a registered class's fields (cattrs, plain JSON only) could not hold.
    if kind is Ok:
        return {_TAG: "ok", "v": _encode(value.value, registry, depth)}
    if kind is Err:
        return {_TAG: "err", "v": _encode(value.error, registry, depth)}
    if kind is AllFailedError:
        return {
            _TAG: "all_failed",
            "step": value.step,
            "v": [_encode(error, registry, depth) for error in value.errors],
        }
    if getattr(kind, "__awaitly_never_stored__", False):
        raise _Unstorable(
            _qualname(kind),
            "a secret is never stored (it would be kept in plain text): store a reference "
            "to it and read the secret inside the step that needs it",
        )
    name = registry.name_of(kind)
    if name is not None:
        if depth > MAX_DEPTH:
            raise _too_deep(value)
        if isinstance(value, enum.Enum):
            return {_TAG: "enum", "n": name, "v": _encode(value.value, registry, depth)}
        try:
            fields = converter.unstructure(value)
        except RecursionError:
            raise _too_deep(value) from None
        # The fields' dict stands for the object itself, with depth - 1 containers around.
        return {_TAG: "obj", "n": name, "v": _plain(fields, kind, depth - 1)}
    if isinstance(value, BaseException):
        return _exception_doc("exception", value)
    if attrs.has(kind) or dataclasses.is_dataclass(kind) or isinstance(value, enum.Enum):
        raise _Unstorable(
            _qualname(kind),
            f"register it first: awaitly_anyio.register_type({kind.__name__}), "
            f"or name it with the step option type={kind.__name__}",
        )
    raise _Unstorable(_qualname(kind), "it has no JSON form")


def decode_value(data: Any, registry: TypeRegistry = default_registry) -> Any:
    """Rebuild a value encoded by `encode_value`; ``ValueError`` if the data is not valid."""
    try:
        return _decode(data, registry)
    except _Undecodable as exc:
        raise ValueError(str(exc)) from None


def _decode(data: Any, registry: TypeRegistry) -> Any:
    obj: object = data  # (type() of an Any is partly unknown to pyright)
    kind = type(obj)
    if data is None or kind is str or kind is bool or kind is int or kind is float:
        return data
    if kind is list:
        return [_decode(item, registry) for item in data]
    if kind is not dict:
        raise _Undecodable(f"unexpected {kind.__name__} in stored data")
    tag = data.get(_TAG)
    if tag is None:
        return {key: _decode(item, registry) for key, item in data.items()}
    try:
        return _decode_tagged(tag, data, registry)
    except _Undecodable:
        raise
    except Exception as exc:
        detail = _text_of(exc)
        if len(detail) > 1000:  # the exception may quote the (hostile, huge) value
            detail = detail[:1000] + "..."
        raise _Undecodable(f"bad {tag!r} value {safe_repr(data.get('v'))}: {detail}") from None


def _decode_tagged(tag: object, data: dict[str, Any], registry: TypeRegistry) -> Any:
    payload: Any = data.get("v")
    if tag == "tuple":
        return tuple(_decode(item, registry) for item in payload)
    if tag == "set":
        return {_decode(item, registry) for item in payload}
    if tag == "frozenset":
        return frozenset(_decode(item, registry) for item in payload)
    if tag == "dict":
        return {_decode(k, registry): _decode(v, registry) for k, v in payload}
    if tag == "float":
        return float(payload)
    if tag == "nul":
        parts = cast("list[object]", payload) if isinstance(payload, list) else None
        if parts is None or not all(type(part) is str for part in parts):
            raise _Undecodable(f"bad 'nul' value {payload!r}")
        return "\x00".join(cast("list[str]", parts))
    if tag == "bytes":
        return base64.b64decode(payload, validate=True)
    if tag == "datetime":
        return datetime.fromisoformat(payload)
    if tag == "date":
        return date.fromisoformat(payload)
    if tag == "timedelta":
        days, seconds, micros = payload
        return timedelta(days=days, seconds=seconds, microseconds=micros)
    if tag == "uuid":
        return UUID(payload)
    if tag == "decimal":
        return Decimal(payload)
    if tag == "ok":
        return Ok(_decode(payload, registry))
    if tag == "err":
        return Err(_decode(payload, registry))
    if tag == "all_failed":
        step = data.get("step")
        if type(step) is not str or type(payload) is not list:
            raise _Undecodable(f"bad 'all_failed' value {safe_repr(data)}")
        items = cast("list[object]", payload)  # (a type() test leaves the items unknown)
        return AllFailedError(step, tuple(_decode(item, registry) for item in items))
    if tag in ("unexpected", "exception"):
        stored = StoredException(
            str(data["type"]), str(data["message"]), str(data.get("traceback", ""))
        )
        return UnexpectedError(stored) if tag == "unexpected" else stored
    if tag in ("enum", "obj"):
        name = data.get("n")
        cls = registry.lookup(name) if isinstance(name, str) else None
        if cls is None:
            raise _Undecodable(
                f"type {name!r} is not registered in this process "
                f"(register it with awaitly_anyio.register_type before loading)"
            )
        if tag == "enum":
            return cls(_decode(payload, registry))
        return converter.structure(payload, cls)
    raise _Undecodable(f"unknown value tag {tag!r}")


# ---- records and snapshots ---------------------------------------------------------------


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def result_to_doc(result: Result[Any, Any], registry: TypeRegistry) -> dict[str, Any]:
    """``{"ok": true, "value": ...}`` or ``{"ok": false, "error": ...}``.

    Raises `_Unstorable` when the value or error cannot be stored.
    """
    try:
        if isinstance(result, Ok):
            return {"ok": True, "value": _encode(result.value, registry)}
        return {"ok": False, "error": _encode(result.error, registry)}
    except RecursionError:  # the caller's stack was nearly full already
        inner = result.value if isinstance(result, Ok) else result.error
        raise _Unstorable(_type_qualname(inner), _NO_STACK) from None


def _record_doc(
    result: Result[Any, Any],
    attempts: int,
    started_at: str | None,
    finished_at: str | None,
    registry: TypeRegistry,
) -> dict[str, Any]:
    doc = result_to_doc(result, registry)
    doc["attempts"] = attempts
    doc["started_at"] = started_at
    doc["finished_at"] = finished_at
    return doc


def record_to_doc(record: StepRecord, registry: TypeRegistry = default_registry) -> dict[str, Any]:
    """The JSON-ready form of one step record."""
    return _record_doc(
        record.result,
        record.attempts,
        _time(record.started_at),
        _time(record.finished_at),
        registry,
    )


def encode_step_record(step: str, record: StepRecord, registry: TypeRegistry) -> str:
    """Serialize one step's record, or raise `SerializationError` naming the step
    (a value with no JSON form, nested deeper than `MAX_DEPTH`, cyclic, or an
    ``int`` longer than `MAX_INT_DIGITS` digits)."""
    try:
        return dumps(record_to_doc(record, registry))
    except _Unstorable as exc:
        raise SerializationError(step, exc.type_name, exc.reason) from None


def encode_step(
    step: str,
    result: Result[Any, Any],
    attempts: int,
    started_at: float,
    finished_at: float,
    registry: TypeRegistry,
) -> str:
    """What `encode_step_record` gives for the record of these parts (times in
    epoch seconds), without making its datetimes first: a durable run's every keyed
    step writes one.  Raises `SerializationError` naming the step."""
    # Most steps return a plain scalar: their record is written out directly, the
    # same text the documents' encoder gives (the tests hold the two together).
    if type(result) is Ok and type(attempts) is int:
        value = _scalar_json(result.value)
        if value is not None:
            return (
                f'{{"ok":true,"value":{value},"attempts":{attempts},'
                f'"started_at":"{iso_from_epoch(started_at)}",'
                f'"finished_at":"{iso_from_epoch(finished_at)}"}}'
            )
    try:
        return dumps(
            _record_doc(
                result,
                attempts,
                iso_from_epoch(started_at),
                iso_from_epoch(finished_at),
                registry,
            )
        )
    except _Unstorable as exc:
        raise SerializationError(step, exc.type_name, exc.reason) from None


def encode_result(result: Result[Any, Any], registry: TypeRegistry) -> str:
    """``dumps(result_to_doc(result, registry))``: a run's final result as stored.

    Raises `_Unstorable` when the value or error cannot be stored."""
    if type(result) is Ok:
        value = _scalar_json(result.value)
        if value is not None:
            return f'{{"ok":true,"value":{value}}}'
    return dumps(result_to_doc(result, registry))


_SMALL_INT = 10**18
_encode_basestring: Callable[[str], str] = json.encoder.encode_basestring


def _scalar_json(value: Any) -> str | None:
    """``dumps(_encode(value, ...))`` for the scalars whose JSON needs no checks
    beyond these (ASCII text without NUL, small ints, floats with no exponent,
    ``None``, booleans), else ``None`` (let the general path decide)."""
    obj: object = value  # (type() of an Any is partly unknown to pyright)
    kind = type(obj)
    if kind is int:
        if -_SMALL_INT < value < _SMALL_INT:
            return int.__repr__(value)
        return None
    if kind is str:
        if value.isascii() and "\x00" not in value:
            return _encode_basestring(value)
        return None
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is float and -1e16 < value < 1e16:  # NaN fails it
        return float.__repr__(value)
    return None


def _expect(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Undecodable(f"{where} should be {_kind_name(kind)}, found {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__


def _parse_optional_time(value: Any, where: str) -> datetime | None:
    return None if value is None else _parse_time(value, where)


def _parse_time(value: Any, where: str) -> datetime:
    text = _expect(value, str, where)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _Undecodable(f"{where} is not an ISO time: {text!r}") from None
    if parsed.tzinfo is None:
        raise _Undecodable(f"{where} has no time zone: {text!r}")
    return parsed


def result_from_doc(doc: Any, where: str, registry: TypeRegistry) -> Result[Any, Any]:
    """The inverse of `result_to_doc`."""
    _expect(doc, dict, where)
    ok = _expect(doc.get("ok"), bool, f"{where}.ok")
    if ok:
        if "value" not in doc:
            raise _Undecodable(f"{where} has no value")
        return Ok(_decode(doc["value"], registry))
    if "error" not in doc:
        raise _Undecodable(f"{where} has no error")
    return Err(_decode(doc["error"], registry))


def record_from_doc(doc: Any, where: str, registry: TypeRegistry) -> StepRecord:
    """The inverse of `record_to_doc`."""
    result = result_from_doc(doc, where, registry)
    attempts = _expect(doc.get("attempts", 1), int, f"{where}.attempts")
    return StepRecord(
        result,
        attempts=attempts,
        started_at=_parse_optional_time(doc.get("started_at"), f"{where}.started_at"),
        finished_at=_parse_optional_time(doc.get("finished_at"), f"{where}.finished_at"),
    )


def snapshot_to_doc(
    snapshot: WorkflowSnapshot, registry: TypeRegistry = default_registry
) -> dict[str, Any]:
    """The whole snapshot as JSON-ready data (stores that keep one document use this)."""
    return {
        "format": snapshot.format_version,
        "workflow_name": snapshot.workflow_name,
        "workflow_id": snapshot.workflow_id,
        "status": snapshot.status,
        "steps": {key: record_to_doc(rec, registry) for key, rec in snapshot.steps.items()},
        "result": None if snapshot.result is None else result_to_doc(snapshot.result, registry),
        "metadata": _encode(dict(snapshot.metadata), registry),
        "created_at": _time(snapshot.created_at),
        "updated_at": _time(snapshot.updated_at),
        "expires_at": _time(snapshot.expires_at),
    }


def format_problem(version: object) -> str | None:
    """What is wrong with a stored snapshot's format version, or ``None`` if this
    release reads it.  A newer format is refused (never run by older code, nor
    rewritten as the older format)."""
    if version == FORMAT_VERSION and type(version) is int:
        return None
    if type(version) is int and version > FORMAT_VERSION:
        return (
            f"format version {version} was written by a newer release (this one reads"
            f" {FORMAT_VERSION}): upgrade awaitly-anyio to run or load it"
        )
    return f"unknown format version {version!r} (this release reads {FORMAT_VERSION})"


def snapshot_from_doc(
    doc: Any, run_id: str, registry: TypeRegistry = default_registry
) -> WorkflowSnapshot:
    """Rebuild a snapshot, or raise `SnapshotDecodeError` naming ``run_id``."""
    try:
        _expect(doc, dict, "the snapshot")
        problem = format_problem(doc.get("format"))
        if problem is not None:
            raise _Undecodable(problem)
        status = doc.get("status")
        if status not in RUN_STATUSES:
            raise _Undecodable(f"unknown status {status!r}")
        steps = _expect(doc.get("steps", {}), dict, "steps")
        records = {
            key: record_from_doc(rec, f"steps[{key!r}]", registry) for key, rec in steps.items()
        }
        result_doc = doc.get("result")
        metadata = _decode(doc.get("metadata") or {}, registry)
        _expect(metadata, dict, "metadata")
        return WorkflowSnapshot(
            workflow_name=_expect(doc.get("workflow_name"), str, "workflow_name"),
            workflow_id=_expect(doc.get("workflow_id"), str, "workflow_id"),
            status=status,
            steps=records,
            result=None if result_doc is None else result_from_doc(result_doc, "result", registry),
            metadata=metadata,
            created_at=_parse_time(doc.get("created_at"), "created_at"),
            updated_at=_parse_time(doc.get("updated_at"), "updated_at"),
            expires_at=_parse_optional_time(doc.get("expires_at"), "expires_at"),
        )
    except _Undecodable as exc:
        raise SnapshotDecodeError(run_id, str(exc)) from None
    except RecursionError:
        raise SnapshotDecodeError(run_id, "the data is nested too deeply to decode") from None
    except Exception as exc:  # whatever else damaged data makes a constructor raise
        raise SnapshotDecodeError(run_id, f"invalid data: {type(exc).__name__}: {exc}") from None


# One encoder for every document.  ``JSONEncoder.encode`` builds the C encoder anew on
# every call, a third of its cost for a step record, so the C encoder is built once
# here (where the interpreter has one), without the cycle check: documents are fresh
# trees built by _encode, which has already recursed through any cycle.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_make_c_encoder = getattr(json.encoder, "c_make_encoder", None)  # None off CPython
_C_ENCODER = (
    None
    if _make_c_encoder is None
    else _make_c_encoder(
        None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
)


def dumps(doc: Any) -> str:
    """Compact JSON; non-finite floats are refused (they are tagged before this point).

    Raises `_Unstorable` for text that no store can hold (a lone surrogate,
    which has no UTF-8 form), an ``int`` this process will not print, or a document
    too deep for the stack left.
    """
    try:
        text = _ENCODER.encode(doc) if _C_ENCODER is None else "".join(_C_ENCODER(doc, 0))
    except RecursionError:
        raise _Unstorable("<nested data>", _NO_STACK) from None
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise  # a non-finite float in a document _encode did not make
        # An int this process's sys.set_int_max_str_digits limit forbids printing.
        raise _Unstorable("builtins.int", f"it cannot be written as text here: {exc}") from None
    if not text.isascii():
        surrogate = _SURROGATE.search(text)
        if surrogate is not None:
            raise _Unstorable(
                "builtins.str",
                f"a string holds the lone surrogate {surrogate.group()!r}, which no store "
                "can encode (UTF-8 has no form for it)",
            )
    return text


def loads(text: str | bytes, run_id: str) -> Any:
    """Parse stored JSON, or raise `SnapshotDecodeError` naming ``run_id`` (for
    text that is not JSON, not text at all, or nested too deeply to parse)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise SnapshotDecodeError(run_id, "corrupt JSON: nested too deeply to parse") from None
    except (ValueError, TypeError) as exc:
        raise SnapshotDecodeError(run_id, f"corrupt JSON: {exc}") from None


def snapshot_to_json(snapshot: WorkflowSnapshot, registry: TypeRegistry = default_registry) -> str:
    """Serialize a whole snapshot to a JSON string.

    Raises `SerializationError` (step ``"<snapshot>"`` or the step key)
    if a value cannot be stored.
    """
    for key, record in snapshot.steps.items():
        encode_step_record(key, record, registry)
    try:
        return dumps(snapshot_to_doc(snapshot, registry))
    except _Unstorable as exc:
        raise SerializationError("<snapshot>", exc.type_name, exc.reason) from None


def snapshot_from_json(
    text: str | bytes, run_id: str, registry: TypeRegistry = default_registry
) -> WorkflowSnapshot:
    """Parse a snapshot serialized by `snapshot_to_json`."""
    return snapshot_from_doc(loads(text, run_id), run_id, registry)


# ---- Results as JSON (HTTP responses, task queues) -----------------------------------------


def result_to_json(
    result: Result[Any, Any],
    registry: TypeRegistry | None = None,
    *,
    include_traceback: bool = False,
) -> str:
    """``result`` as compact JSON: ``{"ok":true,"value":...}`` or
    ``{"ok":false,"error":...}``, values encoded as the stores encode step values
    (through ``registry``, default `default_registry`), so `result_from_json`
    gives an equal Result back.

    An error of a registered type (the library's own errors are) round-trips as
    itself; any other exception, and an `UnexpectedError`'s cause, travel as
    text (type name and message) and come back as `StoredException` (an
    ``UnexpectedError`` stays an ``UnexpectedError`` around it).  Their messages
    pass through the library's redaction (passwords in URLs and DSNs, ``token=``,
    ``api_key=``... are masked) and their tracebacks are left out unless
    ``include_traceback=True`` (they show code paths: not for an HTTP client).

    Raises ``TypeError`` naming the type when the value or error cannot be stored
    (no JSON form, an unregistered class, a secret, too deep, cyclic).
    """
    if not isinstance(result, (Ok, Err)):
        raise TypeError(f"result_to_json takes an Ok or an Err, not {safe_repr(result)}")
    if registry is None:
        registry = default_registry
    elif not isinstance(registry, TypeRegistry):
        raise TypeError(f"registry must be a TypeRegistry or None, not {safe_repr(registry)}")
    try:
        doc = result_to_doc(result, registry)
        return dumps(_scrub(doc, include_traceback))
    except _Unstorable as exc:
        raise TypeError(f"cannot encode a value of type {exc.type_name}: {exc.reason}") from None


def _scrub(node: Any, keep_traceback: bool) -> Any:
    """The encoded ``node`` with every stored exception's text redacted (and its
    traceback dropped unless ``keep_traceback``)."""
    obj: object = node
    if type(obj) is list:
        return [_scrub(item, keep_traceback) for item in node]
    if type(obj) is not dict:
        return node
    if node.get(_TAG) in ("unexpected", "exception"):
        return {
            _TAG: node[_TAG],
            "type": node["type"],
            "message": redact_text(node["message"]),
            "traceback": redact_text(node["traceback"]) if keep_traceback else "",
        }
    return {key: _scrub(item, keep_traceback) for key, item in node.items()}


_RESULT_KEYS = frozenset({"ok", "value", "error"})


def result_from_json(text: str | bytes, registry: TypeRegistry | None = None) -> Result[Any, Any]:
    """The Result `result_to_json` wrote, rebuilt through ``registry`` (default
    `default_registry`: the types of its values must be registered here too).

    Raises ``ValueError`` with the reason for anything else: text that is not
    JSON, not an object with a boolean ``"ok"`` and exactly one of ``"value"`` /
    ``"error"``, a tag or field this release does not know, a type name not
    registered here (names are looked up, never imported), data nested too deeply.
    """
    if registry is None:
        registry = default_registry
    elif not isinstance(registry, TypeRegistry):
        raise TypeError(f"registry must be a TypeRegistry or None, not {safe_repr(registry)}")
    if not isinstance(text, (str, bytes, bytearray)):
        raise TypeError(f"result_from_json takes str or bytes, not {type(text).__name__}")
    try:
        doc = json.loads(text)
    except RecursionError:
        raise ValueError("not a Result: the JSON is nested too deeply to parse") from None
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a Result: invalid JSON: {exc}") from None
    try:
        _expect(doc, dict, "the Result")
        extra = set(doc) - _RESULT_KEYS
        if extra:
            raise _Undecodable(f"unexpected keys {sorted(extra)!r}")
        if "value" in doc and "error" in doc:
            raise _Undecodable('it has both "value" and "error"')
        return result_from_doc(doc, "the Result", registry)
    except _Undecodable as exc:
        raise ValueError(f"not a Result: {exc}") from None
    except RecursionError:
        raise ValueError("not a Result: the data is nested too deeply to decode") from None
    except Exception as exc:  # whatever else hostile data makes a constructor raise
        raise ValueError(f"not a Result: invalid data: {type(exc).__name__}: {exc}") from None


def _structure_snapshot(doc: Any, _: type) -> WorkflowSnapshot:
    run_id = (
        cast("Mapping[str, object]", doc).get("workflow_id", "?")
        if isinstance(doc, Mapping)
        else "?"
    )
    return snapshot_from_doc(doc, str(run_id))


converter.register_unstructure_hook(WorkflowSnapshot, snapshot_to_doc)
converter.register_structure_hook(WorkflowSnapshot, _structure_snapshot)
