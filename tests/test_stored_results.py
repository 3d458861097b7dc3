"""Results and the errors that hold other errors, nested in stored values."""

from __future__ import annotations

from typing import Any

import pytest

from awaitly_anyio import (
    AllFailedError,
    Err,
    InputValidationError,
    Ok,
    StepTimeoutError,
    UnexpectedError,
)
from awaitly_anyio.serialization import StoredException, decode_value, encode_value


@pytest.mark.parametrize(
    "value",
    [
        Ok(1),
        Err("DECLINED"),
        [Ok({"a": (1, 2)}), Err(StepTimeoutError("s", 1.5))],
        {"x": Ok(Ok(None)), "y": Err(Err("deep"))},
        AllFailedError("pay", ("A", StepTimeoutError("card", 2.0), Ok(3))),
        InputValidationError("checkout", ("quantity: must be > 0",)),
    ],
)
def test_a_value_comes_back_as_it_was_stored(value: Any) -> None:
    assert decode_value(encode_value(value)) == value


def test_an_unexpected_error_in_the_children_becomes_its_stand_in() -> None:
    back = decode_value(encode_value(AllFailedError("pay", (UnexpectedError(KeyError("k")),))))
    assert isinstance(back, AllFailedError)
    assert back.step == "pay"
    (error,) = back.errors
    assert isinstance(error, UnexpectedError)
    assert isinstance(error.cause, StoredException)
    assert error.cause.type_name.endswith("KeyError")


@pytest.mark.parametrize(
    "data",
    [
        {"$t": "all_failed", "step": 3, "v": []},
        {"$t": "all_failed", "step": "s", "v": "not a list"},
    ],
)
def test_damaged_data_is_refused_plainly(data: Any) -> None:
    with pytest.raises(ValueError, match="all_failed"):
        decode_value(data)
