"""The checks every store and durable run share (`awaitly_anyio._checks`): the cheap
path for the usual values must refuse exactly what the full checks refuse."""

from __future__ import annotations

import math

import pytest

from awaitly_anyio._checks import check_id, check_key, check_lease


class _Text(str):
    pass


@pytest.mark.parametrize("id", ["run-1", "r", "ordre-été", "x" * 300, _Text("sub")])
def test_check_id_accepts_text(id: str) -> None:
    assert check_id(id) == id


@pytest.mark.parametrize(
    "id", ["", "nul\x00inside", "\x00", "lone \ud800 surrogate", 42, None, b"bytes", _Text("")]
)
def test_check_id_refuses(id: object) -> None:
    with pytest.raises(ValueError, match="run id"):
        check_id(id)


@pytest.mark.parametrize("key", ["k", "ordre-été"])
def test_check_key_accepts_text(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("key", ["", "a\x00b", "lone \ud800 surrogate", 7, _Text("")])
def test_check_key_refuses(key: object) -> None:
    with pytest.raises(ValueError, match="step key"):
        check_key(key)


@pytest.mark.parametrize("lease", [30.0, 30, 0.001, 1e9 - 1])
def test_check_lease_gives_seconds_as_a_float(lease: float) -> None:
    seconds = check_lease("worker-1", lease)
    assert seconds == lease
    assert type(seconds) is float


@pytest.mark.parametrize(
    ("owner", "lease"),
    [
        ("", 30.0),
        (None, 30.0),
        (3, 30.0),
        ("w", 0.0),
        ("w", -1.0),
        ("w", 1e9),
        ("w", math.inf),
        ("w", math.nan),
        ("w", True),
        ("w", "30"),
    ],
)
def test_check_lease_refuses(owner: object, lease: object) -> None:
    with pytest.raises(ValueError, match="lease"):
        check_lease(owner, lease)
