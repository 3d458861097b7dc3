"""The JSON a durable run writes: the quick paths give exactly what the plain ones give."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from awaitly_anyio import Err, Ok, SerializationError
from awaitly_anyio._resume import StepRecord
from awaitly_anyio._store import EncodedStep
from awaitly_anyio._times import from_epoch, iso_from_epoch
from awaitly_anyio.serialization import (
    _Unstorable,
    default_registry,
    dumps,
    encode_result,
    encode_step,
    encode_step_record,
    result_to_doc,
)

# Epoch seconds a datetime can hold, with microseconds; and the halves between them,
# where rounding decides.
_SECONDS = st.floats(min_value=-62_000_000_000, max_value=253_402_300_000)
_HALVES = st.builds(
    lambda whole, micros, sign: whole + (micros + sign * 0.5) / 1e6,
    st.integers(-2_000_000_000, 20_000_000_000),
    st.integers(0, 999_999),
    st.sampled_from([-1, 1]),
)


@given(st.one_of(_SECONDS, _HALVES))
@example(0.0)
@example(-1e-7)
@example(1.9999996)
@example(1.9999995)
@example(-2.5e-7)
def test_iso_from_epoch_is_the_datetimes_isoformat(seconds: float) -> None:
    assert iso_from_epoch(seconds) == from_epoch(seconds).isoformat()


def test_iso_from_epoch_keeps_up_when_the_second_changes() -> None:
    # The text up to the second is reused from the last call: moving across seconds
    # (and back) must not reuse the wrong one.
    for seconds in (1_700_000_000.25, 1_700_000_001.5, 1_700_000_000.75, 1_700_000_001.0):
        assert iso_from_epoch(seconds) == from_epoch(seconds).isoformat()


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1e300])
def test_iso_from_epoch_refuses_what_datetime_refuses(bad: float) -> None:
    with pytest.raises((ValueError, OverflowError)):
        iso_from_epoch(bad)


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(_VALUES, st.booleans(), st.integers(1, 9), st.floats(0, 4e9), st.floats(0, 60))
def test_encode_step_is_the_records_json(
    value: Any, ok: bool, attempts: int, started: float, took: float
) -> None:
    result = Ok(value) if ok else Err(value)
    record = StepRecord(
        result,
        attempts=attempts,
        started_at=from_epoch(started),
        finished_at=from_epoch(started + took),
    )
    text = encode_step("s", result, attempts, started, started + took, default_registry)
    assert text == encode_step_record("s", record, default_registry)


# Scalars that a step's record writes out directly, and the edges of that fast path
# (where the general encoder takes over).
_SCALARS: list[Any] = [
    None,
    True,
    False,
    0,
    -7,
    10**18 - 1,
    -(10**18) + 1,
    10**18,
    -(10**18),
    10**30,
    "",
    "plain",
    'quote " backslash \\ newline \n tab \t bell \x07 del \x7f',
    "nul \x00 inside",
    "caf\u00e9",
    "lone \ud800 surrogate",
    0.0,
    -0.0,
    1.5,
    1e-300,
    9999999999999998.0,
    1e16,
    -1e16,
    math.inf,
    math.nan,
    1,
    True,
]


@pytest.mark.parametrize("value", _SCALARS, ids=repr)
def test_a_scalar_steps_record_is_the_documents_json(value: Any) -> None:
    started = 1_700_000_000.123456
    record = StepRecord(
        Ok(value), attempts=3, started_at=from_epoch(started), finished_at=from_epoch(started + 2)
    )

    def outcome(encode: Any) -> str:
        try:
            return str(encode())
        except SerializationError as exc:
            return f"refused: {exc}"

    fast = outcome(lambda: encode_step("s", Ok(value), 3, started, started + 2, default_registry))
    general = outcome(lambda: encode_step_record("s", record, default_registry))
    assert fast == general


@pytest.mark.parametrize("value", _SCALARS, ids=repr)
@pytest.mark.parametrize("ok", [True, False])
def test_a_final_results_json_is_the_documents_json(value: Any, ok: bool) -> None:
    result = Ok(value) if ok else Err(value)

    def outcome(encode: Any) -> str:
        try:
            return str(encode())
        except _Unstorable as exc:
            return f"refused: {exc.type_name}: {exc.reason}"

    general = outcome(lambda: dumps(result_to_doc(result, default_registry)))
    assert outcome(lambda: encode_result(result, default_registry)) == general


def test_encode_step_names_the_step_whose_value_has_no_json_form() -> None:
    with pytest.raises(SerializationError, match="charge"):
        encode_step("charge", Ok(object()), 1, 0.0, 1.0, default_registry)


def _outcome(encode: Any, value: Any) -> str:
    try:
        return str(encode(value))
    except ValueError:
        return "ValueError"


@given(_VALUES)
def test_dumps_is_compact_json(value: Any) -> None:
    def plain(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    assert _outcome(dumps, value) == _outcome(plain, value)


def test_dumps_refuses_what_json_refuses() -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        dumps({"x": math.nan})
    with pytest.raises(TypeError, match="datetime"):
        dumps([datetime.now(timezone.utc)])


def test_an_encoded_step_given_a_maker_makes_its_record_when_it_is_read() -> None:
    made: list[StepRecord] = []

    def make() -> StepRecord:
        made.append(StepRecord(Ok(1), attempts=2))
        return made[-1]

    step = EncodedStep("k", make, '{"ok": true, "value": 1}')
    assert made == []  # a store that writes the JSON never pays for the record
    assert step.record == StepRecord(Ok(1), attempts=2)
    assert len(made) == 1
    # Equal when key and JSON are: the JSON is the record.
    assert step == EncodedStep("k", StepRecord(Ok(1), attempts=2), '{"ok": true, "value": 1}')
    assert step != EncodedStep("k", StepRecord(Ok(1), attempts=2), '{"ok": true, "value": 2}')
