"""Sentry for workflows: unexpected errors captured with their workflow, step errors as
breadcrumbs, and a helper that wraps a run in a Sentry span.

    sentry_sdk.init(dsn=settings.sentry_dsn.reveal(), environment=settings.environment)
    workflow = create_workflow("checkout", deps, on_event=create_sentry_handler().handle_event)

Needs the ``sentry`` extra (``sentry-sdk``); it is imported when a handler is made.

Passwords never reach Sentry from here: error texts (breadcrumbs, the ``workflow``
context, the captured exception's message) go through the library's one redaction
helper, so a store URL in an error is sent with its password masked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from ._errors import UnexpectedError
from ._redact import redact_text
from ._result import Err, Result
from .events import StepFailed, WorkflowFailed

__all__ = ["SentryHandler", "create_sentry_handler", "run_with_sentry"]


def _sentry() -> Any:
    try:
        import sentry_sdk
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the Sentry integration needs: pip install 'awaitly-anyio[sentry]'"
        ) from exc
    return sentry_sdk


def _describe(error: object) -> str:
    """``error`` as text for Sentry, secrets masked."""
    if isinstance(error, BaseException):
        return redact_text(f"{type(error).__name__}: {error}")
    return redact_text(repr(error))


def _redacted(value: Any) -> Any:
    """``value`` (text, or lists and mappings of them) with secrets masked."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        mapping = cast("dict[object, object]", value)  # isinstance: unknown types
        return {key: _redacted(item) for key, item in mapping.items()}
    if isinstance(value, list):
        items = cast("list[object]", value)
        return [_redacted(item) for item in items]
    return value


def _redact_event(event: dict[str, Any], hint: object) -> dict[str, Any]:
    """A scope's event processor: mask secrets in the exception messages of ``event`` and
    in the local variables of their frames."""
    empty: dict[str, Any] = {}
    for exception in (event.get("exception") or empty).get("values") or ():
        value = exception.get("value")
        if isinstance(value, str):
            exception["value"] = redact_text(value)
        for frame in (exception.get("stacktrace") or empty).get("frames") or ():
            if "vars" in frame:
                frame["vars"] = _redacted(frame["vars"])
    return event


class SentryHandler:
    """An ``on_event`` handler: a workflow ending in ``UnexpectedError`` is reported with
    ``capture_exception`` (its cause, with the original traceback), tagged with the
    workflow's name and carrying its id and duration; every step error leaves a
    breadcrumb.  Expected errors (``Err`` values) are not reported as issues."""

    def __init__(self) -> None:
        self._sdk = _sentry()

    def handle_event(self, event: object) -> None:
        """Report or note one event (others are ignored)."""
        sdk = self._sdk
        if isinstance(event, StepFailed):
            sdk.add_breadcrumb(
                category="workflow.step",
                message=f"step {event.name} failed: {_describe(event.error)}",
                level="error",
                data={"workflow_id": event.workflow_id, "workflow_name": event.workflow_name},
            )
        elif isinstance(event, WorkflowFailed) and isinstance(event.error, UnexpectedError):
            with sdk.new_scope() as scope:
                scope.add_event_processor(_redact_event)
                scope.set_tag("workflow.name", event.workflow_name)
                scope.set_extra("workflow_id", event.workflow_id)
                scope.set_extra("duration_ms", event.duration_ms)
                sdk.capture_exception(event.error.cause)


def create_sentry_handler() -> SentryHandler:
    """A `SentryHandler` (call ``sentry_sdk.init`` first)."""
    return SentryHandler()


async def run_with_sentry(
    name: str, fn: Callable[[], Awaitable[Result[Any, Any]]]
) -> Result[Any, Any]:
    """Await ``fn()`` (a workflow run) inside a Sentry span named ``name``; when it ends in
    ``Err``, the span is marked failed and carries the error as its ``workflow.error``
    data (the error's text, secrets masked).

    The run gets a scope of its own (``sentry_sdk.new_scope``), on which the error is
    also set as the ``workflow`` context, as the deployment guide does: it ends with
    the run, so later, unrelated events do not carry it.  Cancellation and
    exceptions from ``fn`` propagate unchanged (the span is closed as they pass).
    """
    sdk = _sentry()
    with sdk.new_scope() as scope, sdk.start_span(op="workflow", name=name) as span:
        result = await fn()
        if isinstance(result, Err):
            error = _describe(result.error)
            span.set_status("internal_error")
            span.set_data("workflow.error", error)
            scope.set_context("workflow", {"name": name, "error": error})
        else:
            span.set_status("ok")
        return result
