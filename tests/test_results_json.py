"""Results as JSON for HTTP responses and task queues (issue 22): `result_to_json` /
`result_from_json`, through the type registry the stores use."""

from __future__ import annotations

import enum
import json
from datetime import datetime, timezone
from decimal import Decimal
from uuid import UUID

import attrs
import pytest

from awaitly_anyio import (
    CircuitOpenError,
    Err,
    LimiterQueueFullError,
    Ok,
    RateLimitExceededError,
    StepTimeoutError,
    StoredException,
    TypeRegistry,
    UnexpectedError,
    result_from_json,
    result_to_json,
)
from awaitly_anyio.config import Secret


@attrs.frozen
class Declined:
    code: str
    amount: Decimal


class Tier(enum.Enum):
    GOLD = "gold"


@pytest.fixture
def registry() -> TypeRegistry:
    registry = TypeRegistry()
    registry.register(Declined, name="shop.Declined")
    registry.register(Tier, name="shop.Tier")
    return registry


def test_values_keep_their_types_across_json(registry: TypeRegistry) -> None:
    value = {
        "id": UUID("12345678-1234-5678-1234-567812345678"),
        "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        "pair": (1, "a"),
        "tags": {"x"},
        "tier": Tier.GOLD,
        "blob": b"\x00\xff",
    }
    text = result_to_json(Ok(value), registry)
    assert json.loads(text)["ok"] is True
    assert result_from_json(text, registry) == Ok(value)
    assert result_from_json(result_to_json(Ok(None))) == Ok(None)
    assert result_to_json(Ok(3)) == '{"ok":true,"value":3}'


def test_registered_errors_round_trip_as_themselves(registry: TypeRegistry) -> None:
    declined = Err(Declined("card_declined", Decimal("12.50")))
    assert result_from_json(result_to_json(declined, registry), registry) == declined
    assert result_from_json(result_to_json(Err("NOT_FOUND"))) == Err("NOT_FOUND")
    # The library's own errors are registered by default.
    for error in (
        StepTimeoutError("charge", 2.5),
        CircuitOpenError("payments", 30.0),
        RateLimitExceededError("stripe", 1.0),
        LimiterQueueFullError("stripe", 1.0, 8),
    ):
        back = result_from_json(result_to_json(Err(error)))
        assert back == Err(error)
        assert type(back.error) is type(error)  # type: ignore[union-attr]


def test_an_unregistered_type_is_refused_on_both_sides(registry: TypeRegistry) -> None:
    with pytest.raises(TypeError, match="register it first"):
        result_to_json(Err(Declined("x", Decimal(1))))  # not in the default registry
    text = result_to_json(Ok(Tier.GOLD), registry)
    with pytest.raises(ValueError, match=r"'shop\.Tier' is not registered"):
        result_from_json(text)  # names are looked up, never imported


def test_unexpected_error_comes_back_as_a_faithful_stand_in() -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        error = UnexpectedError(exc)
    back = result_from_json(result_to_json(Err(error)))
    assert isinstance(back, Err)
    assert isinstance(back.error, UnexpectedError)
    cause = back.error.cause
    assert isinstance(cause, StoredException)
    assert (cause.type_name, cause.message) == ("builtins.KeyError", "'missing'")
    assert cause.traceback == ""  # left out unless asked for
    with_tb = result_from_json(result_to_json(Err(error), include_traceback=True))
    assert "Traceback" in with_tb.error.cause.traceback  # type: ignore[union-attr]
    assert "test_results_json.py" in with_tb.error.cause.traceback  # type: ignore[union-attr]
    # A plain exception as the error travels the same way.
    plain = result_from_json(result_to_json(Err(ValueError("bad input"))))
    assert plain == Err(StoredException("builtins.ValueError", "bad input", ""))


def test_no_secret_reaches_the_json() -> None:
    leak = "s3cret-Pa55"
    try:
        raise ConnectionError(
            f"cannot reach postgresql://app:{leak}@db:5432/shop?sslpassword={leak}"
        )
    except ConnectionError as exc:
        text = result_to_json(Err(UnexpectedError(exc)), include_traceback=True)
    assert leak not in text
    assert "db:5432" in text or "***" in text
    assert leak not in result_to_json(Err(RuntimeError(f"token={leak}")))
    with pytest.raises(TypeError, match="secret is never stored"):
        result_to_json(Ok(Secret(leak)))
    with pytest.raises(TypeError) as info:
        result_to_json(Ok({"key": Secret(leak)}))
    assert leak not in str(info.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "invalid JSON"),
        ("{", "invalid JSON"),
        ("[1]", "should be dict"),
        ('"ok"', "should be dict"),
        ("{}", "ok should be bool"),
        ('{"ok": 1, "value": 1}', "ok should be bool"),
        ('{"ok": true}', "has no value"),
        ('{"ok": false}', "has no error"),
        ('{"ok": true, "value": 1, "error": 2}', 'both "value" and "error"'),
        ('{"ok": true, "value": 1, "run": "x"}', "unexpected keys"),
        ('{"ok": true, "value": {"$t": "pickle", "v": "x"}}', "unknown value tag"),
        ('{"ok": true, "value": {"$t": "obj", "n": "os.system", "v": {}}}', "not registered"),
        ('{"ok": true, "value": {"$t": "uuid", "v": "nope"}}', "bad 'uuid' value"),
        ('{"ok": true, "value": {"$t": "bytes", "v": "***"}}', "bad 'bytes' value"),
        ('{"ok": true, "value": {"$t": "dict", "v": [[[1], 2]]}}', "bad 'dict' value"),
        (
            '{"ok": false, "error": {"$t": "obj", "n": "awaitly.StepTimeoutError",'
            ' "v": {"step": "s", "seconds": "soon"}}}',
            "bad 'obj' value",
        ),
        ('{"ok": false, "error": {"$t": "exception", "type": "X"}}', "not a Result"),
        ('{"ok": true, "value": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        ('{"ok": true, "value": ' + "9" * 5000 + "}", "invalid JSON"),
    ],
)
def test_hostile_json_is_a_clear_value_error(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="not a Result") as info:
        result_from_json(text)
    assert reason in str(info.value)


def test_bad_arguments_are_type_errors() -> None:
    with pytest.raises(TypeError, match="takes an Ok or an Err"):
        result_to_json(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="registry must be a TypeRegistry"):
        result_to_json(Ok(1), registry={})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes str or bytes"):
        result_from_json(None)  # type: ignore[arg-type]
    assert result_from_json(b'{"ok":true,"value":1}') == Ok(1)


@pytest.mark.parametrize("tag", ["uuid", "float", "decimal", "date"])
def test_a_huge_hostile_payload_is_not_echoed_whole(tag: str) -> None:
    text = json.dumps({"ok": True, "value": {"$t": tag, "v": "x" * 1_000_000}})
    with pytest.raises(ValueError, match=f"bad '{tag}' value") as info:
        result_from_json(text)
    assert len(str(info.value)) < 3_000
