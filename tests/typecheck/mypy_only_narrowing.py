"""``if result.ok:`` narrows a Result under mypy; checked by ``mypy --strict tests/typecheck``.

pyright does not narrow a union on the truthiness of a literal-typed field (by
design: microsoft/pyright#6113, #7672, #9904), so this file is excluded from
pyright in pyproject.toml.  Under pyright, write ``if result.ok is True:`` /
``if result.ok is False:`` (checked in result_narrowing.py), ``isinstance`` or
``match``; docs/typing.md says so.
"""

from __future__ import annotations

from typing import assert_type

from awaitly_anyio import Err, Ok, Result


def narrow_with_ok(result: Result[int, str]) -> int:
    if result.ok:
        assert_type(result, Ok[int])
        return result.value
    assert_type(result, Err[str])
    return len(result.error)


def narrow_with_not_ok(result: Result[int, str]) -> str:
    if not result.ok:
        assert_type(result, Err[str])
        return result.error
    assert_type(result, Ok[int])
    return str(result.value)
