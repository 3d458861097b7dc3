"""The Result model: construction, narrowing and combinators."""

from __future__ import annotations

import attrs
import pytest

from awaitly_anyio import (
    Err,
    Ok,
    Result,
    StepTimeoutError,
    UnexpectedError,
    UnwrapError,
    err,
    is_unexpected_error,
    ok,
)


def describe(result: Result[int, str]) -> str:
    match result:
        case Ok(value):
            return f"value {value}"
        case Err(error):
            return f"error {error}"
    raise AssertionError("unreachable")


def test_ok_and_err_expose_their_payload() -> None:
    assert Ok(3).ok is True
    assert Ok(3).value == 3
    assert Err("NOPE").ok is False
    assert Err("NOPE").error == "NOPE"
    assert ok(3) == Ok(3)
    assert err("NOPE") == Err("NOPE")


def test_positional_match_patterns() -> None:
    assert describe(Ok(1)) == "value 1"
    assert describe(Err("bad")) == "error bad"


def test_results_are_frozen_values() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Ok(1).value = 2  # type: ignore[misc]
    assert Ok(1) == Ok(1)
    assert Ok(1) != Err(1)
    assert hash(Ok("a")) == hash(Ok("a"))
    assert repr(Ok([1])) == "Ok([1])"
    assert repr(Err("x")) == "Err('x')"


def test_combinators() -> None:
    assert Ok(2).map(lambda v: v * 10) == Ok(20)
    assert Err("e").map(lambda v: v * 10) == Err("e")
    assert Err("e").map_err(str.upper) == Err("E")
    assert Ok(2).map_err(str.upper) == Ok(2)
    assert Ok(2).and_then(lambda v: Ok(v + 1)) == Ok(3)
    assert Ok(2).and_then(lambda v: Err(f"too small: {v}")) == Err("too small: 2")
    assert Err("e").and_then(lambda v: Ok(v)) == Err("e")
    assert Ok(2).unwrap_or(0) == 2
    assert Err("e").unwrap_or(0) == 0
    assert Ok(2).unwrap() == 2
    assert Err("e").unwrap_err() == "e"


def test_unwrap_on_err_names_the_error_and_chains_exceptions() -> None:
    with pytest.raises(UnwrapError, match="NOT_FOUND") as info:
        Err("NOT_FOUND").unwrap()
    assert info.value.result == Err("NOT_FOUND")

    cause = ValueError("boom")
    with pytest.raises(UnwrapError) as info:
        Err(cause).unwrap()
    assert info.value.__cause__ is cause

    with pytest.raises(UnwrapError, match="unwrap_err"):
        Ok(1).unwrap_err()


def test_errors_may_be_any_value() -> None:
    @attrs.frozen
    class NotFound:
        user_id: str

    assert Err(NotFound("1")).error == NotFound("1")
    assert Err(StepTimeoutError("s", 1.0)).error.step == "s"


def test_unexpected_error_keeps_the_cause_and_its_traceback() -> None:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        wrapped = UnexpectedError(exc)
    assert wrapped.cause.__traceback__ is not None
    assert wrapped.__cause__ is wrapped.cause
    assert "KeyError" in str(wrapped)
    assert is_unexpected_error(wrapped)
    assert not is_unexpected_error("KeyError")


def test_library_errors_compare_as_values() -> None:
    assert StepTimeoutError("s", 1.0) == StepTimeoutError("s", 1.0)
    assert StepTimeoutError("s", 1.0) != StepTimeoutError("s", 2.0)
    assert hash(StepTimeoutError("s", 1.0)) == hash(StepTimeoutError("s", 1.0))
    cause = ValueError("x")
    assert UnexpectedError(cause) == UnexpectedError(cause)
    assert UnexpectedError(cause) != UnexpectedError(ValueError("x"))


# The documented tree (docs/results.md, "The error tree"): every exception the library
# defines, with the built-in it also derives from where it had one before the root.
ERROR_TREE: dict[str, type[BaseException] | None] = {
    "UnexpectedError": None,
    "StepTimeoutError": None,
    "CircuitOpenError": None,
    "RateLimitExceededError": None,
    "SharedStateUnavailableError": None,
    "StoredException": None,
    "SerializationError": None,
    "SnapshotDecodeError": None,
    "StoreError": None,
    "WorkflowMismatchError": None,
    "RunInProgressError": None,
    "LeaseLostError": None,
    "WaitTimeoutError": None,
    "ApprovalRejectedError": None,
    "RunFinishedError": LookupError,
    "AlreadyDeliveredError": None,
    "HookTokenError": ValueError,
    "RunParkedError": None,
    "RunStateError": None,
    "InputConflictError": None,
    "UnwrapError": None,
    "HostClosedError": RuntimeError,
    "HostAtCapacityError": RuntimeError,
    "SettingsError": ValueError,
}


def _public_exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class a public module of the package exports."""
    import importlib
    import pkgutil

    import awaitly_anyio

    modules = [awaitly_anyio]
    for info in pkgutil.walk_packages(awaitly_anyio.__path__, "awaitly_anyio."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            modules.append(importlib.import_module(info.name))
    found: dict[str, type[BaseException]] = {}
    for module in modules:
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, BaseException):
                found[name] = obj
    return found


def test_every_library_exception_derives_from_the_root() -> None:
    import awaitly_anyio
    from awaitly_anyio import AwaitlyError
    from awaitly_anyio._run import EarlyExit

    found = _public_exception_classes()
    assert found.pop("AwaitlyError") is AwaitlyError
    assert AwaitlyError.__bases__ == (Exception,)
    # Nothing exported is left out of the documented tree, nor the tree out of the exports.
    assert sorted(found) == sorted(ERROR_TREE)
    for name, builtin in ERROR_TREE.items():
        cls = getattr(awaitly_anyio, name)
        assert issubclass(cls, AwaitlyError), name
        if builtin is not None:
            assert issubclass(cls, builtin), f"{name} no longer derives from {builtin.__name__}"
    # The early exit is no library exception: `except Exception` must not catch it.
    assert not issubclass(EarlyExit, Exception)
    assert not issubclass(EarlyExit, AwaitlyError)


def test_the_error_tree_is_documented() -> None:
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "results.md").read_text()
    tree = page.split("## The error tree", 1)[1].split("\n## ", 1)[0]
    for name in ("AwaitlyError", *ERROR_TREE):
        assert f" {name}" in tree, f"{name} is missing from the tree in docs/results.md"


def test_the_root_catches_what_the_library_raises() -> None:
    from awaitly_anyio import AwaitlyError, HostClosedError, SettingsError

    with pytest.raises(AwaitlyError):
        Err("no").unwrap()
    # The refusals that were built-ins before the root still match their old clauses.
    with pytest.raises(RuntimeError):
        raise HostClosedError("closed")
    with pytest.raises(ValueError, match="AWAITLY_STORE_URL"):
        raise SettingsError(["AWAITLY_STORE_URL: missing"])
