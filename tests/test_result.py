"""The Result model: construction, narrowing and combinators."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import anyio.lowlevel
import attrs
import pytest

from awaitly_anyio import (
    Err,
    Ok,
    Result,
    StepTimeoutError,
    UnexpectedError,
    UnwrapError,
    all_ok,
    attempt,
    attempt_async,
    err,
    first_ok,
    is_unexpected_error,
    ok,
    partition,
    settle,
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
    "LimiterQueueFullError": None,  # a RateLimitExceededError
    "SharedStateUnavailableError": None,
    "StoredException": None,
    "SerializationError": None,
    "SnapshotDecodeError": None,
    "StoreError": None,
    "WorkflowMismatchError": None,
    "WorkflowDriftError": None,
    "WorkflowVersionError": None,
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
    "AllFailedError": None,
    "CompensationError": None,
    "InputValidationError": None,
    "HarnessError": AssertionError,
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
    from awaitly_anyio import AwaitlyError
    from awaitly_anyio._run import EarlyExit

    found = _public_exception_classes()
    assert found.pop("AwaitlyError") is AwaitlyError
    assert AwaitlyError.__bases__ == (Exception,)
    # Nothing exported is left out of the documented tree, nor the tree out of the exports.
    assert sorted(found) == sorted(ERROR_TREE)
    for name, builtin in ERROR_TREE.items():
        cls = found[name]  # from the package or a public module (testing)
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


# ---- issue 22: the combinators people coming from `returns` and `result` expect ---------


def test_recovery_combinators() -> None:
    assert Ok(2).unwrap_or_else(len) == 2
    assert Err("boom").unwrap_or_else(len) == 4
    assert Ok(2).or_else(lambda e: Ok(0)) == Ok(2)
    assert Err("boom").or_else(lambda e: Ok(len(e))) == Ok(4)
    assert Err("boom").or_else(lambda e: Err(e.upper())) == Err("BOOM")
    assert Ok(2).map_or(0, lambda v: v * 10) == 20
    assert Err("e").map_or(0, lambda v: v * 10) == 0
    assert Ok(2).expect("needs a value") == 2
    with pytest.raises(UnwrapError, match="needs a value: Err\\('e'\\)") as info:
        Err("e").expect("needs a value")
    assert info.value.result == Err("e")
    cause = KeyError("k")
    with pytest.raises(UnwrapError) as info:
        Err(cause).expect("lookup")
    assert info.value.__cause__ is cause


def test_tap_and_tap_err_see_the_payload_and_change_nothing() -> None:
    seen: list[object] = []
    ok_result = Ok([1])
    err_result = Err("bad")
    assert ok_result.tap(seen.append) is ok_result
    assert ok_result.tap_err(seen.append) is ok_result
    assert err_result.tap(seen.append) is err_result
    assert err_result.tap_err(seen.append) is err_result
    assert seen == [[1], "bad"]
    # What the side effect raises is not swallowed.
    with pytest.raises(ZeroDivisionError):
        Ok(0).tap(lambda v: 1 / v)


def parse_int(text: str) -> int:
    return int(text)


def test_attempt_turns_a_raising_call_into_a_result() -> None:
    assert attempt(parse_int, "42") == Ok(42)
    failed = attempt(parse_int, "x")
    assert isinstance(failed, Err)
    assert isinstance(failed.error, ValueError)
    # catch= narrows what becomes an Err; anything else propagates.
    assert isinstance(attempt(parse_int, "x", catch=ValueError).error, ValueError)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="invalid literal"):
        attempt(parse_int, "x", catch=KeyError)
    assert isinstance(attempt({}.__getitem__, "k", catch=(KeyError, ValueError)), Err)
    # map_error turns the exception into the error you want.
    assert attempt(parse_int, "x", catch=ValueError, map_error=lambda e: "NOT_A_NUMBER") == Err(
        "NOT_A_NUMBER"
    )
    assert attempt(parse_int, "7", map_error=str) == Ok(7)


def test_attempt_never_catches_base_exceptions() -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        attempt(interrupted)
    with pytest.raises(TypeError, match="catch=BaseException is not allowed"):
        attempt(parse_int, "1", catch=BaseException)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="catch=KeyboardInterrupt"):
        attempt(parse_int, "1", catch=(ValueError, KeyboardInterrupt))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="exception type"):
        attempt(parse_int, "1", catch="ValueError")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="at least one"):
        attempt(parse_int, "1", catch=())
    with pytest.raises(TypeError, match="map_error must be callable"):
        attempt(parse_int, "1", map_error=3)  # type: ignore[call-overload]


@pytest.mark.anyio
async def test_attempt_async_awaits_and_catches() -> None:
    async def fetch(key: str) -> int:
        await anyio.lowlevel.checkpoint()
        return {"a": 1}[key]

    assert await attempt_async(fetch, "a") == Ok(1)
    missing = await attempt_async(fetch, "b", catch=KeyError, map_error=lambda e: f"no {e}")
    assert missing == Err("no 'b'")
    with pytest.raises(KeyError):
        await attempt_async(fetch, "b", catch=ValueError)


@pytest.mark.anyio
async def test_attempt_async_lets_cancellation_through() -> None:
    reached: list[str] = []

    async def slow() -> int:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    with anyio.CancelScope() as scope:
        scope.cancel()
        result = await attempt_async(slow)
        reached.append(f"not cancelled: {result}")
    assert scope.cancelled_caught
    assert reached == []


def test_all_ok_stops_at_the_first_error() -> None:
    looked: list[int] = []

    def results() -> Iterator[Result[int, str]]:
        for n in (1, 2, 3):
            looked.append(n)
            yield Ok(n) if n != 2 else Err(f"bad {n}")

    assert all_ok([Ok(1), Ok(2)]) == Ok([1, 2])
    assert all_ok(results()) == Err("bad 2")
    assert looked == [1, 2]  # the third was never made
    assert all_ok([]) == Ok([])


def test_settle_keeps_every_error() -> None:
    assert settle([Ok(1), Ok(2)]) == Ok([1, 2])
    assert settle([Ok(1), Err("a"), Ok(3), Err("b")]) == Err(["a", "b"])
    assert settle([]) == Ok([])


def test_first_ok_returns_the_first_success_or_every_error() -> None:
    tried: list[str] = []

    def fetch(source: str) -> Result[str, str]:
        tried.append(source)
        return Ok(f"from {source}") if source == "replica" else Err(f"{source} down")

    assert first_ok(fetch(s) for s in ("primary", "replica", "cache")) == Ok("from replica")
    assert tried == ["primary", "replica"]  # a generator stops at the first success
    assert first_ok([Err("a"), Err("b")]) == Err(["a", "b"])
    assert first_ok([]) == Err([])


def test_partition_splits_values_and_errors_in_order() -> None:
    assert partition([Ok(1), Err("a"), Ok(2), Err("b")]) == ([1, 2], ["a", "b"])
    assert partition([]) == ([], [])
