"""Static checks of issue 22's Result API: run ``mypy --strict tests/typecheck``.

Nothing here is executed by pytest.  The combinators keep the value and error types;
`attempt` takes the value type from the function and the error type from ``catch`` or
``map_error``; the aggregations keep both.
"""

# pyright: reportUnnecessaryTypeIgnoreComment=error

from __future__ import annotations

from typing import Any, assert_type

from awaitly_anyio import (
    Err,
    Ok,
    Result,
    all_ok,
    attempt,
    attempt_async,
    first_ok,
    partition,
    result_from_json,
    result_to_json,
    settle,
)


def parse(text: str) -> Result[int, str]:
    return Ok(int(text)) if text.isdigit() else Err(f"not a number: {text!r}")


def recover(error: str) -> Result[float, str]:
    return Ok(0.5) if error else Err(error)


def combinators(result: Result[int, str]) -> None:
    assert_type(result.unwrap_or_else(len), int)
    assert_type(result.unwrap_or_else(lambda e: None), int | None)
    assert_type(result.or_else(recover), Ok[int] | Ok[float] | Err[str])
    assert_type(result.tap(lambda v: print(v + 1)), Ok[int] | Err[str])
    assert_type(result.tap_err(lambda e: print(e.upper())), Ok[int] | Err[str])
    assert_type(result.map_or("none", str), str)
    assert_type(result.expect("a number"), int)
    assert_type(Ok(1).or_else(lambda e: Ok("x")), Ok[int])


def parse_int(text: str, base: int) -> int:
    return int(text, base)


async def fetch(key: str) -> bytes:
    return key.encode()


async def attempts() -> None:
    assert_type(attempt(parse_int, "ff", 16), Ok[int] | Err[Exception])
    assert_type(attempt(parse_int, "ff", 16, catch=ValueError), Ok[int] | Err[ValueError])
    assert_type(
        attempt(parse_int, "ff", 16, catch=ValueError, map_error=lambda e: "BAD"),
        Ok[int] | Err[str],
    )
    assert_type(attempt(parse_int, "ff", 16, map_error=str), Ok[int] | Err[str])
    assert_type(await attempt_async(fetch, "k"), Ok[bytes] | Err[Exception])
    assert_type(await attempt_async(fetch, "k", catch=KeyError), Ok[bytes] | Err[KeyError])
    # The arguments are checked against the function's parameters.
    attempt(parse_int, "ff")  # type: ignore[arg-type]
    attempt(parse_int, "ff", "16")  # type: ignore[arg-type, call-arg]


def aggregations(results: list[Result[int, str]]) -> None:
    assert_type(all_ok(results), Ok[list[int]] | Err[str])
    assert_type(settle(results), Ok[list[int]] | Err[list[str]])
    assert_type(first_ok(results), Ok[int] | Err[list[str]])
    assert_type(partition(results), tuple[list[int], list[str]])
    assert_type(all_ok(parse(t) for t in ("1", "2")), Ok[list[int]] | Err[str])


def json_round_trip(result: Result[int, str]) -> None:
    text = result_to_json(result)
    assert_type(text, str)
    assert_type(result_from_json(text), Ok[Any] | Err[Any])
